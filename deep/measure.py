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

Cost: a cold measurement is at least ``COLD_MIN_ITER`` = 20 Hessian-vector products; a warm one
(previous eigenvector) stops as soon as the residual test passes.  ``method="cached_double_backward"``
keeps the gradient graph of the whole batch for the measurement and makes each product cheaper; use
it when the data fit in memory at once.  Measured costs are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aeos_theory import checks

from .hessian import Data, HessianOperator, LossFn, ParamLayout, full_batch_gradient
from .lanczos import lanczos
from .edge import EdgeOperator, EdgeSetting, edge_setting
from .preconditioners import coupled_decay_diagonal, is_identity, preconditioner_diagonal

DEFAULT_MAX_ITER = 100
#: Lanczos steps taken before the first convergence test when starting cold (ARPACK's default subspace
#: size, ncv = 20).  Measured on the digits MLP after 320 Adam steps (top two eigenvalues of
#: P^-1/2 H P^-1/2 1.6% apart): with no minimum, 1 of 12 random starts stopped at lambda_2 after ~16
#: products (1.6% low); with 20, none did (max error 4e-7).  A warm start (previous eigenvector) already
#: carries a large component along the top eigenvector and is tested from the first step.
COLD_MIN_ITER = 20


@dataclass(frozen=True)
class SharpnessResult:
    """Top-k eigenpairs of H (``preconditioned=False``) or of P^-1/2 H P^-1/2 (``preconditioned=True``).

    eigenvalues: k floats, descending (S or S_P first).
    eigenvectors: (n, k) unit vectors in the flat parameter layout (:class:`deep.hessian.ParamLayout`).
        For the preconditioned operator these are eigenvectors u of P^-1/2 H P^-1/2; the matching
        eigenvectors of P^-1 H are P^-1/2 u.
    residuals: ||A y_i - theta_i y_i|| for each pair (units of the eigenvalues).
    hvps: Hessian-vector products used (the cost, each about 2-3 gradients).
    converged: every residual <= tol * |eigenvalue| (False is also warned about).
    """

    eigenvalues: tuple[float, ...]
    eigenvectors: Tensor
    residuals: tuple[float, ...]
    hvps: int
    converged: bool
    preconditioned: bool

    @property
    def top(self) -> float:
        """The top eigenvalue: S, or S_P when preconditioned."""
        return self.eigenvalues[0]


class PreconditionedOperator:
    """v -> P^-1/2 (H + W) P^-1/2 v for diagonals P > 0 and W >= 0 (flat vectors), by composition.

    W is the coupled weight decay (None: 0), which belongs to the curvature the optimizer descends.
    """

    def __init__(self, hessian: HessianOperator, p_diag: Tensor, shift: Tensor | None = None) -> None:
        if p_diag.shape != (hessian.n,):
            raise ValueError(f"p_diag must have shape ({hessian.n},); got {tuple(p_diag.shape)}")
        if not bool(torch.all(p_diag > 0)):
            raise ValueError("p_diag must be > 0 everywhere (P = sqrt(v_hat) + eps with eps > 0)")
        if shift is not None and shift.shape != (hessian.n,):
            raise ValueError(f"shift must have shape ({hessian.n},); got {tuple(shift.shape)}")
        self.hessian = hessian
        self.inv_sqrt_p = p_diag.to(device=hessian.device, dtype=hessian.dtype).rsqrt()
        self.shift = None if shift is None else shift.to(device=hessian.device, dtype=hessian.dtype)
        self.n, self.device, self.dtype = hessian.n, hessian.device, hessian.dtype

    def __call__(self, v: Tensor) -> Tensor:
        u = self.inv_sqrt_p * v
        hu = self.hessian(u) if self.shift is None else self.hessian(u) + self.shift * u
        return self.inv_sqrt_p * hu


def _operator(model: nn.Module, loss_fn: LossFn, data: Data, optimizer, method: str):
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable (outputs, targets) -> mean loss; got {type(loss_fn).__name__}")
    hessian = HessianOperator(model, loss_fn, data, method=method)
    if optimizer is None:
        return hessian
    p_diag = preconditioner_diagonal(optimizer, model)  # validates the optimizer even when P = I
    decay = coupled_decay_diagonal(optimizer, model)
    shift = decay if bool(torch.any(decay != 0)) else None
    if is_identity(optimizer) and shift is None:
        return hessian
    return PreconditionedOperator(hessian, p_diag, shift)


