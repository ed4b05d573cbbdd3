"""Every optimizer of the package, written once as its linear update map on a quadratic.

On one eigen-direction of L(x) = 1/2 lambda x^2, with the preconditioner P frozen, each optimizer is
a linear recurrence s_{t+1} = M(lambda) s_t on its state s = (x, buffer).  ``lambda`` is the
*preconditioned* curvature h / p of that direction (for non-adaptive methods p = 1, so it is the
curvature itself).  Coupled L2 weight decay adds ``weight_decay * x`` to the gradient, so it enters
as G = lambda + weight_decay; this is exact for p = 1, and for a general frozen p substitute
weight_decay -> weight_decay / p.  AdamW's decoupled decay multiplies x by (1 - eta weight_decay)
before the step, as ``torch.optim.AdamW`` does.

The names (``gd``, ``heavy_ball``, ``nesterov``, ``adam``, ``adamw``, ``rmsprop``, ``nadam``) and the
hyperparameter names of :mod:`aeos_theory.hyperparams` are the package's vocabulary: `sims`, `deep`
and the CLI use exactly these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import sympy as sp

#: The curvature symbol (preconditioned eigenvalue for adaptive methods).
LAMBDA = sp.Symbol("lambda", positive=True)

#: One sympy symbol per hyperparameter name.
SYMBOLS: dict[str, sp.Symbol] = {
    "eta": sp.Symbol("eta", positive=True),
    "beta": sp.Symbol("beta", nonnegative=True),
    "beta1": sp.Symbol("beta1", nonnegative=True),
    "beta2": sp.Symbol("beta2", nonnegative=True),
    "eps": sp.Symbol("eps", nonnegative=True),
    "dampening": sp.Symbol("dampening", nonnegative=True),
    "weight_decay": sp.Symbol("weight_decay", nonnegative=True),
}

UpdateMap = Callable[..., sp.Matrix]


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer: its name, hyperparameters, defaults and frozen-P update matrix M(lambda)."""

    name: str
    hypers: tuple[str, ...]
    defaults: Mapping[str, float]
    adaptive: bool
    update: UpdateMap = field(repr=False)
    torch_class: str
    doc: str

    def matrix(self) -> sp.Matrix:
        """M(lambda) in the package's symbols (:data:`LAMBDA`, :data:`SYMBOLS`)."""
        return self.update(LAMBDA, **{name: SYMBOLS[name] for name in self.hypers})


def _gd(lam, eta, weight_decay):
    r"""x <- x - eta (lambda + wd) x."""
    return sp.Matrix([[1 - eta * (lam + weight_decay)]])


def _heavy_ball(lam, eta, beta, dampening, weight_decay):
    r"""v <- beta v + (1 - dampening) G x;  x <- x - eta v   (state (x, v), G = lambda + wd)."""
    g = (1 - dampening) * (lam + weight_decay)
    return sp.Matrix([[1 - eta * g, -eta * beta], [g, beta]])


def _nesterov(lam, eta, beta, weight_decay):
    r"""v <- beta v + G x;  x <- x - eta (G x + beta v)   (torch ``nesterov=True``)."""
    g = lam + weight_decay
    return sp.Matrix([[1 - eta * (1 + beta) * g, -eta * beta**2], [g, beta]])


def _ema(lam, eta, beta1, weight_decay, decoupled):
    r"""m <- beta1 m + (1 - beta1) G x;  x <- (1 - eta wd_dec) x - eta m   (state (x, m))."""
    g = lam if decoupled else lam + weight_decay
    shrink = 1 - eta * weight_decay if decoupled else 1
    return sp.Matrix([[shrink - eta * (1 - beta1) * g, -eta * beta1], [(1 - beta1) * g, beta1]])


def _adam(lam, eta, beta1, beta2, eps, weight_decay):
    r"""Adam with frozen P = 1: EMA momentum, coupled L2 (torch ``Adam(weight_decay=...)``)."""
    return _ema(lam, eta, beta1, weight_decay, decoupled=False)


def _adamw(lam, eta, beta1, beta2, eps, weight_decay):
    r"""AdamW with frozen P = 1: x <- (1 - eta wd) x - eta m, decoupled decay."""
    return _ema(lam, eta, beta1, weight_decay, decoupled=True)


def _rmsprop(lam, eta, beta, beta2, eps, weight_decay):
    r"""RMSprop with frozen P = 1 and torch's ``momentum`` = beta: v <- beta v + G x; x <- x - eta v."""
    return _heavy_ball(lam, eta, beta, 0, weight_decay)


def _nadam(lam, eta, beta1, beta2, eps, weight_decay):
    r"""NAdam (Dozat) once mu_t = beta1: m <- beta1 m + (1 - beta1) G x; x <- x - eta (beta1 m + (1 - beta1) G x)."""
    g = lam + weight_decay
    return sp.Matrix(
        [[1 - eta * (1 - beta1) * (1 + beta1) * g, -eta * beta1**2], [(1 - beta1) * g, beta1]]
    )


_ADAPTIVE = ("eta", "beta1", "beta2", "eps", "weight_decay")

OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec("gd", ("eta", "weight_decay"), {"weight_decay": 0.0}, False, _gd, "SGD",
                      "gradient descent: x <- x - eta g"),
        OptimizerSpec("heavy_ball", ("eta", "beta", "dampening", "weight_decay"),
                      {"beta": 0.9, "dampening": 0.0, "weight_decay": 0.0}, False, _heavy_ball, "SGD",
                      "SGD(momentum=beta, dampening): v <- beta v + (1 - dampening) g; x <- x - eta v"),
        OptimizerSpec("nesterov", ("eta", "beta", "weight_decay"), {"beta": 0.9, "weight_decay": 0.0},
                      False, _nesterov, "SGD",
                      "SGD(momentum=beta, nesterov=True): v <- beta v + g; x <- x - eta (g + beta v)"),
        OptimizerSpec("adam", _ADAPTIVE,
                      {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}, True, _adam, "Adam",
                      "Adam: m <- beta1 m + (1 - beta1) g; x <- x - eta m_hat / (sqrt(v_hat) + eps)"),
        OptimizerSpec("adamw", _ADAPTIVE,
                      {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}, True, _adamw, "AdamW",
                      "AdamW: x <- (1 - eta wd) x - eta m_hat / (sqrt(v_hat) + eps)"),
        OptimizerSpec("rmsprop", ("eta", "beta", "beta2", "eps", "weight_decay"),
                      {"beta": 0.0, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.0}, True, _rmsprop, "RMSprop",
                      "RMSprop(alpha=beta2, momentum=beta): v <- beta v + g / (sqrt(s) + eps); x <- x - eta v"),
        OptimizerSpec("nadam", _ADAPTIVE,
                      {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}, True, _nadam, "NAdam",
                      "NAdam with settled momentum schedule: x <- x - eta (beta1 m + (1 - beta1) g) / P"),
    )
}


def get_optimizer(name: str) -> OptimizerSpec:
    """The :class:`OptimizerSpec` called ``name``; ValueError listing the known names otherwise."""
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    return OPTIMIZERS[name]
