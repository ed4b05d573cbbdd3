"""The diagonal preconditioner P of a ``torch.optim`` optimizer, read from its state.

Most optimizers of the registry take a step theta <- theta - eta * (something) / P with P diagonal;
P is read here exactly as the optimizer formed the denominator of its *last* step, with the same
floating-point operations in the same order, from the state the step left behind
(t = ``state["step"]``), and, where the step used something its state no longer holds, from what the
step hooks of :mod:`deep.curvature.step_records` kept.  Which rule a class follows is the registry's
``preconditioner`` field (:data:`aeos_theory.OPTIMIZERS`):

============  ================================================================================
rule          P
============  ================================================================================
v_hat         sqrt(v_t) / sqrt(1 - beta2^t) + eps, v_t = ``exp_avg_sq`` (``max_exp_avg_sq`` when
              ``amsgrad=True``); torch.optim.Adam and AdamW
v_hat_nadam   sqrt(v_t / (1 - beta2^t)) + eps (the same P, torch's NAdam rounding); torch.optim.NAdam
square_avg    sqrt(s_t) + eps, s_t = ``square_avg``; ``centered=True``: sqrt(s_t - gbar_t^2) + eps,
              gbar_t = ``grad_avg``; torch.optim.RMSprop
sum           sqrt(G_t) + eps, G_t = ``sum``; torch.optim.Adagrad
exp_inf       u_t = ``exp_inf`` = max(beta2 u_{t-1}, |g_t| + eps); torch.optim.Adamax
delta_ratio   sqrt(s_t + eps) / sqrt(a_{t-1} + eps), s_t = ``square_avg``, a_{t-1} = ``acc_delta`` before
              the step (kept by the step hook); torch.optim.Adadelta
v_hat_radam   (sqrt(v_t) + eps) / sqrt(1 - beta2^t) once rho_t > 5, I before (the warm phase);
              torch.optim.RAdam
factored      sqrt(max(V_hat_t, eps1^2)), V_hat the row x column / mean estimate (matrices) or the EMA
              ``variance`` (vectors); torch.optim.Adafactor
(none)        I: torch.optim.SGD (momentum, dampening and Nesterov do not precondition) and ASGD
============  ================================================================================

Muon, Shampoo and SOAP have a P that is not diagonal: :mod:`deep.curvature.block_preconditioners`
reads theirs (and every diagonal one, as blocks), and is what the measurements use.

Step-size factors that are the same for every coordinate of a tensor (Adam's 1/(1 - beta1^t), Adagrad's
learning-rate decay, NAdam's momentum schedule, RAdam's rectification, Adafactor's relative step and
clipping) belong to the effective eta or the threshold, not to P.  Weight decay is not part of P either:
coupled decay (g + wd x; ASGD's lambd too) belongs to the curvature, H + W, and
:func:`coupled_decay_diagonal` reads it; :func:`group_diagonal` spreads any per-group number (the
current lr, say) over the layout.  Only the exact classes of the registry are recognised (a subclass may
change the step): anything else raises ValueError, as does an adaptive optimizer that has not stepped
yet.  When the hooks missed the last step (the optimizer stepped before ``deep`` was imported) Adadelta's
P is read from the current ``acc_delta``, one step newer than the step's, with a warning.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor

from aeos_theory.optimizers import OPTIMIZERS, decoupled
from aeos_theory.zoo import radam_rho

from .optimizer_class import optimizer_class, step_count
from .step_records import adafactor_inverse, record_of

#: torch class name -> its rule for P (None: P = I), from the registry.
RULE_OF_CLASS: dict[str, str | None] = {spec.torch_class: spec.preconditioner for spec in OPTIMIZERS.values()}

#: The rules of P that are not diagonal (:mod:`deep.curvature.block_preconditioners`).
BLOCK_RULES = ("polar", "kronecker", "eigenbasis")

#: torch class names whose P this module reads as a diagonal.
SUPPORTED = tuple(cls for cls, rule in RULE_OF_CLASS.items() if rule not in BLOCK_RULES)


def _kind(optimizer: torch.optim.Optimizer) -> str:
    return optimizer_class(optimizer)


def is_identity(optimizer: torch.optim.Optimizer) -> bool:
    """True when the optimizer's P is the identity (torch.optim.SGD, any momentum; ASGD)."""
    return RULE_OF_CLASS[_kind(optimizer)] is None


