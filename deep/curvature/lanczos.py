"""Lanczos with full reorthogonalisation for the extreme eigenvalues of a symmetric operator.

The operator is a :class:`deep.curvature.operators.CurvatureOperator` (a Hessian strategy, the Gauss-Newton
matrix, P^-1/2 H P^-1/2 built by composition, or a user's operator) or any callable ``A: v -> A v`` on
flat torch vectors of length n.  After j steps the Krylov basis Q_j and the tridiagonal
T_j = Q_j^T A Q_j give Ritz pairs (theta_i, y_i = Q_j s_i); the residual of a Ritz pair is exactly
||A y_i - theta_i y_i|| = beta_j |s_i[j]|, with no extra product.  The top ``k`` Ritz pairs
(``which="largest"``: largest *algebraic* eigenvalues, ARPACK's ``which="LA"``; ``which="smallest"``:
ARPACK's ``"SA"``) are accepted when every residual is at most ``tol * |theta_i|``, the criterion
scipy's ``eigsh`` (ARPACK) uses, so the two are compared at equal ``tol``.  For a symmetric A each
accepted eigenvalue is then within ``tol * |theta_i|`` of an eigenvalue of A, and in practice within
about (tol theta)^2 / gap.

The run is three parts: :class:`KrylovBasis` holds the Lanczos vectors and T_j and takes each step (the
three-term recurrence, then :func:`reorthogonalise` against the whole basis, twice, "twice is enough"
(DGKS), which keeps the Ritz values free of the ghost copies plain Lanczos produces; the basis is
stored on the operator's device, n x (iterations) numbers); :class:`Convergence` is the residual test;
:func:`lanczos` runs them.  The basis may run into an invariant subspace (beta_j ~ 0, e.g. when
warm-started from an exact eigenvector); then :meth:`KrylovBasis.restart` continues the run with a
fresh random direction orthogonal to the basis, so fewer than ``k`` eigenvalues are never returned.

Power iteration is not used: its error shrinks like (lambda_2 / lambda_1)^j, hopeless when the top two
eigenvalues nearly coincide, which is the Edge-of-Stability regime; Lanczos converges like
Chebyshev polynomials in sqrt(gap).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from aeos_base import checks

from .operators import CurvatureOperator, as_operator

Operator = Callable[[Tensor], Tensor]

#: Which end of the spectrum ``which=`` selects.
WHICH = ("largest", "smallest")


class LanczosConvergenceWarning(RuntimeWarning):
    """Lanczos stopped at ``max_iter`` before the top-k residuals met ``tol``."""


@dataclass(frozen=True)
class LanczosResult:
    """Top-k Ritz pairs of a symmetric operator.

    eigenvalues: (k,) float64 tensor, descending ("largest") or ascending ("smallest"), in units of the
        operator (e.g. loss units per squared parameter unit for H).
    eigenvectors: (n, k) tensor of unit Ritz vectors on the operator's device, column i for eigenvalue i.
    residuals: (k,) float64 tensor, ||A y_i - theta_i y_i|| (same units as the eigenvalues).
    matvecs: number of products A v computed.
    converged: True iff every residual_i <= tol * |theta_i| (or the Krylov space became invariant).
        A product with non-finite entries (a diverged network) stops the run: all values nan, False.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor = field(repr=False)
    residuals: Tensor
    matvecs: int
    converged: bool


def _check(name: str, ok: bool, allowed: str, got) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed}; got {got!r}")


