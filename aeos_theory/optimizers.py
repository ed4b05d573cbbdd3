"""The optimizer registry: every fact about an optimizer, written once.

Each :class:`OptimizerSpec` says what the rest of the package needs to know about one optimizer:

* its hyperparameters (names of :mod:`aeos_theory.hyperparams`) and torch's defaults for them;
* ``momentum``: the hyperparameter that plays "beta" in its threshold formula (None for GD);
* ``preconditioner``: the rule by which its diagonal P is read from the torch state (``"v_hat"``:
  sqrt(v / (1 - beta2^t)) + eps from ``exp_avg_sq``; ``"v_hat_nadam"``, the same in NAdam's rounding;
  ``"square_avg"``: sqrt(s) + eps from RMSprop's ``square_avg``), or None when P = I (SGD and its
  momentum variants); ``deep.preconditioners`` implements the rules;
* ``label``: the optimizer's name in figures and messages;
* ``torch_class`` and ``torch_arguments``: how to build the ``torch.optim`` object (data only: this
  module imports no torch);
* ``update``: the frozen-P update matrix M(lambda) on one eigen-direction, which :mod:`.stability`
  turns into the exact threshold;
* ``kernel``: the integer code of its step in the ``sims`` numba kernels.

`sims`, `deep` and `paper_figures` derive all their tables from :data:`OPTIMIZERS`: adding an
optimizer is one entry here plus its step in ``sims.updates``.

**Update matrices.**  On one eigen-direction of L(x) = 1/2 lambda x^2 with P frozen, each optimizer is
a linear recurrence s_{t+1} = M(lambda) s_t on its state s = (x, buffer); ``lambda`` is the
*preconditioned* curvature h / p of that direction (p = 1 for non-adaptive methods).  Coupled L2 weight
decay adds ``weight_decay * x`` to the gradient, so it enters as G = lambda + weight_decay; this is exact
for p = 1, and for a general frozen p substitute weight_decay -> weight_decay / p.  AdamW's decoupled
decay multiplies x by (1 - eta weight_decay) before the step, as ``torch.optim.AdamW`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import sympy as sp

from aeos_theory.hyperparams import HYPERS

#: The curvature symbol (preconditioned eigenvalue for adaptive methods).
LAMBDA = sp.Symbol("lambda", positive=True)

#: One sympy symbol per hyperparameter name (eta > 0, the others >= 0).
SYMBOLS: dict[str, sp.Symbol] = {
    name: sp.Symbol(name, positive=True) if not hyper.low_inclusive else sp.Symbol(name, nonnegative=True)
    for name, hyper in HYPERS.items()
}

UpdateMap = Callable[..., sp.Matrix]
TorchArguments = Callable[[Mapping[str, float]], dict]


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of the package (see the module docstring for the meaning of each field)."""

    name: str
    label: str
    doc: str
    hypers: tuple[str, ...]
    defaults: Mapping[str, float]
    momentum: str | None
    preconditioner: str | None
    torch_class: str
    torch_arguments: TorchArguments = field(repr=False)
    update: UpdateMap = field(repr=False)
    kernel: int

    @property
    def adaptive(self) -> bool:
        """True when the optimizer divides its step by an adaptive diagonal P (the Adam family, RMSProp)."""
        return self.preconditioner is not None

    def matrix(self) -> sp.Matrix:
        """M(lambda) in the package's symbols (:data:`LAMBDA`, :data:`SYMBOLS`)."""
        return self.update(LAMBDA, **{name: SYMBOLS[name] for name in self.hypers})

    def validate(self, hyper: Mapping[str, object], *, require: tuple[str, ...] = ("eta",)) -> dict[str, float]:
        """``hyper`` checked and completed with this optimizer's defaults.

        ValueError for an argument the optimizer does not take, a missing required one, a value outside
        its range (the message names the argument and the range), or eta * weight_decay >= 1 (decay alone
        would flip the sign of x).
        """
        unknown = sorted(set(hyper) - set(self.hypers))
        if unknown:
            raise ValueError(f"optimizer {self.name!r} takes hyperparameters {', '.join(self.hypers)}; "
                             f"unknown: {', '.join(unknown)}")
        values: dict[str, float] = {}
        for name in self.hypers:
            if hyper.get(name) is not None:
                values[name] = HYPERS[name].check(hyper[name])
            elif name in self.defaults:
                values[name] = self.defaults[name]
            elif name in require:
                raise ValueError(f"{name} is required for optimizer {self.name!r} ({HYPERS[name].range_text()})")
        eta, wd = values.get("eta"), values.get("weight_decay", 0.0)
        if eta is not None and eta * wd >= 1.0:
            raise ValueError(f"weight_decay must satisfy 0 <= weight_decay < 1/eta = {1.0 / eta:g}, got {wd!r}")
        return values