def _step(state: dict, name: str, kind: str) -> float:
    if "step" not in state:
        raise ValueError(f"optimizer ({kind}) has taken no step yet: no state for parameter {name!r}; "
                         "take at least one optimizer.step() before reading P")
    step = state["step"]
    step = float(step.item()) if isinstance(step, Tensor) else float(step)
    if step < 1:
        raise ValueError(f"optimizer ({kind}) has taken no step yet (step = {step:g} for parameter {name!r}); "
                         "take at least one optimizer.step() before reading P")
    return step


def _adam(state: dict, group: dict, step: float, record) -> Tensor:
    v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
    return (v.sqrt() / (1 - group["betas"][1] ** step) ** 0.5).add_(group["eps"])  # torch's _single_tensor_adam


def _nadam(state: dict, group: dict, step: float, record) -> Tensor:
    return state["exp_avg_sq"].div(1 - group["betas"][1] ** step).sqrt().add_(group["eps"])


def _rmsprop(state: dict, group: dict, step: float, record) -> Tensor:
    s = state["square_avg"]
    if group.get("centered", False):
        gbar = state["grad_avg"]
        return s.addcmul(gbar, gbar, value=-1).sqrt_().add_(group["eps"])
    return s.sqrt().add(group["eps"])


def _adagrad(state: dict, group: dict, step: float, record) -> Tensor:
    return state["sum"].sqrt().add(group["eps"])


def _adamax(state: dict, group: dict, step: float, record) -> Tensor:
    return state["exp_inf"].clone()


def _adadelta(state: dict, group: dict, step: float, record) -> Tensor:
    std = state["square_avg"].add(group["eps"]).sqrt_()  # torch: square_avg.add(eps).sqrt_()
    if record is None:
        warnings.warn("Adadelta stepped before deep was imported, so acc_delta as its last step used it is not "
                      "known: P is read with the current acc_delta (one step newer); import deep before training",
                      RuntimeWarning, stacklevel=4)
        return std.div_(state["acc_delta"].add(group["eps"]).sqrt_())
    return std.div_(record["delta"])


def _radam(state: dict, group: dict, step: float, record) -> Tensor:
    if not radam_rho(int(step), group["betas"][1])[1] > 5.0:
        return torch.ones_like(state["exp_avg_sq"])  # the warm phase: SGD's step on m_hat
    bias_correction2 = 1 - group["betas"][1] ** step
    return state["exp_avg_sq"].sqrt().add_(group["eps"]).div_(bias_correction2**0.5)


def _adafactor(state: dict, group: dict, step: float, record, param: Tensor | None = None) -> Tensor:
    return adafactor_inverse(state, group, param).reciprocal_()


_READERS = {"v_hat": _adam, "v_hat_nadam": _nadam, "square_avg": _rmsprop, "sum": _adagrad, "exp_inf": _adamax,
            "delta_ratio": _adadelta, "v_hat_radam": _radam}


def diagonal_of(optimizer: torch.optim.Optimizer, param: Tensor, group: dict, name: str) -> Tensor:
    """diag(P) of one parameter (its shape) as the optimizer's last step used it; ValueError for a class whose
    P is not diagonal or an adaptive optimizer that has not stepped."""
    kind = _kind(optimizer)
    rule = RULE_OF_CLASS[kind]
    if rule in BLOCK_RULES:
        raise ValueError(f"optimizer {kind} has a preconditioner P that is not diagonal; read it with "
                         "deep.curvature.preconditioner_of")
    if rule is None:
        return torch.ones_like(param)
    state = optimizer.state.get(param, {})
    step = _step(state, name, kind)
    with torch.no_grad():
        if rule == "factored":
            return _adafactor(state, group, step, None, param)
        return _READERS[rule](state, group, step, record_of(optimizer, param)).detach().clone()


def preconditioner_diagonals(optimizer: torch.optim.Optimizer, params: Sequence[Tensor],
                             names: Sequence[str] | None = None) -> list[Tensor]:
    """diag(P) for each tensor in ``params`` (each the shape of its parameter), read from the state.

    ``params`` are the model's parameters (the very tensors the optimizer updates); ``names`` are used
    in error messages.  Raises ValueError for an unknown optimizer class, a parameter the optimizer
    does not hold, or an adaptive optimizer without state (no step taken yet).  Reads only: the
    optimizer's state is not modified (fresh tensors are returned).
    """
    _kind(optimizer)
    names = list(names) if names is not None else [f"#{i}" for i in range(len(params))]
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p, name in zip(params, names):
        group = group_of.get(id(p))
        if group is None:
            raise ValueError(f"parameter {name!r} is not in the optimizer's param_groups; the optimizer "
                             "must hold every trainable parameter of the model")
        out.append(diagonal_of(optimizer, p, group, name))
    return out


