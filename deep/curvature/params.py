"""Which parameters a curvature matrix is taken over, and flat vectors in their layout.

A curvature matrix of the loss L(theta) is taken with respect to a block theta_B of the trainable
parameters (all of them by default).  ``params`` selects the block, for per-layer or block curvature
H_BB = d^2 L / d theta_B^2 (the other parameters held fixed at their values):

* ``None``: every parameter with ``requires_grad`` (the full Hessian);
* a sub-module of the model (e.g. ``model.net[0]``): its parameters;
* an iterable of parameter names (as in ``model.named_parameters()``) or of the model's own
  parameter tensors.

Vectors are flat, one entry per selected scalar, in ``model.named_parameters()`` order;
:class:`ParamLayout` converts between flat vectors and per-parameter tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import torch
from torch import Tensor, nn

#: What ``params=`` accepts (see the module docstring).
ParamSelection = Union[None, nn.Module, Iterable[Union[str, Tensor]]]


def select(model: nn.Module, params: ParamSelection = None) -> list[tuple[str, Tensor]]:
    """(name, parameter) pairs of the block ``params`` of ``model``, in ``named_parameters()`` order."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        chosen = named
    else:
        if isinstance(params, nn.Module):
            wanted_ids = {id(p) for p in params.parameters()}
            wanted_names: set[str] = set()
        elif isinstance(params, (str, Tensor)):
            raise ValueError("params must be None, a sub-module, or an iterable of parameter names or tensors; "
                             f"got a single {type(params).__name__}; wrap it in a list")
        else:
            items = list(params)
            wanted_names = {p for p in items if isinstance(p, str)}
            wanted_ids = {id(p) for p in items if isinstance(p, Tensor)}
            if len(wanted_names) + len(wanted_ids) != len(items):
                raise ValueError("params must hold parameter names (str) or the model's parameter tensors")
            unknown = wanted_names - {n for n, _ in model.named_parameters()}
            if unknown:
                raise ValueError(f"params names must be among the model's parameters; unknown: {sorted(unknown)}")
        chosen = [(n, p) for n, p in named if n in wanted_names or id(p) in wanted_ids]
        found = {id(p) for _, p in chosen}
        if wanted_ids - found:
            raise ValueError("params tensors must be trainable parameters of the model (requires_grad=True)")
    if not chosen:
        raise ValueError("params must select at least one parameter with requires_grad=True; got none")
    return chosen


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and flat offsets of the selected trainable parameters."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, model: nn.Module, params: ParamSelection = None) -> "ParamLayout":
        """The layout of the block ``params`` of ``model`` (every trainable parameter when None)."""
        named = select(model, params)
        dtypes = {p.dtype for _, p in named}
        devices = {p.device for _, p in named}
        if len(dtypes) != 1 or len(devices) != 1:
            raise ValueError(f"model parameters must share one dtype and device; got {dtypes} on {devices}")
        return cls(names=tuple(n for n, _ in named), shapes=tuple(p.shape for _, p in named),
                   numels=tuple(p.numel() for _, p in named), dtype=named[0][1].dtype,
                   device=named[0][1].device)

    @property
    def n(self) -> int:
        """Number of selected scalars (the dimension of the curvature matrix)."""
        return sum(self.numels)

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        """Flat vector of length n -> {name: view of shape p.shape}."""
        if flat.ndim != 1 or flat.numel() != self.n:
            raise ValueError(f"flat vector must have shape ({self.n},); got {tuple(flat.shape)}")
        return {name: part.view(shape) for name, part, shape in
                zip(self.names, torch.split(flat, list(self.numels)), self.shapes)}

    def flatten(self, tensors: dict[str, Tensor] | Sequence[Tensor]) -> Tensor:
        """{name: tensor} (or tensors in layout order) -> one flat vector."""
        if isinstance(tensors, dict):
            tensors = [tensors[name] for name in self.names]
        return torch.cat([t.reshape(-1) for t in tensors])

    def parameters(self, model: nn.Module) -> list[Tensor]:
        """The model's parameter tensors of this layout, in order."""
        named = dict(model.named_parameters())
        return [named[name] for name in self.names]