# ----------------------------------------------------------------------------- update matrices
def _gd(lam, eta, weight_decay):
    """x <- x - eta (lambda + wd) x."""
    return sp.Matrix([[1 - eta * (lam + weight_decay)]])


def _heavy_ball(lam, eta, beta, dampening, weight_decay):
    """v <- beta v + (1 - dampening) G x;  x <- x - eta v   (state (x, v), G = lambda + wd)."""
    g = (1 - dampening) * (lam + weight_decay)
    return sp.Matrix([[1 - eta * g, -eta * beta], [g, beta]])


def _nesterov(lam, eta, beta, weight_decay):
    """v <- beta v + G x;  x <- x - eta (G x + beta v)   (torch ``nesterov=True``)."""
    g = lam + weight_decay
    return sp.Matrix([[1 - eta * (1 + beta) * g, -eta * beta**2], [g, beta]])


def _ema(lam, eta, beta1, weight_decay, decoupled):
    """m <- beta1 m + (1 - beta1) G x;  x <- (1 - eta wd_dec) x - eta m   (state (x, m))."""
    g = lam if decoupled else lam + weight_decay
    shrink = 1 - eta * weight_decay if decoupled else 1
    return sp.Matrix([[shrink - eta * (1 - beta1) * g, -eta * beta1], [(1 - beta1) * g, beta1]])


def _adam(lam, eta, beta1, beta2, eps, weight_decay):
    """Adam with frozen P = 1: EMA momentum, coupled L2 (torch ``Adam(weight_decay=...)``)."""
    return _ema(lam, eta, beta1, weight_decay, decoupled=False)


def _adamw(lam, eta, beta1, beta2, eps, weight_decay):
    """AdamW with frozen P = 1: x <- (1 - eta wd) x - eta m, decoupled decay."""
    return _ema(lam, eta, beta1, weight_decay, decoupled=True)


def _rmsprop(lam, eta, beta, beta2, eps, weight_decay):
    """RMSprop with frozen P = 1 and torch's ``momentum`` = beta: v <- beta v + G x; x <- x - eta v."""
    return _heavy_ball(lam, eta, beta, 0, weight_decay)


def _nadam(lam, eta, beta1, beta2, eps, weight_decay):
    """NAdam (Dozat) once mu_t = beta1: m <- beta1 m + (1 - beta1) G x; x <- x - eta (beta1 m + (1 - beta1) G x)."""
    g = lam + weight_decay
    return sp.Matrix([[1 - eta * (1 - beta1) * (1 + beta1) * g, -eta * beta1**2], [(1 - beta1) * g, beta1]])


# ----------------------------------------------------------------------------- torch arguments
def _sgd_arguments(h: Mapping[str, float]) -> dict:
    momentum = h.get("beta", 0.0)
    return {"lr": h["eta"], "momentum": momentum, "dampening": h.get("dampening", 0.0),
            "weight_decay": h["weight_decay"]}


def _nesterov_arguments(h: Mapping[str, float]) -> dict:
    # torch refuses nesterov=True without momentum; beta = 0 is exactly gd
    return {"lr": h["eta"], "momentum": h["beta"], "nesterov": h["beta"] > 0, "weight_decay": h["weight_decay"]}