def _random_unit(n: int, generator: torch.Generator, device, dtype) -> Tensor:
    v = torch.randn(n, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    return v / torch.linalg.vector_norm(v)


def _start_vector(init: Tensor | None, n: int, generator, device, dtype) -> Tensor:
    if init is None:
        return _random_unit(n, generator, device, dtype)
    init = torch.as_tensor(init)
    if init.ndim == 2:  # several previous eigenvectors: start from their sum
        _check("init", init.shape[0] == n, f"a vector of length {n} or an ({n}, m) matrix", tuple(init.shape))
        init = init.sum(dim=1)
    _check("init", init.ndim == 1 and init.numel() == n, f"a vector of length {n}", tuple(init.shape))
    v = init.detach().to(device=device, dtype=dtype).clone()
    norm = torch.linalg.vector_norm(v)
    _check("init", bool(torch.isfinite(norm)) and float(norm) > 0, "a finite non-zero vector", "norm " + str(float(norm)))
    return v / norm


class KrylovBasis:
    """The orthonormal Lanczos vectors q_0 .. q_j (rows of ``Q``) and the tridiagonal T_j = Q A Q^T.

    ``alphas[i]`` = q_i^T A q_i; ``betas[i]`` couples q_i and q_(i+1) (0.0 marks a restart).  The rows live in
    one buffer on the operator's device, grown by doubling up to ``capacity``.
    """

    def __init__(self, n: int, capacity: int, device, dtype) -> None:
        self.n, self.capacity = n, capacity
        self._rows = torch.empty(min(capacity, 32), n, device=device, dtype=dtype)
        self.alphas: list[float] = []
        self.betas: list[float] = []

    @property
    def size(self) -> int:
        return len(self.alphas)

    @property
    def Q(self) -> Tensor:
        """The basis so far, (size, n)."""
        return self._rows[: self.size]

    def append(self, q: Tensor) -> None:
        """Make ``q`` the next row (its alpha is appended by :meth:`extend`)."""
        j = self.size
        if j == self._rows.shape[0]:
            grown = torch.empty(min(2 * j, self.capacity), self.n, device=self._rows.device, dtype=self._rows.dtype)
            grown[:j] = self._rows[:j]
            self._rows = grown
        self._rows[j] = q

    def extend(self, q: Tensor, w: Tensor) -> tuple[float, Tensor]:
        """One Lanczos step from q_j = ``q`` and w = A q_j: alpha_j = q_j^T w and the residual
        r = w - alpha_j q_j - beta_(j-1) q_(j-1), reorthogonalised against the whole basis."""
        alpha = float(torch.dot(q, w))
        self.alphas.append(alpha)
        r = w - alpha * q
        if self.size > 1:
            r = r - self.betas[-1] * self._rows[self.size - 2]
        return alpha, reorthogonalise(r, self.Q)

    def ritz(self) -> tuple[Tensor, Tensor]:
        """Eigenvalues theta (ascending, float64) and eigenvectors s of T_j."""
        a = torch.tensor(self.alphas, dtype=torch.float64)
        b = torch.tensor(self.betas, dtype=torch.float64)
        return torch.linalg.eigh(torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1))

    def continue_with(self, beta: float, r: Tensor) -> Tensor:
        """The next Lanczos vector r / beta (beta = |r| couples it to the last one)."""
        self.betas.append(beta)
        return r / beta

    def restart(self, generator: torch.Generator) -> Tensor:
        """A random unit vector orthogonal to the basis, after the basis became invariant (beta ~ 0): the run
        goes on in the rest of the space, uncoupled (beta 0.0)."""
        self.betas.append(0.0)
        device, dtype = self._rows.device, self._rows.dtype
        for _attempt in range(3):
            q = reorthogonalise(_random_unit(self.n, generator, device, dtype), self.Q)
            norm = float(torch.linalg.vector_norm(q))
            if norm > 1e-6:
                break
        return q / norm

    def vectors(self, s: Tensor, top: Tensor) -> Tensor:
        """Unit Ritz vectors Q^T s_i for the Ritz pairs ``top``, (n, len(top))."""
        vectors = self.Q.T @ s[:, top].to(device=self._rows.device, dtype=self._rows.dtype)
        return vectors / torch.linalg.vector_norm(vectors, dim=0, keepdim=True)


def reorthogonalise(r: Tensor, Q: Tensor) -> Tensor:
    """r minus its projection on the rows of Q, twice ("twice is enough", DGKS): full reorthogonalisation,
    which keeps the Ritz values free of the ghost copies plain Lanczos produces."""
    for _ in range(2):
        r = r - Q.T @ (Q @ r)
    return r


@dataclass
class Convergence:
    """The residual test of the top-k Ritz pairs: ||A y_i - theta_i y_i|| = beta_j |s_i[j]| <= tol |theta_i|.

    ``scale`` tracks the largest |theta| and |alpha_j| + beta_j seen, the operator's norm as far as the run
    knows it: a beta below 1e-10 scale means the basis spans an invariant subspace (the residuals are then 0),
    and |theta| below 1e-12 scale counts as 0 in the relative test.
    """

    k: int
    tol: float
    which: str
    scale: float = 0.0

    def residuals(self, theta: Tensor, s: Tensor, alpha: float, beta: float) -> tuple[Tensor, Tensor, bool]:
        """(the indices ``top`` of the wanted Ritz pairs, their residuals, whether the basis is invariant)."""
        self.scale = max(self.scale, float(theta.abs().max()), abs(alpha) + beta)
        j = theta.numel() - 1
        top = torch.argsort(theta, descending=self.which == "largest")[: min(self.k, j + 1)]
        invariant = beta <= 1e-10 * max(self.scale, 1e-300)
        return top, (0.0 if invariant else beta) * s[j, top].abs(), invariant

    def met(self, theta: Tensor, top: Tensor, residuals: Tensor) -> bool:
        floor = 1e-12 * self.scale
        return bool(torch.all(residuals <= self.tol * torch.clamp(theta[top].abs(), min=floor)))