def _trainable(model: torch.nn.Module) -> list[tuple[str, Tensor]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _group_of(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
              names=None) -> list[tuple[Tensor, dict]]:
    """(parameter, its param group) for every trainable parameter (or those ``names``), in layout order."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    chosen = _trainable(model) if names is None else [(n, dict(model.named_parameters())[n]) for n in names]
    pairs = []
    for name, p in chosen:
        if id(p) not in group_of:
            raise ValueError(f"parameter {name!r} is not in the optimizer's param_groups; the optimizer "
                             "must hold every trainable parameter of the model")
        pairs.append((p, group_of[id(p)]))
    return pairs


def group_diagonal(optimizer: torch.optim.Optimizer, model: torch.nn.Module, value, names=None) -> Tensor:
    """``value(group)`` of each parameter's param group, spread over its entries: one flat float64 vector
    in the layout of :class:`deep.curvature.params.ParamLayout` (e.g. ``lambda g: g["lr"]``; ``names``: a block)."""
    return torch.cat([torch.full((p.numel(),), float(value(g)), dtype=torch.float64)
                      for p, g in _group_of(optimizer, model, names)])


def is_decoupled(optimizer: torch.optim.Optimizer, group: dict) -> bool:
    """True when the group's weight decay is decoupled (AdamW, ``decoupled_weight_decay=True``, Muon, ...)."""
    return decoupled(_kind(optimizer), group)


def group_decay(optimizer: torch.optim.Optimizer, group: dict) -> float:
    """The coupled decay W of a param group: its weight_decay where decay is coupled (0 where decoupled), plus
    ASGD's lambd (its x <- (1 - lambd eta_t) x runs at the step's own rate)."""
    kind = _kind(optimizer)
    decay = 0.0 if decoupled(kind, group) else float(group.get("weight_decay", 0.0))
    return decay + (float(group["lambd"]) if kind == "ASGD" else 0.0)


def coupled_decay_diagonal(optimizer: torch.optim.Optimizer, model: torch.nn.Module, names=None) -> Tensor:
    """The coupled decay W of each parameter's group (:func:`group_decay`), flat over the model's trainable
    parameters (or the block ``names``): the diagonal W that turns the loss Hessian H into the curvature
    H + W the optimizer descends."""
    return group_diagonal(optimizer, model, lambda g: group_decay(optimizer, g), names)


def optimizer_step(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> int | None:
    """t, the updates taken, shared by the model's trainable parameters that the optimizer holds, as the class
    counts them (:func:`deep.curvature.optimizer_class.step_count`; None when it keeps no count, as SGD and
    Muon; SOAP's count is 0 after its first step, which takes no update).  ValueError when the parameters
    disagree or none has stepped."""
    kind = _kind(optimizer)
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    params = [p for _, p in _trainable(model) if id(p) in held]
    count = step_count(optimizer, params)
    rule = next(spec.count for spec in OPTIMIZERS.values() if spec.torch_class == kind)
    if rule is None:
        return None
    if count is None or count < (0 if rule == "group_updates" else 1):
        raise ValueError(f"optimizer ({kind}) has taken no step yet; take at least one optimizer.step() before "
                         "reading P")
    return count


def preconditioner_diagonal(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> Tensor:
    """diag(P) as one flat vector in the layout of :class:`deep.curvature.params.ParamLayout` (trainable
    parameters of ``model`` in ``named_parameters()`` order).  Units: those of sqrt(v), i.e. of the gradient."""
    named = _trainable(model)
    diags = preconditioner_diagonals(optimizer, [p for _, p in named], [n for n, _ in named])
    return torch.cat([d.reshape(-1) for d in diags])


def check_descent(optimizer: torch.optim.Optimizer) -> None:
    """ValueError when a param group ascends (``maximize=True``): S_P and its threshold describe descent (the
    same rule, and words, as :func:`aeos_theory.identify` for :func:`deep.measure_edge`)."""
    if any(group.get("maximize", False) for group in optimizer.param_groups):
        raise ValueError("optimizer param group has maximize=True; the thresholds assume descent")
