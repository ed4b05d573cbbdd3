"""The one way to build a curvature operator of a full-batch loss: H or G, raw or in an optimizer's metric.

:func:`curvature_operator` turns (model, loss_fn, data) and the choices ``curvature=`` (H, or the
generalised Gauss-Newton G of :mod:`deep.curvature.ggn`), ``strategy=`` (how a Hessian-vector product
is computed, :mod:`deep.curvature.hessian`) and ``params=`` (a block of parameters,
:mod:`deep.curvature.params`) into an operator of the :class:`deep.curvature.operators.CurvatureOperator`
protocol, and with ``optimizer=`` into P^-1/2 (A + W) P^-1/2, with P the diagonal preconditioner of the
optimizer's last step (:mod:`deep.curvature.preconditioners`) and W its coupled weight decay.  Every
measurement of the package (sharpness, trace, spectral density) takes its matrix from here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from aeos_base import checks

from .fisher import EmpiricalFisherOperator
from .ggn import GGNOperator
from .hessian import hessian_operator
from .inputs import LossFn, check_model
from .kfac import KFACOperator
from .operators import CurvatureOperator, DiagonalOperator, PreconditionedOperator
from .params import ParamLayout, ParamSelection
from .preconditioners import coupled_decay_diagonal, is_identity, preconditioner_diagonals

#: The curvature matrices :func:`curvature_operator` builds.
CURVATURES = ("hessian", "ggn", "empirical_fisher", "kfac")


def preconditioner_of(optimizer: torch.optim.Optimizer, model: nn.Module, layout: ParamLayout) -> Tensor:
    """diag(P) of ``optimizer`` over the parameters of ``layout``, flat (units of the gradient)."""
    named = dict(model.named_parameters())
    diags = preconditioner_diagonals(optimizer, [named[n] for n in layout.names], list(layout.names))
    return torch.cat([d.reshape(-1) for d in diags])


def curvature_operator(model: nn.Module, loss_fn: LossFn, data: Any, optimizer: torch.optim.Optimizer | None = None,
                       *, curvature: str = "hessian", strategy: str = "auto", params: ParamSelection = None,
                       memory_budget: int | None = None) -> CurvatureOperator:
    """A curvature matrix of L(theta) = sum_i (n_i/N) loss_fn(model(x_i), y_i) as an operator v -> A v.

    Args:
        model, loss_fn, data: the full-batch loss (:mod:`deep.curvature.inputs`: chunks, a deep.Dataset, an
            (X, y) pair, a DataLoader or a deep.Shard).  The parameters are a detached snapshot taken now.
        optimizer: None for A itself; else P^-1/2 (A + W) P^-1/2 with P the diagonal of the optimizer's
            last step (I for SGD) and W its coupled weight decay, the curvature of the objective
            L + wd/2 |theta|^2 it descends (W = 0 for AdamW's decoupled decay).  ValueError for an
            unsupported optimizer, or one that has not stepped.
        curvature: "hessian" (H), "ggn" (the generalised Gauss-Newton matrix G, :mod:`deep.curvature.ggn`),
            "empirical_fisher" (F, :mod:`deep.curvature.fisher`) or "kfac" (K-FAC of G, Linear and Conv2d
            layers only, :mod:`deep.curvature.kfac`).
        strategy: how a product H v is computed (:data:`deep.curvature.hessian.STRATEGIES`; "auto" keeps the
            full batch's gradient graph within ``memory_budget``); G, F and K-FAC have one strategy each.
        params: the parameter block (:mod:`deep.curvature.params`); None: every trainable parameter.
        memory_budget: bytes a kept graph may take; None: a quarter of the device's free memory.

    Units: loss units per squared parameter unit (A); 1/step length (the preconditioned operator).
    """
    check_model(model)
    checks.choice("curvature", curvature, CURVATURES)
    if curvature == "hessian":
        op: CurvatureOperator = hessian_operator(model, loss_fn, data, strategy=strategy, params=params,
                                                 memory_budget=memory_budget)
    else:
        checks.choice("strategy", strategy, ("auto", "cached_double_backward"))  # G, F, K-FAC: one strategy each
        if curvature == "kfac":
            op = KFACOperator(model, loss_fn, data, params)
        else:
            op = (GGNOperator if curvature == "ggn" else EmpiricalFisherOperator)(model, loss_fn, data, params,
                                                                                  memory_budget)
    if optimizer is None:
        return op
    p_diag = preconditioner_of(optimizer, model, op.layout)  # validates the optimizer even when P = I
    decay = coupled_decay_diagonal(optimizer, model, op.layout.names)
    if bool(torch.any(decay != 0)):
        op = op + DiagonalOperator(decay.to(device=op.device, dtype=op.dtype))
    return op if is_identity(optimizer) else PreconditionedOperator(op, p_diag)
