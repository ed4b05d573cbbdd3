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

Each new vector is orthogonalised against the whole basis twice ("twice is enough", DGKS), which
keeps the Ritz values free of the ghost copies plain Lanczos produces; the basis is stored on the
operator's device, n x (iterations) numbers.  The basis may run into an invariant subspace (beta_j
~ 0, e.g. when warm-started from an exact eigenvector); then a fresh random direction orthogonal to
the basis continues the run, so fewer than ``k`` eigenvalues are never returned.

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

    q = _start_vector(init, n, generator, device, dtype)
    basis = torch.empty(min(m, 32), n, device=device, dtype=dtype)
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples q_j and q_{j+1}; 0.0 marks a restart
    matvecs = 0
    converged = False
    theta = s = None
    top = torch.zeros(0, dtype=torch.long)
    residuals = torch.zeros(0, dtype=torch.float64)
    scale = 0.0

    for j in range(m):
        if j == basis.shape[0]:  # grow the basis by doubling
            grown = torch.empty(min(2 * j, m), n, device=device, dtype=dtype)
            grown[:j] = basis
            basis = grown
        basis[j] = q
        w = matvec(q).to(device=device, dtype=dtype)
        matvecs += 1
        _check("matvec(v)", w.shape == (n,), f"a vector of shape ({n},)", tuple(w.shape))
        alpha = float(torch.dot(q, w))
        alphas.append(alpha)
        w = w - alpha * q
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        Q = basis[: j + 1]
        for _ in range(2):  # full reorthogonalisation, twice
            w = w - Q.T @ (Q @ w)
        beta = float(torch.linalg.vector_norm(w))
        if not (math.isfinite(beta) and math.isfinite(alpha)):  # e.g. a diverged network: report, don't crash
            if warn:
                warnings.warn(f"matvec returned non-finite values at Lanczos step {j}; eigenvalues are nan",
                              LanczosConvergenceWarning, stacklevel=2)
            nan = torch.full((k,), math.nan, dtype=torch.float64)
            return LanczosResult(nan, torch.full((n, k), math.nan, device=device, dtype=dtype), nan.clone(),
                                 matvecs, False)

        a = torch.tensor(alphas, dtype=torch.float64)
        b = torch.tensor(betas, dtype=torch.float64)
        T = torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1)
        theta, s = torch.linalg.eigh(T)
        scale = max(scale, float(theta.abs().max()), abs(alpha) + beta)
        top = torch.argsort(theta, descending=which == "largest")[: min(k, j + 1)]
        invariant = beta <= 1e-10 * max(scale, 1e-300)
        residuals = (0.0 if invariant else beta) * s[j, top].abs()
        if j + 1 >= max(k, min_iter):
            floor = 1e-12 * scale
            if bool(torch.all(residuals <= tol * torch.clamp(theta[top].abs(), min=floor))):
                converged = True
                break
        if j + 1 == m:
            break
        if invariant:  # restart with a random direction orthogonal to the basis
            betas.append(0.0)
            for _attempt in range(3):
                q = _random_unit(n, generator, device, dtype)
                for _ in range(2):
                    q = q - Q.T @ (Q @ q)
                qn = float(torch.linalg.vector_norm(q))
                if qn > 1e-6:
                    break
            q = q / qn
        else:
            betas.append(beta)
            q = w / beta

    if not converged and len(alphas) == n:
        converged = True  # the full space was spanned: T is A in the basis, eigenvalues exact
        residuals = torch.zeros_like(residuals)
    Q = basis[: len(alphas)]
    vectors = Q.T @ s[:, top].to(device=device, dtype=dtype)
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=0, keepdim=True)
    if not converged and warn:
        warnings.warn(
            f"Lanczos ({which}) did not converge in max_iter={max_iter} products: residuals "
            f"{[f'{r:.3g}' for r in residuals.tolist()]} vs tol*|theta| with tol={tol}",
            LanczosConvergenceWarning, stacklevel=2)
    return LanczosResult(theta[top].clone(), vectors, residuals.clone(), matvecs, converged)
