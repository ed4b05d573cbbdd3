"""How far a discrete run oscillates: the period-2 amplitude of its iterates, at every step.

At the edge of stability the iterates oscillate with period two along the top eigenvector u of P^-1 H
(u = D^1/2 q, with q the top eigenvector of D^1/2 (H + W) D^1/2 that :mod:`deep.measure.edge` measures and
D = diag(lr_group / P); u is q for GD):

    w_t = c_t + (-1)^t a u/|u| + ...,   c_t a slow drift,

so the second difference w_t - 2 w_{t-1} + w_{t-2} = 4 (-1)^t a u/|u| + (the drift's second difference,
zero for a drift linear in t and second order in its speed otherwise), and

    a_t = |<w_t - 2 w_{t-1} + w_{t-2}, u/|u|>| / 4      (parameter units),

the quantity a central flow predicts as the rms of its oscillation along the same unit vector
(:mod:`aeos_theory.central_flow`, the ``oscillation`` column of both).  When several eigenvalues sit at the
edge together, "the" top eigenvector is any unit vector of their near-degenerate space and a_t sees only
its share of the oscillation; the whole length |w_t - 2 w_{t-1} + w_{t-2}| / 4 (the ``oscillation_total``
column, against the flow's sqrt(tr Sigma)) does not depend on that choice.

A run at the edge oscillates in bursts, so one sample every k steps says little about its size (25
sampling offsets of one Adam run gave rms amplitudes from 0.61x to 1.66x of the every-step value):
:class:`OscillationMeter` accumulates a_t at *every* step and a training row reports the rms over the
steps since the previous row (:mod:`deep.training.train`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..curvature.block_preconditioners import preconditioner_of, step_sizes
from ..curvature.params import ParamLayout
from .edge import LearningRates, learning_rates


def flat_parameters(model: nn.Module) -> Tensor:
    """The trainable parameters of ``model`` as one flat vector (a copy), in ``named_parameters()`` order."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).clone()


def top_direction(optimizer: torch.optim.Optimizer | None, model: nn.Module, eigenvector: Tensor,
                  lr: LearningRates = None) -> Tensor:
    """u = D^1/2 q for the top eigenvector q of the edge operator D^1/2 (H + W) D^1/2, D = e / P (P, block
    by block, read from ``optimizer``, and each tensor's step size e from the lr its group's last update used,
    or ``lr``; q itself when
    ``optimizer`` is None)."""
    q = eigenvector.reshape(-1)
    if optimizer is None:
        return q
    layout = ParamLayout.of(model)
    rate_of = {id(g): r for g, r in zip(optimizer.param_groups, learning_rates(optimizer, lr))}
    sizes = step_sizes(optimizer, model, layout, lambda opt, group: rate_of[id(group)])
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


class OscillationMeter:
    """The rms period-2 amplitude of a run over every step between two reads.

    :meth:`observe` takes each iterate w_0, w_1, ... as the run reaches it; from w_2 on, each adds
    a_t^2 (along the direction set by :meth:`aim`, the latest measured top eigenvector u) and the whole
    length's square to running sums.  :meth:`read` returns (rms along u, rms whole length) over the
    steps since the last read (NaN when there were none, or no direction yet) and starts a new window.
    Its state (the last two iterates, the direction, the sums) goes into checkpoints, so a resumed run
    reads the same numbers as an uninterrupted one.
    """

    def __init__(self) -> None:
        self.iterates: list[Tensor] = []  # w_(t-1), w_t
        self.direction: Tensor | None = None
        self.sums = [0.0, 0, 0.0, 0]  # sum a^2 along u, its count, sum of whole lengths^2, its count

    def observe(self, w: Tensor) -> None:
        """Add the iterate the run has just reached."""
        if len(self.iterates) == 2:
            along = (period_two_amplitude(w, *reversed(self.iterates), self.direction)
                     if self.direction is not None else math.nan)
            if math.isfinite(along):
                self.sums[0] += along**2
                self.sums[1] += 1
            self.sums[2] += period_two_amplitude(w, *reversed(self.iterates)) ** 2
            self.sums[3] += 1
        self.iterates = [*self.iterates[-1:], w]

    def aim(self, direction: Tensor | None) -> None:
        """Measure along ``direction`` from the next step on (None: the whole length only)."""
        self.direction = None if direction is None else direction.detach().clone()

    def read(self) -> tuple[float, float]:
        """(rms along the direction, rms whole length) since the last read, in parameter units."""
        along, n_along, total, n_total = self.sums
        self.sums = [0.0, 0, 0.0, 0]
        return (math.sqrt(along / n_along) if n_along else math.nan,
                math.sqrt(total / n_total) if n_total else math.nan)

    def state_dict(self) -> dict[str, Any]:
        return {"iterates": [w.cpu() for w in self.iterates],
                "direction": None if self.direction is None else self.direction.cpu(), "sums": list(self.sums)}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.iterates = [w.to(device) for w in state["iterates"]]
        self.direction = None if state["direction"] is None else state["direction"].to(device)
        self.sums = list(state["sums"])
