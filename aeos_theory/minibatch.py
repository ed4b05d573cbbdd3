"""Mean-square stability of minibatch optimizers on a quadratic with per-example Hessians, in any dimension.

**Model.**  Per-example losses l_i(x) = 1/2 x^T H_i x (H_i symmetric PSD, i = 1..n; with P frozen, pass
P^-1/2 H_i P^-1/2, so that P = I), full-batch Hessian H = (1/n) sum H_i.  Each step draws a batch B of b
examples uniformly without replacement, independently across steps, and the optimizer descends
L_B(x) = 1/2 x^T H_B x, H_B = (1/b) sum_{i in B} H_i: its step on the state s = (x, buffer) is
s' = M_B s with M_B = M0 (x) I + M1 (x) H_B, where M(lambda) = M0 + lambda M1 is the registry's settled
update matrix (:mod:`aeos_theory.optimizers`; Adam's with frozen P is the EMA m <- beta1 m + (1 - beta1) g,
x <- x - eta m, no bias correction).

**The second-moment map** (exact, because B is independent of s): S' = E[M_B S M_B^T] for S = E[s s^T].
Writing M_i for M with H_B -> H_i, M_B is the batch mean of the M_i, and sampling without replacement
gives E[M_B (x) M_B] = Mbar (x) Mbar + c(b, n) (1/n) sum (M_i - Mbar) (x) (M_i - Mbar), c(b, n) =
(n - b)/(b (n - 1)) (:func:`aeos_theory.mean_square.batch_noise`).  As M_i - Mbar = M1 (x) (H_i - H),
the map depends on the data only through H and the batch-noise covariance
Sigma_H = (1/n) sum (H_i - H) (x) (H_i - H):

    vec S' = [Mbar (x) Mbar + c(b, n) (M1 (x) M1) * Sigma_H] vec S          (:func:`second_moment_map`).

Its spectral radius is below 1 iff E|s_t|^2 -> 0 (mean-square stability).  The map preserves PSD matrices,
so the spectral radius is an eigenvalue with a PSD eigenvector S* (the stationary second moment at the
boundary), and noise only adds a positive map: the mean-square step-size boundary eta* never exceeds the
deterministic one, threshold_constant / lambda_max(H).  A common null space of the H_i carries no
dynamics and is projected out.

**Closed forms.**  When the H_i commute (given as per-example curvatures, shape (n,) or (n, d): diagonal
H_i), the map splits into independent direction pairs, the diagonal blocks bind, and eta* is the minimum
over directions j of the one-direction closed form kappa*(nu_j)/mu_j of :mod:`aeos_theory.mean_square`
(exact).  Otherwise :func:`mean_square_eta` finds the first eta at which the spectral radius reaches 1
(numerical, to ~1e-12 relative).

**At the edge** (:func:`minibatch_edge`), on the stationary second moment X* = E[x x^T]:

* batch sharpness BS = E[g_B^T H_B g_B] / E|g_B|^2 = tr(E[H_B^3] X*) / tr(E[H_B^2] X*), g_B = H_B x;
* the gauge Q = E|g_B|^2 / E[x^T g] = tr(E[H_B^2] X*) / tr(H X*), with eta Q fixed by the signal
  fraction rho = E|g|^2 / E|g_B|^2 (:func:`aeos_theory.mean_square.edge_gauge`: 2 for SGD at every batch
  size, exactly);
* BS >= Q always (Cauchy-Schwarz on E[(H_B^1/2 x) . (H_B^3/2 x)]), with equality at b = n or when every
  batch gradient is an eigenvector of its H_B with a common eigenvalue: eta BS at the boundary is the
  gauge times a curvature-dispersion factor BS/Q >= 1 (one direction: E[h_B] E[h_B^3] / E[h_B^2]^2).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy as sp
from scipy.optimize import brentq

from aeos_base import checks
from aeos_theory.mean_square import batch_noise, mean_square_constant, settled_hyper
from aeos_theory.optimizers import LAMBDA, STEP_SYMBOLS, SYMBOLS, get_optimizer
from aeos_theory.thresholds import threshold_constant

#: The largest second-moment map built densely: (state size)^2 rows (k d)^2, k = 1 (gd) or 2.
MAX_MAP_SIZE = 1600


@dataclass(frozen=True)
class PerExample:
    """Validated per-example Hessians: ``dense`` (n, d, d), and ``curvatures`` (n, d) when they commute
    (given as numbers or diagonals), else None."""

    dense: np.ndarray
    curvatures: np.ndarray | None

    @property
    def n(self) -> int:
        return self.dense.shape[0]


def per_example(hessians: object) -> PerExample:
    """``hessians`` checked: shape (n,) (one direction), (n, d) (diagonal H_i) or (n, d, d) (symmetric PSD
    H_i), finite, with a nonzero full-batch Hessian.  ValueError otherwise."""
    try:
        array = np.asarray(hessians, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("hessians must be an array of real numbers of shape (n,), (n, d) or (n, d, d)") from None
    if array.ndim not in (1, 2, 3) or array.shape[0] == 0 or 0 in array.shape:
        raise ValueError(f"hessians must have shape (n,), (n, d) or (n, d, d) with n, d >= 1, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("hessians must be finite")
    if array.ndim < 3:
        curvatures = array.reshape(array.shape[0], -1)
        if np.any(curvatures < 0):
            raise ValueError("per-example curvatures must be >= 0 (each H_i positive semi-definite)")
        dense = np.einsum("ij,jk->ijk", curvatures, np.eye(curvatures.shape[1]))
    else:
        if array.shape[1] != array.shape[2]:
            raise ValueError(f"dense hessians must have shape (n, d, d), got {array.shape}")
        scale = max(float(np.abs(array).max()), np.finfo(float).tiny)
        if np.abs(array - array.transpose(0, 2, 1)).max() > 1e-12 * scale:
            raise ValueError("each per-example Hessian H_i must be symmetric")
        if np.linalg.eigvalsh(array).min() < -1e-10 * scale:
            raise ValueError("each per-example Hessian H_i must be positive semi-definite")
        curvatures, dense = None, array
    if not np.any(dense):
        raise ValueError("the full-batch Hessian is zero: there is no curvature to be unstable in")
    return PerExample(dense, curvatures)


def _reduced(data: PerExample) -> np.ndarray:
    """The H_i restricted to the range of H (the common null space of PSD H_i, where nothing moves)."""
    mean = data.dense.mean(axis=0)
    values, vectors = np.linalg.eigh(mean)
    basis = vectors[:, values > 1e-12 * values.max()]
    return np.einsum("pa,ipq,qb->iab", basis, data.dense, basis)


def batch_moments(hessians: object, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E[H_B], E[H_B^2], E[H_B^3]) for the batch mean H_B of a uniform b-subset of the n per-example
    Hessians (matrix products, (d, d) arrays).

    E[H_B^2] = H^2 + c(b, n) (1/n) sum (H_i - H)^2.  E[H_B^3] = b^-3 sum_{i,j,k} P(i, j, k in B) H_i H_j H_k,
    summed by coincidence pattern: p1 = b/n (i = j = k), p2 = b(b-1)/(n(n-1)) (two distinct indices),
    p3 = b(b-1)(b-2)/(n(n-1)(n-2)) (three).
    """
    data = per_example(hessians)
    n = data.n
    b = checks.integer("b", b, low=1, high=n)
    h = data.dense
    mean = h.mean(axis=0)
    centred = h - mean
    second = mean @ mean + batch_noise(b, n) * np.einsum("ipq,iqr->pr", centred, centred) / n
    total = h.sum(axis=0)
    squares = np.einsum("ipq,iqr->ipr", h, h)
    s2, s3 = squares.sum(axis=0), np.einsum("ipq,iqr->pr", squares, h)
    left, right = s2 @ total - s3, total @ s2 - s3
    middle = np.einsum("ipq,qr,irs->ps", h, total, h) - s3
    distinct = total @ total @ total - left - middle - right - s3
    p1 = b / n
    p2 = b * (b - 1) / (n * (n - 1)) if n > 1 else 0.0
    p3 = b * (b - 1) * (b - 2) / (n * (n - 1) * (n - 2)) if n > 2 else 0.0
    third = (p1 * s3 + p2 * (left + middle + right) + p3 * distinct) / b**3
    return mean, second, third


