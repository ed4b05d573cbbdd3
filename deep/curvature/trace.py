"""Stochastic trace of a curvature matrix: Hutchinson, Hutch++ and Hutch++ with a Lanczos range.

For a symmetric n x n operator A (H, the Gauss-Newton G, or P^-1/2 H P^-1/2, whose trace is tr(P^-1 H))
and a budget of m products:

* ``hutchinson`` (Hutchinson 1989): tr(A) ~ (1/m) sum_j z_j^T A z_j, z_j Rademacher;
* ``hutch++`` (Meyer, Musco, Musco, Woodruff 2021): Q = orth(A S) from m/3 Rademacher columns S,
  tr(A) ~ tr(Q^T A Q) + Hutchinson on (I - QQ^T) A (I - QQ^T) with the remaining m/3 probes;
* ``lanczos_hutch++``: Q from r = m/2 Lanczos steps (a Krylov basis, which captures the top of the
  spectrum far better than one sketch A S of the same size), tr(Q^T A Q) = tr(T_r) read off the
  tridiagonal at no extra product, then Hutchinson on (I - QQ^T) A (I - QQ^T) with the other m - r
  products.  Q depends only on the Lanczos start, independent of the probes, so the estimate is
  unbiased exactly as Hutch++'s is.  When the operator multiplies several columns in one pass
  (:meth:`~deep.curvature.operators.CurvatureOperator.block_size` > 1: small networks, whose products are
  dominated by per-operation overhead) the Krylov basis is a block one (:func:`block_krylov_range`, blocks
  of up to r/8 columns, so at least 8 block steps), as accurate at equal products and several times faster.

Every Hutchinson probe and sketch is multiplied through ``matmat``, so an operator that batches its
products takes them together.

The standard error is that of the Hutchinson part, std(z_j^T B z_j) / sqrt(#probes) with B the
(deflated) operator: the low-rank part is exact given Q.  Measured on the digits MLP in
``benchmarks/README.md`` against PyHessian's Hutchinson and curvlinops' Hutch++ / XTrace at equal budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aeos_base import checks

from .build import curvature_operator
from .inputs import LossFn
from .lanczos import lanczos
from .operators import CurvatureOperator, as_operator
from .params import ParamSelection

#: Trace estimators (module docstring).
ESTIMATORS = ("lanczos_hutch++", "hutch++", "hutchinson")


@dataclass(frozen=True)
class TraceResult:
    """estimate: tr(A) (units of A's eigenvalues). stderr: standard error of the estimate (same units; 0 when
    the low-rank part spans the whole space). hvps: products used. estimator: which one (:data:`ESTIMATORS`).
    """

    estimate: float
    stderr: float
    hvps: int
    estimator: str


def _rademacher(n: int, m: int, generator: torch.Generator, op: CurvatureOperator) -> Tensor:
    signs = torch.randint(0, 2, (n, m), generator=generator, dtype=torch.int8)
    return (2 * signs - 1).to(device=op.device, dtype=op.dtype)


def _deflated_hutchinson(op: CurvatureOperator, Q: Tensor | None, probes: Tensor) -> Tensor:
    """Samples z^T (I - QQ^T) A (I - QQ^T) z for each column z of ``probes`` (one product each, computed
    together by the operator's :meth:`~deep.curvature.operators.CurvatureOperator.matmat`)."""
    if probes.shape[1] == 0:
        return torch.zeros(0, dtype=torch.float64)
    Z = probes if Q is None else probes - Q @ (Q.T @ probes)
    return (Z.double() * op.matmat(Z).double()).sum(dim=0)


def block_krylov_range(op: CurvatureOperator, r: int, block: int, generator: torch.Generator) -> tuple[Tensor, float]:
    """An orthonormal basis Q (n, r) of the block Krylov space [S, A S, A^2 S, ...] of a Rademacher block S of
    ``block`` columns, and tr(Q^T A Q), from r products (blocks of columns multiplied together).

    Each new block is A times the last one, orthogonalised against the whole basis (twice, as in Lanczos);
    tr(Q^T A Q) = sum_j tr(Q_j^T A Q_j) over the blocks, read off the products already taken."""
    n = op.n
    Q = torch.zeros(n, 0, dtype=op.dtype, device=op.device)
    current = _orthonormal(_rademacher(n, min(block, r), generator, op))
    low_rank = 0.0
    while Q.shape[1] < r:
        current = current[:, : r - Q.shape[1]]
        W = op.matmat(current)
        low_rank += float((current.double() * W.double()).sum())
        Q = torch.cat([Q, current], dim=1)
        for _ in range(2):
            W = W - Q @ (Q.T @ W)
        current = _orthonormal(W)
        for _ in range(2):  # a rank-deficient W: QR's extra columns are made orthogonal to the basis too
            current = _orthonormal(current - Q @ (Q.T @ current))
    return Q, low_rank


def _combine(low_rank: float, samples: Tensor, hvps: int, estimator: str) -> TraceResult:
    count = samples.numel()
    mean = float(samples.mean()) if count else 0.0
    stderr = float(samples.std(unbiased=True)) / count ** 0.5 if count > 1 else (0.0 if count == 0 else float("inf"))
    return TraceResult(low_rank + mean, stderr, hvps, estimator)


def _orthonormal(Y: Tensor) -> Tensor:
    return torch.linalg.qr(Y.double())[0].to(Y.dtype)


def trace_estimate(op: CurvatureOperator, *, hvps: int = 100, estimator: str = "lanczos_hutch++",
                   seed: int = 0) -> TraceResult:
    """tr(A) of a symmetric operator with at most ``hvps`` products (>= 3); see the module docstring."""
    op = as_operator(op)
    hvps = checks.integer("hvps", hvps, low=3)
    estimator = checks.choice("estimator", estimator, ESTIMATORS)
    generator = torch.Generator().manual_seed(int(seed))
    n, start = op.n, op.matvecs
    if estimator == "hutchinson":
        samples = _deflated_hutchinson(op, None, _rademacher(n, hvps, generator, op))
        return _combine(0.0, samples, op.matvecs - start, estimator)
    if estimator == "hutch++":
        k = min(hvps // 3, n)
        Q = _orthonormal(op.matmat(_rademacher(n, k, generator, op)))
        low_rank = float(torch.trace(Q.T.double() @ op.matmat(Q).double()))
        probes = _rademacher(n, hvps - 2 * k, generator, op) if k < n else _rademacher(n, 0, generator, op)
    else:
        r = min(max(1, hvps // 2), n)
        block = op.block_size() if r < n else 1
        if block > 1:
            Q, low_rank = block_krylov_range(op, r, min(block, max(1, r // 8)), generator)
        else:
            res = lanczos(op, k=r, tol=1e-300, max_iter=r, min_iter=r, seed=int(seed) + 1, warn=False)
            Q, low_rank = res.eigenvectors, float(res.eigenvalues.sum())
        probes = _rademacher(n, hvps - r, generator, op) if r < n else _rademacher(n, 0, generator, op)
    samples = _deflated_hutchinson(op, Q, probes)
    return _combine(low_rank, samples, op.matvecs - start, estimator)


def hessian_trace(model: nn.Module, loss_fn: LossFn, data: Any, optimizer: torch.optim.Optimizer | None = None,
                  *, hvps: int = 100, estimator: str = "lanczos_hutch++", seed: int = 0, params: ParamSelection = None,
                  curvature: str = "hessian", strategy: str = "auto") -> TraceResult:
    """tr(H) of the full-batch loss, or tr(P^-1 H) = tr(P^-1/2 H P^-1/2) with P from ``optimizer``.

    Args:
        model, loss_fn, data: the full-batch loss (:mod:`deep.curvature.inputs`); optimizer: None for H.
        hvps: budget of products (>= 3). estimator: one of :data:`ESTIMATORS`. seed: the probes' seed.
        params: parameter block (:mod:`deep.curvature.params`). curvature: one of :data:`deep.curvature.CURVATURES`.
        strategy: the HVP strategy (:mod:`deep.curvature.hessian`).

    Returns:
        :class:`TraceResult` (estimate and standard error in loss units per squared parameter unit for H;
        1/step length for the preconditioned operator).
    """
    op = curvature_operator(model, loss_fn, data, optimizer, curvature=curvature, strategy=strategy, params=params)
    return trace_estimate(op, hvps=hvps, estimator=estimator, seed=seed)
