"""The semidefinite complementarity problem of a central flow, for the few directions at the edge.

Given a symmetric k x k matrix ``alpha`` and a linear map B on symmetric k x k matrices (a 4-index array,
B[X]_ij = sum_ab B_ijab X_ab), find X with

    X >= 0,    A = alpha + B[X] >= 0,    <X, A> = 0            (>= 0: positive semidefinite),

the discretised edge condition of a central flow (:mod:`aeos_theory.central_flow`): the oscillation
covariance X is non-zero only along directions held exactly at the edge (A = 0 there).  When B is
symmetric and positive semidefinite (it is, up to the symmetrisation below, for the flows of this
package) these are the optimality conditions of the convex program

    minimise  f(X) = 1/2 <X, B[X]> + <alpha, X>   over   X >= 0,

which :func:`solve_complementarity` solves: in closed form for k = 1 (X = max(0, -alpha / B)), by a
log-det barrier (interior-point) method otherwise.  k is small (the directions at the edge, a handful),
so each Newton step is a linear system of k (k + 1) / 2 unknowns; the authors' code hands the same
program to CVXPY.

B is regularised by 1e-9 |B| I (:data:`REGULARISATION`), which makes the solution unique where B alone
does not (X then has no part that would not act on the edge).  ``alpha >= 0`` gives X = 0 at once: no direction is at the edge, there is no oscillation.  A program
without a minimum (alpha has a negative direction along which B vanishes: the edge cannot be held, as
for gradient descent on a quadratic beyond 2/eta) raises :class:`EdgeNotHeld`.
"""

from __future__ import annotations

import functools

import numpy as np


class EdgeNotHeld(ArithmeticError):
    """No oscillation keeps the flow at the edge: the complementarity problem has no solution."""


def _symmetric_part(beta: np.ndarray) -> np.ndarray:
    """B as a symmetric, positive semidefinite k^2 x k^2 matrix acting on vec(X) (X symmetric)."""
    k = beta.shape[0]
    b = beta.reshape(k * k, k * k)
    # B maps symmetric matrices to symmetric matrices: symmetrise in (i, j), in (a, b), and as a matrix
    b = 0.25 * (b + b.reshape(k, k, k, k).transpose(1, 0, 2, 3).reshape(k * k, k * k)
                + b.reshape(k, k, k, k).transpose(0, 1, 3, 2).reshape(k * k, k * k)
                + b.reshape(k, k, k, k).transpose(1, 0, 3, 2).reshape(k * k, k * k))
    b = 0.5 * (b + b.T)
    values, vectors = np.linalg.eigh(b)
    values = np.maximum(values, 0.0)
    return (vectors * (values + REGULARISATION * values[-1])) @ vectors.T


#: B is made definite by adding this fraction of its largest eigenvalue times the identity: where B is
#: singular (an oscillation with no effect on the edge, e.g. among degenerate directions), the smallest
#: oscillation that holds the edge is chosen.
REGULARISATION = 1e-9