@functools.lru_cache(maxsize=None)
def _matrix_function(optimizer: str) -> tuple[Callable[..., list], tuple[str, ...]]:
    """M(lambda) of ``optimizer`` as a float function of (lambda, parameters), and the parameters' names."""
    matrix = get_optimizer(optimizer).matrix().subs(SYMBOLS["weight_decay"], 0)
    names = {**{s: n for n, s in SYMBOLS.items()}, **{s: n for n, s in STEP_SYMBOLS.items()}}
    parameters = tuple(sorted(matrix.free_symbols - {LAMBDA}, key=lambda s: s.name))
    return sp.lambdify((LAMBDA, *parameters), matrix, modules="numpy"), tuple(names[p] for p in parameters)


def affine_parts(optimizer: str, **hyper: float) -> tuple[np.ndarray, np.ndarray]:
    """(M0, M1) with M(lambda) = M0 + lambda M1, the settled update matrix of ``optimizer`` on one
    direction at these hyperparameters (``eta`` required).

    >>> affine_parts("heavy_ball", eta=0.1, beta=0.9)
    (array([[ 1.  , -0.09],
           [ 0.  ,  0.9 ]]), array([[-0.1,  0. ],
           [ 1. ,  0. ]]))
    """
    values = settled_hyper(optimizer, hyper, require=("eta",))
    function, names = _matrix_function(optimizer)
    arguments = [values[name] for name in names]
    m0, m1, m2 = (np.array(function(lam, *arguments), dtype=np.float64) for lam in (0.0, 1.0, 2.0))
    if np.abs(m2 - 2 * m1 + m0).max() > 1e-12 * max(1.0, np.abs(m2).max()):
        raise ValueError(f"the update matrix of {optimizer!r} is not affine in lambda")
    return m0, m1 - m0


