"""The one definition of every hyperparameter name, its default and its allowed range.

`sims`, `deep` and the CLI all validate through :func:`validate`, so a name means the same thing
everywhere in the package:

=============  =========================================================  ==================
name           meaning                                                    allowed range
=============  =========================================================  ==================
eta            step size (torch ``lr``)                                   0 < eta < inf
beta           momentum of heavy_ball / nesterov / rmsprop (``momentum``)  0 <= beta < 1
beta1          EMA coefficient of the first moment m (Adam family)        0 <= beta1 < 1
beta2          EMA coefficient of the second moment v (RMSProp ``alpha``)  0 <= beta2 < 1
eps            added to sqrt(v_hat) in the preconditioner P               0 <= eps < inf
dampening      SGD dampening: v = beta v + (1 - dampening) g              0 <= dampening < 1
weight_decay   coupled L2 (g += wd x) or, for adamw, decoupled decay      0 <= weight_decay < 1/eta
=============  =========================================================  ==================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Hyper:
    """A scalar hyperparameter with its range ``low <(=) value <(=) high``."""

    name: str
    low: float
    high: float
    low_inclusive: bool
    high_inclusive: bool
    doc: str

    def range_text(self) -> str:
        left = "<=" if self.low_inclusive else "<"
        right = "<=" if self.high_inclusive else "<"
        return f"{self.low:g} {left} {self.name} {right} {self.high:g}"

    def check(self, value: object) -> float:
        """Return ``value`` as a float, or raise ValueError naming the argument and its range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_numpy_scalar(value):
            raise ValueError(f"{self.name} must be a real number with {self.range_text()}, got {value!r}")
        x = float(value)  # type: ignore[arg-type]
        if not math.isfinite(x):
            raise ValueError(f"{self.name} must be finite with {self.range_text()}, got {x!r}")
        above_low = x >= self.low if self.low_inclusive else x > self.low
        below_high = x <= self.high if self.high_inclusive else x < self.high
        if not (above_low and below_high):
            raise ValueError(f"{self.name} must satisfy {self.range_text()}, got {x!r}")
        return x


def _is_numpy_scalar(value: object) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0


_INF = math.inf

HYPERS: dict[str, Hyper] = {
    h.name: h
    for h in (
        Hyper("eta", 0.0, _INF, False, False, "step size (torch lr)"),
        Hyper("beta", 0.0, 1.0, True, False, "heavy-ball / Nesterov momentum (torch momentum)"),
        Hyper("beta1", 0.0, 1.0, True, False, "first-moment EMA coefficient"),
        Hyper("beta2", 0.0, 1.0, True, False, "second-moment EMA coefficient (RMSprop alpha)"),
        Hyper("eps", 0.0, _INF, True, False, "added to sqrt(v_hat) in P"),
        Hyper("dampening", 0.0, 1.0, True, False, "SGD dampening"),
        Hyper("weight_decay", 0.0, _INF, True, False, "L2 (coupled) or decoupled (adamw) decay"),
    )
}


def validate(
    optimizer: str,
    hyper: Mapping[str, object],
    *,
    require: tuple[str, ...] = ("eta",),
) -> dict[str, float]:
    """Check ``hyper`` for ``optimizer`` and return it completed with the optimizer's defaults.

    Raises ValueError for an unknown optimizer, an argument the optimizer does not take, a missing
    required argument, or a value outside its range (the message names the argument and the range).
    The joint condition ``eta * weight_decay < 1`` (decay alone must not flip the sign of x) is
    checked here too.
    """
    from aeos_theory.optimizers import get_optimizer

    spec = get_optimizer(optimizer)
    unknown = sorted(set(hyper) - set(spec.hypers))
    if unknown:
        raise ValueError(
            f"optimizer {spec.name!r} takes hyperparameters {', '.join(spec.hypers)}; "
            f"unknown: {', '.join(unknown)}"
        )
    values: dict[str, float] = {}
    for name in spec.hypers:
        if name in hyper and hyper[name] is not None:
            values[name] = HYPERS[name].check(hyper[name])
        elif name in spec.defaults:
            values[name] = spec.defaults[name]
        elif name in require:
            raise ValueError(f"{name} is required for optimizer {spec.name!r} ({HYPERS[name].range_text()})")
    eta = values.get("eta")
    wd = values.get("weight_decay", 0.0)
    if eta is not None and eta * wd >= 1.0:
        raise ValueError(
            f"weight_decay must satisfy 0 <= weight_decay < 1/eta = {1.0 / eta:g}, got {wd!r}"
        )
    return values
