"""Top-k eigenpairs of a curvature operator, cold or warm started: the solve shared by the measurements.

:func:`eigenpairs_of` runs :func:`deep.curvature.lanczos.lanczos` on any :class:`deep.curvature.operators.CurvatureOperator`
(H, P^-1/2 (H + W) P^-1/2, the edge operator D^1/2 (H + W) D^1/2 of :mod:`deep.measure.edge`, the Gauss-Newton
matrix) and returns a :class:`SharpnessResult`.  :mod:`deep.measure` (S, S_P, the tracker),
:mod:`deep.measure.edge` (eta_S_P) and :mod:`deep.flows` build their operators and hand them here, so this
module imports neither of them.

A cold start (no previous eigenvector) begins from :func:`deep.curvature.operators.cold_start` and takes
:data:`COLD_MIN_ITER` Lanczos steps before its first convergence test; a warm start is tested from the
first step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from .lanczos import lanczos
from .operators import CurvatureOperator, cold_start

#: Default cap on the Hessian-vector products of one solve.
DEFAULT_MAX_ITER = 100

#: Lanczos steps taken before the first convergence test when starting cold.  A cold start begins
#: from z/||z|| + g/||g|| (:func:`deep.curvature.operators.cold_start`: random z from the seed, g the full-batch
#: gradient, free with the cached strategies).  In its first few steps the Krylov space may not yet
#: hold enough of the top eigenvector, and when lambda_1 and lambda_2 nearly coincide (the Edge of
#: Stability regime) a Ritz pair converged to lambda_2 can pass the residual test: the solve would
#: stop a little low.  A minimum number of steps lets lambda_1 emerge before the first test; the
#: gradient part of the start adds a large component along the top eigenvectors, so the minimum can stay
#: well below the size of ARPACK's default basis (20).  Measured on the gallery's digits MLP at the edge
#: (``benchmarks/cold_start.py``, 30 seeds, H and P^-1/2 H P^-1/2 with lambda_1 and lambda_2 1-4% apart): no
#: minimum from 1 to 12 ever returned lambda_2 from this start, at a median of 5-10 products; 6 keeps a
#: margin at little cost.  A warm start (previous eigenvector) already carries a large component along
#: the top eigenvector and is tested from the first step.
COLD_MIN_ITER = 6


@dataclass(frozen=True)
class SharpnessResult:
    """Top-k eigenpairs of H (``preconditioned=False``) or of P^-1/2 H P^-1/2 (``preconditioned=True``).

    eigenvalues: k floats, descending (S or S_P first); ascending for ``which="smallest"``.
    eigenvectors: (n, k) unit vectors in the flat parameter layout (:class:`deep.curvature.params.ParamLayout`).
        For the preconditioned operator these are eigenvectors u of P^-1/2 H P^-1/2; the matching
        eigenvectors of P^-1 H are P^-1/2 u.
    residuals: ||A y_i - theta_i y_i|| for each pair (units of the eigenvalues).
    hvps: Hessian-vector products used (the cost; the cost of one product against a gradient is in
        ``benchmarks/README.md``).
    converged: every residual <= tol * |eigenvalue| (False is also warned about).
    strategy: how the products were computed (:mod:`deep.curvature.hessian`, or "ggn").
    which: "largest" or "smallest" (the end of the spectrum).
    """

    eigenvalues: tuple[float, ...]
    eigenvectors: Tensor = field(repr=False)
    residuals: tuple[float, ...]
    hvps: int
    converged: bool
    preconditioned: bool
    strategy: str = ""
    which: str = "largest"

    @property
    def top(self) -> float:
        """The top eigenvalue: S, or S_P when preconditioned."""
        return self.eigenvalues[0]


def eigenpairs_of(op: CurvatureOperator, *, k: int = 1, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER,
                  init: Tensor | None = None, seed: int = 0, min_iter: int | None = None, warn: bool = True,
                  which: str = "largest", preconditioned: bool = False) -> SharpnessResult:
    """Top-k eigenpairs of an operator ``op`` (arguments as :func:`deep.measure.top_eigenpairs`): a cold
    start (``init`` None) begins from :func:`deep.curvature.operators.cold_start` and is tested after
    :data:`COLD_MIN_ITER` products, a warm one from the first.  ``preconditioned`` only labels the result."""
    cold = init is None
    if min_iter is None:
        min_iter = COLD_MIN_ITER if cold else 1
        min_iter = max(1, min(min_iter, max_iter if isinstance(max_iter, int) else 1, op.n))
    if cold:
        init = cold_start(op, seed)
    res = lanczos(op, k=k, tol=tol, max_iter=max_iter, min_iter=min_iter, init=init, seed=seed, warn=warn,
                  which=which)
    return SharpnessResult(
        eigenvalues=tuple(float(x) for x in res.eigenvalues),
        eigenvectors=res.eigenvectors,
        residuals=tuple(float(x) for x in res.residuals),
        hvps=res.matvecs,
        converged=res.converged,
        preconditioned=preconditioned,
        strategy=op.strategy,
        which=which,
    )
