"""sims: numba-accelerated optimizer simulations on quadratic models (and one sharpening model).

Public API (names fixed by the project):

* :func:`simulate` -- one run on L = 1/2 x^T H x with loss, S and S_P recorded every k steps;
* :func:`simulate_batch` -- many diagonal quadratics in parallel (the hot path);
* :func:`empirical_threshold` -- bisection on lambda with frozen P, the check of the theory;
* :mod:`sims.problems` -- quadratic problems; :mod:`sims.sharpening` -- the progressive-sharpening
  model (:class:`SharpeningModel`, :func:`simulate_sharpening`);
* :mod:`sims.experiments` -- data functions behind the scripts (``python -m sims.threshold_check``,
  ``sims.phase_diagram``, ``sims.adam_quadratic``, ``sims.sharpening_contrast``, each ``--out DIR``).

numba compiles on first use (``cache=True``: once per machine); importing ``sims`` is light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["simulate", "simulate_batch", "empirical_threshold", "SimulationResult", "BatchResult",
           "SharpeningModel", "simulate_sharpening", "problems", "experiments", "sharpening"]

_LAZY = {
    "simulate": "sims.api",
    "simulate_batch": "sims.api",
    "SimulationResult": "sims.api",
    "BatchResult": "sims.api",
    "empirical_threshold": "sims.threshold",
    "SharpeningModel": "sims.sharpening",
    "simulate_sharpening": "sims.sharpening",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("problems", "experiments", "sharpening", "kernels", "updates", "reference"):
        return importlib.import_module(f"sims.{name}")
    raise AttributeError(f"module 'sims' has no attribute {name!r}")
