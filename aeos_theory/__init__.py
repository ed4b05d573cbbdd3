"""Exact stability thresholds of optimizers at the edge of stability, derived with sympy.

The foundation of the package (Cohen et al., *Adaptive Gradient Methods at the Edge of Stability*,
arXiv 2207.14484): with its preconditioner P frozen, an optimizer on one eigen-direction of a quadratic
is a linear recurrence, stable only while the (preconditioned) curvature lambda stays below a threshold
lambda*.  This package derives lambda* exactly from each optimizer's update matrix.

Main entry points:

* :func:`threshold` (Adam: (2 + 2 beta1) / ((1 - beta1) eta)) and :func:`stability_threshold` (any
  optimizer of the registry, any hyperparameters, settled or at any step t of a run);
  :func:`threshold_constant`, the dimensionless eta * lambda* (38, 2, ...);
  these evaluate the registry's closed forms (:mod:`aeos_theory.thresholds`) and import no sympy;
* :func:`derive` / :func:`derive_boundary`: the sympy expression, for the built-in optimizers or any
  user-supplied update matrix (:mod:`aeos_theory.stability`, the boundary engine, imported with sympy
  on first use);
* :data:`OPTIMIZERS` (:mod:`aeos_theory.optimizers`): the single registry of optimizer facts that
  ``sims``, ``deep`` and ``paper_figures`` read, and :func:`identify`, which names the package
  optimizer a ``torch.optim`` param group runs; :data:`HYPERS` and :func:`validate`: hyperparameter
  names, ranges and checks;
* :mod:`aeos_theory.central_flow`: the stable and central flows of GD, RMSProp, Adam, AdamW and NAdam,
  with weight decay, momentum and learning-rate schedules (the ODE of the time-averaged trajectory at the
  edge), over any problem ``sims`` or ``deep`` supplies, with its two numerical pieces, the complementarity solve (:mod:`aeos_theory.complementarity`) and a damped
  Chebyshev step (:mod:`aeos_theory.chebyshev`);
* :mod:`aeos_theory.mean_square` and :mod:`aeos_theory.minibatch`: mean-square stability of minibatch
  optimizers (batches drawn without replacement), closed forms in one direction and the second-moment map
  in any dimension;
* ``aeos threshold`` on the command line (:mod:`aeos_theory.cli`).

It holds theory only: what every layer shares besides (argument checks, atomic files, the command-line
contract) is :mod:`aeos_base`, below it.  It imports neither torch nor numba (the flows take torch
tensors from ``deep`` without importing torch: they only add and multiply them), and ``import
aeos_theory`` imports no sympy.

>>> from aeos_theory import threshold
>>> threshold(0.9, 1e-3)   # Adam, beta1 = 0.9: (2 + 2 beta1) / ((1 - beta1) eta) = 38 / eta
38000.00000000001
"""

from __future__ import annotations

import importlib
from typing import Any

from aeos_theory.hyperparams import HYPERS, Hyper
from aeos_theory.optimizers import OPTIMIZERS, OptimizerSpec, get_optimizer, identify, validate
from aeos_theory.thresholds import stability_threshold, threshold, threshold_constant

#: Names that need sympy, imported on first use (so ``import aeos_theory`` and every threshold value do not).
_LAZY = {"LAMBDA": "aeos_theory.optimizers", "STEP_SYMBOLS": "aeos_theory.optimizers",
         "SYMBOLS": "aeos_theory.optimizers", "Boundary": "aeos_theory.stability",
         "derive": "aeos_theory.stability", "derive_boundary": "aeos_theory.stability"}

__all__ = [
    "HYPERS", "Hyper", "validate", "LAMBDA", "OPTIMIZERS", "STEP_SYMBOLS", "SYMBOLS", "OptimizerSpec",
    "get_optimizer", "identify", "Boundary", "derive", "derive_boundary", "stability_threshold", "threshold",
    "threshold_constant",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aeos_theory' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))