def top_eigenpairs(model: nn.Module, loss_fn: LossFn, data: Data, optimizer: torch.optim.Optimizer | None = None,
                   *, k: int = 1, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER, init: Tensor | None = None,
                   seed: int = 0, min_iter: int | None = None, method: str = "forward_over_reverse",
                   warn: bool = True) -> SharpnessResult:
    """Top-k eigenpairs of H (optimizer None) or of P^-1/2 (H + W) P^-1/2 (P and the coupled weight
    decay W read from ``optimizer``; W = 0 for AdamW's decoupled decay).

    Args:
        model, loss_fn, data: the full-batch loss L = sum_i (n_i/N) loss_fn(model(x_i), y_i) over the
            (x_i, y_i) chunks of ``data`` (a re-iterable; ``loss_fn`` returns its chunk's mean).
        optimizer: a torch.optim Adam, AdamW, NAdam, RMSprop, Adagrad or SGD that has stepped; P = I for SGD.
        k: number of eigenpairs, 1 <= k <= n. tol: Lanczos relative residual tolerance (> 0).
        max_iter: maximum number of Hessian-vector products (>= k).
        init: warm start, a flat vector or an (n, m) matrix of previous eigenvectors. seed: random start.
        min_iter: products before the first convergence test; None: :data:`COLD_MIN_ITER` (20) for a
            cold start, 1 for a warm start (both capped at max_iter and n).
        method: "forward_over_reverse" (jvp of grad, default) or "reverse_over_reverse".
        warn: warn when Lanczos does not converge (``converged`` is False either way).
    """
    op = _operator(model, loss_fn, data, optimizer, method)
    if min_iter is None:
        min_iter = 1 if init is not None else COLD_MIN_ITER
        min_iter = max(1, min(min_iter, max_iter if isinstance(max_iter, int) else 1, op.n))
    res = lanczos(op, op.n, k=k, tol=tol, max_iter=max_iter, min_iter=min_iter, init=init, seed=seed,
                  device=op.device, dtype=op.dtype, warn=warn)
    return SharpnessResult(
        eigenvalues=tuple(float(x) for x in res.eigenvalues),
        eigenvectors=res.eigenvectors,
        residuals=tuple(float(x) for x in res.residuals),
        hvps=res.matvecs,
        converged=res.converged,
        preconditioned=optimizer is not None,
    )


def _solve_operator(op, *, k: int, tol: float, max_iter: int, init: Tensor | None, seed: int) -> SharpnessResult:
    """Top-k eigenpairs of an operator built here (warm start tested from the first step, cold after 20)."""
    min_iter = max(1, min(1 if init is not None else COLD_MIN_ITER, max_iter, op.n))
    res = lanczos(op, op.n, k=k, tol=tol, max_iter=max_iter, min_iter=min_iter, init=init, seed=seed,
                  device=op.device, dtype=op.dtype)
    return SharpnessResult(tuple(float(x) for x in res.eigenvalues), res.eigenvectors,
                           tuple(float(x) for x in res.residuals), res.matvecs, res.converged, True)


def _in_registry(optimizer: torch.optim.Optimizer) -> bool:
    """True when the optimizer's class is one the registry describes (Adagrad, say, is readable but not)."""
    from aeos_theory import OPTIMIZERS

    cls = type(optimizer).__name__
    return any(cls == s.torch_class or cls in s.torch_aliases for s in OPTIMIZERS.values())


def _value(result: SharpnessResult, k: int) -> float | list[float]:
    return result.eigenvalues[0] if k == 1 else list(result.eigenvalues)


def sharpness(model: nn.Module, loss_fn: LossFn, data: Data, k: int = 1, tol: float = 1e-3,
              max_iter: int = DEFAULT_MAX_ITER, init: Tensor | None = None, seed: int = 0,
              min_iter: int | None = None, method: str = "forward_over_reverse") -> float | list[float]:
    """S = lambda_max(H) of the full-batch loss (a float), or its top k eigenvalues (descending list).

    Lanczos on v -> H v at relative residual tolerance ``tol``; see :func:`top_eigenpairs` for the
    arguments and for the eigenvectors, HVP count and convergence flag.
    """
    return _value(top_eigenpairs(model, loss_fn, data, None, k=k, tol=tol, max_iter=max_iter,
                                 init=init, seed=seed, min_iter=min_iter, method=method), k)


