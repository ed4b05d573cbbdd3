"""How far a discrete run oscillates along the top eigenvector of P^-1 H, from three consecutive iterates.

At the edge of stability the iterates oscillate with period two along the top eigenvector u of P^-1 H
(u = D^1/2 q, with q the top eigenvector of D^1/2 (H + W) D^1/2 that :mod:`deep.measure.edge` measures and
D = diag(lr_group / P); u is q for GD):

    w_t = c_t + (-1)^t a u/|u| + ...,   c_t a slow drift,

so the second difference w_t - 2 w_{t-1} + w_{t-2} = 4 (-1)^t a u/|u| + (the drift's second difference,
second order in its speed), and

    a_t = |<w_t - 2 w_{t-1} + w_{t-2}, u/|u|>| / 4      (parameter units),

the quantity a central flow predicts as the rms of its oscillation along the same unit vector
(:mod:`aeos_theory.central_flow`, the ``oscillation`` column of both).  When several eigenvalues sit
at the edge together, "the" top eigenvector is any unit vector of their near-degenerate space and a_t
sees only its share of the oscillation; the whole length |w_t - 2 w_{t-1} + w_{t-2}| / 4 (the
``oscillation_total`` column, against the flow's sqrt(tr Sigma)) does not depend on that choice.
Training runs record both on their measurement grid (:mod:`deep.training.train`); below the edge they are the
drift's tiny curvature.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..curvature.block_preconditioners import preconditioner_of, step_sizes
from ..curvature.params import ParamLayout


def flat_parameters(model: nn.Module) -> Tensor:
    """The trainable parameters of ``model`` as one flat vector (a copy), in ``named_parameters()`` order."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).clone()


def top_direction(optimizer: torch.optim.Optimizer | None, model: nn.Module, eigenvector: Tensor) -> Tensor:
    """u = D^1/2 q for the top eigenvector q of the edge operator D^1/2 (H + W) D^1/2, D = e / P (P, block
    by block, and each tensor's step size e from its group's lr, read from ``optimizer``; q itself when
    ``optimizer`` is None)."""
    q = eigenvector.reshape(-1)
    if optimizer is None:
        return q
    layout = ParamLayout.of(model)
    sizes = step_sizes(optimizer, model, layout, lambda opt, group: float(group["lr"]))
    return preconditioner_of(optimizer, model, layout).scaled(sizes).inv_sqrt(q.double()).to(q)


def period_two_amplitude(w: Tensor, w_prev: Tensor, w_prev2: Tensor, direction: Tensor | None = None) -> float:
    """a = |<w - 2 w_prev + w_prev2, d/|d|>| / 4: the amplitude of a period-2 oscillation along the unit
    vector d/|d| (parameter units; NaN when d is zero or not finite); without ``direction``, its whole
    length |w - 2 w_prev + w_prev2| / 4."""
    second = w - 2 * w_prev + w_prev2
    if direction is None:
        return float(torch.linalg.vector_norm(second)) / 4
    norm = float(torch.linalg.vector_norm(direction))
    if not (math.isfinite(norm) and norm > 0):
        return math.nan
    return abs(float(torch.dot(second.to(direction), direction))) / (4 * norm)
