"""The diagonal preconditioner P of a ``torch.optim`` optimizer, read from its state.

Every optimizer of the package takes a step theta <- theta - eta * (something) / P with P diagonal;
P is read here exactly as the optimizer formed the denominator of its *last* step, with the same
floating-point operations in the same order, from the state the step left behind
(t = ``state["step"]``).  Which rule a torch class follows is the registry's ``preconditioner`` field
(:data:`aeos_theory.OPTIMIZERS`), plus Adagrad, which the package reads but does not simulate:

============  ================================================================================
rule          P
============  ================================================================================
v_hat         sqrt(v_t) / sqrt(1 - beta2^t) + eps, v_t = ``exp_avg_sq`` (``max_exp_avg_sq`` when
              ``amsgrad=True``); torch.optim.Adam and AdamW
v_hat_nadam   sqrt(v_t / (1 - beta2^t)) + eps (the same P, torch's NAdam rounding); torch.optim.NAdam
square_avg    sqrt(s_t) + eps, s_t = ``square_avg``; ``centered=True``: sqrt(s_t - gbar_t^2) + eps,
              gbar_t = ``grad_avg``; torch.optim.RMSprop
sum           sqrt(G_t) + eps, G_t = ``sum``; torch.optim.Adagrad
(none)        I: torch.optim.SGD (momentum, dampening and Nesterov do not precondition)
============  ================================================================================

Step-size factors that are the same for every coordinate (Adam's 1/(1 - beta1^t), Adagrad's
learning-rate decay, NAdam's momentum schedule) belong to the effective eta, not to P.  Weight decay
is not part of P either: coupled decay (g + wd x, every class here but AdamW and
``decoupled_weight_decay=True``) belongs to the curvature, H + wd I, and :func:`coupled_decay_diagonal`
reads it; :func:`group_diagonal` spreads any per-group number (the current lr, say) over the layout.  Only the exact classes above are recognised (a subclass may change the
step): anything else raises ValueError, as does an adaptive optimizer that has not stepped yet.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from aeos_theory.optimizers import OPTIMIZERS

#: torch.optim class name -> its rule for P (None: P = I), from the registry, plus Adagrad.
RULE_OF_CLASS: dict[str, str | None] = {
    **{spec.torch_class: spec.preconditioner for spec in OPTIMIZERS.values()},
    "Adagrad": "sum",
}

#: torch.optim class names whose P this module can read.
SUPPORTED = tuple(RULE_OF_CLASS)


def _kind(optimizer: torch.optim.Optimizer) -> str:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    for cls in SUPPORTED:
        if type(optimizer) is getattr(torch.optim, cls):
            return cls
    raise ValueError(
        f"optimizer must be one of torch.optim.{', '.join(SUPPORTED)} (exact class) to read its "
        f"preconditioner P; got {type(optimizer).__module__}.{type(optimizer).__name__}")


def is_identity(optimizer: torch.optim.Optimizer) -> bool:
    """True when the optimizer's P is the identity (torch.optim.SGD, any momentum)."""
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


def _adam(state: dict, group: dict, step: float) -> Tensor:
    v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
    return (v.sqrt() / (1 - group["betas"][1] ** step) ** 0.5).add_(group["eps"])  # torch's _single_tensor_adam


def _nadam(state: dict, group: dict, step: float) -> Tensor:
    return state["exp_avg_sq"].div(1 - group["betas"][1] ** step).sqrt().add_(group["eps"])


def _rmsprop(state: dict, group: dict, step: float) -> Tensor:
    s = state["square_avg"]
    if group.get("centered", False):
        gbar = state["grad_avg"]
        return s.addcmul(gbar, gbar, value=-1).sqrt_().add_(group["eps"])
    return s.sqrt().add(group["eps"])


def _adagrad(state: dict, group: dict, step: float) -> Tensor:
    return state["sum"].sqrt().add(group["eps"])


_READERS = {"v_hat": _adam, "v_hat_nadam": _nadam, "square_avg": _rmsprop, "sum": _adagrad}


def _diag(kind: str, state: dict, group: dict, param: Tensor, name: str) -> Tensor:
    rule = RULE_OF_CLASS[kind]
    if rule is None:
        return torch.ones_like(param)
    return _READERS[rule](state, group, _step(state, name, kind))


def preconditioner_diagonals(optimizer: torch.optim.Optimizer, params: Sequence[Tensor],
                             names: Sequence[str] | None = None) -> list[Tensor]:
    """diag(P) for each tensor in ``params`` (each the shape of its parameter), read from the state.

    ``params`` are the model's parameters (the very tensors the optimizer updates); ``names`` are used
    in error messages.  Raises ValueError for an unknown optimizer class, a parameter the optimizer
    does not hold, or an adaptive optimizer without state (no step taken yet).  Reads only: the
    optimizer's state is not modified (fresh tensors are returned).
    """
    kind = _kind(optimizer)
    names = list(names) if names is not None else [f"#{i}" for i in range(len(params))]
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p, name in zip(params, names):
        group = group_of.get(id(p))
        if group is None:
            raise ValueError(f"parameter {name!r} is not in the optimizer's param_groups; the optimizer "
                             "must hold every trainable parameter of the model")
        with torch.no_grad():
            out.append(_diag(kind, optimizer.state.get(p, {}), group, p, name).detach().clone())
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
    """True when the group's weight decay is decoupled (AdamW, ``decoupled_weight_decay=True``)."""
    return bool(group.get("decoupled_weight_decay", type(optimizer).__name__ == "AdamW"))


def coupled_decay_diagonal(optimizer: torch.optim.Optimizer, model: torch.nn.Module, names=None) -> Tensor:
    """The coupled weight decay wd of each parameter's group (0 where decay is decoupled), flat over the
    model's trainable parameters (or the block ``names``): the diagonal W that turns the loss Hessian H
    into the curvature H + W the optimizer descends."""
    _kind(optimizer)
    return group_diagonal(optimizer, model, lambda g: 0.0 if is_decoupled(optimizer, g) else g["weight_decay"],
                          names)


def optimizer_step(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> int | None:
    """``state["step"]``, the number of updates taken, shared by every trainable parameter (None when the
    class keeps no count, as SGD; ValueError when parameters disagree or none has stepped)."""
    kind = _kind(optimizer)
    if RULE_OF_CLASS[kind] is None:
        return None
    steps = {int(_step(optimizer.state.get(p, {}), name, kind)) for name, p in _trainable(model)}
    if len(steps) != 1:
        raise ValueError(f"optimizer ({kind}) parameters have taken different numbers of steps {sorted(steps)}; "
                         "a threshold needs one step count")
    return steps.pop()


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
