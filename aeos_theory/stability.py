"""The boundary engine: exact stability thresholds of linear update maps, derived with sympy.

A frozen-preconditioner optimizer on one eigen-direction is a linear recurrence s_{t+1} = M(lambda) s_t.
It is stable iff every root z of the characteristic polynomial chi(z) = det(z I - M(lambda)) has |z| < 1.
As lambda grows from 0 the roots leave the unit disk in one of three ways:

* a real root through z = +1:  chi(+1) = 0,
* a real root through z = -1:  chi(-1) = 0  (period-2 oscillation; GD, momentum, Adam),
* a complex pair through |z| = 1, z = exp(+-i theta).

All three are zeros of the Schur-Cohn resultant R(lambda) = Res_z(chi(z), z^n chi(1/z)), which vanishes
exactly when chi has two roots with z1 z2 = 1 (so also when a root sits on the unit circle, where
1/z = conj(z)).  The engine factors R, solves each factor for lambda, and labels each branch by the
crossing it describes.  Which branch *binds* (the first loss of stability as lambda grows from 0) is
decided, not assumed: at sample hyperparameters the candidate roots are ordered and the first one at
which the spectral radius of M goes from below 1 to above 1 is taken; the branch must bind at every
sample, otherwise the boundary is reported as hyperparameter-dependent.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import sympy as sp

from aeos_theory import checks
from aeos_theory.hyperparams import HYPERS
from aeos_theory.optimizers import LAMBDA, SYMBOLS, get_optimizer, validate

Z = sp.Symbol("z")

#: Crossing labels.
PLUS_ONE, MINUS_ONE, COMPLEX_PAIR = "z = +1", "z = -1", "complex pair |z| = 1"


@dataclass(frozen=True)
class Boundary:
    """The binding stability boundary of a linear recurrence.

    ``expression`` is lambda* as a simplified sympy expression in the hyperparameter symbols, ``kind``
    says how the roots leave the unit disk there, ``charpoly`` is chi(z), and ``candidates`` lists every
    (kind, lambda-branch) the Schur-Cohn resultant produced.
    """

    expression: sp.Expr
    kind: str
    charpoly: sp.Expr
    candidates: tuple[tuple[str, sp.Expr], ...]
    parameters: tuple[sp.Symbol, ...]


def characteristic_polynomial(matrix: sp.Matrix, z: sp.Symbol = Z) -> sp.Poly:
    """chi(z) = det(z I - M) as a polynomial in ``z``."""
    if not isinstance(matrix, sp.MatrixBase) or matrix.rows != matrix.cols or matrix.rows == 0:
        raise ValueError("matrix must be a non-empty square sympy Matrix")
    return sp.Poly(matrix.charpoly(z).as_expr(), z)


def boundary_candidates(chi: sp.Poly, lam: sp.Symbol = LAMBDA) -> list[tuple[str, sp.Expr]]:
    """Every lambda at which a root of ``chi`` can reach the unit circle, labelled by its crossing.

    Zeros of chi(+1), chi(-1) and of the remaining factors of Res_z(chi(z), z^n chi(1/z)).
    """
    z = chi.gen
    n = chi.degree()
    at_plus = sp.expand(chi.as_expr().subs(z, 1))
    at_minus = sp.expand(chi.as_expr().subs(z, -1))
    reverse = sp.expand(z**n * chi.as_expr().subs(z, 1 / z))
    resultant = sp.resultant(chi.as_expr(), reverse, z) if n > 1 else sp.Integer(1)

    def lam_factors(expr: sp.Expr) -> list[sp.Expr]:
        if expr == 0:
            return []
        _, factors = sp.factor_list(sp.expand(expr))
        return [f for f, _ in factors if f.has(lam)]

    edge_factors = [sp.expand(f) for f in lam_factors(at_plus) + lam_factors(at_minus)]
    complex_factors = [
        f for f in lam_factors(resultant)
        if not any(sp.expand(f - e) == 0 or sp.expand(f + e) == 0 for e in edge_factors)
    ]
    candidates: list[tuple[str, sp.Expr]] = []
    for kind, factors in ((PLUS_ONE, lam_factors(at_plus)), (MINUS_ONE, lam_factors(at_minus)),
                          (COMPLEX_PAIR, complex_factors)):
        for factor in factors:
            for root in sp.solve(factor, lam):
                candidates.append((kind, root))
    return candidates


def _spectral_radius(matrix_fn: Callable[..., np.ndarray], lam: float, values: Sequence[float]) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(matrix_fn(lam, *values), dtype=complex)))))


def _binding_index(matrix_fn, branch_fns, values: Sequence[float]) -> int | None:
    """Index of the branch that binds at these numeric hyperparameters (None: stable for all lambda)."""
    points = []
    for index, branch in enumerate(branch_fns):
        with np.errstate(all="ignore"):
            try:
                value = complex(branch(*values))
            except (ZeroDivisionError, OverflowError, ValueError):
                continue
        if abs(value.imag) <= 1e-12 * max(1.0, abs(value.real)) and value.real > 0 and math.isfinite(value.real):
            points.append((value.real, index))
    for lam_star, index in sorted(points):
        below = _spectral_radius(matrix_fn, lam_star * (1 - 1e-6), values)
        above = _spectral_radius(matrix_fn, lam_star * (1 + 1e-6), values)
        inside = all(_spectral_radius(matrix_fn, lam_star * f, values) < 1 for f in (0.25, 0.5, 0.75))
        if below < 1 < above and inside:
            return index
    return None


def _sample_points(parameters: Sequence[sp.Symbol], ranges: Mapping[sp.Symbol, tuple[float, float]],
                   count: int = 6, seed: int = 0) -> list[list[float]]:
    """Deterministic sample hyperparameters inside their ranges (eta log-uniform)."""
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(count):
        values: dict[str, float] = {}
        point = []
        for symbol in parameters:
            low, high = ranges.get(symbol, _default_range(symbol.name, values))
            if symbol.name == "eta":
                value = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            else:
                value = float(rng.uniform(low, high))
            values[symbol.name] = value
            point.append(value)
        points.append(point)
    return points


def _default_range(name: str, earlier: Mapping[str, float]) -> tuple[float, float]:
    if name == "eta":
        return (1e-3, 1.0)
    if name == "weight_decay":
        return (0.0, 0.9 / earlier.get("eta", 1.0))
    if name in HYPERS and math.isinf(HYPERS[name].high):
        return (0.0, 1.0)
    return (0.0, 0.95)


def derive_boundary(
    optimizer: str | sp.Matrix,
    *,
    lam: sp.Symbol = LAMBDA,
    ranges: Mapping[sp.Symbol, tuple[float, float]] | None = None,
) -> Boundary:
    """The binding stability boundary lambda* of an optimizer name or of any update matrix M(lambda).

    ``optimizer`` is a name from :data:`aeos_theory.OPTIMIZERS` or a square sympy Matrix in ``lam`` and
    any other symbols (the hyperparameters).  ``ranges`` maps symbols to (low, high) sample ranges used to
    decide which branch binds; the package's hyperparameter names get their natural ranges.  Raises
    ValueError when no branch binds (stable for all lambda > 0) or the binding branch changes inside the
    ranges.
    """
    if isinstance(optimizer, str):
        return _derive_named(optimizer)
    return _derive_matrix(optimizer, lam, dict(ranges or {}))


@functools.lru_cache(maxsize=None)
def _derive_named(name: str) -> Boundary:
    spec = get_optimizer(name)
    ranges = {SYMBOLS["weight_decay"]: (0.0, 0.5)} if "weight_decay" in spec.hypers else {}
    return _derive_matrix(spec.matrix(), LAMBDA, ranges, order=[SYMBOLS[h] for h in spec.hypers])


def _derive_matrix(matrix: sp.Matrix, lam: sp.Symbol, ranges: dict, order: list[sp.Symbol] | None = None) -> Boundary:
    if not isinstance(matrix, sp.MatrixBase):
        raise ValueError(f"optimizer must be an optimizer name or a sympy Matrix, got {type(matrix).__name__}")
    if not matrix.has(lam):
        raise ValueError(f"the update matrix does not depend on the curvature symbol {lam}")
    parameters = tuple(order) if order else tuple(sorted(matrix.free_symbols - {lam}, key=lambda s: s.name))
    chi = characteristic_polynomial(matrix)
    candidates = boundary_candidates(chi, lam)
    matrix_fn = sp.lambdify((lam, *parameters), matrix, modules="numpy")
    branch_fns = [sp.lambdify(parameters, expr, modules="cmath") for _, expr in candidates]
    chosen = {_binding_index(matrix_fn, branch_fns, point) for point in _sample_points(parameters, ranges)}
    if chosen == {None}:
        raise ValueError("the recurrence is stable for every lambda > 0 at the sampled hyperparameters")
    if len(chosen) != 1:
        branches = ", ".join(f"{candidates[i][1]} ({candidates[i][0]})" for i in sorted(chosen - {None}))
        raise ValueError(f"the binding boundary depends on the hyperparameters; branches: {branches}")
    kind, expr = candidates[chosen.pop()]
    return Boundary(_tidy(expr), kind, chi.as_expr(), tuple(candidates), parameters)


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Simplify, then write an expression affine in weight_decay as (factored part) - c * weight_decay."""
    expr = sp.simplify(expr)
    wd = SYMBOLS["weight_decay"]
    numerator, denominator = sp.fraction(sp.cancel(sp.together(expr)))
    if not expr.has(wd) or denominator.has(wd):
        return expr
    coefficients = sp.Poly(numerator, wd).all_coeffs()[::-1]
    return sp.Add(*(sp.factor(c / denominator) * wd**k for k, c in enumerate(coefficients)))


