"""What an optimizer's step used but did not leave in its state, remembered as the step runs.

Most optimizers leave behind exactly what their last step divided by (Adam's v, Adagrad's sum), and P is
read from the state.  Four do not, and for them global ``torch.optim`` step hooks
(:func:`torch.optim.optimizer.register_optimizer_step_pre_hook` and its post twin) keep, per optimizer
and parameter, what the reader of P needs:

* Adadelta: sqrt(acc_delta_{t-1} + eps), the numerator of its step, before the step overwrites it
  (one parameter-sized tensor);
* Adafactor: alpha_t = max(eps2, RMS(x_{t-1})) min(lr, t^-1/2) before the step (the iterate moves) and
  max(1, RMS(U_t)/d) after it, from the gradient: the tensor's step size alpha_t / max(1, RMS(U_t)/d);
* Muon with Nesterov: the matrix M = lerp(g, b, momentum) the step orthogonalised (one parameter-sized
  tensor; without Nesterov M is the momentum buffer, in the state);
* SOAP: the eigenbasis Q and the second moment v the step used (references, no copy: a refresh of Q
  after the update replaces both in the state).

A record belongs to the step count it was taken at (:func:`deep.curvature.optimizer_class.step_count`);
:func:`record_of` returns it only while that is still the optimizer's count (Muon keeps no count: its
record is that of its last step).  The hooks are installed once per process when this module is
imported (``deep`` imports it with its measurements); for other classes they return at once.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

from .optimizer_class import CLASSES, _exact, count_rule, step_count

_INSTALLED = False
_RECORDS: "weakref.WeakKeyDictionary[torch.optim.Optimizer, tuple[int | None, dict[int, dict[str, Any]]]]" = \
    weakref.WeakKeyDictionary()
_PENDING: "weakref.WeakKeyDictionary[torch.optim.Optimizer, dict[int, dict[str, Any]]]" = weakref.WeakKeyDictionary()


def _class(optimizer) -> str | None:
    for module, name in CLASSES:
        if name in ("Adadelta", "Adafactor", "Muon", "SOAP") and _exact(optimizer, module, name):
            return name
    return None


def _stepping(optimizer):
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                yield group, p, optimizer.state.get(p, {})


@torch.no_grad()
def _before(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    name = _class(optimizer)
    if name is None:
        return
    records: dict[int, dict[str, Any]] = {}
    for group, p, state in _stepping(optimizer):
        if name == "Adadelta":
            acc = state["acc_delta"] if "acc_delta" in state else torch.zeros_like(p)
            records[id(p)] = {"delta": acc.add(group["eps"]).sqrt_()}  # torch: acc_delta.add(eps).sqrt_()
        elif name == "Adafactor":
            t = (float(state["step"].item()) if "step" in state else 0.0) + 1.0
            lr = float(group["lr"].item()) if isinstance(group["lr"], Tensor) else float(group["lr"])
            rho = min(lr, 1 / (t**0.5))
            records[id(p)] = {"alpha": max(group["eps"][1], p.norm(2).item() / (p.numel() ** 0.5)) * rho}
        elif name == "SOAP" and "Q" in state:
            records[id(p)] = {"Q": state["Q"], "exp_avg_sq": state["exp_avg_sq"]}
    _PENDING[optimizer] = records


@torch.no_grad()
def _after(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    name = _class(optimizer)
    if name is None:
        return
    records = _PENDING.pop(optimizer, {})
    if name == "Adafactor":
        for group, p, state in _stepping(optimizer):
            if id(p) in records and "step" in state:
                update = adafactor_inverse(state, group, p).mul_(p.grad)  # torch: U = rsqrt(V_hat) g
                records[id(p)]["denom"] = max(1.0, update.norm(2).item() / ((update.numel() ** 0.5) * group["d"]))
    if name == "Muon":
        for group, p, state in _stepping(optimizer):
            if group["nesterov"]:
                records[id(p)] = {"M": p.grad.lerp(state["momentum_buffer"], group["momentum"])}
    try:
        count = step_count(optimizer) if count_rule(name) is not None else None
    except ValueError:
        count = None
    _RECORDS[optimizer] = (count, records)


def adafactor_inverse(state: dict, group: dict, param: Tensor) -> Tensor:
    """P^-1 = rsqrt(max(V_hat, eps1^2)) of torch's Adafactor as its step forms it: V_hat = R C / max(mean R, eps1)
    from the row and column factors for a matrix (the last two dimensions), the EMA ``variance`` for a vector;
    eps1 = the dtype's machine epsilon when the group's eps1 is None.  A fresh tensor."""
    eps1 = group["eps"][0]
    if eps1 is None:
        eps1 = torch.finfo(param.dtype).eps
    if "row_var" in state:
        row, col = state["row_var"], state["col_var"]
        estimate = (row @ col).div_(row.mean(dim=-2, keepdim=True).clamp(min=eps1))
    else:
        estimate = state["variance"].clone()
    return estimate.clamp_(min=eps1 * eps1).rsqrt_()


def record_of(optimizer: torch.optim.Optimizer, param: Tensor) -> dict[str, Any] | None:
    """What the optimizer's last step used for ``param`` (module docstring), or None when no record belongs to
    its current step (it stepped before the hooks were installed, or a state was loaded since)."""
    entry = _RECORDS.get(optimizer)
    if entry is None:
        return None
    count, records = entry
    if count is not None and count != step_count(optimizer, [param]):
        return None
    return records.get(id(param))


def install() -> None:
    """Register the global step hooks once in this process (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    register_optimizer_step_pre_hook(_before)
    register_optimizer_step_post_hook(_after)
    _INSTALLED = True


install()
