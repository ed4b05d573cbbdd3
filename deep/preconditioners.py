"""The diagonal preconditioner P of a ``torch.optim`` optimizer, read from its state.

Every optimizer of the package takes a step theta <- theta - eta * (something) / P with P diagonal;
P is read here exactly as the optimizer formed the denominator of its *last* step (SPEC section 1),
with the same floating-point operations in the same order, from the state the step left behind
(t = ``state["step"]``):

============================  ===============================================================
torch class (package names)   P
============================  ===============================================================
Adam, AdamW (adam, adamw)     sqrt(v_t) / sqrt(1 - beta2^t) + eps, v_t = ``exp_avg_sq``
                              (``max_exp_avg_sq`` when ``amsgrad=True``)
NAdam (nadam)                 sqrt(v_t / (1 - beta2^t)) + eps
RMSprop (rmsprop)             sqrt(s_t) + eps, s_t = ``square_avg``; ``centered=True``:
                              sqrt(s_t - gbar_t^2) + eps, gbar_t = ``grad_avg``
Adagrad                       sqrt(G_t) + eps, G_t = ``sum``
SGD (gd, heavy_ball,          I (momentum, dampening and Nesterov do not precondition)
nesterov)
============================  ===============================================================

Step-size factors that are the same for every coordinate (Adam's 1/(1 - beta1^t), Adagrad's
learning-rate decay, NAdam's momentum schedule) belong to the effective eta, not to P.  Weight decay
is not part of P either.  Only the exact classes above are recognised (a subclass may change the
step): anything else raises ValueError, as does an adaptive optimizer that has not stepped yet.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

#: The package's optimizer names (aeos_theory.optimizers) -> the P their torch class uses.
PRECONDITIONER_OF: dict[str, str] = {
    "gd": "I",
    "heavy_ball": "I",
    "nesterov": "I",
    "adam": "sqrt(v / (1 - beta2^t)) + eps  (torch.optim.Adam state exp_avg_sq)",
    "adamw": "sqrt(v / (1 - beta2^t)) + eps  (torch.optim.AdamW state exp_avg_sq)",
    "nadam": "sqrt(v / (1 - beta2^t)) + eps  (torch.optim.NAdam state exp_avg_sq)",
    "rmsprop": "sqrt(s) + eps  (torch.optim.RMSprop state square_avg; centered: sqrt(s - gbar^2) + eps)",
}

#: torch.optim class names whose P this module can read.
SUPPORTED = ("Adam", "AdamW", "NAdam", "RMSprop", "Adagrad", "SGD")


def preconditioner_of(name: str) -> str:
    """The formula of P for a package optimizer name (``gd``, ``adam``, ...); ValueError otherwise."""
    if name not in PRECONDITIONER_OF:
        raise ValueError(f"optimizer must be one of {', '.join(PRECONDITIONER_OF)}; got {name!r}")
    return PRECONDITIONER_OF[name]


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
    return _kind(optimizer) == "SGD"


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


def _diag(kind: str, state: dict, group: dict, param: Tensor, name: str) -> Tensor:
    if kind == "SGD":
        return torch.ones_like(param)
    step = _step(state, name, kind)
    eps = group["eps"]
    if kind in ("Adam", "AdamW"):
        beta2 = group["betas"][1]
        v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        return (v.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)  # torch's _single_tensor_adam
    if kind == "NAdam":
        beta2 = group["betas"][1]
        return state["exp_avg_sq"].div(1 - beta2**step).sqrt().add_(eps)
    if kind == "RMSprop":
        s = state["square_avg"]
        if group.get("centered", False):
            gbar = state["grad_avg"]
            return s.addcmul(gbar, gbar, value=-1).sqrt_().add_(eps)
        return s.sqrt().add(eps)
    if kind == "Adagrad":
        return state["sum"].sqrt().add(eps)
    raise AssertionError(kind)  # unreachable: _kind() validated the class


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


def preconditioner_diagonal(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> Tensor:
    """diag(P) as one flat vector in the layout of :class:`deep.hessian.ParamLayout` (trainable
    parameters of ``model`` in ``named_parameters()`` order).  Units: those of sqrt(v), i.e. of the gradient."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    diags = preconditioner_diagonals(optimizer, [p for _, p in named], [n for n, _ in named])
    return torch.cat([d.reshape(-1) for d in diags])
