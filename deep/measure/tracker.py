"""Periodic measurement of S, S_P and the edge during training, warm-started from the last eigenvectors.

:class:`SharpnessTracker` is what a training loop holds: each :meth:`~SharpnessTracker.measure` solves for
the top eigenpairs of H and of the optimizer's preconditioned operator (:mod:`deep.measure.sharpness`),
starting from the eigenvectors of the previous call, and reads the edge of the update just taken
(:mod:`deep.measure.edge`: eta_S_P, the threshold c_t and their ratio).  At the Edge of Stability the top
eigenvector moves slowly between measurements, so a warm start needs a few products where a cold one
needs a dozen or more (the measured costs: ``benchmarks/README.md``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from aeos_base import checks
from aeos_theory import OPTIMIZERS

from ..curvature.build import curvature_operator, in_metric
from ..curvature.eigen import DEFAULT_MAX_ITER, SharpnessResult, eigenpairs_of
from ..curvature.inputs import Data, LossFn
from ..curvature.operators import CurvatureOperator
from ..curvature.params import ParamSelection
from ..curvature.preconditioners import coupled_decay_diagonal, is_identity
from .edge import EdgeSetting, LearningRates, edge_operator, edge_setting
from .sharpness import gradient_overlap


class SharpnessTracker:
    """Periodic measurement of S and S_P during training, warm-started from the previous eigenvectors.

    ``tracker.measure(model, loss_fn, data, optimizer)`` returns a dict with
    ``sharpness`` (S), ``preconditioned_sharpness`` (S_P of H + W, the coupled weight decay included;
    nan when optimizer is None, or when the groups have different learning rates; S + wd, at no extra
    cost, for SGD whose groups share one lr and one weight decay), the edge of :mod:`deep.measure.edge`
    (``eta_S_P``, ``edge_constant`` c_t, ``edge_ratio``, ``step``, ``lr`` the first group's lr used by the update just taken; nan / None
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
                 diagnostics: bool = False, strategy: str = "auto", curvature: str = "hessian",
                 params: ParamSelection = None) -> None:
        checks.integer("k", k, low=1)
        self.k, self.tol, self.max_iter, self.seed = k, tol, max_iter, seed
        self.diagnostics, self.strategy, self.curvature, self.params = diagnostics, strategy, curvature, params
        self._init: dict[str, Tensor | None] = {"sharpness": None, "preconditioned": None}
        self.last_sharpness: SharpnessResult | None = None
        self.last_preconditioned: SharpnessResult | None = None

    def reset(self) -> None:
        """Forget the warm-start vectors (the next measurement starts cold)."""
        self._init = {"sharpness": None, "preconditioned": None}

    def _solve(self, key: str, op: CurvatureOperator) -> SharpnessResult:
        """Warm-started top eigenpairs of ``op`` (H, or an operator in the optimizer's metric)."""
        init = self._init[key]
        if init is not None and init.shape[0] != op.n:
            init = None  # the model changed size: start cold
        res = eigenpairs_of(op, k=self.k, tol=self.tol, max_iter=self.max_iter, init=init, seed=self.seed,
                            preconditioned=key == "preconditioned")
        finite = bool(torch.isfinite(res.eigenvectors).all())
        self._init[key] = res.eigenvectors.detach().clone() if finite else None  # nan: next one starts cold
        return res

    def measure(self, model: nn.Module, loss_fn: LossFn, data: Data,
                optimizer: torch.optim.Optimizer | None = None, step: int | None = None, *,
                lr: LearningRates = None, sharpness: bool = True, loss: bool = False) -> dict[str, Any]:
        """Measure S (and S_P and the edge of the update just taken, if an optimizer is given) at the model's
        current parameters; ``step`` and ``lr`` as for :func:`deep.measure_edge` (only SGD needs ``step``;
        ``lr`` is the last update's, remembered as the step ran when not given).  ``sharpness=False`` skips
        the solve for S (``sharpness`` is then nan; S_P and the edge are still measured); ``loss=True`` adds
        the full-batch ``loss`` (free with the default strategy: summed while the kept graph is built).
        Both solves share one Hessian operator, so its graph is built once."""
        base = curvature_operator(model, loss_fn, data, curvature=self.curvature, strategy=self.strategy,
                                  params=self.params)
        shortcut = optimizer is not None and is_identity(optimizer) and self.params is None
        if sharpness or shortcut or optimizer is None:
            raw = self._solve("sharpness", base)
        else:
            raw = SharpnessResult((math.nan,) * self.k, torch.full((base.n, self.k), math.nan), (math.nan,) * self.k,
                                  0, True, False, base.strategy)
        self.last_sharpness = raw
        out: dict[str, Any] = {"sharpness": raw.top, "preconditioned_sharpness": math.nan, "eta_S_P": math.nan,
                               "edge_constant": math.nan, "edge_ratio": math.nan, "step": None, "lr": math.nan,
                               "hvps": raw.hvps, "hvps_sharpness": raw.hvps, "hvps_preconditioned": 0,
                               "converged": raw.converged}
        pre = None
        if optimizer is not None:
            edge = self.params is None and self.curvature == "hessian" and _in_registry(optimizer)
            setting = edge_setting(optimizer, model, step, lr=lr) if edge else None
            pre, s_p, eta_s_p = self._preconditioned(raw, base, model, loss_fn, data, optimizer, setting)
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
        if loss:
            out["loss"] = base.loss() if hasattr(base, "loss") else math.nan
        if self.diagnostics:
            out["gradient_overlap"] = gradient_overlap(model, loss_fn, data, raw.eigenvectors[:, 0], self.params)
        return out

    def _preconditioned(self, raw: SharpnessResult, base: CurvatureOperator, model, loss_fn, data, optimizer,
                        setting: EdgeSetting | None) -> tuple[SharpnessResult, float, float]:
        """The preconditioned solve, S_P and eta_S_P.

        * Groups with different lr (when the edge is measured): on the edge operator D^1/2 (H + W) D^1/2,
          D = diag(lr_g / P), whose top eigenvalue is eta_S_P; no single lr turns S_P into it, so S_P is nan.
        * Otherwise eta_S_P = lr S_P, with S_P free for SGD with one weight decay wd (P = I, W = wd I:
          S_P = S + wd from the raw solve) and solved on P's operator P^-1/2 (H + W) P^-1/2 else.
        """
        if setting is not None and len(set(setting.lr)) > 1:
            pre = self._solve("preconditioned", edge_operator(model, loss_fn, data, setting, strategy=self.strategy))
            return pre, math.nan, pre.top
        decay = coupled_decay_diagonal(optimizer, model)
        if is_identity(optimizer) and self.params is None and bool(torch.all(decay == decay[0])):
            w = float(decay[0])
            pre = SharpnessResult(tuple(e + w for e in raw.eigenvalues), raw.eigenvectors, raw.residuals, 0,
                                  raw.converged, True, raw.strategy, raw.which)
        else:
            pre = self._solve("preconditioned", in_metric(base, optimizer, model))
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
    cls = type(optimizer).__name__
    return any(cls == s.torch_class or cls in s.torch_aliases for s in OPTIMIZERS.values())