def _nan_result(k: int, n: int, matvecs: int, device, dtype) -> LanczosResult:
    nan = torch.full((k,), math.nan, dtype=torch.float64)
    return LanczosResult(nan, torch.full((n, k), math.nan, device=device, dtype=dtype), nan.clone(), matvecs, False)


def lanczos(
    matvec: CurvatureOperator | Operator,
    n: int | None = None,
    *,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    min_iter: int = 1,
    init: Tensor | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    warn: bool = True,
    which: str = "largest",
) -> LanczosResult:
    """Top-k eigenpairs (largest, or smallest, algebraic) of a symmetric operator of size n x n.

    Args:
        matvec: a :class:`~deep.curvature.operators.CurvatureOperator`, or a function v -> A v on flat tensors of
            length n (A symmetric).
        n: dimension, >= 1 (taken from the operator when it has one).
        k: number of eigenpairs, 1 <= k <= n.
        tol: relative residual tolerance, > 0: stop when ||A y_i - theta_i y_i|| <= tol |theta_i|, i < k.
        max_iter: maximum number of products A v, >= k (capped at n, where Lanczos is exact).
        min_iter: convergence is not tested before this many products (1 <= min_iter <= max_iter).  A
            residual test can pass for a Ritz value near lambda_2 while the start vector's component along
            the top eigenvector is still small; a larger Krylov space first (ARPACK uses 20) guards a cold
            start against that.
        init: warm start, a length-n vector (e.g. the previous top eigenvector) or an (n, m) matrix whose
            columns are summed; random N(0, I) from ``seed`` when None.
        seed: seed of the random start (and of restarts), so results are deterministic.
        device, dtype: where the basis lives and the dtype of the vectors passed to ``matvec``
            (default: the operator's; else ``device`` that of ``init`` or CPU, ``dtype`` float32).
        warn: emit a :class:`LanczosConvergenceWarning` when not converged (``converged`` is False either way).
        which: "largest" (the top of the spectrum, e.g. S) or "smallest" (the bottom, e.g. the most
            negative curvature).

    Returns:
        :class:`LanczosResult` with eigenvalues (descending for "largest", ascending for "smallest"),
        unit eigenvectors, residuals, the number of products and whether the tolerance was met.
    """
    which = checks.choice("which", which, WHICH)
    if isinstance(matvec, CurvatureOperator) or n is None:
        op = as_operator(matvec, n)
        n = op.n if n is None else n
        device = op.device if device is None else device
        dtype = op.dtype if dtype is None else dtype
    dtype = torch.float32 if dtype is None else dtype
    n = checks.integer("n", n, low=1)
    k = checks.integer("k", k, low=1, high=n)
    tol = checks.real("tol", tol, low=0.0, low_inclusive=False)
    max_iter = checks.integer("max_iter", max_iter, low=k)
    min_iter = checks.integer("min_iter", min_iter, low=1, high=max_iter)
    if device is None:
        device = init.device if isinstance(init, Tensor) else torch.device("cpu")
    generator = torch.Generator().manual_seed(int(seed))
    m = min(max_iter, n)

    basis, test = KrylovBasis(n, m, device, dtype), Convergence(k, tol, which)
    q = _start_vector(init, n, generator, device, dtype)
    converged = False
    for j in range(m):
        basis.append(q)
        w = matvec(q).to(device=device, dtype=dtype)
        _check("matvec(v)", w.shape == (n,), f"a vector of shape ({n},)", tuple(w.shape))
        alpha, r = basis.extend(q, w)
        beta = float(torch.linalg.vector_norm(r))
        if not (math.isfinite(beta) and math.isfinite(alpha)):  # e.g. a diverged network: report, don't crash
            if warn:
                warnings.warn(f"matvec returned non-finite values at Lanczos step {j}; eigenvalues are nan",
                              LanczosConvergenceWarning, stacklevel=2)
            return _nan_result(k, n, j + 1, device, dtype)
        theta, s = basis.ritz()
        top, residuals, invariant = test.residuals(theta, s, alpha, beta)
        if j + 1 >= max(k, min_iter) and test.met(theta, top, residuals):
            converged = True
            break
        if j + 1 == m:
            break
        q = basis.restart(generator) if invariant else basis.continue_with(beta, r)

    if not converged and basis.size == n:
        converged = True  # the full space was spanned: T is A in the basis, eigenvalues exact
        residuals = torch.zeros_like(residuals)
    if not converged and warn:
        warnings.warn(
            f"Lanczos ({which}) did not converge in max_iter={max_iter} products: residuals "
            f"{[f'{r:.3g}' for r in residuals.tolist()]} vs tol*|theta| with tol={tol}",
            LanczosConvergenceWarning, stacklevel=2)
    return LanczosResult(theta[top].clone(), basis.vectors(s, top), residuals.clone(), basis.size, converged)
