"""The one way to build a curvature operator of a full-batch loss: H or G, raw or in an optimizer's metric.

:func:`curvature_operator` turns (model, loss_fn, data) and the choices ``curvature=`` (H, or the
generalised Gauss-Newton G of :mod:`deep.curvature.ggn`), ``strategy=`` (how a Hessian-vector product
is computed, :mod:`deep.curvature.hessian`) and ``params=`` (a block of parameters,
:mod:`deep.curvature.params`) into an operator of the :class:`deep.curvature.operators.CurvatureOperator`
protocol, and with ``optimizer=`` into P^-1/2 (A + W) P^-1/2, with P the diagonal preconditioner of the
optimizer's last step (:mod:`deep.curvature.preconditioners`, :mod:`deep.curvature.block_preconditioners`)
and W its coupled weight decay.  Every
measurement of the package (sharpness, trace, spectral density) takes its matrix from here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aeos_base import checks

from .block_preconditioners import decay_of, is_preconditioner, preconditioner_of
from .fisher import EmpiricalFisherOperator
from .ggn import GGNOperator
from .hessian import hessian_operator
from .inputs import LossFn, check_model
from .kfac import KFACOperator
from .operators import BlockPreconditionedOperator, CurvatureOperator, DiagonalOperator, PreconditionedOperator
from .params import ParamSelection
from .preconditioners import check_descent

#: The curvature matrices :func:`curvature_operator` builds.
CURVATURES = ("hessian", "ggn", "empirical_fisher", "kfac")


def precondition(op: CurvatureOperator, preconditioner) -> CurvatureOperator:
    """P^-1/2 A P^-1/2 by composition: the diagonal operator when P is diagonal (one product of vectors), the
    block one otherwise; A itself when P = I."""
    if getattr(preconditioner, "identity", False):
        return op
    diagonal = preconditioner.diagonal() if hasattr(preconditioner, "diagonal") else None
    if diagonal is not None:
        return PreconditionedOperator(op, diagonal)
    return BlockPreconditionedOperator(op, preconditioner)


def curvature_operator(model: nn.Module, loss_fn: LossFn, data: Any, optimizer: Any = None,
                       *, curvature: str = "hessian", strategy: str = "auto", params: ParamSelection = None,
                       memory_budget: int | None = None) -> CurvatureOperator:
    """A curvature matrix of L(theta) = sum_i (n_i/N) loss_fn(model(x_i), y_i) as an operator v -> A v.

    Args:
        model, loss_fn, data: the full-batch loss (:mod:`deep.curvature.inputs`: chunks, a deep.Dataset, an
            (X, y) pair, a DataLoader or a deep.Shard).  The parameters are a detached snapshot taken now.
        optimizer: None for A itself; else P^-1/2 (A + W) P^-1/2 with P the preconditioner of the optimizer's
            last step (diagonal, I for SGD, or block by block: Muon, Shampoo, SOAP) and W its coupled weight
            decay, the curvature of the objective L + wd/2 |theta|^2 it descends (W = 0 for decoupled decay).
            Several optimizers that share the model (Muon for the matrices and AdamW for the rest) give P
            block by block.  A user's preconditioner (:mod:`deep.curvature.block_preconditioners`: anything
            with ``inv_sqrt``) gives P^-1/2 A P^-1/2 with no W.  ValueError for an unsupported optimizer, or
            one that has not stepped, or one that ascends (``maximize=True``).
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
    return op if optimizer is None else in_metric(op, optimizer, model)


def in_metric(op: CurvatureOperator, optimizer: Any, model: nn.Module) -> CurvatureOperator:
    """P^-1/2 (A + W) P^-1/2 for an operator ``op`` = A over ``model``'s parameters: P the preconditioner of
    the optimizer's last step (or of several optimizers, or a user's), W its coupled weight decay
    (:func:`curvature_operator`).  Products go through ``op``, so one kept graph serves A and the
    preconditioned operator alike."""
    preconditioner = preconditioner_of(optimizer, model, op.layout)  # validates the optimizer even when P = I
    if not is_preconditioner(optimizer):
        for one in optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]:
            check_descent(one)
        decay = decay_of(optimizer, model, op.layout)
        if bool(torch.any(decay != 0)):
            op = op + DiagonalOperator(decay.to(device=op.device, dtype=op.dtype))
    return precondition(op, preconditioner)