def _adam_arguments(h: Mapping[str, float]) -> dict:
    return {"lr": h["eta"], "betas": (h["beta1"], h["beta2"]), "eps": h["eps"], "weight_decay": h["weight_decay"]}


def _rmsprop_arguments(h: Mapping[str, float]) -> dict:
    return {"lr": h["eta"], "alpha": h["beta2"], "eps": h["eps"], "momentum": h["beta"],
            "weight_decay": h["weight_decay"]}


_ADAM_HYPERS = ("eta", "beta1", "beta2", "eps", "weight_decay")
_ADAM_DEFAULTS = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}

OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec("gd", "GD", "gradient descent: x <- x - eta g",
                      ("eta", "weight_decay"), {"weight_decay": 0.0},
                      momentum=None, preconditioner=None, torch_class="SGD", torch_arguments=_sgd_arguments,
                      update=_gd, kernel=0),
        OptimizerSpec("heavy_ball", "heavy ball", "SGD(momentum=beta, dampening): v <- beta v + (1 - dampening) g; x <- x - eta v",
                      ("eta", "beta", "dampening", "weight_decay"),
                      {"beta": 0.9, "dampening": 0.0, "weight_decay": 0.0},
                      momentum="beta", preconditioner=None, torch_class="SGD", torch_arguments=_sgd_arguments,
                      update=_heavy_ball, kernel=1),
        OptimizerSpec("nesterov", "Nesterov", "SGD(momentum=beta, nesterov=True): v <- beta v + g; x <- x - eta (g + beta v)",
                      ("eta", "beta", "weight_decay"), {"beta": 0.9, "weight_decay": 0.0},
                      momentum="beta", preconditioner=None, torch_class="SGD", torch_arguments=_nesterov_arguments,
                      update=_nesterov, kernel=2),
        OptimizerSpec("adam", "Adam", "Adam: m <- beta1 m + (1 - beta1) g; x <- x - eta m_hat / (sqrt(v_hat) + eps)",
                      _ADAM_HYPERS, _ADAM_DEFAULTS,
                      momentum="beta1", preconditioner="v_hat", torch_class="Adam", torch_arguments=_adam_arguments,
                      update=_adam, kernel=3),
        OptimizerSpec("adamw", "AdamW", "AdamW: x <- (1 - eta wd) x - eta m_hat / (sqrt(v_hat) + eps)",
                      _ADAM_HYPERS, {**_ADAM_DEFAULTS, "weight_decay": 1e-2},
                      momentum="beta1", preconditioner="v_hat", torch_class="AdamW", torch_arguments=_adam_arguments,
                      update=_adamw, kernel=4),
        OptimizerSpec("rmsprop", "RMSProp", "RMSprop(alpha=beta2, momentum=beta): v <- beta v + g / (sqrt(s) + eps); x <- x - eta v",
                      ("eta", "beta", "beta2", "eps", "weight_decay"),
                      {"beta": 0.0, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.0},
                      momentum="beta", preconditioner="square_avg", torch_class="RMSprop",
                      torch_arguments=_rmsprop_arguments, update=_rmsprop, kernel=5),
        OptimizerSpec("nadam", "NAdam", "NAdam with settled momentum schedule: x <- x - eta (beta1 m + (1 - beta1) g) / P",
                      _ADAM_HYPERS, _ADAM_DEFAULTS,
                      momentum="beta1", preconditioner="v_hat_nadam", torch_class="NAdam", torch_arguments=_adam_arguments,
                      update=_nadam, kernel=6),
    )
}


def get_optimizer(name: str) -> OptimizerSpec:
    """The :class:`OptimizerSpec` called ``name``; ValueError listing the known names otherwise."""
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    return OPTIMIZERS[name]


def validate(optimizer: str, hyper: Mapping[str, object], *, require: tuple[str, ...] = ("eta",)) -> dict[str, float]:
    """``hyper`` for ``optimizer`` checked and completed with its defaults (:meth:`OptimizerSpec.validate`)."""
    return get_optimizer(optimizer).validate(hyper, require=require)