def _map_from_parts(m0: np.ndarray, m1: np.ndarray, hessians: np.ndarray, b: int) -> np.ndarray:
    n, d, _ = hessians.shape
    k = m0.shape[0]
    if (k * d) ** 2 > MAX_MAP_SIZE:
        raise ValueError(f"the second-moment map would have (k d)^2 = {(k * d) ** 2} rows, more than "
                         f"{MAX_MAP_SIZE}: use fewer dimensions (or commuting Hessians, shape (n, d))")
    mean = hessians.mean(axis=0)
    centred = hessians - mean
    covariance = np.einsum("ipr,iqs->prqs", centred, centred) / n  # Sigma_H[p, r, q, s]
    step = np.kron(m0, np.eye(d)) + np.kron(m1, mean)
    noise = np.einsum("ag,bh,prqs->apbqgrhs", m1, m1, covariance).reshape((k * d) ** 2, (k * d) ** 2)
    return np.kron(step, step) + batch_noise(b, n) * noise


def second_moment_map(optimizer: str, hessians: object, b: int, **hyper: float) -> np.ndarray:
    """The matrix of S -> E[M_B S M_B^T] on row-major vec(S), S the (k d) x (k d) second moment of the state
    (x, buffer) (x first; k = 1 for gd, 2 for the momentum methods): Mbar (x) Mbar + c(b, n) (M1 (x) M1) *
    Sigma_H (module docstring).  ``eta`` required; Hessians as in :func:`per_example` (not reduced)."""
    data = per_example(hessians)
    b = checks.integer("b", b, low=1, high=data.n)
    m0, m1 = affine_parts(optimizer, **hyper)
    return _map_from_parts(m0, m1, data.dense, b)


