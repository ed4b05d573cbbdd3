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

from ..curvature.block_preconditioners import is_preconditioner
from ..curvature.build import curvature_operator, in_metric
from ..curvature.door import check_measurement_inputs
from ..curvature.eigen import DEFAULT_MAX_ITER, SharpnessResult, eigenpairs_of
from ..curvature.inputs import CheckedData, Data, LossFn
from ..curvature.operators import CurvatureOperator
from ..curvature.params import ParamSelection
from ..curvature.preconditioners import coupled_decay_diagonal, is_identity
from .edge import EdgeSetting, LearningRates, edge_operator, edge_setting, measure_edge
from .sharpness import gradient_overlap


class SharpnessTracker:
    """Periodic measurement of S and S_P during training, warm-started from the previous eigenvectors.

    ``tracker.measure(model, loss_fn, data, optimizer)`` returns a dict with
    ``sharpness`` (S), ``preconditioned_sharpness`` (S_P of H + W, the coupled weight decay included;
    nan when optimizer is None, or when the groups have different learning rates; S + wd, at no extra
    cost, for SGD whose groups share one lr and one weight decay), the edge of :mod:`deep.measure.edge`
    (``eta_S_P``, ``edge_constant`` c_t, ``edge_ratio``, ``step``, ``lr`` the first group's lr used by the
    update just taken, ``note``; nan / None with ``params`` or ``curvature="ggn"``, or for a user's
    preconditioner given as ``optimizer``, whose S_P alone is measured), ``hvps`` (total
    Hessian-vector products this call), ``hvps_sharpness``, ``hvps_preconditioned``, ``converged`` (both
    solves); with k >= 2 also ``eigenvalue_ratio`` and ``preconditioned_eigenvalue_ratio``
    (lambda_2 / lambda_1); with ``diagnostics=True`` also ``gradient_overlap`` (cosine of the gradient
    with H's top eigenvector, one extra gradient).
    The full :class:`SharpnessResult` objects are kept in ``last_sharpness`` / ``last_preconditioned``.
    ``state_dict()`` / ``load_state_dict()`` carry the warm-start vectors through a checkpoint.
    The first measurement (and any after a non-finite one) starts cold.  Warm starts save most when
    measurements are frequent (``benchmarks/README.md``).  ``curvature="ggn"`` tracks the Gauss-Newton
    matrix instead of H (a second tracker gives S of G beside S of H); ``params`` a parameter block.
    A list of optimizers sharing the model (Muon + AdamW) gives S_P of the block-diagonal P, the combined
    ``edge_ratio`` and ``edge_ratios`` by optimizer (:class:`deep.measure.edge.CombinedEdge`).
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
        self._door: tuple[Any, CheckedData | None] = (None, None)  # the last data object and its checked form

    def reset(self) -> None:
        """Forget the warm-start vectors (the next measurement starts cold)."""
        self._init = {"sharpness": None, "preconditioned": None}

    def _checked(self, model: nn.Module, loss_fn: LossFn, data: Data) -> CheckedData:
        """``data`` through the door: in full when new, the parameters only when it is the last call's object."""
        source, checked = self._door
        if data is source and checked is not None and checked.checked_for(model, loss_fn):
            return check_measurement_inputs(model, loss_fn, checked, self.params)
        checked = check_measurement_inputs(model, loss_fn, data, self.params)
        self._door = (data, checked)
        return checked

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
        Both solves share one Hessian operator, so its graph is built once.

        Inputs pass the door of :mod:`deep.curvature.door` once per call: the whole door at the first call
        and whenever the data object, the model or the loss differs from the last call's; the parameters
        alone (they change every step) when the same data object comes again, whose contents are then
        taken to be unchanged (the door's pass over the data would cost a forward of the first chunk at
        every call; ``benchmarks/README.md``)."""
        data = self._checked(model, loss_fn, data)
        base = curvature_operator(model, loss_fn, data, curvature=self.curvature, strategy=self.strategy,
                                  params=self.params)
        if sharpness or optimizer is None or _plain_sgd(optimizer, self.params):  # SGD's S_P comes from S
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
        if isinstance(optimizer, (list, tuple)) and not is_preconditioner(optimizer):
            return self._combined(out, raw, base, model, loss_fn, data, list(optimizer))
        if optimizer is not None and is_preconditioner(optimizer):
            pre = self._solve("preconditioned", in_metric(base, optimizer, model))
            self.last_preconditioned = pre
            out.update(preconditioned_sharpness=pre.top, hvps=raw.hvps + pre.hvps, hvps_preconditioned=pre.hvps,
                       converged=raw.converged and pre.converged)
            optimizer = None
        if optimizer is not None:
            edge = self.params is None and self.curvature == "hessian" and _in_registry(optimizer)
            setting = edge_setting(optimizer, model, step, lr=lr) if edge else None
            pre, s_p, eta_s_p = self._preconditioned(raw, base, model, loss_fn, data, optimizer, setting)
            self.last_preconditioned = pre
            out.update(preconditioned_sharpness=s_p, hvps=raw.hvps + pre.hvps, hvps_preconditioned=pre.hvps,
                       converged=raw.converged and pre.converged)
            if setting is not None:
                out.update(eta_S_P=eta_s_p, edge_constant=setting.constant, edge_ratio=eta_s_p / setting.constant,
                           step=setting.step, lr=setting.lr[0], note=setting.note)
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

        * Tensors with different step sizes (groups at different lr, Muon's shape adjustment, Adafactor's
          relative step; when the edge is measured): on the edge operator D^1/2 (H + W) D^1/2, D = e / P,
          whose top eigenvalue is eta_S_P; no single lr turns S_P into it, so S_P is nan.
        * Otherwise eta_S_P = lr S_P, with S_P free for SGD with one weight decay wd (P = I, W = wd I:
          S_P = S + wd from the raw solve) and solved on P's operator P^-1/2 (H + W) P^-1/2 else.
        """
        if setting is not None and len(set(setting.step_size.scale.values())) > 1:
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

    def _combined(self, out: dict[str, Any], raw: SharpnessResult, base: CurvatureOperator, model, loss_fn, data,
                  optimizers: list) -> dict:
        """Several optimizers sharing the model (Muon + AdamW): S_P of the block-diagonal P, the combined
        ``edge_ratio`` and each part's ratio (``edge_ratios``, by package name), from
        :func:`deep.measure.measure_edge`; eta_S_P and edge_constant are nan (each part has its own)."""
        pre = self._solve("preconditioned", in_metric(base, optimizers, model))
        self.last_preconditioned = pre
        combined = measure_edge(model, loss_fn, data, optimizers, tol=self.tol, max_iter=self.max_iter, seed=self.seed,
                                strategy=self.strategy)
        out.update(preconditioned_sharpness=pre.top, edge_ratio=combined.ratio,
                   edge_ratios={p.optimizer: p.ratio for p in combined.parts},
                   hvps=raw.hvps + pre.hvps + combined.hvps, hvps_preconditioned=pre.hvps + combined.hvps,
                   converged=raw.converged and pre.converged and combined.converged)
        if self.k >= 2:
            out["eigenvalue_ratio"] = raw.eigenvalues[1] / raw.eigenvalues[0]
            out["preconditioned_eigenvalue_ratio"] = pre.eigenvalues[1] / pre.eigenvalues[0]
        return out

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
    """True when the optimizer's class is one the registry describes (every class whose P is read is)."""
    cls = type(optimizer).__name__
    return any(cls == s.torch_class or cls in s.torch_aliases for s in OPTIMIZERS.values())


def _plain_sgd(optimizer, params: ParamSelection) -> bool:
    """True for one SGD-like optimizer over every parameter: P = I, so S_P is read off the solve for S."""
    return (params is None and not isinstance(optimizer, (list, tuple)) and not is_preconditioner(optimizer)
            and is_identity(optimizer))
