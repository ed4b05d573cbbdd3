"""The step an optimizer would take from its current state for a given gradient, without taking it.

The update-direction form of the batch sharpness (:mod:`deep.measure.batch`) needs, for every sampled
batch B, the step delta_B = theta_t - theta_(t+1) that ``optimizer.step()`` would apply if the gradient
were g_B: for Adam delta_B = eta m_hat / (sqrt(v_hat) + eps) with m and v updated by g_B and both bias
corrections of step t + 1; for SGD with heavy-ball momentum beta, eta (beta buf + g_B).  Rather than
re-deriving each optimizer's arithmetic, :class:`NextStep` replays the optimizer itself: a copy of the
same class with the same param groups (lr, betas, eps, weight decay, momentum, every flag) over copies of
the parameters, its state reset to the live optimizer's before each step.  So delta_B is exactly torch's,
coupled and decoupled weight decay, AMSGrad, Nesterov and the first step (no state yet) included, and the
live optimizer, its state and the model are never touched.

The optimizers whose P the package reads (:data:`deep.curvature.preconditioners.SUPPORTED`: SGD, Adam,
AdamW, NAdam, RMSprop, Adagrad) update every coordinate from its own gradient, moments and scalar
counters, so K gradients are stepped at once: the copies hold a leading axis of K, each state tensor
repeated K times, and one ``step()`` gives the K steps.  Any other optimizer (one whose update mixes
coordinates) is stepped once per gradient on copies of the parameters' own shapes.

Global ``torch.optim`` step hooks also run on the copy's steps (the package's own,
:mod:`deep.measure.last_step`, keeps the copy's lr apart from the live optimizer's).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor, nn

from ..curvature.params import ParamLayout
from ..curvature.preconditioners import SUPPORTED


class NextStep:
    """``step(G)``: for each row g of G (K, n), the step delta = theta - theta_next (flat, in ``layout``) that
    ``optimizer`` would take from its current state and parameters if the loss gradient of the parameters of
    ``layout`` were g (the other parameters it holds get no gradient, so they do not move).  ValueError when a
    parameter of ``layout`` is not in the optimizer, or the optimizer needs a closure (LBFGS)."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, layout: ParamLayout) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
        if isinstance(optimizer, torch.optim.LBFGS):
            raise ValueError("optimizer must take a step from a gradient alone; torch.optim.LBFGS needs a closure")
        params = layout.parameters(model)
        held = [p for group in optimizer.param_groups for p in group["params"]]
        missing = [name for name, p in zip(layout.names, params) if all(p is not q for q in held)]
        if missing:
            raise ValueError(f"parameters {missing} are not in the optimizer's param_groups; the optimizer must "
                             "hold every trainable parameter of the model")
        self.optimizer, self.layout = optimizer, layout
        self.elementwise = type(optimizer) in {getattr(torch.optim, name) for name in SUPPORTED}
        self._held = held
        self._states = [{k: v.detach().clone() if isinstance(v, Tensor) else v
                         for k, v in optimizer.state.get(p, {}).items()} for p in held]
        self._moved_of = {id(p): i for i, p in enumerate(held)}
        self._order = [self._moved_of[id(p)] for p in params]  # layout order -> index in held
        self._theta = layout.flatten([p.detach() for p in params])
        self._copies: dict[int, tuple[torch.optim.Optimizer, list[Tensor]]] = {}

    @property
    def lr(self) -> tuple[float, ...]:
        """Each group's lr, the rate of the step (the groups' current lr)."""
        return tuple(float(g["lr"]) for g in self.optimizer.param_groups)

    def step(self, G: Tensor) -> Tensor:
        """(K, n) loss gradients -> (K, n) steps delta = theta - theta_next."""
        G = G.to(self._theta).reshape(-1, self.layout.n)
        if self.elementwise:
            return self._steps(G, G.shape[0])
        return torch.cat([self._steps(g[None], None) for g in G])

    def _copy(self, k: int | None) -> tuple[torch.optim.Optimizer, list[Tensor]]:
        """The optimizer copy over parameters with a leading axis of ``k`` (None: the parameters' shapes)."""
        if k not in self._copies:
            moved = [p.detach().clone() if k is None else p.detach().expand(k, *p.shape).clone() for p in self._held]
            groups, start = [], 0
            for group in self.optimizer.param_groups:
                count = len(group["params"])
                groups.append({**{key: v for key, v in group.items() if key != "params"},
                               "params": moved[start:start + count]})
                start += count
            self._copies[k] = (type(self.optimizer)(groups), moved)
        return self._copies[k]

    def _steps(self, G: Tensor, k: int | None) -> Tensor:
        copy, moved = self._copy(k)
        lead = () if k is None else (k,)
        with torch.no_grad():
            for p, m in zip(self._held, moved):
                m.copy_(p.detach().expand_as(m))
                m.grad = None
            parts = torch.split(G, list(self.layout.numels), dim=1)
            for i, part, shape in zip(self._order, parts, self.layout.shapes):
                moved[i].grad = part.reshape(*lead, *shape).clone() if lead else part.reshape(shape).clone()
            copy.state = defaultdict(dict, {m: {key: _repeated(v, p, lead) for key, v in state.items()}
                                            for p, m, state in zip(self._held, moved, self._states) if state})
            copy.step()
            after = torch.cat([moved[i].reshape(G.shape[0], -1) for i in self._order], dim=1)
        return self._theta - after


def _repeated(value, param: Tensor, lead: tuple[int, ...]):
    """A state entry for a copy with a leading axis ``lead``: tensors of the parameter's shape repeated along it,
    scalars (step counts) and other values copied."""
    if not isinstance(value, Tensor):
        return value
    if lead and value.shape == param.shape:
        return value.expand(*lead, *value.shape).clone()
    return value.clone()
