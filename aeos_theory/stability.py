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

For the registry's optimizers the engine is the reference, not the calculator: threshold values come
from the closed forms kept beside each update matrix (``OptimizerSpec.constant``, evaluated by
:mod:`aeos_theory.thresholds` without sympy), and the tests check each against
:func:`constant_expression`, the derivation here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import sympy as sp
from sympy.polys.polyerrors import BasePolynomialError

from aeos_theory.hyperparams import HYPERS
from aeos_theory.optimizers import LAMBDA, STEP_SYMBOLS, SYMBOLS, get_optimizer

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
    """chi(z) = det(z I - M) as a polynomial in ``z`` (the determinant written out: sympy's ``charpoly``
    fails on block-triangular matrices with irrational entries such as sqrt(2))."""
    if not isinstance(matrix, sp.MatrixBase) or matrix.rows != matrix.cols or matrix.rows == 0:
        raise ValueError("matrix must be a non-empty square sympy Matrix")
    return sp.Poly(sp.expand((z * sp.eye(matrix.rows) - matrix).det(method="berkowitz")), z)


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
        _, factors = sp.factor_list(_numerator(expr))
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


def _numerator(expr: sp.Expr) -> sp.Expr:
    """The numerator of ``expr`` over a common denominator: the same zeros in z and lambda when the
    denominators hold neither (an update divided by a step coefficient such as Adagrad's s_t > 0)."""
    return sp.expand(sp.fraction(sp.together(sp.expand(expr)))[0])


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
    step: int | bool | None = None,
    zero: Sequence[str] = (),
    lam: sp.Symbol = LAMBDA,
    ranges: Mapping[sp.Symbol, tuple[float, float]] | None = None,
) -> Boundary:
    """The binding stability boundary lambda* of an optimizer name or of any update matrix M(lambda).

    ``optimizer`` is a name from :data:`aeos_theory.OPTIMIZERS` or a square sympy Matrix in ``lam`` and
    any other symbols (the hyperparameters).  For a name, ``step`` picks the update: None the settled one
    (t -> infinity), an integer t the t-th update as torch applies it (its step coefficients written in
    the hyperparameter symbols), True the general t-th update in the coefficient symbols of
    :data:`aeos_theory.optimizers.STEP_SYMBOLS` (``k_t``, ``a_t``, ``u_t``, ``c1_t``, ``c2_t``); ``zero``
    names hyperparameters (not eta) set to 0 before the step coefficients are taken, since a zero can
    change them (heavy ball with beta = 0 takes GD's step: ``derive("heavy_ball", zero=["beta"])`` is
    2/eta).  ``ranges`` maps symbols of a user matrix to (low, high) sample ranges used to decide which
    branch binds; the package's hyperparameter names get their natural ranges.  Float entries are made
    exact rationals (0.1 -> 1/10).  Raises ValueError when an entry is not a polynomial in ``lam`` (a
    rational function such as 1/(1 + eta lambda)), when chi(z) has a factor free of lambda with a root
    |z| >= 1 (stable at no lambda), when no branch binds (stable for all lambda > 0, or not even as
    lambda -> 0) or when the binding branch changes inside the ranges.
    """
    if not isinstance(optimizer, str):
        if zero:
            raise ValueError("zero names hyperparameters of a named optimizer; set them in the matrix instead")
        return _derive_matrix(optimizer, lam, dict(ranges or {}))
    general = _derive_named(optimizer)
    spec = get_optimizer(optimizer)
    bad = [name for name in zero if name not in spec.hypers or name == "eta"]
    if bad:
        raise ValueError(f"zero must name hyperparameters of {optimizer!r} other than eta "
                         f"({', '.join(h for h in spec.hypers if h != 'eta')}); got {', '.join(map(repr, bad))}")
    if step is True and not zero:
        return general
    zeros = {SYMBOLS[name]: sp.Integer(0) for name in zero}
    symbols = {name: zeros.get(SYMBOLS[name], SYMBOLS[name]) for name in spec.hypers}
    values = {} if step is True else spec.step_coefficients(step, symbols)
    substituted = general.expression.subs({STEP_SYMBOLS[k]: v for k, v in values.items()}).subs(zeros)
    gone = set(zeros) | (set() if step is True else set(STEP_SYMBOLS.values()))
    return dataclasses.replace(general, expression=_tidy(substituted),
                               parameters=tuple(p for p in general.parameters if p not in gone))


@functools.lru_cache(maxsize=None)
def _derive_named(name: str) -> Boundary:
    """The boundary of the general t-th update of optimizer ``name``, in its step-coefficient symbols."""
    spec = get_optimizer(name)
    matrix = spec.matrix()
    hypers = [SYMBOLS[h] for h in spec.hypers if matrix.has(SYMBOLS[h])]
    steps = [STEP_SYMBOLS[k] for k in STEP_SYMBOLS if matrix.has(STEP_SYMBOLS[k])]
    return _derive_matrix(matrix, LAMBDA, {}, order=hypers + steps, points=_step_points(spec, hypers + steps))