def derive(optimizer: str | sp.Matrix, **kwargs) -> sp.Expr:
    """lambda*: the exact threshold on the (preconditioned) eigenvalue, as a sympy expression.

    >>> derive("adam")       # doctest: +SKIP
    2*(beta1 + 1)/(eta*(1 - beta1)) - weight_decay
    """
    return derive_boundary(optimizer, **kwargs).expression


@functools.lru_cache(maxsize=None)
def _threshold_function(name: str) -> Callable[..., float]:
    spec = get_optimizer(name)
    boundary = _derive_named(name)
    return sp.lambdify(boundary.parameters, boundary.expression, modules="math"), spec.hypers


def stability_threshold(optimizer: str, **hyper: float) -> float:
    """Largest stable (preconditioned) eigenvalue lambda* of ``optimizer`` with frozen P, in 1/units of x^2.

    GD 2/eta; heavy ball (2 + 2 beta)/((1 - dampening) eta); Nesterov (2 + 2 beta)/((1 + 2 beta) eta);
    Adam (2 + 2 beta1)/((1 - beta1) eta); NAdam (2 + 2 beta1)/((1 - beta1)(1 + 2 beta1) eta); coupled
    weight decay subtracts weight_decay; AdamW (1 + beta1)(2 - eta wd)/((1 - beta1) eta).  Evaluates the
    cached derivation of :func:`derive` (microseconds after the first call per optimizer).
    """
    values = validate(optimizer, hyper)
    function, names = _threshold_function(optimizer)
    return float(function(*(values[name] for name in names)))


