"""Empirical stability threshold: bisection on the curvature lambda with the preconditioner frozen.

On L(x) = 1/2 lambda x^2 with P = 1 the optimizer is a linear recurrence; the iterates diverge iff its
spectral radius exceeds 1.  :func:`empirical_threshold` finds the smallest diverging lambda by running
the recurrence (the same numba update as every simulation) and bisecting.  This is the experimental
check of :func:`aeos_theory.stability_threshold`, which it never calls.
"""

from __future__ import annotations

import numpy as np

from aeos_base import checks
from aeos_theory.optimizers import validate
from sims.api import curvature_shift, kernel_code
from sims.updates import CODES, HP_NAMES, pack_hyper


def empirical_threshold(optimizer: str, eta: float | np.ndarray, *, rtol: float = 1e-7,
                        **hyper: float | np.ndarray) -> float | np.ndarray:
    """Smallest curvature lambda at which ``optimizer`` with frozen P = 1 diverges, on L = 1/2 h x^2.

    lambda is the curvature of the objective the optimizer descends, h + wd for coupled weight decay (the
    bisection runs on h; the optimizer adds wd x to the gradient itself) and h otherwise, the same
    quantity :func:`aeos_theory.stability_threshold` bounds; e.g. Adam at beta1 = 0.9 gives 38 / eta.
    Divergence test: starting from x = 1 with zero buffers, run T = 2 max(200,
    ceil(50 / (1 - beta))) steps (beta the largest momentum coefficient, so every subdominant root has
    decayed by e^-50) and call the run divergent iff |s_T| > |s_{T/2}| for the state s = (x, buffer),
    or it grew by 1e20 first (a state below 1e-100 counts as stable).  Bisection stops at relative width ``rtol`` and returns the midpoint.

    ``eta`` and any hyperparameter may be arrays (broadcast together); then an array of thresholds
    is returned, computed in parallel (numba prange).
    """
    from sims.kernels import threshold_bisection, threshold_bisection_serial

    rtol = checks.real("rtol", rtol, low=1e-15, high=0.1)
    if "eta" in hyper:
        raise ValueError("eta is passed positionally, not as a keyword hyperparameter")
    if optimizer not in CODES:
        validate(optimizer, {})  # raises the package's unknown-optimizer error
    kernel_code(optimizer)  # refuses an optimizer without a kernel
    try:
        arrays = np.broadcast_arrays(np.asarray(eta, dtype=np.float64),
                                     *(np.asarray(v, dtype=np.float64) for v in hyper.values()))
    except ValueError:
        raise ValueError("eta and the hyperparameters must broadcast to a common shape") from None
    except TypeError:
        raise ValueError("eta and the hyperparameters must be real numbers or arrays of them") from None
    shape = arrays[0].shape
    names = ["eta", *hyper]
    flat = [a.reshape(-1) for a in arrays]
    n = flat[0].size
    etas = np.empty(n)
    hp = np.empty((n, len(HP_NAMES) + 2))
    shifts = np.empty(n)
    for i in range(n):
        values = validate(optimizer, {name: float(col[i]) for name, col in zip(names, flat)})
        etas[i] = values["eta"]
        hp[i] = pack_hyper(values)
        shifts[i] = curvature_shift(optimizer, values)
    out = np.empty(n)
    (threshold_bisection if n >= 8 else threshold_bisection_serial)(CODES[optimizer], etas, hp, rtol, out)
    out += shifts
    return float(out[0]) if shape == () else out.reshape(shape)
