"""The learning rate each param group used at the optimizer's last step, remembered as the step is taken.

A measurement after ``optimizer.step()`` describes the update just taken: its preconditioner P and its
step count t are read from the optimizer's state, which that update left behind.  Its learning rate must
be that update's too, but a scheduler called after the step (``scheduler.step()``, the usual order) has
already written the *next* update's lr into the param groups: under a linear warmup the group's lr at
step t is (t + 1)/t times the lr used, and at the end of a cosine schedule to 0 it is 0 while the update
just taken still moved the weights.

So the package remembers, for every optimizer, what each group's lr was when its last step ran: global
``torch.optim`` step hooks (:func:`torch.optim.optimizer.register_optimizer_step_pre_hook` and its post
twin) store, per optimizer, the groups' lrs at the moment ``step()`` was called, with the step count the
step left in the state.  They are installed once per process (:func:`install`), when ``deep`` is
imported after torch or when any of ``deep``'s measurements is first used; the cost is one read of each
group's lr per step.  :func:`lr_used` returns the remembered lrs when they belong to the optimizer's
current step, and None when the optimizer stepped before the hooks were installed (the caller then falls
back to the groups' current lr, and says so when a scheduler may have changed it: ``lr=`` given
explicitly always wins).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

_INSTALLED = False
_PENDING: "weakref.WeakKeyDictionary[torch.optim.Optimizer, tuple[float, ...]]" = weakref.WeakKeyDictionary()
_RECORDS: "weakref.WeakKeyDictionary[torch.optim.Optimizer, LastStep]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LastStep:
    """What a step of an optimizer used: each group's ``lr``, and the ``count`` of steps it had then taken
    (its ``state["step"]`` after the step; None for optimizers that keep no count, such as SGD)."""

    lr: tuple[float, ...]
    count: int | None


def _number(value) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


def state_count(optimizer: torch.optim.Optimizer) -> int | None:
    """``state["step"]`` of the first parameter that has one (None when no parameter keeps a count)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if step is not None:
                return int(_number(step))
    return None


def _before_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    _PENDING[optimizer] = tuple(_number(group["lr"]) for group in optimizer.param_groups)


def _after_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    lrs = _PENDING.pop(optimizer, None)
    if lrs is not None:
        _RECORDS[optimizer] = LastStep(lrs, state_count(optimizer))


def install() -> None:
    """Register the global step hooks once in this process (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    register_optimizer_step_pre_hook(_before_step)
    register_optimizer_step_post_hook(_after_step)
    _INSTALLED = True


def lr_used(optimizer: torch.optim.Optimizer) -> tuple[float, ...] | None:
    """Each group's lr at the optimizer's last step, or None when no record belongs to its current step
    (no step seen since :func:`install`, groups added since, or a state loaded since the record)."""
    record = _RECORDS.get(optimizer)
    if record is None or len(record.lr) != len(optimizer.param_groups):
        return None
    if record.count is not None and record.count != state_count(optimizer):
        return None
    return record.lr


install()