def _step_points(spec, parameters: Sequence[sp.Symbol], seed: int = 0) -> list[list[float]]:
    """Sample (hyperparameters, step coefficients) where torch's own updates go: hyperparameters inside
    their ranges, the coefficients those of steps 1, 2, 10, 100, 1000 and the settled update (left out
    where it takes no step: Adagrad's lr decayed to 0 has the coefficient s_t = inf)."""
    rng = np.random.default_rng(seed)
    points = []
    for step in (1, 2, 10, 100, 1000, None, None):
        values = {"eta": float(np.exp(rng.uniform(np.log(1e-3), 0.0)))}
        for name in spec.hypers:
            if name != "eta":
                values[name] = float(rng.uniform(*_default_range(name, values)))
        values.update(spec.step_coefficients(step, values))
        point = [float(values[p.name] if p.name in values else values[_coefficient_name(p)]) for p in parameters]
        if all(math.isfinite(value) for value in point):
            points.append(point)
    return points


def _coefficient_name(symbol: sp.Symbol) -> str:
    return next(k for k, v in STEP_SYMBOLS.items() if v == symbol)


def _derive_matrix(matrix: sp.Matrix, lam: sp.Symbol, ranges: dict, order: list[sp.Symbol] | None = None,
                   points: list[list[float]] | None = None) -> Boundary:
    matrix = _exact_polynomial_matrix(matrix, lam)
    parameters = tuple(order) if order else tuple(sorted(matrix.free_symbols - {lam}, key=lambda s: s.name))
    points = points if points is not None else _sample_points(parameters, ranges)
    try:
        chi = characteristic_polynomial(matrix)
        _refuse_fixed_unstable_roots(chi, lam, parameters, points)
        candidates = boundary_candidates(chi, lam)
    except BasePolynomialError as err:
        raise ValueError(f"sympy cannot factor the characteristic polynomial of this update matrix "
                         f"({type(err).__name__}): write its entries as polynomials in {lam} with rational "
                         f"coefficients (an irrational constant such as sqrt(2) as a symbol of its own)") from None
    matrix_fn = sp.lambdify((lam, *parameters), matrix, modules="numpy")
    branch_fns = [sp.lambdify(parameters, expr, modules="cmath") for _, expr in candidates]
    chosen = {_binding_index(matrix_fn, branch_fns, point) for point in points}
    if chosen == {None}:
        if _spectral_radius(matrix_fn, 1e-6, points[0]) >= 1:
            raise ValueError(f"no boundary binds: the recurrence is not stable even as {lam} -> 0 (spectral radius "
                             f">= 1 at {lam} = 1e-6), so it has no first loss of stability")
        raise ValueError("the recurrence is stable for every lambda > 0 at the sampled hyperparameters")
    if len(chosen) != 1:
        branches = ", ".join(f"{candidates[i][1]} ({candidates[i][0]})" for i in sorted(chosen - {None}))
        raise ValueError(f"the binding boundary depends on the hyperparameters; branches: {branches}")
    kind, expr = candidates[chosen.pop()]
    return Boundary(_tidy(expr), kind, chi.as_expr(), tuple(candidates), parameters)


def _exact_polynomial_matrix(matrix: sp.Matrix, lam: sp.Symbol) -> sp.Matrix:
    """``matrix`` checked (square, non-empty, entries polynomial in ``lam``) with Float entries made exact
    rationals (0.1 -> 1/10: sympy's resultants and factorisations need exact coefficients)."""
    if not isinstance(matrix, sp.MatrixBase):
        raise ValueError(f"optimizer must be an optimizer name or a sympy Matrix, got {type(matrix).__name__}")
    if matrix.rows != matrix.cols or matrix.rows == 0:
        raise ValueError(f"the update matrix must be square and non-empty, got shape {matrix.shape}")
    if matrix.has(sp.Float):
        matrix = matrix.applyfunc(lambda entry: sp.nsimplify(entry, rational=True))
    if not matrix.has(lam):
        raise ValueError(f"the update matrix does not depend on the curvature symbol {lam}")
    for index, entry in enumerate(matrix):
        if not entry.is_polynomial(lam):
            row, col = divmod(index, matrix.cols)
            raise ValueError(f"the update matrix's entries must be polynomials in {lam}; entry [{row}, {col}] is "
                             f"{entry} (multiply the recurrence through by its denominators, or linearise it)")
    return matrix


