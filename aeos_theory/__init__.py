"""Exact stability thresholds of optimizers at the edge of stability, derived with sympy.

>>> from aeos_theory import threshold
>>> threshold(0.9, 1e-3)   # Adam, beta1 = 0.9: (2 + 2 beta1) / ((1 - beta1) eta) = 38 / eta
38000.0
"""

from aeos_theory.hyperparams import HYPERS, Hyper, validate
from aeos_theory.optimizers import LAMBDA, OPTIMIZERS, SYMBOLS, OptimizerSpec, get_optimizer
from aeos_theory.stability import (
    Boundary,
    derive,
    derive_boundary,
    stability_threshold,
    threshold,
    threshold_at_step,
)

__all__ = [
    "HYPERS", "Hyper", "validate", "LAMBDA", "OPTIMIZERS", "SYMBOLS", "OptimizerSpec", "get_optimizer",
    "Boundary", "derive", "derive_boundary", "stability_threshold", "threshold", "threshold_at_step",
]
