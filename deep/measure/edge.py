"""Where a live optimizer stands against the stability threshold of the update it has just taken.

At its t-th step a ``torch.optim`` optimizer took, in each parameter group g, the step
theta <- theta - lr_g (something) / P with its diagonal preconditioner P (I for SGD).  Frozen, that
update is stable only while

    eta_S_P = lambda_max(D^1/2 (H + W) D^1/2) < c_t,      D = diag(lr_g / P),

where H is the loss Hessian, W the coupled weight decay of each group (0 for AdamW's decoupled decay)
and c_t the dimensionless threshold of the t-th update from :func:`aeos_theory.threshold_constant`,
e.g. (2 + 2 beta1)(1 - beta1^t)/(1 - beta1) for Adam (38 once the bias correction has faded, at
beta1 = 0.9), 2 for GD, NAdam's moving value under its momentum schedule, (1 + beta1)(2 - lr wd)(1 -
beta1^t)/(1 - beta1) for AdamW.  With one group eta_S_P = lr * S_P.  The ratio eta_S_P / c_t is 1 at
the edge of stability.

**Which update.**  Everything describes the update just taken, t = ``state["step"]``: P is the
denominator that update divided by, c_t its threshold, and lr_g the learning rate it used, which a
scheduler stepped after it has already replaced in the param group by the next update's.  The lr used
is remembered as the step runs (:mod:`deep.measure.last_step`); ``lr=`` overrides it.  Without either
(an optimizer that stepped before ``deep`` was imported) the group's current lr is used, with a
warning when a scheduler is attached to the optimizer.  A group whose lr was 0 took no step: it adds
nothing to eta_S_P, and when every group's lr was 0 (the last step of a cosine schedule to 0)
eta_S_P and the ratio are 0, with no Hessian-vector product.

Every other setting is read from the optimizer at the moment of the call: betas, eps, momentum_decay,
weight_decay.  The package optimizer a group runs is named by :func:`aeos_theory.identify`; an optimizer
or setting the registry does not describe is refused with a ValueError saying so.

Every param group that steps must run the same optimizer, and the groups' constants must agree to the
relative tolerance :data:`CONSTANT_RTOL` = 1e-3; c_t is then the smallest of them, the conservative
choice (the ratio is the largest of the groups' own ratios).  AdamW's c_t holds the factor
(2 - lr_g wd_g), so its usual groups (a no-decay group for biases and norms, or groups at different lr)
differ by half the spread of lr_g wd_g, relative: 5e-4 for a no-decay group beside lr = 1e-2, wd = 0.1,
accepted.  Groups with different betas, or whose lr_g wd_g are more than about 2e-3 apart, are refused.

**Beyond a diagonal P and one lr.**  D = e / P in general: P block by block (Muon, Shampoo, SOAP:
:mod:`deep.curvature.block_preconditioners`) and e each tensor's step size, the group's lr times Muon's
shape adjustment, or Adafactor's relative step and clipping as its step used them.  Several optimizers
sharing one model (Muon on the matrices, AdamW on the rest) give a :class:`CombinedEdge`: one edge per
optimizer on its own parameters and a combined ratio.  A user's preconditioner takes ``lr=`` and
``constant=``.  RAdam's phase (warm, P = I, or rectified) and Muon's approximation are in ``note``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from aeos_base import checks
from aeos_theory import identify, threshold_constant
from aeos_theory.zoo import radam_rectified_from, radam_rho

from ..curvature.block_preconditioners import (
    BlockPreconditioner,
    decay_of,
    is_preconditioner,
    owners,
    preconditioner_of,
    step_sizes,
)
from ..curvature.build import precondition
from ..curvature.door import check_measurement_inputs
from ..curvature.eigen import DEFAULT_MAX_ITER, eigenpairs_of
from ..curvature.hessian import hessian_operator
from ..curvature.inputs import LossFn
from ..curvature.operators import CurvatureOperator, DiagonalOperator
from ..curvature.optimizer_class import optimizer_class
from ..curvature.params import ParamLayout, ParamSelection
from ..curvature.preconditioners import optimizer_step
from .last_step import lr_used

#: Param groups whose threshold constants c_t agree to this relative tolerance share one edge, compared
#: with the smallest c_t (module docstring).
CONSTANT_RTOL = 1e-3

LearningRates = float | Sequence[float] | None


@dataclass(frozen=True)
class EdgeSetting:
    """What the optimizer's last update applied: the package ``optimizer`` name, ``step`` t (None for SGD and
    Muon, which keep no count; SGD's momentum thresholds are those of t >= 2), ``constant`` c_t (the smallest
    of the stepping groups' constants, which agree to :data:`CONSTANT_RTOL`), each group's ``lr`` used, the
    step size ``step_size`` (a :class:`~deep.curvature.block_preconditioners.BlockPreconditioner` whose
    ``inv_sqrt`` applies D^1/2 = (e / P)^1/2, e each tensor's step size: the lr, Muon's shape adjustment,
    Adafactor's relative step), the flat ``decay`` W and a ``note`` (RAdam's phase, Muon's approximation)."""

    optimizer: str
    step: int | None
    constant: float
    lr: tuple[float, ...]
    step_size: BlockPreconditioner = field(repr=False)
    decay: Tensor = field(repr=False)
    note: str = ""

    @property
    def frozen(self) -> bool:
        """True when no group stepped (every lr used was 0): eta_S_P is 0."""
        return not any(self.lr)


@dataclass(frozen=True)
class Edge:
    """One measurement of the edge (see the module docstring): ``eta_S_P`` (dimensionless), the threshold
    ``constant`` c_t, their ``ratio`` (1 at the edge), the ``step`` t of the update described, the package
    ``optimizer``, each group's ``lr`` used by that update; ``hvps``, ``converged`` and the top
    ``eigenvector`` of D^1/2 (H + W) D^1/2 (a warm start for the next call; None when nothing was solved)."""

    step: int | None
    optimizer: str
    lr: tuple[float, ...]
    eta_S_P: float
    constant: float
    ratio: float
    hvps: int
    converged: bool
    eigenvector: Tensor | None = field(repr=False)
    note: str = ""


@dataclass(frozen=True)
class CombinedEdge:
    """The edge of several optimizers that share one model (Muon on the matrices, AdamW on the rest): ``parts``,
    one :class:`Edge` per optimizer on its own parameters (H's diagonal block, the others held fixed), and the
    combined ``ratio`` = lambda_max(D_c^1/2 (H + W) D_c^1/2) with D_c = D_i / c_i on optimizer i's block:
    every block's step measured against its own threshold, through the whole H.  Exact when the optimizers'
    update maps are the same recurrence (one momentum; then c_i is shared and this is eta_S_P / c); an
    approximation otherwise (a coupled system of two recurrences has no single threshold)."""

    parts: tuple[Edge, ...]
    ratio: float
    hvps: int
    converged: bool
    eigenvector: Tensor | None = field(repr=False)


def learning_rates(optimizer: torch.optim.Optimizer, lr: LearningRates = None) -> tuple[float, ...]:
    """Each group's lr at the optimizer's last update: ``lr`` when given (one number for every group, or one
    per group), else the lr remembered as the step ran (:mod:`deep.measure.last_step`), else the groups'
    current lr (with a warning when a scheduler is attached, which may have changed it since)."""
    groups = optimizer.param_groups
    if lr is not None:
        values = [lr] * len(groups) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else list(lr)
        if len(values) != len(groups):
            raise ValueError(f"lr must be one number or one per param group ({len(groups)}); got {len(values)}")
        return tuple(checks.real("lr", v, low=0.0) for v in values)
    remembered = lr_used(optimizer)
    if remembered is not None:
        return remembered
    if any("initial_lr" in g for g in groups):
        warnings.warn("the optimizer stepped before deep was imported, so the lr of its last update is not known, "
                      "and a scheduler may have changed the groups' lr since: the current lr is used; import deep "
                      "before training, or pass lr= (the lr of the last update)", RuntimeWarning, stacklevel=3)
    return tuple(float(g["lr"].item()) if isinstance(g["lr"], Tensor) else float(g["lr"]) for g in groups)


def identify_group(optimizer: torch.optim.Optimizer, group: dict, lr: float) -> tuple[str, dict[str, float]]:
    """The package optimizer a param group runs and its hyperparameters, with ``eta`` the lr its update used
    (a group at lr 0 is identified as at a tiny lr, since the registry's eta is positive, then given 0)."""
    name, hyper = identify(optimizer_class(optimizer), {**group, "lr": lr if lr > 0 else 1e-300})
    return name, {**hyper, "eta": lr}


def _note(name: str, step: int | None, hyper: dict) -> str:
    if name == "radam" and step is not None:
        switch = radam_rectified_from(hyper["beta2"])
        rho = radam_rho(step, hyper["beta2"])[1]
        phase = "rectified" if rho > 5.0 else "warm (P = I)"
        return f"RAdam {phase} at step {step} (rho_t = {rho:.4g}); rectified from step {switch}"
    if name in ("muon", "muon_plain"):
        return "Muon: the orthogonalisation frozen, P = (M M^T)^1/2 on the smaller side (an approximation)"
    return ""


def edge_setting(optimizer: torch.optim.Optimizer, model: nn.Module, step: int | None = None, *,
                 lr: LearningRates = None, params: ParamSelection = None, constant: float | None = None,
                 muon: str = "polar") -> EdgeSetting:
    """Read the update the optimizer has just taken (no Hessian-vector product); ValueError when it cannot.

    ``step``: the number of updates taken, for an optimizer that keeps no count (SGD); an optimizer
    that does (``state["step"]``) must agree with it.  ``lr``: the lr of that update (module docstring).
    ``params``: the parameters measured (default every trainable one; the optimizer must hold them).  A
    user's preconditioner P (:mod:`deep.curvature.block_preconditioners`) in place of the optimizer needs
    ``lr`` (one number, eta) and ``constant`` (c): D = eta P^-1, no decay.  ``muon``: Muon's frozen P
    (:func:`deep.curvature.block_preconditioners.preconditioner_of`).
    """
    layout = ParamLayout.of(model, params)
    if is_preconditioner(optimizer):
        return _user_setting(optimizer, model, layout, lr, constant)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    optimizer_class(optimizer)
    rates = learning_rates(optimizer, lr)
    named = [identify_group(optimizer, group, rate) for group, rate in zip(optimizer.param_groups, rates)]
    preconditioner = preconditioner_of(optimizer, model, layout, muon=muon)  # validates parameters and the first step
    counted = optimizer_step(optimizer, model)
    if counted is not None and step is not None and counted != step:
        raise ValueError(f"step must be the optimizer's own count {counted}; got {step}")
    step = counted if counted is not None else (None if step is None else checks.integer("step", step, low=1))
    rate_of = {id(group): rate for group, rate in zip(optimizer.param_groups, rates)}
    held = {id(g) for _, g in owners(optimizer, model, layout).values()}
    stepping = [nh for nh, group, rate in zip(named, optimizer.param_groups, rates) if rate > 0 and id(group) in held]
    stepping = stepping or [nh for nh, group in zip(named, optimizer.param_groups) if id(group) in held]
    if len({name for name, _ in stepping}) != 1:
        raise ValueError(f"optimizer param groups run different optimizers {[n for n, _ in stepping]}")
    no_update = step == 0  # SOAP's first step only builds its eigenbasis
    constants = [threshold_constant(name, step=max(step, 1) if step is not None else None, **hyper)
                 for name, hyper in stepping]
    if max(constants) - min(constants) > CONSTANT_RTOL * max(constants):
        raise ValueError(f"optimizer param groups have different threshold constants {constants}, further apart "
                         f"than the relative tolerance {CONSTANT_RTOL:g} (different betas, or lr * weight_decay "
                         "far apart under decoupled decay): no single edge to compare with")
    sizes = step_sizes(optimizer, model, layout, lambda opt, group: 0.0 if no_update else rate_of[id(group)])
    return EdgeSetting(stepping[0][0], step, min(constants), rates if not no_update else tuple(0.0 for _ in rates),
                       preconditioner.scaled(sizes), decay_of(optimizer, model, layout),
                       _note(stepping[0][0], step, stepping[0][1]))


def _user_setting(preconditioner, model: nn.Module, layout: ParamLayout, lr: LearningRates,
                  constant: float | None) -> EdgeSetting:
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or constant is None:
        raise ValueError("a preconditioner in place of an optimizer needs lr= (one number, its step size eta) and "
                         "constant= (the threshold c its update is compared with)")
    eta = checks.real("lr", lr, low=0.0)
    c = checks.real("constant", constant, low=0.0, low_inclusive=False)
    pre = preconditioner_of(preconditioner, model, layout)
    step_size = pre.scaled({name: eta for name in layout.names}) if isinstance(pre, BlockPreconditioner) \
        else _ScaledCallable(pre, eta)
    return EdgeSetting("preconditioner", None, c, (eta,), step_size, torch.zeros(layout.n, dtype=torch.float64))


class _ScaledCallable:
    """eta^1/2 P^-1/2 for a user's ``inv_sqrt``."""

    identity = False

    def __init__(self, pre, eta: float) -> None:
        self.pre, self.eta, self.n, self.layout = pre, eta, pre.n, pre.layout

    def inv_sqrt(self, v: Tensor) -> Tensor:
        return math.sqrt(self.eta) * self.pre.inv_sqrt(v)


def edge_operator(model: nn.Module, loss_fn: LossFn, data, setting: EdgeSetting,
                  strategy: str = "auto", params: ParamSelection = None) -> CurvatureOperator:
    """v -> D^1/2 (H + W) D^1/2 v, whose top eigenvalue is eta_S_P: H (products by ``strategy``,
    :mod:`deep.curvature.hessian`; the block ``params``) plus the coupled decay W, scaled by D^1/2."""
    hessian = hessian_operator(model, loss_fn, data, strategy=strategy, params=params)
    curvature = hessian + DiagonalOperator(setting.decay.to(hessian.dtype)) if bool(torch.any(setting.decay != 0)) \
        else hessian
    return precondition(curvature, setting.step_size)


def measure_edge(model: nn.Module, loss_fn: LossFn, data, optimizer, *,
                 step: int | None = None, lr: LearningRates = None, tol: float = 1e-3,
                 max_iter: int = DEFAULT_MAX_ITER, init: Tensor | None = None, seed: int = 0,
                 strategy: str = "auto", constant: float | None = None, muon: str = "polar") -> Edge | CombinedEdge:
    """eta_S_P, the threshold c_t of the update the optimizer has just taken and their ratio (module docstring).

    ``data`` is the full batch as (inputs, targets) chunks, as for :func:`deep.sharpness`; ``step`` the
    updates taken, needed only for an optimizer that keeps no count (SGD: its first update is plain GD;
    without it the thresholds of t >= 2 are used); ``lr`` the lr of the last update, one number or one per
    group (default: remembered as the step ran); ``init`` a warm start (a previous :attr:`Edge.eigenvector`);
    Lanczos stops at relative residual ``tol``; ``strategy`` is the HVP strategy
    (:mod:`deep.curvature.hessian`).  The model, its gradients and the optimizer's state are left untouched.

    ``optimizer`` may also be a list of optimizers that share the model (Muon on the matrices, AdamW on the
    rest): a :class:`CombinedEdge`, one edge per optimizer and the combined ratio; or a user's preconditioner
    P with ``lr=`` eta and ``constant=`` c (:mod:`deep.curvature.block_preconditioners`).
    """
    data = check_measurement_inputs(model, loss_fn, data)  # the door, before the optimizer is read
    if isinstance(optimizer, (list, tuple)) and not is_preconditioner(optimizer):
        return _combined_edge(model, loss_fn, data, list(optimizer), lr=lr, tol=tol, max_iter=max_iter, init=init,
                              seed=seed, strategy=strategy, muon=muon)
    setting = edge_setting(optimizer, model, step, lr=lr, constant=constant, muon=muon)
    return _solve(model, loss_fn, data, setting, tol=tol, max_iter=max_iter, init=init, seed=seed, strategy=strategy)


def _solve(model, loss_fn, data, setting: EdgeSetting, *, tol, max_iter, init, seed, strategy,
           params: ParamSelection = None) -> Edge:
    if setting.frozen:
        return Edge(setting.step, setting.optimizer, setting.lr, 0.0, setting.constant, 0.0, 0, True, None,
                    setting.note)
    res = eigenpairs_of(edge_operator(model, loss_fn, data, setting, strategy, params), tol=tol, max_iter=max_iter,
                        init=init, seed=seed, preconditioned=True)
    eta_s_p = res.top
    return Edge(setting.step, setting.optimizer, setting.lr, eta_s_p, setting.constant,
                eta_s_p / setting.constant if math.isfinite(eta_s_p) else math.nan, res.hvps, res.converged,
                res.eigenvectors[:, 0], setting.note)


def _combined_edge(model, loss_fn, data, optimizers: list, *, lr, tol, max_iter, init, seed, strategy,
                   muon) -> CombinedEdge:
    if lr is not None:
        raise ValueError("lr= is for one optimizer; with several, each one's lr is remembered as its step ran")
    layout = ParamLayout.of(model)
    own = owners(optimizers, model, layout)
    parts, settings = [], []
    for opt in optimizers:
        names = [name for name in layout.names if own[name][0] is opt]
        if not names:
            raise ValueError(f"optimizer {type(opt).__name__} holds none of the model's trainable parameters")
        setting = edge_setting(opt, model, params=names, muon=muon)
        settings.append((names, setting))
        parts.append(_solve(model, loss_fn, data, setting, tol=tol, max_iter=max_iter, init=None, seed=seed,
                            strategy=strategy, params=names))
    blocks, scale, decay = {}, {}, torch.zeros(layout.n, dtype=torch.float64)
    offsets = dict(zip(layout.names, torch.tensor([0, *layout.numels]).cumsum(0).tolist()))
    for names, setting in settings:
        for name in names:
            blocks[name] = setting.step_size.blocks[name]
            scale[name] = setting.step_size.scale[name] / setting.constant
        sub = ParamLayout.of(model, names)
        for name, part in sub.split(setting.decay).items():
            decay[offsets[name]:offsets[name] + part.numel()] = part.reshape(-1)
    combined = EdgeSetting("+".join(p.optimizer for p in parts), None, 1.0, tuple(r for p in parts for r in p.lr),
                           BlockPreconditioner(layout, blocks, scale), decay)
    whole = _solve(model, loss_fn, data, combined, tol=tol, max_iter=max_iter, init=init, seed=seed,
                   strategy=strategy)
    return CombinedEdge(tuple(parts), whole.ratio, whole.hvps + sum(p.hvps for p in parts),
                        whole.converged and all(p.converged for p in parts), whole.eigenvector)