def _check(alpha: object, beta: object) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"alpha must be a non-empty square k x k matrix; got shape {a.shape}")
    k = a.shape[0]
    b = np.asarray(beta, dtype=np.float64)
    if b.shape != (k, k, k, k):
        raise ValueError(f"beta must have shape ({k}, {k}, {k}, {k}) for a {k} x {k} alpha; got {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("alpha and beta must be finite")
    return 0.5 * (a + a.T), b


def solve_complementarity(alpha: np.ndarray, beta: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """The PSD matrix X with X >= 0, A = alpha + B[X] >= 0 and <X, A> = 0 (see the module docstring).

    Args:
        alpha: symmetric k x k (symmetrised here).
        beta: the map B as a (k, k, k, k) array; its symmetric, positive semidefinite part is used.
        start: a guess (e.g. the previous step's X, same k): tried first.

    Returns X (k x k, float64).  Raises :class:`EdgeNotHeld` when the program has no minimum, ValueError
    for malformed input.
    """
    a, beta = _check(alpha, beta)
    k = a.shape[0]
    if np.linalg.eigvalsh(a)[0] >= 0.0:
        return np.zeros((k, k))
    b = _symmetric_part(beta)
    if k == 1:
        if b[0, 0] <= 1e-300 or not np.isfinite(-a[0, 0] / b[0, 0]):
            raise EdgeNotHeld("the edge direction has no restoring curvature (B = 0)")
        return np.array([[-a[0, 0] / b[0, 0]]])
    found = None
    if start is not None and np.shape(start) == (k, k) and np.all(np.isfinite(start)) and np.any(start):
        found = _newton(a, b, np.asarray(start, dtype=np.float64), iterations=8)
    if found is None:
        found = _held_directions(a, b)
    if found is None:
        found = _newton(a, b, _projected_guess(a, b), iterations=20)
    if found is None:
        found = _barrier(a, b)
    _check_held(a, b, found)
    return found


def _check_held(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> None:
    """Raise :class:`EdgeNotHeld` when X lives where only the regularisation restores: B itself is
    singular there and alpha negative, so the program without regularisation has no minimum (a bounded
    one has |X| <~ |alpha| / (the smallest curvature of B away from zero))."""
    k = a.shape[0]
    flat = _symmetric_basis(k).reshape(-1, k * k)
    curvatures = np.linalg.eigvalsh(flat @ b @ flat.T)
    floor = curvatures[curvatures > 1e-6 * curvatures[-1]][0]
    if np.abs(x).max() > 1e3 * k * np.abs(a).max() / floor:
        raise EdgeNotHeld("the oscillation needed to hold the edge grows without bound (B is singular where "
                          "alpha is negative)")


def _projected_guess(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The PSD part of the unconstrained minimiser -B^-1 alpha: a start for :func:`_newton`."""
    k = a.shape[0]
    flat = _symmetric_basis(k).reshape(-1, k * k)
    x = (np.linalg.lstsq(flat @ b @ flat.T, -flat @ a.reshape(-1), rcond=None)[0] @ flat).reshape(k, k)
    return _psd_part(x)


#: A solution supported on coordinate directions is accepted when A(X) is PSD to this fraction of |alpha|
#: (the exact one is then rotated out of them by about that much: far below the eigensolver's accuracy).
ALIGNED_TOL = 1e-7


def _held_directions(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """The usual solutions, tried first: X supported on a subset S of the coordinate directions (the
    eigenvectors of K), held exactly at the edge there: A(X)_SS = 0, i.e. B_SS[X_SS] = -alpha_SS.  The
    first subset (largest first) whose X_SS is PSD and whose A(X) is PSD everywhere (to
    :data:`ALIGNED_TOL`) is the solution; None when no subset works (the solution is not aligned with the
    directions: Newton or the barrier solves it)."""
    import itertools

    k = a.shape[0]
    b4 = b.reshape(k, k, k, k)
    scale = np.abs(a).max()
    for size in range(k, 0, -1):
        for subset in itertools.combinations(range(k), size):
            idx = np.array(subset)
            flat = _symmetric_basis(size).reshape(-1, size * size)
            block = b4[np.ix_(idx, idx, idx, idx)].reshape(size * size, size * size)
            try:
                xs = (np.linalg.solve(flat @ block @ flat.T, -flat @ a[np.ix_(idx, idx)].reshape(-1)) @ flat)
            except np.linalg.LinAlgError:
                continue
            x = np.zeros((k, k))
            x[np.ix_(idx, idx)] = xs.reshape(size, size)
            if np.linalg.eigvalsh(x)[0] < -1e-12 * max(1.0, np.abs(x).max()):
                continue
            residual = a + (b @ x.reshape(-1)).reshape(k, k)
            if np.linalg.eigvalsh(residual)[0] >= -ALIGNED_TOL * scale:
                return _psd_part(x)
    return None


def _newton(a: np.ndarray, b: np.ndarray, x: np.ndarray, iterations: int = 30) -> np.ndarray | None:
    """Semismooth Newton on the natural map F(X) = X - Pi(X - A(X)), Pi the projection onto the PSD cone
    (F = 0 is the complementarity problem).  With Y = X - A(X) = V diag(l) V^T, the derivative of Pi is
    H -> V (Omega o V^T H V) V^T, Omega_ij = (l_i^+ - l_j^+) / (l_i - l_j) (1 or 0 where l_i = l_j).
    Returns X when |F| falls below 1e-12 max(|alpha|, |B[X]|), None when it does not within ``iterations``."""
    k = a.shape[0]
    basis = _symmetric_basis(k)
    m = len(basis)
    flat = basis.reshape(m, k * k)
    b_of = lambda h: (b @ h.reshape(-1)).reshape(k, k)  # noqa: E731
    for _ in range(iterations):
        pushed = b_of(x)
        target = 1e-12 * max(np.abs(a).max(), np.abs(pushed).max())  # round-off of alpha + B[X]
        y = x - (a + pushed)
        values, vectors = np.linalg.eigh(0.5 * (y + y.T))
        plus = np.maximum(values, 0.0)
        residual = x - (vectors * plus) @ vectors.T
        if np.abs(residual).max() <= target:
            return _psd_part(x)
        gap = values[:, None] - values[None, :]
        same = np.abs(gap) <= 1e-14 * max(1.0, np.abs(values).max())
        omega = np.where(same, (values[:, None] > 0).astype(float) * np.ones_like(gap),
                         (plus[:, None] - plus[None, :]) / np.where(same, 1.0, gap))
        h = basis - np.einsum("ij,mj->mi", b, flat).reshape(m, k, k)  # E_p - B[E_p]
        rotated = np.einsum("ai,mab,bj->mij", vectors, h, vectors) * omega
        projected = np.einsum("ia,mab,jb->mij", vectors, rotated, vectors)
        jacobian = flat @ (basis - projected).reshape(m, k * k).T
        try:
            dx = np.linalg.solve(jacobian, -flat @ residual.reshape(-1))
        except np.linalg.LinAlgError:
            return None
        x = x + (dx @ flat).reshape(k, k)
    return None


def _psd_part(m: np.ndarray) -> np.ndarray:
    """The projection of symmetric(m) onto the PSD cone: its eigenvalues clipped at zero."""
    values, vectors = np.linalg.eigh(0.5 * (m + m.T))
    return (vectors * np.maximum(values, 0.0)) @ vectors.T


@functools.lru_cache(maxsize=None)
def _symmetric_basis(k: int) -> np.ndarray:
    """An orthonormal basis of the symmetric k x k matrices, (m, k, k) with m = k (k + 1) / 2."""
    basis = []
    for i in range(k):
        for j in range(i, k):
            e = np.zeros((k, k))
            e[i, j] = e[j, i] = 1.0 if i == j else 2 ** -0.5
            basis.append(e)
    basis = np.array(basis)
    basis.flags.writeable = False  # shared by every call (cached)
    return basis


def _barrier(a: np.ndarray, b: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """min 1/2 <X, B[X]> + <a, X> over X >= 0 by a primal log-det barrier method (Newton, backtracking).

    In coordinates x of an orthonormal basis E_p of the symmetric matrices, Newton minimises
    phi(x) = 1/2 x^T Bm x + a.x - mu log det X for mu = mu_0, mu_0 / 16, ... until the duality gap mu k
    is ``tol`` of the objective's scale |a|^2 / |B| (each mu's Newton steps stop at a decrement of 1e-8 mu k):
    its gradient is Bm x + a - mu E^T X^-1 and its Hessian Bm + mu [tr(E_p X^-1 E_q X^-1)]_pq.  The
    central path ends at the minimiser; each Newton step solves an m x m system (m <= a few tens).
    """
    k = a.shape[0]
    basis = _symmetric_basis(k)
    m = len(basis)
    flat = basis.reshape(m, k * k)
    bm = flat @ b @ flat.T
    am = flat @ a.reshape(-1)
    size = np.abs(a).max()
    positive = np.linalg.eigvalsh(bm)
    if positive[-1] <= 0.0:
        raise EdgeNotHeld("no direction at the edge has restoring curvature (B = 0)")
    floor = float(positive[positive > 1e-12 * positive[-1]][0])
    bound = 1e8 * size / floor  # a minimiser is |X| <~ |a| / (smallest curvature); beyond: no minimum
    x = flat @ (np.eye(k) * size / positive[-1]).reshape(-1)
    mu = size * size / positive[-1]

    def phi(x: np.ndarray, mu: float) -> float:
        values = np.linalg.eigvalsh((x @ flat).reshape(k, k))
        if values[0] <= 0.0:
            return np.inf  # outside the cone
        return 0.5 * x @ bm @ x + am @ x - mu * float(np.sum(np.log(values)))

    while mu * k > tol * size * size / positive[-1]:
        for _ in range(50):
            inv = np.linalg.pinv((x @ flat).reshape(k, k), hermitian=True)
            g = bm @ x + am - mu * (flat @ inv.reshape(-1))
            h = bm + mu * flat @ np.kron(inv, inv) @ flat.T
            dx = -np.linalg.lstsq(h, g, rcond=None)[0]  # h is definite in exact arithmetic
            decrement = float(-g @ dx)
            if decrement <= 1e-8 * mu * k:
                break
            step, current = 1.0, phi(x, mu)
            while phi(x + step * dx, mu) > current - 0.25 * step * decrement:
                step *= 0.5
                if step < 1e-12:
                    break
            if step < 1e-12:
                break  # no further decrease in float64: this mu is done
            x = x + step * dx
            if np.abs(x).max() > bound:
                raise EdgeNotHeld("the oscillation needed to hold the edge grows without bound")
        mu /= 16.0
    return _psd_part((x @ flat).reshape(k, k))
