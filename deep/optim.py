"""The package's optimizer names on top of ``torch.optim``, and the threshold each one must respect.

Names and hyperparameters are those of :mod:`aeos_theory` (validated by
:func:`aeos_theory.hyperparams.validate`):

============  =====================================================================================
name          torch.optim
============  =====================================================================================
gd            SGD(lr=eta, weight_decay)
heavy_ball    SGD(lr=eta, momentum=beta, dampening, weight_decay)
nesterov      SGD(lr=eta, momentum=beta, nesterov=True, weight_decay)  (beta = 0 is plain gd)
adam          Adam(lr=eta, betas=(beta1, beta2), eps, weight_decay)      coupled L2
adamw         AdamW(lr=eta, betas=(beta1, beta2), eps, weight_decay)     decoupled decay
rmsprop       RMSprop(lr=eta, alpha=beta2, eps, momentum=beta, weight_decay)
nadam         NAdam(lr=eta, betas=(beta1, beta2), eps, weight_decay)
============  =====================================================================================
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch


def validate_hyper(optimizer: str, hyper: Mapping[str, object]) -> dict[str, float]:
    """``hyper`` checked and completed with defaults by :func:`aeos_theory.hyperparams.validate`."""
    from aeos_theory.hyperparams import validate

    return validate(optimizer, dict(hyper))


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], hyper: Mapping[str, object]) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer for package name ``name`` with validated hyperparameters."""
    h = validate_hyper(name, hyper)
    eta, wd = h["eta"], h.get("weight_decay", 0.0)
    if name == "gd":
        return torch.optim.SGD(params, lr=eta, weight_decay=wd)
    if name == "heavy_ball":
        return torch.optim.SGD(params, lr=eta, momentum=h["beta"], dampening=h["dampening"], weight_decay=wd)
    if name == "nesterov":  # torch refuses nesterov=True without momentum; beta = 0 is exactly gd
        return torch.optim.SGD(params, lr=eta, momentum=h["beta"], nesterov=h["beta"] > 0, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=eta, alpha=h["beta2"], eps=h["eps"], momentum=h["beta"],
                                   weight_decay=wd)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "nadam": torch.optim.NAdam}[name]
    return cls(params, lr=eta, betas=(h["beta1"], h["beta2"]), eps=h["eps"], weight_decay=wd)


def is_adaptive(name: str) -> bool:
    """True when the optimizer preconditions its step (P != I): adam, adamw, nadam, rmsprop."""
    from aeos_theory.optimizers import get_optimizer

    return get_optimizer(name).adaptive


def threshold(name: str, hyper: Mapping[str, float], step: int) -> float:
    """The stability threshold on the (preconditioned) sharpness after ``step`` updates, in 1/eta units.

    :func:`aeos_theory.stability_threshold` for every optimizer (2/eta for gd, 38/eta for Adam at
    beta1 = 0.9, ...).  For ``adam`` the bias correction makes the step at time t equal to
    eta / (1 - beta1^t) on the raw EMA, so the quasi-static threshold
    :func:`aeos_theory.threshold_at_step` (2 + 2 beta1)(1 - beta1^t)/((1 - beta1) eta) is used, with
    t = max(step, 1) (P_t is the denominator of step t; before any step, the first step's value),
    including coupled weight decay.
    For adamw and nadam the settled (t -> infinity) threshold is returned.
    """
    from aeos_theory.stability import stability_threshold, threshold_at_step

    h = validate_hyper(name, hyper)
    if name == "adam":
        return threshold_at_step(max(int(step), 1), h["beta1"], h["eta"], h["weight_decay"])
    return stability_threshold(name, **h)
