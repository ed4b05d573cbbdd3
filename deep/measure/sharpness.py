"""Raw and preconditioned sharpness of a network's full-batch loss: the measurement API.

* Sharpness S = lambda_max(H), H the Hessian of the full-batch loss L(theta).
* Preconditioned sharpness S_P = lambda_max(P^-1 H) = lambda_max(P^-1/2 H P^-1/2), with P the diagonal
  preconditioner of a ``torch.optim`` optimizer read from its state (:mod:`deep.curvature.preconditioners`).
  The symmetric form is an operator built by composition, v -> P^-1/2 H (P^-1/2 v), handed to the
  same Lanczos solver as H.  eta * S_P is the level compared with the threshold (38 for Adam at
  beta1 = 0.9); eta * S for GD (2).

Units: eigenvalues of H are loss units per squared parameter unit; those of P^-1/2 H P^-1/2 are that
divided by the units of P (those of the gradient), i.e. 1/step-length, so eta * S_P is dimensionless.

Design: ``sharpness`` and ``preconditioned_sharpness`` return plain numbers (a float for k = 1, a list
of k floats, descending, otherwise).  :func:`top_eigenpairs` runs the same computation and returns a
:class:`SharpnessResult` with the eigenvectors, the number of Hessian-vector products, the residuals
and the converged flag: use it when you need more than the number.  :class:`deep.SharpnessTracker`
(:mod:`deep.measure.tracker`) keeps the previous eigenvectors to warm-start the next measurement during
training.

None of these change the model's parameters, gradients or buffers, nor the optimizer's state.

Cost: a cold measurement takes at least :data:`~deep.curvature.eigen.COLD_MIN_ITER` Hessian-vector products before its first
convergence test, a guard against stopping at lambda_2 when the top two eigenvalues nearly coincide;
a warm one (previous eigenvector) stops as soon as the residual test passes.  The default
``strategy="auto"`` keeps the gradient graph of the whole batch for the measurement (within a memory
budget) so each product is one backward pass (:mod:`deep.curvature.hessian`).  The eigensolve itself,
shared with :mod:`deep.measure.edge`, is :func:`eigenpairs_of` (:mod:`deep.curvature.eigen`).  Measured costs are in
``benchmarks/README.md``.

Beyond S and S_P: ``which="smallest"`` gives the bottom of the spectrum, ``params=`` the curvature
of a parameter block (a layer), ``curvature="ggn"`` the Gauss-Newton matrix; :func:`deep.hessian_trace`
and :func:`deep.spectral_density` take the same arguments.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..curvature.build import curvature_operator
from ..curvature.eigen import DEFAULT_MAX_ITER, SharpnessResult, eigenpairs_of
from ..curvature.inputs import Data, LossFn
from ..curvature.params import ParamLayout, ParamSelection


def top_eigenpairs(model: nn.Module, loss_fn: LossFn, data: Data, optimizer: torch.optim.Optimizer | None = None,
                   *, k: int = 1, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER, init: Tensor | None = None,
                   seed: int = 0, min_iter: int | None = None, strategy: str = "auto", warn: bool = True,
                   which: str = "largest", params: ParamSelection = None,
                   curvature: str = "hessian") -> SharpnessResult:
    """Top-k eigenpairs of H (optimizer None) or of P^-1/2 (H + W) P^-1/2 (P and the coupled weight
    decay W read from ``optimizer``; W = 0 for AdamW's decoupled decay or no decay).

    Args:
        model, loss_fn, data: the full-batch loss L = sum_i (n_i/N) loss_fn(model(x_i), y_i) over the
            (x_i, y_i) chunks of ``data`` (chunks, a deep.Dataset, an (X, y) pair or a DataLoader;
            ``loss_fn`` returns its chunk's mean; :mod:`deep.curvature.inputs`).
        optimizer: a torch.optim Adam, AdamW, NAdam, RMSprop, Adagrad or SGD that has stepped; P = I for SGD.
        k: number of eigenpairs, 1 <= k <= n. tol: Lanczos relative residual tolerance (> 0).
        max_iter: maximum number of Hessian-vector products (>= k).
        init: warm start, a flat vector or an (n, m) matrix of previous eigenvectors. seed: random start.
        min_iter: products before the first convergence test; None: :data:`COLD_MIN_ITER` for a
            cold start, 1 for a warm start (both capped at max_iter and n).
        strategy: how H v is computed, "auto" (default), "cached_double_backward", "reverse_over_reverse" or
            "forward_over_reverse" (:mod:`deep.curvature.hessian`); the one used is the result's ``strategy``.
        warn: warn when Lanczos does not converge (``converged`` is False either way).
        which: "largest" (S, S_P) or "smallest" (lambda_min: the most negative curvature).
        params: the parameter block (a sub-module, or parameter names or tensors; :mod:`deep.curvature.params`)
            for per-layer / block curvature; None: every trainable parameter.
        curvature: "hessian" (H), "ggn" (the generalised Gauss-Newton matrix G, :mod:`deep.curvature.ggn`),
            "empirical_fisher" or "kfac" (:data:`deep.curvature.CURVATURES`).
    """
    op = curvature_operator(model, loss_fn, data, optimizer, curvature=curvature, strategy=strategy, params=params)
    return eigenpairs_of(op, k=k, tol=tol, max_iter=max_iter, init=init, seed=seed, min_iter=min_iter,
                         warn=warn, which=which, preconditioned=optimizer is not None)


def _value(result: SharpnessResult, k: int) -> float | list[float]:
    return result.eigenvalues[0] if k == 1 else list(result.eigenvalues)


def sharpness(model: nn.Module, loss_fn: LossFn, data: Data, *, k: int = 1, tol: float = 1e-3,
              max_iter: int = DEFAULT_MAX_ITER, init: Tensor | None = None, seed: int = 0,
              min_iter: int | None = None, strategy: str = "auto", which: str = "largest",
              params: ParamSelection = None, curvature: str = "hessian") -> float | list[float]:
    """S = lambda_max(H) of the full-batch loss (a float), or its top k eigenvalues (descending list).

    ``which="smallest"``: lambda_min(H) (or the k smallest, ascending).  Lanczos on v -> H v at relative
    residual tolerance ``tol``; see :func:`top_eigenpairs` for the arguments (``params`` for block
    curvature, ``curvature="ggn"`` for the Gauss-Newton matrix) and for the eigenvectors, HVP count,
    strategy and convergence flag.  Units: loss units per squared parameter unit.
    """
    return _value(top_eigenpairs(model, loss_fn, data, None, k=k, tol=tol, max_iter=max_iter, init=init,
                                 seed=seed, min_iter=min_iter, strategy=strategy, which=which, params=params,
                                 curvature=curvature), k)


def preconditioned_sharpness(model: nn.Module, loss_fn: LossFn, data: Data, optimizer: torch.optim.Optimizer,
                             *, k: int = 1, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER,
                             init: Tensor | None = None, seed: int = 0, min_iter: int | None = None,
                             strategy: str = "auto", which: str = "largest", params: ParamSelection = None,
                             curvature: str = "hessian") -> float | list[float]:
    """S_P = lambda_max(P^-1/2 (H + W) P^-1/2) = lambda_max(P^-1 (H + W)) (a float), or its top k.

    P is the diagonal the optimizer divided its last step by (e.g. Adam: sqrt(v_hat) + eps) and W its
    coupled weight decay (each group's ``weight_decay``; 0 for AdamW's decoupled decay): the curvature of
    the objective L + wd/2 |theta|^2 the optimizer descends, in P's metric, which is what its stability
    threshold bounds.  Without weight decay W = 0.  ValueError if the optimizer is not a supported
    torch.optim class or has taken no step.  ``which="smallest"
    gives the bottom of the spectrum of P^-1/2 H P^-1/2; ``params`` restricts H and P to a block.
    Units: 1/step length (eta * S_P is dimensionless).
    """
    if optimizer is None:
        raise ValueError("optimizer must be a torch.optim optimizer that has taken a step; got None")
    return _value(top_eigenpairs(model, loss_fn, data, optimizer, k=k, tol=tol, max_iter=max_iter, init=init,
                                 seed=seed, min_iter=min_iter, strategy=strategy, which=which, params=params,
                                 curvature=curvature), k)


def gradient_overlap(model: nn.Module, loss_fn: LossFn, data: Data, vector: Tensor,
                     params: ParamSelection = None) -> float:
    """|<g, u>| / (||g|| ||u||): cosine between the full-batch gradient g (over the block ``params``) and a
    direction u (e.g. the top eigenvector of H); in [0, 1], nan when g = 0.  Costs one full-batch gradient."""
    g = curvature_operator(model, loss_fn, data, params=params).gradient()
    u = vector.to(device=g.device, dtype=g.dtype).reshape(-1)
    denom = float(torch.linalg.vector_norm(g) * torch.linalg.vector_norm(u))
    return abs(float(torch.dot(g, u))) / denom if denom > 0 else math.nan


def layer_mass(model: nn.Module, vector: Tensor) -> dict[str, float]:
    """Share of ||u||^2 carried by each trainable parameter tensor (sums to 1): where the top
    eigenvector lives in the network."""
    layout = ParamLayout.of(model)
    parts = layout.split(vector.to(layout.device).reshape(-1))
    total = float(sum(float(p.pow(2).sum()) for p in parts.values()))
    return {name: float(p.pow(2).sum()) / total for name, p in parts.items()}
