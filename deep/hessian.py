"""Gradients and Hessian-vector products of a full-batch loss (the original entry points, kept).

The full batch is given as ``(inputs, targets)`` chunks, a :class:`deep.Dataset`, an ``(X, y)`` pair or
a DataLoader (:mod:`deep.inputs`); ``loss_fn(outputs, targets)`` returns the *mean* over its chunk, so

    L(theta) = sum_i (n_i / N) * L_i(theta),     N = sum_i n_i,

and its gradient g and Hessian-vector product H v are the same size-weighted sums of the per-chunk
quantities: one chunk of N examples and any split of it give the same numbers (up to round-off).

How H v is computed is a strategy of :mod:`deep.strategies` (one class each);
:class:`HessianOperator` is the operator of :func:`deep.strategies.hessian_operator` under the name
this package always had, with ``method="auto"`` choosing the strategy.  Vectors are flat over the
selected parameters (:class:`deep.params.ParamLayout`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .inputs import Data, LossFn
from .params import ParamLayout, ParamSelection
from .strategies import STRATEGIES, ModelOperator, hessian_operator

__all__ = ["HVP_METHODS", "Data", "HessianOperator", "LossFn", "ParamLayout", "full_batch_gradient",
           "full_batch_loss", "hvp"]

#: HVP methods accepted by ``method=`` ("auto" picks one, see :mod:`deep.strategies`).
HVP_METHODS = STRATEGIES


def HessianOperator(model: nn.Module, loss_fn: LossFn, data: Any, method: str = "auto", *,
                    params: ParamSelection = None, memory_budget: int | None = None) -> ModelOperator:
    """The full-batch Hessian H as an operator v -> H v (a :class:`deep.operators.CurvatureOperator`).

    ``method``: one of :data:`HVP_METHODS`; the strategy used is the operator's ``strategy``
    attribute.  The parameters theta are a detached snapshot taken now; the model is never changed.
    """
    return hessian_operator(model, loss_fn, data, strategy=method, params=params, memory_budget=memory_budget)


def full_batch_loss(model: nn.Module, loss_fn: LossFn, data: Data) -> float:
    """L(theta) = sum_i (n_i/N) L_i(theta): the full-batch loss (units of ``loss_fn``)."""
    return ModelOperator(model, loss_fn, data).loss()


def full_batch_gradient(model: nn.Module, loss_fn: LossFn, data: Data, params: ParamSelection = None) -> Tensor:
    """g = dL/dtheta of the full-batch loss, as a flat vector (layout of :class:`ParamLayout`)."""
    return ModelOperator(model, loss_fn, data, params).gradient()


def hvp(model: nn.Module, loss_fn: LossFn, data: Data, v: Tensor, method: str = "auto",
        params: ParamSelection = None) -> Tensor:
    """H v of the full-batch loss for one flat vector v (see :class:`HessianOperator`)."""
    return HessianOperator(model, loss_fn, data, method=method, params=params)(v)
