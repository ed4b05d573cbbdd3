"""What a flow follows: the package optimizer, its hyperparameters and the learning rate of every update.

A central flow (:mod:`aeos_theory.central_flow`) is written for the registry's optimizers; a user trains
with ``torch.optim`` objects and a scheduler.  :func:`flow_setting` turns those into what the flow takes:

* the optimizer, by its name (``"adamw"``) with hyperparameters, or a ``torch.optim`` object read by
  :func:`aeos_theory.identify` (every param group must run the same setting, over exactly the model's
  trainable parameters, and it must not have stepped: the flow starts from a fresh optimizer);
* the schedule, as the lr factor of each update (lr_t = eta f_t, eta the groups' ``initial_lr``): read
  from a ``torch.optim.lr_scheduler`` object by stepping a copy of it update by update
  (:func:`lr_factors`), so the flow's eta(t) is the lr the discrete run uses at every step, whatever
  the scheduler (LambdaLR, LinearLR, CosineAnnealingLR, SequentialLR, ...); or given as a sequence of
  factors or a function of the update index t >= 1.

What a flow cannot follow is refused with one ValueError naming it: an optimizer outside
:data:`aeos_theory.flow_rules.FLOW_OPTIMIZERS` (SGD with momentum, a sign method such as Rprop,
Adagrad, ...) or in a setting the flows do not model (``amsgrad``, centered RMSprop, groups with
different settings), and a scheduler whose lr is not a function of the step (ReduceLROnPlateau, which
reads the loss) or that changes more than the lr (OneCycleLR and CyclicLR cycling the momentum).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from aeos_theory import get_optimizer, identify
from aeos_theory.flow_rules import FLOW_OPTIMIZERS, Schedule

#: The torch classes behind :data:`FLOW_OPTIMIZERS` (from the registry), for messages.
FLOW_CLASSES = tuple(dict.fromkeys(get_optimizer(name).torch_class for name in FLOW_OPTIMIZERS))

#: Settings a flow does not model: (group key, the value that is refused, why).
_UNMODELLED = (("amsgrad", True, "amsgrad=True (P from the running maximum of v)"),
               ("centered", True, "centered=True (P from the variance of g, not its second moment)"),
               ("maximize", True, "maximize=True (ascent)"))

#: Group entries a scheduler may not change for a flow to follow it (it follows the lr alone).
_FIXED = ("betas", "momentum", "alpha", "eps", "weight_decay")


def _followed(optimizer: torch.optim.Optimizer) -> str:
    return f"torch.optim.{type(optimizer).__name__}"


def _cannot(what: str, reason: str) -> ValueError:
    return ValueError(f"{what} cannot be followed by a central flow: {reason}; the flows follow "
                      f"torch.optim.{', '.join(FLOW_CLASSES)} (the package's {', '.join(FLOW_OPTIMIZERS)}; SGD "
                      "without momentum) under a scheduler whose lr is a function of the step")


def optimizer_setting(optimizer: torch.optim.Optimizer, model: nn.Module) -> tuple[str, dict[str, float]]:
    """(package name, hyperparameters with eta the base lr) of a fresh ``torch.optim`` optimizer over the
    trainable parameters of ``model``; ValueError naming what a flow cannot follow."""
    name = _followed(optimizer)
    settings = []
    for group in optimizer.param_groups:
        for key, refused, why in _UNMODELLED:
            if group.get(key, False) == refused:
                raise _cannot(f"optimizer {name} with {why}", "the flows do not model it")
        base = group.get("initial_lr", group["lr"])
        try:
            package, hyper = identify(type(optimizer).__name__, {**group, "lr": base if base > 0 else 1e-300})
        except ValueError:
            raise _cannot(f"optimizer {name}", "it is not one of the optimizers the flows are written for") from None
        if package not in FLOW_OPTIMIZERS:
            raise _cannot(f"optimizer {name} (the package's {package!r})", "no flow is written for it")
        settings.append((package, {**hyper, "eta": float(base)}))
    if any(s != settings[0] for s in settings):
        raise ValueError(f"optimizer param groups must share one setting for a flow (one eta, betas, eps, "
                         f"weight_decay); got {[s[1] for s in settings]}")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if held != trainable:
        raise ValueError("optimizer must hold exactly the model's trainable parameters for a flow of the model; "
                         f"it holds {len(held)} tensors, the model has {len(trainable)} trainable ones")
    if any(optimizer.state.get(p) for group in optimizer.param_groups for p in group["params"]):
        raise ValueError(f"optimizer ({name}) has taken steps already; a flow starts from a fresh optimizer at the "
                         "model's current parameters (make a new one)")
    return settings[0]


def lr_factors(scheduler: Any, updates: int, eta: float | None = None) -> tuple[float, ...]:
    """lr_t / eta for the next ``updates`` updates of a ``torch.optim.lr_scheduler`` object, read by stepping
    a copy of it (the scheduler, its optimizer and the model are not touched); eta is the groups'
    ``initial_lr`` unless given."""
    kind = f"scheduler torch.optim.lr_scheduler.{type(scheduler).__name__}"
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise _cannot(kind, "it sets the lr from the losses it is given, not from the step")
    if not isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
        raise ValueError(f"scheduler must be a torch.optim.lr_scheduler object, a sequence of lr factors or a "
                         f"function of the update index; got {type(scheduler).__name__}")
    params = [p for group in scheduler.optimizer.param_groups for p in group["params"]]
    twin = copy.deepcopy(scheduler, memo={id(p): p for p in params})  # the parameters are shared, never stepped
    groups = twin.optimizer.param_groups
    base = eta if eta is not None else float(groups[0].get("initial_lr", groups[0]["lr"]))
    fixed = [{key: copy.deepcopy(group[key]) for key in _FIXED if key in group} for group in groups]
    factors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": no step is taken here
        for t in range(1, updates + 1):
            rates = {float(group["lr"]) for group in groups}
            if len(rates) != 1:
                raise ValueError(f"{kind} gives the param groups different learning rates {sorted(rates)} at update "
                                 f"{t}; a flow has one eta")
            for group, kept in zip(groups, fixed):
                for key, value in kept.items():
                    if group[key] != value:
                        raise _cannot(kind, f"it changes {key} ({value!r} -> {group[key]!r} by update {t}); a flow "
                                            "follows the lr alone (OneCycleLR, CyclicLR: cycle_momentum=False)")
            factors.append(rates.pop() / base if base > 0 else 0.0)
            twin.step()
    return tuple(factors)


def flow_setting(model: nn.Module, optimizer: str | torch.optim.Optimizer, scheduler: Any, updates: int,
                 hyper: Mapping[str, float]) -> tuple[str, dict[str, float], Schedule | None]:
    """(package name, hyperparameters, lr factors) of a flow following ``optimizer`` (a package name with
    ``hyper``, or a ``torch.optim`` object) under ``scheduler`` (None, a torch scheduler, a sequence of
    factors or a function of the update index) for ``updates`` updates (module docstring)."""
    if isinstance(optimizer, torch.optim.Optimizer):
        if hyper:
            raise ValueError(f"hyperparameters come from the optimizer object; got {sorted(hyper)} too")
        name, values = optimizer_setting(optimizer, model)
        if isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler) and scheduler.optimizer is not optimizer:
            raise ValueError("scheduler must be attached to the optimizer it schedules (scheduler.optimizer)")
        if scheduler is None and any("initial_lr" in g for g in optimizer.param_groups):
            raise ValueError(f"optimizer ({_followed(optimizer)}) has a scheduler attached (its groups hold "
                             "initial_lr): pass it as scheduler= so that the flow follows its lr")
    elif isinstance(optimizer, str):
        name, values = optimizer, dict(hyper)
    else:
        raise ValueError(f"optimizer must be a package name ({', '.join(FLOW_OPTIMIZERS)}) or a torch.optim "
                         f"object; got {type(optimizer).__name__}")
    if scheduler is None or callable(scheduler) and not isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
        return name, values, scheduler
    if isinstance(scheduler, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)):
        eta = values.get("eta")
        return name, values, lr_factors(scheduler, max(updates, 1), eta if isinstance(optimizer, str) else None)
    if isinstance(scheduler, Sequence) and not isinstance(scheduler, (str, bytes)):
        return name, values, scheduler
    raise ValueError(f"scheduler must be a torch.optim.lr_scheduler object, a sequence of lr factors or a "
                     f"function of the update index; got {type(scheduler).__name__}")
