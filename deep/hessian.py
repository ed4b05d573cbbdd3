"""Gradients and Hessian-vector products of a full-batch loss, with ``torch.func``.

The full batch is an iterable ``data`` of ``(inputs, targets)`` chunks (curvlinops' convention).
``loss_fn(outputs, targets)`` returns the *mean* over its chunk, so the full-batch loss is

    L(theta) = sum_i (n_i / N) * L_i(theta),     N = sum_i n_i,

with n_i the size (first dimension) of chunk i.  Its gradient g and Hessian-vector product H v are
the same size-weighted sums of the per-chunk quantities, so one chunk of N examples and any split of
it give the same numbers (up to float round-off).

H v is computed forward-over-reverse, ``jvp(grad(L_i), (theta,), (v,))``: one forward pass plus one
reverse pass carrying tangents (its cost against a gradient is measured in ``benchmarks/README.md``).
Everything works on detached copies of the parameters through
``torch.func.functional_call``: the model's parameters, their ``.grad`` and its buffers are left as
they were.  The model must be deterministic during the call (no dropout; BatchNorm in eval mode), as
for any curvature measurement.

Vectors are flat (one entry per trainable parameter, in ``model.named_parameters()`` order, only
those with ``requires_grad``); :class:`ParamLayout` converts between flat vectors and per-parameter
tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp

LossFn = Callable[[Any, Any], Tensor]
Data = Iterable[tuple[Any, Any]]

#: HVP methods: forward-over-reverse (default), reverse-over-reverse (double backward), and the
#: double backward through a gradient graph built once and kept (``cached_double_backward``).
HVP_METHODS = ("forward_over_reverse", "reverse_over_reverse", "cached_double_backward")


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and flat offsets of a model's trainable parameters."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, model: nn.Module) -> "ParamLayout":
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model must have at least one parameter with requires_grad=True; got none")
        dtypes = {p.dtype for _, p in named}
        devices = {p.device for _, p in named}
        if len(dtypes) != 1 or len(devices) != 1:
            raise ValueError(f"model parameters must share one dtype and device; got {dtypes} on {devices}")
        return cls(
            names=tuple(n for n, _ in named),
            shapes=tuple(p.shape for _, p in named),
            numels=tuple(p.numel() for _, p in named),
            dtype=named[0][1].dtype,
            device=named[0][1].device,
        )

    @property
    def n(self) -> int:
        """Number of trainable scalars (the dimension of H)."""
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


def _params_and_buffers(model: nn.Module, layout: ParamLayout) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    trainable = set(layout.names)
    params = {n: p.detach() for n, p in model.named_parameters() if n in trainable}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in trainable}
    # Cloned so that a module that writes its buffers in forward cannot change the model.
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    buffers.update(frozen)
    return params, buffers


def _chunks(data: Data, device: torch.device):
    """Yield (inputs_tuple, targets, n) with tensors moved to ``device``; checks re-iterability."""
    if iter(data) is data:
        raise ValueError("data must be a re-iterable collection of (inputs, targets) chunks "
                         "(a list or DataLoader), not a one-shot iterator/generator")
    empty = True
    for chunk in data:
        try:
            inputs, targets = chunk
        except (TypeError, ValueError):
            raise ValueError("data must yield (inputs, targets) pairs; got an item of type "
                             f"{type(chunk).__name__}") from None
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        inputs = tuple(x.to(device) if isinstance(x, Tensor) else x for x in inputs)
        if isinstance(targets, Tensor):
            targets = targets.to(device)
        first = inputs[0]
        n = int(first.shape[0]) if isinstance(first, Tensor) and first.ndim > 0 else len(first)
        if n <= 0:
            raise ValueError("data chunks must contain at least one example; got an empty chunk")
        empty = False
        yield inputs, targets, n
    if empty:
        raise ValueError("data must contain at least one (inputs, targets) chunk; got none")


def _chunk_loss(model: nn.Module, loss_fn: LossFn, buffers: dict[str, Tensor], inputs, targets):
    def loss(params: dict[str, Tensor]) -> Tensor:
        return loss_fn(functional_call(model, (params, buffers), inputs), targets)
    return loss


def full_batch_loss(model: nn.Module, loss_fn: LossFn, data: Data) -> float:
    """L(theta) = sum_i (n_i/N) L_i(theta): the full-batch loss (units of ``loss_fn``)."""
    layout = ParamLayout.of(model)
    params, buffers = _params_and_buffers(model, layout)
    total, count = 0.0, 0
    with torch.no_grad():
        for inputs, targets, n in _chunks(data, layout.device):
            total += n * float(_chunk_loss(model, loss_fn, buffers, inputs, targets)(params))
            count += n
    return total / count


def full_batch_gradient(model: nn.Module, loss_fn: LossFn, data: Data) -> Tensor:
    """g = dL/dtheta of the full-batch loss, as a flat vector (layout of :class:`ParamLayout`)."""
    layout = ParamLayout.of(model)
    params, buffers = _params_and_buffers(model, layout)
    acc = torch.zeros(layout.n, dtype=layout.dtype, device=layout.device)
    count = 0
    for inputs, targets, n in _chunks(data, layout.device):
        g = grad(_chunk_loss(model, loss_fn, buffers, inputs, targets))(params)
        acc.add_(layout.flatten(g), alpha=n)
        count += n
    return acc.div_(count)


class HessianOperator:
    """The full-batch Hessian H as an operator v -> H v on flat vectors (scipy LinearOperator style).

    ``HessianOperator(model, loss_fn, data)(v)`` returns H v, the size-weighted sum over chunks of
    ``jvp(grad(L_i), (theta,), (v,))`` (``method="forward_over_reverse"``), or of the double-backward
    ``vjp(grad(L_i))`` (``method="reverse_over_reverse"``).  ``method="cached_double_backward"``
    builds the graph of g = sum_i (n_i/N) grad L_i once (``create_graph=True``, all chunks) and keeps it,
    so each H v is one backward pass through that graph: no forward pass and no first backward per
    product.  Own code rather than torch.func (which cannot keep a graph between calls) because it is
    measurably cheaper per product (``benchmarks/deep_speed.py``, figures in ``benchmarks/README.md``);
    the price is memory for every chunk's graph, so it suits data that fit in memory at once.  The
    parameters theta are a detached
    snapshot taken at construction: later changes to the model are not seen, and the model is never
    changed.  ``matvecs`` counts the products computed.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Data,
                 method: str = "forward_over_reverse") -> None:
        if method not in HVP_METHODS:
            raise ValueError(f"method must be one of {', '.join(HVP_METHODS)}; got {method!r}")
        self.model, self.loss_fn, self.data, self.method = model, loss_fn, data, method
        self.layout = ParamLayout.of(model)
        params, self._buffers = _params_and_buffers(model, self.layout)
        self._params = {k: v.clone() for k, v in params.items()}
        self.matvecs = 0
        self._graph: tuple[list[Tensor], list[Tensor], int] | None = None

    @property
    def n(self) -> int:
        return self.layout.n

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    @property
    def dtype(self) -> torch.dtype:
        return self.layout.dtype

    @property
    def device(self) -> torch.device:
        return self.layout.device

    def _chunk_hvp(self, loss, tangents: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.method == "forward_over_reverse":
            return jvp(grad(loss), (self._params,), (tangents,))[1]
        _, pullback = vjp(grad(loss), self._params)
        return pullback(tangents)[0]

    def _build_graph(self) -> tuple[list[Tensor], list[Tensor], int]:
        """Leaves theta (clones requiring grad) and the kept graph of g = sum_i (n_i/N) grad L_i."""
        leaves = {k: t.detach().clone().requires_grad_(True) for k, t in self._params.items()}
        order = [leaves[name] for name in self.layout.names]
        total: list[Tensor] | None = None
        count = 0
        with torch.enable_grad():
            for inputs, targets, n in _chunks(self.data, self.device):
                loss = _chunk_loss(self.model, self.loss_fn, self._buffers, inputs, targets)(leaves)
                g = torch.autograd.grad(loss, order, create_graph=True, materialize_grads=True)
                total = [n * gi for gi in g] if total is None else [t + n * gi for t, gi in zip(total, g)]
                count += n
        return order, total, count

    def _cached_hvp(self, tangents: dict[str, Tensor]) -> Tensor:
        if self._graph is None:
            self._graph = self._build_graph()
        order, total, count = self._graph
        parts = [tangents[name] for name in self.layout.names]
        live = [i for i, t in enumerate(total) if t.requires_grad]  # a gradient constant in theta has H = 0 rows
        if not live:
            return torch.zeros(self.n, dtype=self.dtype, device=self.device)
        hv = torch.autograd.grad([total[i] for i in live], order, grad_outputs=[parts[i] for i in live],
                                 retain_graph=True, materialize_grads=True)
        return self.layout.flatten(list(hv)).detach().div_(count)

    def __call__(self, v: Tensor) -> Tensor:
        """H v for a flat vector v of length n (same dtype/device as the parameters)."""
        v = v.to(device=self.device, dtype=self.dtype)
        tangents = self.layout.split(v)  # also checks the shape
        if self.method == "cached_double_backward":
            self.matvecs += 1
            return self._cached_hvp(tangents)
        acc = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        count = 0
        for inputs, targets, n in _chunks(self.data, self.device):
            loss = _chunk_loss(self.model, self.loss_fn, self._buffers, inputs, targets)
            acc.add_(self.layout.flatten(self._chunk_hvp(loss, tangents)), alpha=n)
            count += n
        self.matvecs += 1
        return acc.div_(count)

    matvec = __call__

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 numpy in and out) over the same products."""
        import numpy as np
        from scipy.sparse.linalg import LinearOperator

        def mv(x):
            v = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1))
            return self(v).detach().cpu().double().numpy()

        return LinearOperator((self.n, self.n), matvec=mv, dtype=np.float64)


def hvp(model: nn.Module, loss_fn: LossFn, data: Data, v: Tensor,
        method: str = "forward_over_reverse") -> Tensor:
    """H v of the full-batch loss for one flat vector v (see :class:`HessianOperator`)."""
    return HessianOperator(model, loss_fn, data, method=method)(v)