def preconditioned_sharpness(model: nn.Module, loss_fn: LossFn, data: Data, optimizer: torch.optim.Optimizer,
                             k: int = 1, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER,
                             init: Tensor | None = None, seed: int = 0, min_iter: int | None = None,
                             method: str = "forward_over_reverse") -> float | list[float]:
    """S_P = lambda_max(P^-1/2 (H + W) P^-1/2) = lambda_max(P^-1 (H + W)) (a float), or its top k.

    P is the diagonal the optimizer divided its last step by (e.g. Adam: sqrt(v_hat) + eps) and W its
    coupled weight decay (each group's ``weight_decay``; 0 for AdamW's decoupled decay): the curvature of
    the objective L + wd/2 |theta|^2 the optimizer descends, in P's metric, which is what its stability
    threshold bounds.  Without weight decay W = 0.  ValueError if the optimizer is not a supported
    torch.optim class or has taken no step.
    """
    if optimizer is None:
        raise ValueError("optimizer must be a torch.optim optimizer that has taken a step; got None")
    return _value(top_eigenpairs(model, loss_fn, data, optimizer, k=k, tol=tol, max_iter=max_iter,
                                 init=init, seed=seed, min_iter=min_iter, method=method), k)


def gradient_overlap(model: nn.Module, loss_fn: LossFn, data: Data, vector: Tensor) -> float:
    """|<g, u>| / (||g|| ||u||): cosine between the full-batch gradient g and a direction u (e.g. the top
    eigenvector of H); in [0, 1], nan when g = 0.  Costs one full-batch gradient."""
    g = full_batch_gradient(model, loss_fn, data)
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
    nan when optimizer is None, or when the groups have different learning rates; S + wd for SGD, at no
    extra cost), the edge of :mod:`deep.edge` (``eta_S_P``, ``edge_constant`` c_t, ``edge_ratio``,
    ``step``, ``lr`` of the first group; nan / None for an optimizer the registry does not describe, such
    as Adagrad), ``hvps`` (total Hessian-vector products this call), ``hvps_sharpness``,
    ``hvps_preconditioned``, ``converged`` (both solves); with k >= 2 also ``eigenvalue_ratio`` and
    ``preconditioned_eigenvalue_ratio`` (lambda_2 / lambda_1); with ``diagnostics=True`` also
    ``gradient_overlap`` (cosine of the gradient with H's top eigenvector, one extra gradient).
    The full :class:`SharpnessResult` objects are kept in ``last_sharpness`` / ``last_preconditioned``.
    ``state_dict()`` / ``load_state_dict()`` carry the warm-start vectors through a checkpoint.
    The first measurement (and any after a non-finite one) starts cold.  Warm starts save most when
    measurements are frequent (``benchmarks/README.md``).
    """

    def __init__(self, *, k: int = 1, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER, seed: int = 0,
                 diagnostics: bool = False, method: str = "forward_over_reverse") -> None:
        checks.integer("k", k, low=1)
        self.k, self.tol, self.max_iter, self.seed = k, tol, max_iter, seed
        self.diagnostics, self.method = diagnostics, method
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
        n = ParamLayout.of(model).n
        if init is not None and init.shape[0] != n:
            init = None  # the model changed size: start cold
        if callable(optimizer) and not isinstance(optimizer, torch.optim.Optimizer):
            res = _solve_operator(optimizer, k=self.k, tol=self.tol, max_iter=self.max_iter, init=init, seed=self.seed)
        else:
            res = top_eigenpairs(model, loss_fn, data, optimizer, k=self.k, tol=self.tol, max_iter=self.max_iter,
                                 init=init, seed=self.seed, method=self.method)
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
            setting = edge_setting(optimizer, model, step) if _in_registry(optimizer) else None
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
            out["gradient_overlap"] = gradient_overlap(model, loss_fn, data, raw.eigenvectors[:, 0])
        return out

    def _preconditioned(self, raw: SharpnessResult, model, loss_fn, data, optimizer,
                        setting: EdgeSetting | None) -> tuple[SharpnessResult, float, float]:
        """The preconditioned solve, S_P and eta_S_P: free for SGD with one weight decay (S + wd), on P's
        operator when every group has the same lr (eta_S_P = lr S_P), on the edge operator
        D^1/2 (H + W) D^1/2 otherwise (its eigenvalues are eta_S_P's; S_P is then nan)."""
        decay = coupled_decay_diagonal(optimizer, model)
        if is_identity(optimizer) and bool(torch.all(decay == decay[0])):
            w = float(decay[0])
            pre = SharpnessResult(tuple(e + w for e in raw.eigenvalues), raw.eigenvectors, raw.residuals, 0,
                                  raw.converged, True)
        elif setting is None or len(set(setting.lr)) == 1:
            pre = self._solve("preconditioned", model, loss_fn, data, optimizer)
        else:
            pre = self._solve("preconditioned", model, loss_fn, data, EdgeOperator(
                HessianOperator(model, loss_fn, data, method=self.method), setting.step_size, setting.decay))
            return pre, math.nan, pre.top
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
