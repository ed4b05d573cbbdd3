"""Losses as means over the examples of one chunk (the convention of :mod:`deep.measure`).

Targets are either one-hot / real-valued floats with the outputs' shape, or long class indices with
the outputs' shape minus the last (class) axis; any other shape is refused (ValueError).  For the language model an "example" is a token:
outputs (b, T, V), targets (b, T), and the mean runs over the b T tokens.

* ``mse``: L = 1/(2 n) sum_i ||f(x_i) - y_i||^2 (sum over classes, mean over examples; the paper's
  square loss, locuslab/edge-of-stability's ``0.5 * sum of squares / n``).  Class-index targets are made one-hot.
* ``ce``: L = -1/n sum_i log softmax(f(x_i))_{y_i} (soft targets: -1/n sum_i <y_i, log softmax f>).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from aeos_base import checks

from .names import LOSSES

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _flat(out: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, targets) as (m, K) and (m, K) floats or (m,) class indices; ValueError for any other shape
    (a reshape would silently pair the wrong numbers: targets (10, 100) for outputs (100, 10))."""
    if out.ndim < 2:
        raise ValueError(f"outputs must have a last axis of K outputs (classes), shape (n, K); got shape "
                         f"{tuple(out.shape)} (for one output per example use shape (n, 1))")
    floats = target.is_floating_point()
    expected = out.shape if floats else out.shape[:-1]
    if target.shape != expected:
        raise ValueError(f"targets must have the outputs' shape {tuple(out.shape)} (floats) or {tuple(out.shape[:-1])} "
                         f"(class indices); got {'float' if floats else 'integer'} targets of shape {tuple(target.shape)}")
    k = out.shape[-1]
    out = out.reshape(-1, k)
    if target.is_floating_point():
        return out, target.reshape(-1, k)
    return out, target.reshape(-1)


def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1/2 ||f - y||^2 summed over the last axis, averaged over examples (tokens).  Dimensionless."""
    out, target = _flat(out, target)
    if not target.is_floating_point():
        target = F.one_hot(target, out.shape[-1]).to(out.dtype)
    return 0.5 * (out - target).pow(2).sum(dim=1).mean()


def cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over examples (tokens) of -log softmax(f)_y, in nats; soft/one-hot targets allowed."""
    out, target = _flat(out, target)
    return F.cross_entropy(out, target)


def get_loss(name: str) -> LossFn:
    """The loss function called ``name`` (``mse`` or ``ce``)."""
    return {"mse": mse, "ce": cross_entropy}[checks.choice("loss", name, LOSSES)]


def correct(out: torch.Tensor, target: torch.Tensor) -> int:
    """Number of examples (tokens) whose argmax output equals the target class (argmax if one-hot)."""
    out, target = _flat(out, target)
    labels = target.argmax(dim=1) if target.is_floating_point() else target
    return int((out.argmax(dim=1) == labels).sum())


def count(target: torch.Tensor) -> int:
    """Number of examples the loss averages over: rows, or tokens for a language model."""
    if target.is_floating_point():
        return int(target.numel() // target.shape[-1])
    return int(target.numel())
