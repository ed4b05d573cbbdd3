"""Where a live optimizer stands against its stability threshold, read from the optimizer itself.

At its current step t a ``torch.optim`` optimizer takes, in each parameter group g, the step
theta <- theta - lr_g (something) / P with its diagonal preconditioner P (I for SGD).  Frozen, that
update is stable only while

    eta_S_P = lambda_max(D^1/2 (H + W) D^1/2) < c_t,      D = diag(lr_g / P),

where H is the loss Hessian, W the coupled weight decay of each group (0 for AdamW's decoupled decay)
and c_t the dimensionless threshold of the t-th update from :func:`aeos_theory.stability_threshold`,
e.g. (2 + 2 beta1)(1 - beta1^t)/(1 - beta1) for Adam (38 once the bias correction has faded, at
beta1 = 0.9), 2 for GD, NAdam's moving value under its momentum schedule, (1 + beta1)(2 - lr wd)(1 -
beta1^t)/(1 - beta1) for AdamW.  With one group eta_S_P = lr * S_P.  The ratio eta_S_P / c_t is 1 at
the edge of stability.

Everything is read from the optimizer at the moment of the call: each group's current ``lr`` (so any
``torch.optim.lr_scheduler`` and per-group rates are honoured), betas, eps, momentum_decay,
weight_decay, and ``state["step"]``.  The package optimizer a group runs is named by
:func:`aeos_theory.identify`; an optimizer or setting the registry does not describe is refused with a
ValueError saying so.

Every param group must run the same optimizer, and the groups' constants must agree to the relative
tolerance :data:`CONSTANT_RTOL` = 1e-3; c_t is then the smallest of them, the conservative choice (the
ratio is the largest of the groups' own ratios).  AdamW's c_t holds the factor (2 - lr_g wd_g), so its
usual groups (a no-decay group for biases and norms, or groups at different lr) differ by half the
spread of lr_g wd_g, relative: 5e-4 for a no-decay group beside lr = 1e-2, wd = 0.1, accepted.  Groups
with different betas, or whose lr_g wd_g are more than about 2e-3 apart, are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from aeos_base import checks
from aeos_theory import identify, threshold_constant

from .eigen import DEFAULT_MAX_ITER, eigenpairs_of
from .inputs import LossFn
from .operators import CurvatureOperator, DiagonalOperator, PreconditionedOperator
from .preconditioners import coupled_decay_diagonal, group_diagonal, optimizer_step, preconditioner_diagonal
from .strategies import hessian_operator

#: Param groups whose threshold constants c_t agree to this relative tolerance share one edge, compared
#: with the smallest c_t (module docstring).
CONSTANT_RTOL = 1e-3


@dataclass(frozen=True)
class EdgeSetting:
    """What the optimizer applies at its current step: the package ``optimizer`` name, ``step`` t (None
    for SGD, which keeps no count; its momentum thresholds are those of t >= 2), ``constant`` c_t (the
    smallest of the groups' constants, which agree to :data:`CONSTANT_RTOL`), each group's ``lr``, and the
    flat diagonals ``step_size`` D = lr_g / P and ``decay`` W."""

    optimizer: str
    step: int | None
    constant: float
    lr: tuple[float, ...]
    step_size: Tensor
    decay: Tensor


@dataclass(frozen=True)
class Edge:
    """One measurement of the edge (see the module docstring): ``eta_S_P`` (dimensionless), the threshold
    ``constant`` c_t, their ``ratio`` (1 at the edge), the ``step``, the package ``optimizer``, each group's
    ``lr``; ``hvps``, ``converged`` and the top ``eigenvector`` (a warm start for the next call)."""

    step: int | None
    optimizer: str
    lr: tuple[float, ...]
    eta_S_P: float
    constant: float
    ratio: float
    hvps: int
    converged: bool
    eigenvector: Tensor


def edge_setting(optimizer: torch.optim.Optimizer, model: nn.Module, step: int | None = None) -> EdgeSetting:
    """Read the step the optimizer applies now (no Hessian-vector product); ValueError when it cannot.

    ``step``: the number of updates taken, for an optimizer that keeps no count (SGD); an optimizer
    that does (``state["step"]``) must agree with it.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    cls = type(optimizer).__name__
    named = [identify(cls, group) for group in optimizer.param_groups]
    if len({name for name, _ in named}) != 1:
        raise ValueError(f"optimizer param groups run different optimizers {[n for n, _ in named]}")
    p_diag = preconditioner_diagonal(optimizer, model)  # validates classes, parameters and the first step
    counted = optimizer_step(optimizer, model)
    if counted is not None and step is not None and counted != step:
        raise ValueError(f"step must be the optimizer's own count {counted}; got {step}")
    step = counted if counted is not None else (None if step is None else checks.integer("step", step, low=1))
    constants = [threshold_constant(name, step=step, **hyper) for name, hyper in named]
    if max(constants) - min(constants) > CONSTANT_RTOL * max(constants):
        raise ValueError(f"optimizer param groups have different threshold constants {constants}, further apart "
                         f"than the relative tolerance {CONSTANT_RTOL:g} (different betas, or lr * weight_decay "
                         "far apart under decoupled decay): no single edge to compare with")
    lr = group_diagonal(optimizer, model, lambda g: g["lr"]).to(p_diag)
    return EdgeSetting(named[0][0], step, min(constants), tuple(hyper["eta"] for _, hyper in named),
                       lr / p_diag, coupled_decay_diagonal(optimizer, model).to(p_diag))


def edge_operator(model: nn.Module, loss_fn: LossFn, data, setting: EdgeSetting,
                  method: str = "auto") -> CurvatureOperator:
    """v -> D^1/2 (H + W) D^1/2 v, whose top eigenvalue is eta_S_P: H (products by ``method``,
    :func:`deep.hessian_operator`) plus the coupled decay W, preconditioned by P' = 1/D = P / lr_g."""
    hessian = hessian_operator(model, loss_fn, data, strategy=method)
    curvature = hessian + DiagonalOperator(setting.decay.to(hessian.dtype)) if bool(torch.any(setting.decay != 0)) \
        else hessian
    return PreconditionedOperator(curvature, 1.0 / setting.step_size)


def measure_edge(model: nn.Module, loss_fn: LossFn, data, optimizer: torch.optim.Optimizer, *,
                 step: int | None = None, tol: float = 1e-3, max_iter: int = DEFAULT_MAX_ITER,
                 init: Tensor | None = None, seed: int = 0, method: str = "auto") -> Edge:
    """eta_S_P, the threshold c_t of the optimizer's current step and their ratio (module docstring).

    ``data`` is the full batch as (inputs, targets) chunks, as for :func:`deep.sharpness`; ``step`` the
    updates taken, needed only for an optimizer that keeps no count (SGD: its first update is plain GD;
    without it the thresholds of t >= 2 are used); ``init`` a warm start (a previous
    :attr:`Edge.eigenvector`); Lanczos stops at relative residual ``tol``.  The model, its gradients and
    the optimizer's state are left untouched.
    """
    setting = edge_setting(optimizer, model, step)
    res = eigenpairs_of(edge_operator(model, loss_fn, data, setting, method), tol=tol, max_iter=max_iter,
                        init=init, seed=seed, preconditioned=True)
    eta_s_p = res.top
    return Edge(setting.step, setting.optimizer, setting.lr, eta_s_p, setting.constant,
                eta_s_p / setting.constant if math.isfinite(eta_s_p) else math.nan, res.hvps, res.converged,
                res.eigenvectors[:, 0])