def _radius(matrix: np.ndarray) -> float:
    return float(np.abs(np.linalg.eigvals(matrix)).max())


def mean_square_radius(optimizer: str, hessians: object, b: int, **hyper: float) -> float:
    """Spectral radius of :func:`second_moment_map` (the per-step growth factor of E|s|^2), on the range of
    H; < 1 iff the second moment converges."""
    data = per_example(hessians)
    b = checks.integer("b", b, low=1, high=data.n)
    m0, m1 = affine_parts(optimizer, **hyper)
    return _radius(_map_from_parts(m0, m1, _reduced(data), b))


def _direction_etas(optimizer: str, curvatures: np.ndarray, b: int, hyper: dict) -> np.ndarray:
    """Per direction j, kappa*(nu_j) / mu_j (infinite where every h_ij = 0)."""
    n = curvatures.shape[0]
    mean, variance = curvatures.mean(axis=0), curvatures.var(axis=0)
    etas = np.full(mean.shape, np.inf)
    for j in np.flatnonzero(mean > 0):
        nu = batch_noise(b, n) * variance[j] / mean[j] ** 2
        etas[j] = mean_square_constant(optimizer, float(nu), **hyper) / mean[j]
    return etas


def _numeric_eta(optimizer: str, reduced: np.ndarray, b: int, hyper: dict) -> float:
    """First eta > 0 where the spectral radius of the map reaches 1 (grid from below, then brentq)."""
    top = float(np.linalg.eigvalsh(reduced.mean(axis=0)).max())
    upper = threshold_constant(optimizer, eta=1.0, **hyper) / top  # eta-free: weight_decay = 0
    if np.isinf(upper):
        return float(upper)  # the settled step shrinks to 0 (ASGD, Adagrad's lr_decay): no boundary

    def excess(eta: float) -> float:
        m0, m1 = affine_parts(optimizer, eta=eta, **hyper)
        return _radius(_map_from_parts(m0, m1, reduced, b)) - 1.0

    grid = upper * np.geomspace(1e-3, 1.0, 25)
    previous = grid[0]
    if excess(previous) >= 0:
        raise ValueError("the second moment grows even at eta = 1e-3 times the deterministic threshold")
    for eta in grid[1:]:
        if excess(eta) >= 0:
            return float(brentq(excess, previous, eta, xtol=1e-14 * eta, rtol=1e-13))
        previous = eta
    return float(upper)  # noise-free directions: the deterministic boundary (radius 1 exactly at upper)


def mean_square_eta(optimizer: str, hessians: object, b: int, **hyper: float) -> float:
    """eta*, the largest step size at which the second moment of ``optimizer`` (frozen P) converges, with
    batches of b of the n per-example Hessians drawn without replacement.  Units: 1/(curvature units).

    Commuting H_i (shape (n,) or (n, d)): min_j kappa*(nu_j)/mu_j, exact (mu_j, var_j: mean and population
    variance of the curvatures h_ij; nu_j = c(b, n) var_j/mu_j^2).  Dense H_i: the first root of
    radius(eta) = 1, numerical.  At b = n: threshold_constant/lambda_max(H), the registry's deterministic
    threshold.  ``hyper``: the optimizer's hyperparameters other than eta (weight_decay must be 0).

    >>> round(mean_square_eta("gd", [1.0, 3.0], 1), 12)   # 2 mu / (mu^2 + var) = 4 / 5
    0.8
    """
    if "eta" in hyper:
        raise ValueError("eta is what mean_square_eta returns; pass the other hyperparameters only")
    data = per_example(hessians)
    b = checks.integer("b", b, low=1, high=data.n)
    settled_hyper(optimizer, hyper)  # checks the hyperparameters
    if data.curvatures is not None:
        return float(_direction_etas(optimizer, data.curvatures, b, hyper).min())
    return _numeric_eta(optimizer, _reduced(data), b, hyper)


