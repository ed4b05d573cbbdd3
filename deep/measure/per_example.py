"""Per-example curvatures along one direction: h_i = w^T H_i w, the input of the minibatch mean-square theory.

The full-batch loss L(theta) = (1/N) sum_i l_i(theta) has Hessian H = (1/N) sum_i H_i.  Along a direction w,

    h_i = w^T H_i w = d^2/dt^2 l_i(theta + t w) at t = 0      (loss units per squared parameter unit, |w| = 1),

so mean_i h_i = w^T H w.  With w = P^-1/2 u, u the top unit eigenvector of P^-1/2 H P^-1/2 (P the optimizer's
preconditioner), the h_i are the curvatures of the one-direction model of :mod:`aeos_theory.mean_square` after
its change of variables x -> P^1/2 x: their mean is S_P, and a batch of b of them has the relative variance
nu = c(b, N) var(h)/mean(h)^2 that sets the mean-square edge (:func:`aeos_theory.minibatch.minibatch_edge`
takes the h_i themselves).

Each h_i is one forward-over-forward derivative (``torch.func.jvp`` of a ``jvp``) of the example's loss
along the line, vectorised over the examples of a chunk with ``torch.func.vmap``; ``loss_fn`` is applied to
one example at a time (its mean over a chunk of one), in eval mode (:func:`deep.curvature.inputs.evaluation`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import jvp, vmap

from ..curvature.inputs import LossFn, as_data, chunks, evaluation, forward
from ..curvature.params import ParamLayout


def per_example_curvatures(model: nn.Module, loss_fn: LossFn, data: Any, direction: Tensor) -> Tensor:
    """h_i = w^T H_i w for every example i of ``data`` (in the order of its chunks), w = ``direction`` a flat
    vector in the layout of the model's trainable parameters (:class:`deep.curvature.params.ParamLayout`).

    ``data``: (inputs, targets) chunks as everywhere in :mod:`deep.curvature` (not dict batches).  Returns a
    float64 tensor of shape (N,); units: loss per squared unit of ``direction``.  ValueError if ``direction``
    has the wrong shape.
    """
    layout = ParamLayout.of(model)
    if direction.ndim != 1 or direction.numel() != layout.n:
        raise ValueError(f"direction must be a flat vector of shape ({layout.n},), got {tuple(direction.shape)}")
    base = {name: p.detach() for name, p in model.named_parameters() if name in layout.names}
    w = layout.split(direction.detach().to(device=layout.device, dtype=layout.dtype))
    zero = torch.zeros((), dtype=layout.dtype, device=layout.device)
    one = torch.ones((), dtype=layout.dtype, device=layout.device)
    out = []
    with evaluation(model):
        for inputs, targets, _ in chunks(as_data(data), layout.device, layout.dtype):
            if isinstance(inputs, dict):
                raise ValueError("per_example_curvatures takes (inputs, targets) chunks, not dict batches")

            def curvature(*example: Tensor) -> Tensor:
                *xs, y = (e.unsqueeze(0) for e in example)

                def loss_at(t: Tensor) -> Tensor:
                    params = {name: base[name] + t * w[name] for name in base}
                    return loss_fn(forward(model, params, tuple(xs)), y)

                def slope(t: Tensor) -> Tensor:
                    return jvp(loss_at, (t,), (one,))[1]

                return jvp(slope, (zero,), (one,))[1]

            out.append(vmap(curvature)(*inputs, targets).detach().to(torch.float64))
    return torch.cat(out)
