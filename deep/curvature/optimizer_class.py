"""Which registry optimizer class a live optimizer is, and its step count.

:func:`optimizer_class` names the exact class of an optimizer among those the registry describes
(:data:`aeos_theory.OPTIMIZERS`: ``torch_class`` in ``torch_module``, ``torch.optim`` or
``pytorch_optimizer``); a subclass is not accepted (it may change the step), and a refused class (Rprop,
SparseAdam, ...) gets its one-line reason.  :func:`step_count` reads t, the number of updates taken, where
the registry's ``count`` says the class keeps it.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

from aeos_theory.optimizers import OPTIMIZERS, refusal

#: (module, class name) of every class the registry describes.
CLASSES: tuple[tuple[str, str], ...] = tuple(dict.fromkeys((s.torch_module, s.torch_class) for s in OPTIMIZERS.values()))


def _exact(optimizer: object, module: str, name: str) -> bool:
    loaded = sys.modules.get(module)  # a class of a library not imported cannot be the optimizer's class
    return loaded is not None and type(optimizer) is getattr(loaded, name, None)


def optimizer_class(optimizer: object) -> str:
    """The registry class name of ``optimizer`` (``"Adam"``, ``"Muon"``, ``"SOAP"``, ...); ValueError (one line)
    for anything else: not an optimizer, a refused class with its reason, a subclass, an unknown class."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    for module, name in CLASSES:
        if _exact(optimizer, module, name):
            return name
    refused = refusal(type(optimizer).__name__)
    if refused is not None:
        raise ValueError(refused)
    names = ", ".join(name if module == "torch.optim" else f"{module}.{name}" for module, name in CLASSES)
    raise ValueError(f"optimizer must be one of torch.optim.{names} (exact class) to read its preconditioner P; "
                     f"got {type(optimizer).__module__}.{type(optimizer).__name__}")


def count_rule(name: str) -> str | None:
    """The registry's ``count`` rule of a class (every spec of a class shares it)."""
    return next(spec.count for spec in OPTIMIZERS.values() if spec.torch_class == name)


def _number(value) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


def step_count(optimizer: torch.optim.Optimizer, params=None) -> int | None:
    """t, the updates taken, as the class counts them (None for a class that keeps no count: SGD, Muon;
    SOAP: its group step - 1, its first step only building the eigenbasis).  ``params``: the tensors to read
    (default every parameter of the optimizer); ValueError when they disagree."""
    rule = count_rule(optimizer_class(optimizer))
    if rule is None:
        return None
    counts = set()
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    chosen = [p for g in optimizer.param_groups for p in g["params"]] if params is None else list(params)
    for p in chosen:
        if rule == "state":
            step = optimizer.state.get(p, {}).get("step")
            counts.add(None if step is None else int(_number(step)))
        else:
            step = group_of[id(p)].get("step")
            counts.add(None if step is None else int(step) - (rule == "group_updates"))
    if len(counts) != 1:
        raise ValueError(f"optimizer ({type(optimizer).__name__}) parameters have taken different numbers of steps "
                         f"{sorted(c for c in counts if c is not None)}; a threshold needs one step count")
    return counts.pop()
