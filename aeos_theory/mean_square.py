"""Mean-square stability of minibatch optimizers in one direction: closed forms, derived with sympy.

**Model.**  n examples with per-example losses l_i(x) = 1/2 h_i x^2 along one direction (the direction is
shared by all per-example Hessians: one coordinate of commuting, e.g. diagonal, H_i; after the change of
variables x -> P^1/2 x, h_i is a curvature of P^-1/2 H_i P^-1/2, so P = I).  Each step draws a batch B of
b examples uniformly without replacement, independently across steps, and descends the batch loss, whose
curvature is h_B = (1/b) sum_{i in B} h_i.  With P frozen, the optimizer's step on its state
s = (x, buffer) is s' = M(h_B) s, with M(lambda) the settled update matrix of the registry
(:mod:`aeos_theory.optimizers`; Adam's is the EMA m <- beta1 m + (1 - beta1) g, x <- x - eta m without
bias correction), affine in lambda.

**Second moments.**  As B is independent of s, E[s' s'^T] = E[M(h_B) E[s s^T] M(h_B)^T]: the second
moments evolve linearly and exactly, by a map A whose entries depend on the batch curvature only through

    E[h_B] = mu (the full-batch curvature)   and   E[h_B^2] = mu^2 (1 + nu),

    nu = Var(h_B) / mu^2 = c(b, n) var(h) / mu^2,   c(b, n) = (n - b) / (b (n - 1)),

var(h) = (1/n) sum (h_i - mu)^2 (:func:`batch_noise` gives c).  nu,
the squared coefficient of variation of the batch curvature, is the one number batch size enters by:
nu = 0 at b = n (full batch), nu = var(h)/mu^2 at b = 1.  The map A preserves positive semi-definite
matrices, so (Krein-Rutman) its spectral radius is itself an eigenvalue: mean-square stability,
E|s_t|^2 -> 0, is lost exactly where det(I - A) = 0 first has a root kappa = eta mu > 0.  The
determinant has the factor kappa (the x-mode is marginal at mu = 0) and, for the optimizers below,
depends on eta and mu only through kappa; :func:`derive_mean_square` solves the rest for kappa.

**Closed forms** (exact at every b; ``derive_mean_square`` returns them):

* gd:          eta mu* = 2 / (1 + nu);
* heavy_ball:  eta (1 - dampening) mu* = 2 (1 - beta^2) / ((1 - beta) + (1 + beta) nu);
* adam, rmsprop (P frozen): the same with eta (1 - beta1), beta1 (adam) and eta, beta (rmsprop):
  eta mu* = 2 (1 + beta1) / ((1 - beta1) + (1 + beta1) nu) for Adam;
* nesterov, nadam: the smallest positive root of a quadratic in kappa (:func:`mean_square_polynomial`).

Limits: nu = 0 gives the registry's deterministic thresholds (2, 2 + 2 beta, (2 + 2 beta1)/(1 - beta1),
e.g. 38 at beta1 = 0.9), exactly.  For nu -> infinity (noise-dominated batches), eta mu* -> 0 like
2 (1 - beta)/nu (heavy ball) and 2/nu (GD, Adam): the full-batch curvature at the edge falls below the
deterministic threshold by a factor of order 1/nu.

**The gauge.**  The quantity held fixed at the boundary is not mu but Q = E[h_B^2]/E[h_B] =
E|g_B|^2 / E[x g] (g_B = h_B x the batch gradient, g = mu x the full one).  With the signal fraction
rho = E[h_B]^2 / E[h_B^2] = 1/(1 + nu) = |g|^2 / E|g_B|^2, :func:`edge_gauge` returns eta Q* =
kappa*(nu) (1 + nu):

* gd: eta Q* = 2 at every batch size;
* heavy_ball: eta_eff Q* = 2 (1 - beta^2) / (1 + beta - 2 beta rho)  (eta_eff = eta (1 - dampening)),
  from 2 (1 + beta) at rho = 1 (full batch) to 2 (1 - beta) as rho -> 0 (noise-dominated);
* adam: eta Q* = 2 (1 + beta1) / (1 + beta1 - 2 beta1 rho), from (2 + 2 beta1)/(1 - beta1) (38 at
  beta1 = 0.9) to 2.

For gd, heavy_ball, rmsprop and adam the gauge identity also holds in any dimension, for non-commuting
per-example Hessians, with Q = E|g_B|^2 / E[x^T g] and rho = E|g|^2 / E|g_B|^2 evaluated on the
stationary second moment at the boundary.  Write each as v <- beta v + g_B, x <- x - eta_eff v (Adam:
v = m/(1 - beta1), eta_eff = eta (1 - beta1)); the fixed point of the second moments of (x, v) gives,
with X = E[x x^T], eta_eff E[v v^T] = (X H + H X)/(1 + beta), and the trace of the equation for
E[v v^T] then reads eta_eff (E|g_B|^2 - 2 beta/(1 + beta) E|g|^2) = 2 (1 - beta) E[x^T g]
(:mod:`aeos_theory.minibatch` evaluates both sides; the tests check it on random non-commuting
Hessians, and that it misses, by 0.4 % and 1.3 % in their example, for nesterov, whose step
x <- x - eta (g_B + beta v) is not of this form).

**Batch sharpness.**  BS = E[h_B^3]/E[h_B^2] >= Q adds the batch curvature's skewness
(:func:`edge_batch_sharpness`): eta BS* = kappa*(nu) (1 + 3 nu + gamma)/(1 + nu), gamma =
E[(h_B - mu)^3]/mu^3; it equals eta Q* only when h_B takes at most one nonzero value (b = n, equal h_i,
or b = 1 with every h_i either 0 or one common L).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import sympy as sp

from aeos_base import checks
from aeos_theory.optimizers import LAMBDA, STEP_SYMBOLS, SYMBOLS, get_optimizer
from aeos_theory.stability import _tidy

#: nu = Var(h_B) / E[h_B]^2, the relative variance of the batch curvature.
NOISE = sp.Symbol("nu", nonnegative=True)
#: kappa = eta mu, the full-batch curvature in units of 1/eta.
KAPPA = sp.Symbol("kappa", positive=True)

_MU = sp.Symbol("mu", positive=True)


def _symbol_names() -> dict[sp.Symbol, str]:
    """symbol -> the name its value has in a completed hyperparameter dict (step coefficients included)."""
    return {**{s: name for name, s in SYMBOLS.items()}, **{s: name for name, s in STEP_SYMBOLS.items()}}


def _second_moment_matrix(matrix: sp.Matrix) -> tuple[sp.Matrix, int]:
    """The map A on the distinct second moments E[s_p s_q] (p <= q) of s' = M(h_B) s, its entries written
    in mu = E[h_B] and E[h_B^2] = mu^2 (1 + nu); and its size."""
    k = matrix.rows
    state = sp.symbols(f"s0:{k}")
    after = matrix * sp.Matrix(state)
    pairs = [(p, q) for p in range(k) for q in range(p, k)]
    moments = (sp.Integer(1), _MU, _MU**2 * (1 + NOISE))
    rows = []
    for p, q in pairs:
        product = sp.Poly(sp.expand(after[p] * after[q]), LAMBDA)
        averaged = sp.expand(sum(c * moments[power] for (power,), c in product.terms()))
        monomials = sp.Poly(averaged, *state)
        rows.append([monomials.coeff_monomial(state[a] * state[c]) for a, c in pairs])
    return sp.Matrix(rows), len(pairs)


@functools.lru_cache(maxsize=None)
def mean_square_polynomial(optimizer: str) -> sp.Poly:
    """The boundary polynomial p(kappa) of ``optimizer``: det(I - A) with its factors kappa and those free
    of kappa removed, as a polynomial in :data:`KAPPA` = eta mu whose coefficients are expressions in
    :data:`NOISE` (nu), the hyperparameters and the step coefficients (:data:`STEP_SYMBOLS`, settled
    values substituted by :func:`mean_square_constant`).

    Weight decay is set to 0 (fold coupled decay into the per-example curvatures, h_i + wd).

    >>> mean_square_polynomial("gd").all_coeffs()
    [nu + 1, -2]
    """
    spec = get_optimizer(optimizer)
    matrix = spec.matrix().subs(SYMBOLS["weight_decay"], 0)
    a_map, size = _second_moment_matrix(matrix)
    eta = SYMBOLS["eta"]
    determinant = sp.factor(sp.expand((sp.eye(size) - a_map).det(method="berkowitz")).subs(_MU, KAPPA / eta))
    if determinant.has(eta):
        raise ValueError(f"the mean-square boundary of {optimizer!r} depends on eta and mu separately")
    numerator, denominator = sp.fraction(sp.together(determinant))
    if denominator.has(KAPPA):
        raise ValueError(f"the mean-square boundary of {optimizer!r} has kappa in a denominator")
    _, factors = sp.factor_list(numerator)
    kept = [f**power for f, power in factors if f.has(KAPPA) and f != KAPPA]
    polynomial = sp.Poly(sp.expand(sp.Mul(*kept)), KAPPA)
    if polynomial.LC().could_extract_minus_sign():
        polynomial = -polynomial
    return polynomial


def _settled(optimizer: str, expr: sp.Expr) -> sp.Expr:
    """``expr`` with the settled step coefficients (t -> infinity) written in the hyperparameter symbols."""
    spec = get_optimizer(optimizer)
    coefficients = spec.coefficients(None, {name: SYMBOLS[name] for name in spec.hypers})
    return expr.subs({STEP_SYMBOLS[k]: v for k, v in coefficients.items()})


@functools.lru_cache(maxsize=None)
def derive_mean_square(optimizer: str) -> sp.Expr:
    """kappa* = eta mu*, the largest mean-square-stable full-batch curvature (times eta) of ``optimizer``
    with frozen P, as a sympy expression in nu (:data:`NOISE`) and the hyperparameters.

    The smallest positive root of :func:`mean_square_polynomial` with settled step coefficients; when it
    has several roots, the one that is smallest at sample hyperparameters (beta, beta1 in [0.05, 0.95],
    nu in [0, 20]) is returned, and a ValueError is raised if that choice changes between samples.

    >>> derive_mean_square("gd")
    2/(nu + 1)
    >>> derive_mean_square("adam")
    2*(beta1 + 1)/(beta1*nu - beta1 + nu + 1)
    """
    polynomial = sp.Poly(_settled(optimizer, mean_square_polynomial(optimizer).as_expr()), KAPPA)
    roots = sp.solve(polynomial.as_expr(), KAPPA)
    if len(roots) == 1:
        return _tidy(roots[0])
    parameters = sorted(polynomial.free_symbols - {KAPPA}, key=lambda s: s.name)
    functions = [sp.lambdify(parameters, root, modules="cmath") for root in roots]
    rng = np.random.default_rng(0)
    chosen = set()
    for _ in range(12):
        point = [float(rng.uniform(0, 20)) if p == NOISE else float(rng.uniform(0.05, 0.95)) for p in parameters]
        values = [complex(f(*point)) for f in functions]
        positive = [i for i, v in enumerate(values) if abs(v.imag) < 1e-9 and v.real > 0]
        chosen.add(min(positive, key=lambda i: values[i].real) if positive else None)
    if len(chosen) != 1 or None in chosen:
        raise ValueError(f"the binding root of the mean-square boundary of {optimizer!r} depends on the "
                         f"hyperparameters")
    return sp.simplify(roots[chosen.pop()])


@functools.lru_cache(maxsize=None)
def _coefficient_functions(optimizer: str) -> tuple[Callable[..., list], tuple[str, ...]]:
    polynomial = mean_square_polynomial(optimizer)
    parameters = tuple(sorted(polynomial.free_symbols - {KAPPA}, key=lambda s: s.name))
    names = _symbol_names()
    return (sp.lambdify(parameters, polynomial.all_coeffs(), modules="math"),
            tuple("noise" if p == NOISE else names[p] for p in parameters))


def settled_hyper(optimizer: str, hyper: dict, *, require: tuple[str, ...] = ()) -> dict[str, float]:
    """``hyper`` validated by the registry and completed with its defaults and its settled step
    coefficients; ValueError for weight_decay != 0, which this analysis leaves out (coupled decay is the
    shift h_i -> h_i + wd of every per-example curvature: pass the shifted curvatures instead; AdamW's
    default 0.01 must be set to 0 explicitly)."""
    spec = get_optimizer(optimizer)
    values = spec.validate(hyper, require=require)
    if values.get("weight_decay", 0.0) != 0.0:
        raise ValueError(f"weight_decay must be 0 in the minibatch analysis (coupled decay: add it to the "
                         f"per-example curvatures, h_i + wd; decoupled decay is not modelled), got "
                         f"{values['weight_decay']!r}")
    values.setdefault("eta", 1.0)
    values.update(spec.step_coefficients(None, values))
    return values


def mean_square_constant(optimizer: str, noise: float, **hyper: float) -> float:
    """kappa* = eta mu*: the full-batch curvature mu = E[h_B] (in units of 1/eta) at which the second moment
    of ``optimizer`` with frozen P stops converging, for the relative batch-curvature variance
    ``noise`` nu = Var(h_B)/E[h_B]^2 >= 0 (dimensionless; see the module docstring).

    gd: 2/(1 + nu); heavy_ball: 2 (1 - beta^2)/((1 - dampening)((1 - beta) + (1 + beta) nu)); adam:
    2 (1 + beta1)/((1 - beta1) + (1 + beta1) nu).  nu = 0 gives
    :func:`aeos_theory.threshold_constant`.  ``eta`` does not enter (it may be given; it is checked).

    >>> round(mean_square_constant("adam", 0.0, beta1=0.9), 12)
    38.0
    >>> round(mean_square_constant("heavy_ball", 1e9, beta=0.5) * 1e9, 6)  # nu -> inf: 2 (1 - beta)/nu
    1.0
    """
    nu = checks.real("noise", noise, low=0.0)
    values = {**settled_hyper(optimizer, hyper), "noise": nu}
    if any(math.isinf(values[name]) for name in STEP_SYMBOLS if name in values):
        return math.inf  # a settled step coefficient of inf (Adagrad's lr_decay, ASGD): the step shrinks to 0
    function, names = _coefficient_functions(optimizer)
    coefficients = np.array(function(*(values[name] for name in names)), dtype=float)
    roots = np.roots(coefficients)
    positive = roots[(np.abs(roots.imag) <= 1e-12 * np.abs(roots)) & (roots.real > 0)].real
    if positive.size == 0:
        raise ValueError(f"{optimizer!r} has no mean-square boundary at noise = {nu!r} with these hyperparameters")
    return float(positive.min())


def edge_gauge(optimizer: str, signal_fraction: float, **hyper: float) -> float:
    """eta Q* at the mean-square boundary, Q = E|g_B|^2 / E[x^T g], as a function of the signal fraction
    rho = |g|^2 / E|g_B|^2 = 1/(1 + nu) in (0, 1] (the share of the batch gradient's second moment that
    is the full-batch gradient's).

    gd: 2; heavy_ball: 2 (1 - beta^2)/((1 - dampening)(1 + beta - 2 beta rho)); adam: 2 (1 + beta1)/
    (1 + beta1 - 2 beta1 rho), 38 at rho = 1 and 2 as rho -> 0 (beta1 = 0.9).  Exact in one direction
    for every optimizer; in any dimension for gd, heavy_ball, rmsprop and adam (module docstring).

    >>> round(edge_gauge("adam", 1.0, beta1=0.9), 12), round(edge_gauge("adam", 1e-12, beta1=0.9), 6)
    (38.0, 2.0)
    """
    rho = checks.real("signal_fraction", signal_fraction, low=0.0, high=1.0, low_inclusive=False)
    return mean_square_constant(optimizer, 1.0 / rho - 1.0, **hyper) / rho


def edge_batch_sharpness(optimizer: str, noise: float, skew: float = 0.0, **hyper: float) -> float:
    """eta BS at the mean-square boundary in one direction: the batch sharpness BS = E[h_B^3]/E[h_B^2]
    (= E[g_B^T H_B g_B]/E|g_B|^2 with g_B = h_B x) times eta*, exact at every batch size:

        eta* BS = kappa*(nu) (1 + 3 nu + gamma) / (1 + nu),

    with nu = Var(h_B)/mu^2 (``noise``) and gamma = E[(h_B - mu)^3]/mu^3 (``skew``; for a b-subset of n
    curvatures h_i, gamma = c3(b, n) k3/mu^3 with k3 = (1/n) sum (h_i - mu)^3, :func:`batch_noise3`).
    gd: 2 (1 + 3 nu + gamma)/(1 + nu)^2, which is >= 2 (E[h_B] E[h_B^3] >= E[h_B^2]^2), and 2 exactly at
    b = n (nu = gamma = 0).

    >>> round(edge_batch_sharpness("adam", 0.0, beta1=0.9), 12)
    38.0
    >>> round(edge_batch_sharpness("gd", 1.0, 1.0), 12)   # 2 (1 + 3 + 1) / 4
    2.5
    """
    nu = checks.real("noise", noise, low=0.0)
    gamma = checks.real("skew", skew)
    if 1 + 3 * nu + gamma <= 0:
        raise ValueError(f"skew must satisfy 1 + 3 noise + skew > 0 (E[h_B^3] > 0), got noise = {nu!r}, "
                         f"skew = {gamma!r}")
    return mean_square_constant(optimizer, nu, **hyper) * (1 + 3 * nu + gamma) / (1 + nu)


def batch_noise(b: int, n: int) -> float:
    """c(b, n) = (n - b) / (b (n - 1)), the variance factor of a batch mean drawn without replacement.

    For items z_i (numbers or matrices) with mean zbar and population covariance
    Sigma = (1/n) sum (z_i - zbar) (x) (z_i - zbar), the batch mean z_B = (1/b) sum_{i in B} z_i of a uniform
    b-subset B has E[z_B (x) z_B] = zbar (x) zbar + c(b, n) Sigma: 1/b at n -> infinity (sampling with
    replacement), 0 at b = n (c(1, 1) = 0: one example is the full batch).

    >>> batch_noise(1, 10), batch_noise(10, 10), round(batch_noise(5, 1000), 6)
    (1.0, 0.0, 0.199199)
    """
    n = checks.integer("n", n, low=1)
    b = checks.integer("b", b, low=1, high=n)
    return 0.0 if b == n else (n - b) / (b * (n - 1))


def batch_noise3(b: int, n: int) -> float:
    """c3(b, n) = (n - b)(n - 2b) / (b^2 (n - 1)(n - 2)): E[(h_B - mu)^3] = c3 (1/n) sum (h_i - mu)^3 for the
    mean of a uniform b-subset of n numbers h_i (0 when b = n or n <= 2, where the third central moment of
    the batch mean vanishes); 1 at b = 1.

    >>> batch_noise3(1, 10), batch_noise3(10, 10)
    (1.0, 0.0)
    """
    n = checks.integer("n", n, low=1)
    b = checks.integer("b", b, low=1, high=n)
    return 0.0 if b == n or n <= 2 else (n - b) * (n - 2 * b) / (b * b * (n - 1) * (n - 2))


def noise_from_moments(mean: float, variance: float, b: int, n: int) -> float:
    """nu = c(b, n) variance / mean^2 for per-example curvatures of mean ``mean`` > 0 and population
    variance ``variance`` >= 0, batches of b of n drawn without replacement.

    >>> noise_from_moments(2.0, 4.0, 1, 10)
    1.0
    """
    mean = checks.real("mean", mean, low=0.0, low_inclusive=False)
    variance = checks.real("variance", variance, low=0.0)
    value = batch_noise(b, n) * variance / mean**2
    if not math.isfinite(value):
        raise ValueError(f"variance / mean^2 must fit in a float64, got {variance!r} / {mean!r}^2")
    return value
