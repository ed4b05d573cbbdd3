"""Which curvature matrix of the full-batch loss: H or the generalised Gauss-Newton G, raw or preconditioned.

:func:`curvature_operator` is the one place that turns ``curvature=`` into an operator of the
:class:`deep.operators.CurvatureOperator` protocol, and :func:`operator_for` the one place that adds
an optimizer's preconditioner: A or P^-1/2 A P^-1/2 with P read from the optimizer's state
(:mod:`deep.preconditioners`).  Every measurement (sharpness, trace, spectral density) takes its
matrix from :func:`operator_for`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from aeos_base import checks

from .ggn import GGNOperator
from .inputs import LossFn
from .operators import CurvatureOperator, DiagonalOperator, PreconditionedOperator
from .params import ParamLayout, ParamSelection
from .preconditioners import coupled_decay_diagonal, is_identity, preconditioner_diagonals
from .strategies import hessian_operator

#: The curvature matrices :func:`curvature_operator` builds.
CURVATURES = ("hessian", "ggn")


def curvature_operator(model: nn.Module, loss_fn: LossFn, data: Any, *, curvature: str = "hessian",
                       strategy: str = "auto", params: ParamSelection = None,
                       memory_budget: int | None = None) -> CurvatureOperator:
    """H (``curvature="hessian"``, products by ``strategy``, :mod:`deep.strategies`) or G
    (``curvature="ggn"``, :mod:`deep.ggn`) of L(theta) = sum_i (n_i/N) loss_fn(model(x_i), y_i), over the
    parameter block ``params``.  Units: loss units per squared parameter unit."""
    checks.choice("curvature", curvature, CURVATURES)
    if curvature == "ggn":
        checks.choice("method", strategy, ("auto", "cached_double_backward"))  # G has one strategy
        return GGNOperator(model, loss_fn, data, params, memory_budget)
    return hessian_operator(model, loss_fn, data, strategy=strategy, params=params, memory_budget=memory_budget)


def preconditioner_of(optimizer: torch.optim.Optimizer, model: nn.Module, layout: ParamLayout) -> Tensor:
    """diag(P) of ``optimizer`` over the parameters of ``layout``, flat (units of the gradient)."""
    named = dict(model.named_parameters())
    diags = preconditioner_diagonals(optimizer, [named[n] for n in layout.names], list(layout.names))
    return torch.cat([d.reshape(-1) for d in diags])


def operator_for(model: nn.Module, loss_fn: LossFn, data: Any, optimizer: torch.optim.Optimizer | None = None,
                 *, curvature: str = "hessian", strategy: str = "auto", params: ParamSelection = None,
                 memory_budget: int | None = None) -> CurvatureOperator:
    """A (H or G, :func:`curvature_operator`) when ``optimizer`` is None, else P^-1/2 (A + W) P^-1/2
    with P the diagonal of the optimizer's last step (I for SGD) and W its coupled weight decay, the
    curvature of the objective L + wd/2 |theta|^2 it descends (W = 0 for AdamW's decoupled decay).
    ValueError for an unsupported optimizer, or one that has not stepped.  Units of the preconditioned
    operator: 1/step length."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    op = curvature_operator(model, loss_fn, data, curvature=curvature, strategy=strategy, params=params,
                            memory_budget=memory_budget)
    if optimizer is None:
        return op
    p_diag = preconditioner_of(optimizer, model, op.layout)  # validates the optimizer even when P = I
    decay = coupled_decay_diagonal(optimizer, model, op.layout.names)
    if bool(torch.any(decay != 0)):
        op = op + DiagonalOperator(decay.to(device=op.device, dtype=op.dtype))
    return op if is_identity(optimizer) else PreconditionedOperator(op, p_diag)
