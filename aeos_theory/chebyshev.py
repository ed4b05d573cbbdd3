"""A damped Runge-Kutta-Chebyshev step for stiff flows whose Jacobian has a real, negative spectrum.

A flow dw/dt = f(w) = -eta P^-1 grad L(w) (+ a force constant over the step) has the Jacobian -eta P^-1 H,
whose eigenvalues are real (P^-1 H is similar to the symmetric P^-1/2 H P^-1/2) and reach -kappa_max
= -eta S_P: 2 per step for gradient descent at its edge, 38 for Adam's threshold.  Forward Euler needs a
step h < 2 / kappa_max (Adam: 1/19 of an optimizer step).  An s-stage Chebyshev method (van der
Houwen and Sommeijer 1980; Verwer, Hundsdorfer and Sommeijer 1990) is stable for h kappa_max up to
beta(s) ~ 2 s^2 tanh(a) / a (a = sqrt(2 damping), large s): the stability interval grows as s^2 for s
evaluations of f, so one optimizer step of Adam's flow costs about 7 gradients instead of 40.

The first-order scheme, with w0 = 1 + damping / s^2, w1 = T_s(w0) / T_s'(w0) (T_j the Chebyshev
polynomials) and b_j = 1 / T_j(w0):

    Y_0 = y,   Y_1 = y + (w1 / w0) h f(Y_0),
    Y_j = 2 w0 (b_j / b_{j-1}) Y_{j-1} - (b_j / b_{j-2}) Y_{j-2} + 2 w1 (b_j / b_{j-1}) h f(Y_{j-1}),

returns Y_s.  Its stability polynomial R(z) = T_s(w0 + w1 z) / T_s(w0) equals 1 + z + O(z^2); it
falls from 1 to 1 / T_s(w0) on [-(w0 - 1) / w1, 0] and stays within +-1 / T_s(w0) on the stiff part
down to beta(s) = (1 + w0) / w1: with the damping of 2 used here, stiff components shrink by a factor
of about 4 or more every step, so a flow's fast directions settle instead of ringing.  scipy's integrators are explicit (RK45: stable only for h < ~3 / kappa_max) or
implicit (their Jacobians cost n products here), hence this small routine (cost and accuracy against
``scipy.integrate.solve_ivp``: ``benchmarks/central_flow.py``).

Vectors are anything with ``+``, ``-`` and scalar ``*`` (numpy arrays, torch tensors).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, TypeVar

from aeos_base import checks

Vector = TypeVar("Vector")

#: The damping of the scheme (its stability interval shrinks, its damping of stiff components grows).
DAMPING = 2.0


@functools.lru_cache(maxsize=None)
def coefficients(stages: int, damping: float = DAMPING) -> tuple[float, float, tuple[float, ...]]:
    """(w0, w1, (b_0..b_s)) of the s-stage scheme (see the module docstring)."""
    stages = checks.integer("stages", stages, low=1)
    w0 = 1.0 + damping / stages ** 2
    t = [1.0, w0]  # T_j(w0)
    dt = [0.0, 1.0]  # T_j'(w0)
    for _ in range(2, stages + 1):
        t.append(2 * w0 * t[-1] - t[-2])
        dt.append(2 * t[-2] + 2 * w0 * dt[-1] - dt[-2])
    w1 = t[stages] / dt[stages]
    return w0, w1, tuple(1.0 / v for v in t)


def stability_bound(stages: int, damping: float = DAMPING) -> float:
    """beta(s) = (1 + w0) / w1: for h kappa in [0, beta(s)] the s-stage step is stable, and damps every
    component with h kappa >= (w0 - 1) / w1 by at least 1 / T_s(w0) (between 2 w0 / w1 and beta(s) the
    damping fades, at 2 w0 / w1 it is gone: this is the usable interval)."""
    w0, w1, _ = coefficients(stages, damping)
    return (1.0 + w0) / w1


def stages_for(stiffness: float, *, damping: float = DAMPING, safety: float = 1.2, most: int = 200) -> int:
    """The fewest stages s with beta(s) >= safety * ``stiffness`` (= h kappa_max, >= 0)."""
    stiffness = checks.real("stiffness", stiffness, low=0.0)
    for s in range(1, most + 1):
        if stability_bound(s, damping) >= safety * stiffness:
            return s
    raise ValueError(f"stiffness must be at most {stability_bound(most, damping) / safety:.4g} "
                     f"(h kappa_max for {most} stages); got {stiffness:g}")


def chebyshev_step(y: Vector, f: Callable[[Vector], Vector], h: float, stages: int, *,
                   f0: Vector | None = None, damping: float = DAMPING) -> Vector:
    """One step of size ``h`` of dy/dt = f(y) by the s-stage damped Chebyshev scheme; ``f0`` = f(y) if
    known (saves one evaluation).  ``stages`` evaluations of f in all (``stages - 1`` given ``f0``)."""
    w0, w1, b = coefficients(stages, damping)
    f_prev = f(y) if f0 is None else f0
    y_prev2, y_prev = y, y + (w1 / w0) * h * f_prev
    for j in range(2, stages + 1):
        mu, nu, mu_h = 2 * w0 * b[j] / b[j - 1], -b[j] / b[j - 2], 2 * w1 * b[j] / b[j - 1] * h
        y_next = mu * y_prev + nu * y_prev2 + mu_h * f(y_prev)
        y_prev2, y_prev = y_prev, y_next
    return y_prev


def damping_factor(stages: int, damping: float = DAMPING) -> float:
    """1 / T_s(w0): the largest |R(z)| on the stability interval (how much a stiff component keeps)."""
    _, _, b = coefficients(stages, damping)
    return b[stages] if math.isfinite(b[stages]) else 0.0
