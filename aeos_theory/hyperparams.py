"""The one definition of every hyperparameter name, its meaning and its allowed range.

`sims`, `deep` and the CLI all check values through :func:`aeos_theory.validate`, so a name means the
same thing everywhere in the package:

=============  =========================================================  ==================
name           meaning                                                    allowed range
=============  =========================================================  ==================
eta            step size (torch ``lr``)                                   0 < eta < inf
beta           momentum of heavy_ball / nesterov / rmsprop (``momentum``)  0 <= beta < 1
beta1          EMA coefficient of the first moment m (Adam family)        0 <= beta1 < 1
beta2          EMA coefficient of the second moment v (RMSProp ``alpha``)  0 <= beta2 < 1
eps            added to sqrt(v_hat) in the preconditioner P               0 < eps < inf
dampening      SGD dampening: v = beta v + (1 - dampening) g              0 <= dampening < 1
weight_decay   coupled L2 (g += wd x) or, for adamw, decoupled decay      0 <= weight_decay < 1/eta
momentum_decay NAdam's psi: mu_t = beta1 (1 - 0.5 * 0.96^(t psi))           0 <= momentum_decay
lr_decay       Adagrad: the t-th step's lr is eta / (1 + (t - 1) lr_decay)  0 <= lr_decay
lambd          ASGD's decay x <- (1 - lambd eta_t) x and its lr schedule   0 <= lambd
decay_power    ASGD's alpha: eta_t = eta / (1 + lambd eta (t - 1))^alpha   0 <= decay_power
=============  =========================================================  ==================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aeos_base import checks

if TYPE_CHECKING:
    import numpy as np


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
        """``value`` as a float, or ValueError naming the argument and its range."""
        return checks.real(self.name, value, low=self.low, high=self.high, low_inclusive=self.low_inclusive,
                           high_inclusive=self.high_inclusive)

    def check_array(self, value: np.ndarray) -> np.ndarray:
        """A numpy array ``value`` as float64, checked elementwise: ValueError naming the argument, its range
        and the first offending element (in C order) with its index, worded as :meth:`check` words a scalar."""
        import numpy as np

        if value.dtype.kind not in "iuf":  # bools, complex numbers, strings and objects are no hyperparameters
            raise ValueError(f"{self.name} must hold real numbers with {self.range_text()}; got an array of dtype "
                             f"{value.dtype}")
        x = value.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore"):
            above = x >= self.low if self.low_inclusive else x > self.low
            below = x <= self.high if self.high_inclusive else x < self.high
        bad = ~(np.isfinite(x) & above & below)
        if bad.any():
            index = tuple(int(i) for i in np.unravel_index(np.argmax(bad), x.shape))
            try:
                self.check(float(x[index]))
            except ValueError as err:
                raise ValueError(f"{err} (at index {index})") from None
        return x


HYPERS: dict[str, Hyper] = {
    h.name: h
    for h in (
        Hyper("eta", 0.0, math.inf, False, False, "step size (torch lr)"),
        Hyper("beta", 0.0, 1.0, True, False, "heavy-ball / Nesterov momentum (torch momentum)"),
        Hyper("beta1", 0.0, 1.0, True, False, "first-moment EMA coefficient"),
        Hyper("beta2", 0.0, 1.0, True, False, "second-moment EMA coefficient (RMSprop alpha)"),
        Hyper("eps", 0.0, math.inf, False, False, "added to sqrt(v_hat) in P (> 0: P = 0 gives 0/0)"),
        Hyper("dampening", 0.0, 1.0, True, False, "SGD dampening"),
        Hyper("weight_decay", 0.0, math.inf, True, False, "L2 (coupled) or decoupled (adamw) decay"),
        Hyper("momentum_decay", 0.0, math.inf, True, False,
              "NAdam's momentum schedule psi: mu_t = beta1 (1 - 0.5 * 0.96^(t psi))"),
        Hyper("lr_decay", 0.0, math.inf, True, False, "Adagrad's lr decay: eta_t = eta / (1 + (t - 1) lr_decay)"),
        Hyper("lambd", 0.0, math.inf, True, False,
              "ASGD's decay lambd: x <- (1 - lambd eta_t) x, eta_t = eta / (1 + lambd eta (t - 1))^alpha"),
        Hyper("decay_power", 0.0, math.inf, True, False, "ASGD's alpha, the power of its lr schedule"),
    )
}


def flag_help(skip: tuple[str, ...] = ()) -> dict[str, str]:
    """name -> the help text of its command-line flag (meaning, range, default), for every hyperparameter but
    those in ``skip`` (:func:`aeos_base.command.add_number_flags` turns it into flags)."""
    return {name: f"{hyper.doc} ({hyper.range_text()}; default: the optimizer's)"
            for name, hyper in HYPERS.items() if name not in skip}
