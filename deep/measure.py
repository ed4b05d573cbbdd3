"""Raw and preconditioned sharpness of a network's full-batch loss: the measurement API.

* Sharpness S = lambda_max(H), H the Hessian of the full-batch loss L(theta).
* Preconditioned sharpness S_P = lambda_max(P^-1 H) = lambda_max(P^-1/2 H P^-1/2), with P the diagonal
  preconditioner of a ``torch.optim`` optimizer read from its state (:mod:`deep.preconditioners`).
  The symmetric form is an operator built by composition, v -> P^-1/2 H (P^-1/2 v), handed to the
  same Lanczos solver as H.  eta * S_P is the level compared with the threshold (38 for Adam at
  beta1 = 0.9); eta * S for GD (2).

Units: eigenvalues of H are loss units per squared parameter unit; those of P^-1/2 H P^-1/2 are that
divided by the units of P (those of the gradient), i.e. 1/step-length, so eta * S_P is dimensionless.

Design: ``sharpness`` and ``preconditioned_sharpness`` return plain numbers (a float for k = 1, a list
of k floats, descending, otherwise).  :func:`top_eigenpairs` runs the same computation and returns a
:class:`SharpnessResult` with the eigenvectors, the number of Hessian-vector products, the residuals
and the converged flag: use it when you need more than the number.  :class:`SharpnessTracker` keeps the
previous eigenvectors to warm-start the next measurement during training.

None of these change the model's parameters, gradients or buffers, nor the optimizer's state.

Cost: a cold measurement takes at least :data:`COLD_MIN_ITER` Hessian-vector products before its first
convergence test, a guard against stopping at lambda_2 when the top two eigenvalues nearly coincide;
a warm one (previous eigenvector) stops as soon as the residual test passes.  The default
``method="auto"`` keeps the gradient graph of the whole batch for the measurement (within a memory
budget) so each product is one backward pass (:mod:`deep.strategies`).  The eigensolve itself,
shared with :mod:`deep.edge`, is :func:`eigenpairs_of` (:mod:`deep.eigen`).  Measured costs are in
``benchmarks/README.md``.

Beyond S and S_P: ``which="smallest"`` gives the bottom of the spectrum, ``params=`` the curvature
of a parameter block (a layer), ``curvature="ggn"`` the Gauss-Newton matrix; :func:`deep.hessian_trace`
and :func:`deep.spectral_density` take the same arguments.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from aeos_base import checks

from .curvature import operator_for
from .edge import EdgeSetting, edge_operator, edge_setting
from .eigen import COLD_MIN_ITER, DEFAULT_MAX_ITER, SharpnessResult, eigenpairs_of
from .hessian import Data, LossFn, ParamLayout, full_batch_gradient
from .operators import CurvatureOperator, PreconditionedOperator
from .params import ParamSelection
from .preconditioners import coupled_decay_diagonal, is_identity

#: The measurement API, with the eigensolve's names re-exported from :mod:`deep.eigen` (COLD_MIN_ITER,
#: DEFAULT_MAX_ITER, SharpnessResult, eigenpairs_of) and PreconditionedOperator from :mod:`deep.operators`.
__all__ = ["COLD_MIN_ITER", "DEFAULT_MAX_ITER", "PreconditionedOperator", "SharpnessResult", "SharpnessTracker",
           "eigenpairs_of", "gradient_overlap", "layer_mass", "preconditioned_sharpness", "sharpness",
           "top_eigenpairs"]


def _operator(model: nn.Module, loss_fn: LossFn, data: Data, optimizer, method: str,
              params: ParamSelection = None, curvature: str = "hessian"):
    return operator_for(model, loss_fn, data, optimizer, curvature=curvature, strategy=method, params=params)


def top_eigenpairs(model: nn.Module, loss_fn: LossFn, data: Data, optimizer: torch.optim.Optimizer | None = None,
                   *, k: int = 1, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER, init: Tensor | None = None,
                   seed: int = 0, min_iter: int | None = None, method: str = "auto", warn: bool = True,
                   which: str = "largest", params: ParamSelection = None,
                   curvature: str = "hessian") -> SharpnessResult:
    """Top-k eigenpairs of H (optimizer None) or of P^-1/2 (H + W) P^-1/2 (P and the coupled weight
    decay W read from ``optimizer``; W = 0 for AdamW's decoupled decay or no decay).

    Args:
        model, loss_fn, data: the full-batch loss L = sum_i (n_i/N) loss_fn(model(x_i), y_i) over the
            (x_i, y_i) chunks of ``data`` (chunks, a deep.Dataset, an (X, y) pair or a DataLoader;
            ``loss_fn`` returns its chunk's mean; :mod:`deep.inputs`).
        optimizer: a torch.optim Adam, AdamW, NAdam, RMSprop, Adagrad or SGD that has stepped; P = I for SGD.
        k: number of eigenpairs, 1 <= k <= n. tol: Lanczos relative residual tolerance (> 0).
        max_iter: maximum number of Hessian-vector products (>= k).
        init: warm start, a flat vector or an (n, m) matrix of previous eigenvectors. seed: random start.
        min_iter: products before the first convergence test; None: :data:`COLD_MIN_ITER` for a
            cold start, 1 for a warm start (both capped at max_iter and n).
        method: the HVP strategy, "auto" (default), "cached_double_backward", "reverse_over_reverse" or
            "forward_over_reverse" (:mod:`deep.strategies`); the one used is the result's ``strategy``.
        warn: warn when Lanczos does not converge (``converged`` is False either way).
        which: "largest" (S, S_P) or "smallest" (lambda_min: the most negative curvature).
        params: the parameter block (a sub-module, or parameter names or tensors; :mod:`deep.params`)
            for per-layer / block curvature; None: every trainable parameter.
        curvature: "hessian" (H) or "ggn" (the generalised Gauss-Newton matrix G, :mod:`deep.ggn`).
    """
    op = _operator(model, loss_fn, data, optimizer, method, params, curvature)
    return eigenpairs_of(op, k=k, tol=tol, max_iter=max_iter, init=init, seed=seed, min_iter=min_iter,
                         warn=warn, which=which, preconditioned=optimizer is not None)


def _value(result: SharpnessResult, k: int) -> float | list[float]:
    return result.eigenvalues[0] if k == 1 else list(result.eigenvalues)


def sharpness(model: nn.Module, loss_fn: LossFn, data: Data, k: int = 1, tol: float = 1e-3,
              max_iter: int = DEFAULT_MAX_ITER, init: Tensor | None = None, seed: int = 0,
              min_iter: int | None = None, method: str = "auto", *, which: str = "largest",
              params: ParamSelection = None, curvature: str = "hessian") -> float | list[float]:
    """S = lambda_max(H) of the full-batch loss (a float), or its top k eigenvalues (descending list).

    ``which="smallest"``: lambda_min(H) (or the k smallest, ascending).  Lanczos on v -> H v at relative
    residual tolerance ``tol``; see :func:`top_eigenpairs` for the arguments (``params`` for block
    curvature, ``curvature="ggn"`` for the Gauss-Newton matrix) and for the eigenvectors, HVP count,
    strategy and convergence flag.  Units: loss units per squared parameter unit.
    """
    return _value(top_eigenpairs(model, loss_fn, data, None, k=k, tol=tol, max_iter=max_iter, init=init,
                                 seed=seed, min_iter=min_iter, method=method, which=which, params=params,
                                 curvature=curvature), k)


def preconditioned_sharpness(model: nn.Module, loss_fn: LossFn, data: Data, optimizer: torch.optim.Optimizer,
                             k: int = 1, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER,
                             init: Tensor | None = None, seed: int = 0, min_iter: int | None = None,
                             method: str = "auto", *, which: str = "largest", params: ParamSelection = None,
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
                                 seed=seed, min_iter=min_iter, method=method, which=which, params=params,
                                 curvature=curvature), k)


def gradient_overlap(model: nn.Module, loss_fn: LossFn, data: Data, vector: Tensor,
                     params: ParamSelection = None) -> float:
    """|<g, u>| / (||g|| ||u||): cosine between the full-batch gradient g (over the block ``params``) and a
    direction u (e.g. the top eigenvector of H); in [0, 1], nan when g = 0.  Costs one full-batch gradient."""
    g = full_batch_gradient(model, loss_fn, data, params)
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


class SharpnessTracker:
    """Periodic measurement of S and S_P during training, warm-started from the previous eigenvectors.

    ``tracker.measure(model, loss_fn, data, optimizer)`` returns a dict with
    ``sharpness`` (S), ``preconditioned_sharpness`` (S_P of H + W, the coupled weight decay included;
    nan when optimizer is None, or when the groups have different learning rates; S + wd, at no extra
    cost, for SGD whose groups share one lr and one weight decay), the edge of :mod:`deep.edge`
    (``eta_S_P``, ``edge_constant`` c_t, ``edge_ratio``, ``step``, ``lr`` of the first group; nan / None
    for an optimizer the registry does not describe, such as Adagrad, or with ``params``), ``hvps`` (total
    Hessian-vector products this call), ``hvps_sharpness``, ``hvps_preconditioned``, ``converged`` (both
    solves); with k >= 2 also ``eigenvalue_ratio`` and ``preconditioned_eigenvalue_ratio``
    (lambda_2 / lambda_1); with ``diagnostics=True`` also ``gradient_overlap`` (cosine of the gradient
    with H's top eigenvector, one extra gradient).
    The full :class:`SharpnessResult` objects are kept in ``last_sharpness`` / ``last_preconditioned``.
    ``state_dict()`` / ``load_state_dict()`` carry the warm-start vectors through a checkpoint.
    The first measurement (and any after a non-finite one) starts cold.  Warm starts save most when
    measurements are frequent (``benchmarks/README.md``).  ``curvature="ggn"`` tracks the Gauss-Newton
    matrix instead of H (a second tracker gives S of G beside S of H); ``params`` a parameter block.
    """

    def __init__(self, *, k: int = 1, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER, seed: int = 0,
                 diagnostics: bool = False, method: str = "auto", curvature: str = "hessian",
                 params: ParamSelection = None) -> None:
        checks.integer("k", k, low=1)
        self.k, self.tol, self.max_iter, self.seed = k, tol, max_iter, seed
        self.diagnostics, self.method, self.curvature, self.params = diagnostics, method, curvature, params
        self._init: dict[str, Tensor | None] = {"sharpness": None, "preconditioned": None}
        self.last_sharpness: SharpnessResult | None = None
        self.last_preconditioned: SharpnessResult | None = None

    def reset(self) -> None:
        """Forget the warm-start vectors (the next measurement starts cold)."""
        self._init = {"sharpness": None, "preconditioned": None}

    def _solve(self, key: str, model, loss_fn, data, optimizer) -> SharpnessResult:
        """Warm-started top eigenpairs of H (optimizer None), of the optimizer's preconditioned operator, or
        of an operator given directly."""
        init = self._init[key]
        n = ParamLayout.of(model, self.params).n
        if init is not None and init.shape[0] != n:
            init = None  # the model changed size: start cold
        if isinstance(optimizer, CurvatureOperator):
            res = eigenpairs_of(optimizer, k=self.k, tol=self.tol, max_iter=self.max_iter, init=init,
                                seed=self.seed, preconditioned=True)
        else:
            res = top_eigenpairs(model, loss_fn, data, optimizer, k=self.k, tol=self.tol, max_iter=self.max_iter,
                                 init=init, seed=self.seed, method=self.method, curvature=self.curvature,
                                 params=self.params)
        finite = bool(torch.isfinite(res.eigenvectors).all())
        self._init[key] = res.eigenvectors.detach().clone() if finite else None  # nan: next one starts cold
        return res

    def measure(self, model: nn.Module, loss_fn: LossFn, data: Data,
                optimizer: torch.optim.Optimizer | None = None, step: int | None = None) -> dict[str, Any]:
        """Measure S (and S_P and the edge if an optimizer is given) at the model's current parameters;
        ``step`` as for :func:`deep.edge.measure_edge` (only SGD needs it)."""
        raw = self._solve("sharpness", model, loss_fn, data, None)
        self.last_sharpness = raw
        out: dict[str, Any] = {"sharpness": raw.top, "preconditioned_sharpness": math.nan, "eta_S_P": math.nan,
                               "edge_constant": math.nan, "edge_ratio": math.nan, "step": None, "lr": math.nan,
                               "hvps": raw.hvps, "hvps_sharpness": raw.hvps, "hvps_preconditioned": 0,
                               "converged": raw.converged}
        pre = None
        if optimizer is not None:
            edge = self.params is None and self.curvature == "hessian" and _in_registry(optimizer)
            setting = edge_setting(optimizer, model, step) if edge else None
            pre, s_p, eta_s_p = self._preconditioned(raw, model, loss_fn, data, optimizer, setting)
            self.last_preconditioned = pre
            out.update(preconditioned_sharpness=s_p, hvps=raw.hvps + pre.hvps, hvps_preconditioned=pre.hvps,
                       converged=raw.converged and pre.converged)
            if setting is not None:
                out.update(eta_S_P=eta_s_p, edge_constant=setting.constant, edge_ratio=eta_s_p / setting.constant,
                           step=setting.step, lr=setting.lr[0])
        if self.k >= 2:
            out["eigenvalue_ratio"] = raw.eigenvalues[1] / raw.eigenvalues[0]
            out["preconditioned_eigenvalue_ratio"] = (pre.eigenvalues[1] / pre.eigenvalues[0]
                                                      if pre is not None else math.nan)
        if self.diagnostics:
            out["gradient_overlap"] = gradient_overlap(model, loss_fn, data, raw.eigenvectors[:, 0], self.params)
        return out

    def _preconditioned(self, raw: SharpnessResult, model, loss_fn, data, optimizer,
                        setting: EdgeSetting | None) -> tuple[SharpnessResult, float, float]:
        """The preconditioned solve, S_P and eta_S_P.

        * Groups with different lr (when the edge is measured): on the edge operator D^1/2 (H + W) D^1/2,
          D = diag(lr_g / P), whose top eigenvalue is eta_S_P; no single lr turns S_P into it, so S_P is nan.
        * Otherwise eta_S_P = lr S_P, with S_P free for SGD with one weight decay wd (P = I, W = wd I:
          S_P = S + wd from the raw solve) and solved on P's operator P^-1/2 (H + W) P^-1/2 else.
        """
        if setting is not None and len(set(setting.lr)) > 1:
            pre = self._solve("preconditioned", model, loss_fn, data,
                              edge_operator(model, loss_fn, data, setting, method=self.method))
            return pre, math.nan, pre.top
        decay = coupled_decay_diagonal(optimizer, model)
        if is_identity(optimizer) and self.params is None and bool(torch.all(decay == decay[0])):
            w = float(decay[0])
            pre = SharpnessResult(tuple(e + w for e in raw.eigenvalues), raw.eigenvectors, raw.residuals, 0,
                                  raw.converged, True, raw.strategy, raw.which)
        else:
            pre = self._solve("preconditioned", model, loss_fn, data, optimizer)
        return pre, pre.top, (setting.lr[0] * pre.top if setting is not None else math.nan)

    def state_dict(self) -> dict[str, Any]:
        """The warm-start vectors (CPU tensors or None), for checkpoints."""
        return {key: (v.detach().cpu().clone() if v is not None else None) for key, v in self._init.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore warm-start vectors saved by :meth:`state_dict`."""
        unknown = set(state) - set(self._init)
        if unknown:
            raise ValueError(f"state keys must be among {sorted(self._init)}; got {sorted(unknown)}")
        for key in self._init:
            v = state.get(key)
            self._init[key] = v.detach().clone() if isinstance(v, Tensor) else None


def _in_registry(optimizer: torch.optim.Optimizer) -> bool:
    """True when the optimizer's class is one the registry describes (Adagrad, say, is readable but not)."""
    from aeos_theory import OPTIMIZERS

    cls = type(optimizer).__name__
    return any(cls == s.torch_class or cls in s.torch_aliases for s in OPTIMIZERS.values())
