"""The package's optimizer names on top of ``torch.optim``, and the threshold each one must respect.

Which ``torch.optim`` class and which keyword arguments a package name stands for is a fact of the
registry (:data:`aeos_theory.OPTIMIZERS`: ``torch_class`` and ``torch_arguments``); this module only
applies it.  For example ``make_optimizer("adam", params, {"eta": 1e-3})`` is
``torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)``.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from aeos_theory.optimizers import get_optimizer


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], hyper: Mapping[str, object]) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer for package name ``name`` with validated, defaults-completed hyperparameters."""
    spec = get_optimizer(name)
    values = spec.validate(dict(hyper))
    return getattr(torch.optim, spec.torch_class)(params, **spec.torch_arguments(values))


def threshold(name: str, hyper: Mapping[str, float], step: int) -> float:
    """The stability threshold on the (preconditioned) sharpness after ``step`` updates, in units of 1/eta.

    :func:`aeos_theory.stability_threshold` for every optimizer (2/eta for gd, 38/eta for Adam at
    beta1 = 0.9, ...).  For ``adam`` the bias correction makes the step at time t equal to
    eta / (1 - beta1^t) on the raw EMA, so the quasi-static threshold
    :func:`aeos_theory.threshold_at_step` (2 + 2 beta1)(1 - beta1^t)/((1 - beta1) eta) is used, with
    t = max(step, 1) (P_t is the denominator of step t; before any step, the first step's value),
    including coupled weight decay.  For adamw and nadam the settled (t -> infinity) threshold is returned.
    """
    from aeos_theory.stability import stability_threshold, threshold_at_step

    h = get_optimizer(name).validate(dict(hyper))
    if name == "adam":
        return threshold_at_step(max(int(step), 1), h["beta1"], h["eta"], h["weight_decay"])
    return stability_threshold(name, **h)
