"""Optimizer simulations on quadratic models, with numba kernels that use exactly torch.optim's arithmetic.

What it is for: checking the thresholds of :mod:`aeos_theory` by running the optimizers themselves,
fast, and reproducing the Adaptive Edge of Stability where everything is known in closed form.

Main entry points:

* :func:`simulate`: one run on L = 1/2 x^T H x (diagonal or dense H) with loss, S and S_P recorded
  every k steps, adaptive or with the preconditioner P frozen;
* :func:`simulate_batch`: many diagonal quadratics in parallel (the hot path);
* :func:`empirical_threshold`: bisection on lambda with frozen P, the experimental check of the theory;
* :mod:`sims.problems` (quadratics) and :mod:`sims.sharpening` (:class:`SharpeningModel`, a model whose
  descent direction raises the curvature, and :func:`simulate_sharpening`);
* :func:`central_flow` (:mod:`sims.flows`): the stable and central flows of GD, RMSProp, Adam, AdamW and NAdam on the
  same models (:mod:`aeos_theory.central_flow`), the time-averaged trajectory the runs oscillate around;
* :mod:`sims.minibatch`: many minibatch runs on quadratics with per-example Hessians and the measured
  mean-square stability boundary (:mod:`sims.minibatch_experiments`: the agreement with the theory);
* :mod:`sims.experiments`: the paper's simulation experiments as functions returning data (the figures
  call them); :mod:`sims.summary`: late-time medians of recorded series;
* ``aeos simulate`` and ``aeos bisect`` on the command line (:mod:`sims.cli`).

Inside: :mod:`sims.updates` (one step of every optimizer), :mod:`sims.kernels` (batching, recording,
divergence), :mod:`sims.reference` (a plain-numpy twin used by the tests).  numba compiles on first
use and caches the machine code on disk (:mod:`sims.jit_cache`: in ``sims/__pycache__/numba-<key>``,
the key a SHA-256 of all of sims' sources and numba's version, so an edit of any file, say a helper in
``updates.py`` that the kernels inline, recompiles rather than reusing stale code; ``NUMBA_CACHE_DIR``,
if set, is the parent; ``~/.cache/aeos`` if the package folder is read-only); importing ``sims`` itself
is light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["simulate", "simulate_batch", "empirical_threshold", "SimulationResult", "BatchResult",
           "SharpeningModel", "simulate_sharpening", "central_flow", "problems", "experiments", "sharpening",
           "summary", "flows"]

_LAZY = {
    "simulate": "sims.api",
    "simulate_batch": "sims.api",
    "SimulationResult": "sims.api",
    "BatchResult": "sims.api",
    "empirical_threshold": "sims.threshold",
    "SharpeningModel": "sims.sharpening",
    "simulate_sharpening": "sims.sharpening",
    "central_flow": "sims.flows",
}
_SUBMODULES = ("problems", "experiments", "sharpening", "summary", "kernels", "updates", "reference", "cli", "flows",
               "minibatch", "minibatch_experiments", "jit_cache")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"sims.{name}")
    raise AttributeError(f"module 'sims' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
