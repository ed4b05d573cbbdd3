"""The step an optimizer would take from its current state for a given gradient, without taking it.

The update-direction form of the batch sharpness (:mod:`deep.measure.batch`) needs, for every sampled
batch B, the step delta_B = theta_t - theta_(t+1) that ``optimizer.step()`` would apply if the gradient
were g_B: for Adam delta_B = eta m_hat / (sqrt(v_hat) + eps) with m and v updated by g_B and both bias
corrections of step t + 1; for SGD with heavy-ball momentum beta, eta (beta buf + g_B).  Rather than
re-deriving each optimizer's arithmetic, :class:`NextStep` replays the optimizer itself: a copy of the
same class with the same param groups (lr, betas, eps, weight decay, momentum, every flag) over cloned
parameters, its state reset to a snapshot of the live optimizer's before each step.  So delta_B is
exactly torch's, coupled and decoupled weight decay, AMSGrad, Nesterov and the first step (no state yet)
included, and the live optimizer, its state and the model are never touched.

Global ``torch.optim`` step hooks also run on the copy's steps (the package's own,
:mod:`deep.measure.last_step`, keeps the copy's lr apart from the live optimizer's).
"""

from __future__ import annotations

import copy
from collections import defaultdict

import torch
from torch import Tensor, nn

from ..curvature.params import ParamLayout


class NextStep:
    """``step(g)``: delta = theta - theta_next (flat, in ``layout``) that ``optimizer`` would take from its
    current state and parameters if the loss gradient of the parameters of ``layout`` were ``g`` (the other
    parameters it holds get no gradient, so they do not move).  ValueError when a parameter of ``layout``
    is not in the optimizer or the optimizer needs a closure (LBFGS)."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, layout: ParamLayout) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
        if isinstance(optimizer, torch.optim.LBFGS):
            raise ValueError("optimizer must take a step from a gradient alone; torch.optim.LBFGS needs a closure")
        self.layout = layout
        params = layout.parameters(model)
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [name for name, p in zip(layout.names, params) if id(p) not in held]
        if missing:
            raise ValueError(f"parameters {missing} are not in the optimizer's param_groups; the optimizer must "
                             "hold every trainable parameter of the model")
        copy_of = {id(p): p.detach().clone() for group in optimizer.param_groups for p in group["params"]}
        groups = [{**{k: v for k, v in group.items() if k != "params"}, "params": [copy_of[id(p)] for p in group["params"]]}
                  for group in optimizer.param_groups]
        self._optimizer = type(optimizer)(groups)  # same class and hyperparameters, over the copies
        self._start = {copy_of[id(p)]: {k: _cloned(v) for k, v in state.items()}
                       for p, state in optimizer.state.items() if id(p) in copy_of}
        self._originals = [(copy_of[id(p)], p.detach().clone()) for group in optimizer.param_groups
                           for p in group["params"]]
        self._moved = [copy_of[id(p)] for p in params]
        self._theta = layout.flatten([p.detach() for p in params])

    def step(self, g: Tensor) -> Tensor:
        """delta = theta - theta_next for the loss gradient ``g`` (flat), as the optimizer would step."""
        with torch.no_grad():
            for moved, original in self._originals:
                moved.copy_(original)
                moved.grad = None
            for moved, part in zip(self._moved, self.layout.split(g.to(self._theta)).values()):
                moved.grad = part.clone()
            self._optimizer.state = defaultdict(dict, {p: {k: _cloned(v) for k, v in s.items()}
                                                       for p, s in self._start.items()})
            self._optimizer.step()
            return self._theta - self.layout.flatten(self._moved)

    @property
    def lr(self) -> tuple[float, ...]:
        """Each group's lr, the rate of the step taken (the groups' current lr)."""
        return tuple(float(g["lr"]) for g in self._optimizer.param_groups)


def _cloned(value):
    return value.detach().clone() if isinstance(value, Tensor) else copy.deepcopy(value)