@dataclass(frozen=True)
class MinibatchEdge:
    """The mean-square boundary and what the stationary second moment measures there.

    ``eta``: eta* (1/curvature units); ``sharpness``: lambda_max(H) of the full batch; ``mode_sharpness``:
    tr(H^2 X)/tr(H X), the full-batch curvature along the unstable mode; ``batch_sharpness``:
    tr(E[H_B^3] X)/tr(E[H_B^2] X); ``gauge``: Q = tr(E[H_B^2] X)/tr(H X); ``signal_fraction``: rho =
    tr(H^2 X)/tr(E[H_B^2] X); ``noise``: 1/rho - 1 (nu of the binding direction when the H_i commute);
    ``mode``: X, the x-block of the stationary second moment, trace 1 (d x d).  Multiply a curvature by
    ``eta`` for its normalised level (eta * batch_sharpness, eta * gauge).
    """

    eta: float
    sharpness: float
    mode_sharpness: float
    batch_sharpness: float
    gauge: float
    signal_fraction: float
    noise: float
    mode: np.ndarray


def _edge_from_mode(eta: float, hessians: np.ndarray, b: int, mode: np.ndarray) -> MinibatchEdge:
    mean, second, third = batch_moments(hessians, b)
    loss = float(np.trace(mean @ mode))
    batch = float(np.trace(second @ mode))
    signal = float(np.trace(mean @ mean @ mode)) / batch
    return MinibatchEdge(eta=eta, sharpness=float(np.linalg.eigvalsh(mean).max()),
                         mode_sharpness=float(np.trace(mean @ mean @ mode)) / loss,
                         batch_sharpness=float(np.trace(third @ mode)) / batch, gauge=batch / loss,
                         signal_fraction=signal, noise=1.0 / signal - 1.0, mode=mode / np.trace(mode))


def minibatch_edge(optimizer: str, hessians: object, b: int, **hyper: float) -> MinibatchEdge:
    """The mean-square boundary eta* (:func:`mean_square_eta`) and, on its stationary second moment, the
    batch sharpness, the gauge Q and the signal fraction (:class:`MinibatchEdge`).

    Commuting H_i: the mode is the binding direction e_j (closed forms: BS = E[h_B^3]/E[h_B^2] with
    E[h_B^3] = mu^3 + 3 mu c var + c3 k3, c3 = :func:`aeos_theory.mean_square.batch_noise3`, k3 the third
    central moment).  Dense H_i: the PSD eigenvector of the second-moment map at eta* (numerical).

    >>> edge = minibatch_edge("gd", [1.0, 3.0], 1)
    >>> round(edge.eta * edge.gauge, 12), round(edge.eta * edge.batch_sharpness, 6)   # 2, 2 m1 m3 / m2^2
    (2.0, 2.24)
    """
    eta = mean_square_eta(optimizer, hessians, b, **hyper)
    data = per_example(hessians)
    if data.curvatures is not None:
        j = int(np.argmin(_direction_etas(optimizer, data.curvatures, b, hyper)))
        d = data.curvatures.shape[1]
        mode = np.zeros((d, d))
        mode[j, j] = 1.0
        return _edge_from_mode(eta, data.dense, b, mode)
    m0, m1 = affine_parts(optimizer, eta=eta, **hyper)
    reduced_mode = _stationary_mode(_map_from_parts(m0, m1, _reduced(data), b), m0.shape[0])
    mean = data.dense.mean(axis=0)
    values, vectors = np.linalg.eigh(mean)
    basis = vectors[:, values > 1e-12 * values.max()]
    return _edge_from_mode(eta, data.dense, b, basis @ reduced_mode @ basis.T)


def _stationary_mode(matrix: np.ndarray, k: int) -> np.ndarray:
    """The x-block of the PSD eigenvector of the second-moment map for its largest real eigenvalue."""
    values, vectors = np.linalg.eig(matrix)
    top = vectors[:, int(np.argmax(values.real))].real
    size = round(np.sqrt(top.size))
    second = top.reshape(size, size)
    second = (second + second.T) / 2
    block = second[: size // k, : size // k]
    return block / np.trace(block)