def threshold(beta1: float, eta: float) -> float:
    """Adam's threshold (2 + 2 beta1) / ((1 - beta1) eta) on S_P = lambda_max(P^-1 H): 38/eta at beta1 = 0.9."""
    return stability_threshold("adam", beta1=beta1, eta=eta)


def threshold_at_step(t: int, beta1: float, eta: float, weight_decay: float = 0.0) -> float:
    """Adam's quasi-static threshold at step t with bias correction: (2 + 2 beta1)(1 - beta1^t)/((1 - beta1) eta) - wd.

    At step t Adam applies eta_t = eta / (1 - beta1^t) to the raw EMA m_t, so the frozen threshold at
    that effective step size applies (coupled L2 ``weight_decay`` still subtracts wd); it tends to
    :func:`threshold` as t grows.  Only (beta1, eta, weight_decay) are validated: eta_t itself may
    exceed the range a configured eta must satisfy (eta_t * wd >= 1 early in a run is fine).
    """
    t = checks.integer("t", t, low=1)
    values = validate("adam", {"beta1": beta1, "eta": eta, "weight_decay": weight_decay})
    function, names = _threshold_function("adam")
    values["eta"] = values["eta"] / (1.0 - values["beta1"] ** int(t))
    return float(function(*(values[name] for name in names)))