def _refuse_fixed_unstable_roots(chi: sp.Poly, lam: sp.Symbol, parameters: Sequence[sp.Symbol],
                                 points: Sequence[Sequence[float]]) -> None:
    """ValueError when chi(z) has a factor free of lambda with a root |z| >= 1 at a sample point: such a
    root never moves, so the recurrence is stable at no lambda (e.g. M = diag(1/2 - lambda/3, 1): z = 1)."""
    z = chi.gen
    _, factors = sp.factor_list(_numerator(chi.as_expr()))
    for factor, _ in factors:
        if not factor.has(z) or factor.has(lam):
            continue
        coefficients = sp.lambdify(parameters, sp.Poly(factor, z).all_coeffs(), modules="math")
        for point in points:
            roots = np.roots(np.array(coefficients(*point), dtype=complex))
            if roots.size == 0 or np.max(np.abs(roots)) < 1 - 1e-12:
                continue
            root = complex(roots[np.argmax(np.abs(roots))])
            shown = f"{root.real:.6g}" if abs(root.imag) <= 1e-12 else f"{root:.6g}"
            where = ", ".join(f"{p.name} = {v:.4g}" for p, v in zip(parameters, point))
            raise ValueError(f"chi(z) has the factor {factor}, independent of {lam}, with the root z = {shown} of "
                             f"modulus >= 1{f' at {where}' if where else ''}: the recurrence is stable at no "
                             f"{lam} > 0 (remove that mode to get the boundary of the others)")


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Simplify, write an expression affine in weight_decay as (factored part) + c * weight_decay, and
    each part with positive factors, as the paper writes them: 2*(beta1 + 1)/(eta*(1 - beta1))."""
    expr = sp.simplify(expr)
    if expr.is_Number:  # a plain number compares equal to itself: 3/2, not 3 * 2^-1 unevaluated
        return expr
    wd = SYMBOLS["weight_decay"]
    numerator, denominator = sp.fraction(sp.cancel(sp.together(expr)))
    if not expr.has(wd) or denominator.has(wd):
        return _positive(expr)
    coefficients = sp.Poly(numerator, wd).all_coeffs()[::-1]
    return sp.Add(*(_positive(sp.factor(c / denominator)) * wd**k for k, c in enumerate(coefficients)))


def _positive(expr: sp.Expr) -> sp.Expr:
    """The same value with each sum factor written with a positive constant term (beta1 - 1 -> 1 - beta1),
    numeric contents pulled out (2*beta1 + 2 -> 2*(beta1 + 1)) and the sign moved in front; the product
    is left unevaluated so sympy keeps that shape when printing."""
    numerator, denominator = sp.fraction(sp.factor(expr))
    sign, factors = 1, []
    for part, power in ((numerator, 1), (denominator, -1)):
        for factor in sp.Mul.make_args(part):
            base, exponent = factor.as_base_exp()
            if base.is_Add and exponent.is_integer:
                content, base = base.primitive()
                if base.as_coeff_Add()[0].is_negative:
                    base, sign = -base, sign * (-1) ** int(exponent)
                if content != 1:
                    factors.append(sp.Pow(content, power * exponent, evaluate=False) if power < 0 else content)
            elif factor.is_Number:
                if factor.is_negative:
                    base, sign = -factor, -sign
            if base != 1:
                factors.append(sp.Pow(base, power * exponent, evaluate=False) if power * exponent != 1 else base)
    value = sp.Mul(*factors, evaluate=False) if len(factors) > 1 else (factors[0] if factors else sp.Integer(1))
    return value if sign == 1 else sp.Mul(-1, value, evaluate=False)


def derive(optimizer: str | sp.Matrix, **kwargs) -> sp.Expr:
    """lambda*: the exact threshold on the (preconditioned) eigenvalue, as a sympy expression.

    Keywords as :func:`derive_boundary` (``step=None`` settled, ``step=t`` the t-th update, ``step=True``
    in the step-coefficient symbols).

    >>> derive("adam")
    2*(beta1 + 1)/(eta*(1 - beta1))
    >>> derive("adam", step=True)
    2*(beta1 + 1)/(eta*k_t*(1 - beta1))
    """
    return derive_boundary(optimizer, **kwargs).expression


@functools.lru_cache(maxsize=None)
def constant_expression(name: str) -> sp.Expr:
    """eta * lambda* of the general t-th update of optimizer ``name``, derived and simplified, in the
    hyperparameter and step-coefficient symbols (eta cancels but in AdamW's eta wd): the expression the
    registry's closed form ``OPTIMIZERS[name].constant`` must equal.

    >>> constant_expression("heavy_ball")
    2*(a_t + 1)/u_t
    """
    return sp.simplify(SYMBOLS["eta"] * _derive_named(name).expression)
