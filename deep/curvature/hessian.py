"""Hessian-vector products of a full-batch loss: one small class per strategy, one automatic choice.

The full batch is a re-iterable of ``(inputs, targets)`` chunks (:mod:`deep.curvature.inputs`); ``loss_fn``
returns the mean over its chunk, so the full-batch loss and its Hessian H are size-weighted sums

    L(theta) = sum_i (n_i / N) L_i(theta),    H v = sum_i (n_i / N) H_i v,    N = sum_i n_i.

When ``data`` is a :class:`deep.Shard` (this rank's part of the full batch) every such sum
is all-reduced over the shard's process group, so each rank gets the full-batch value.

Every strategy is a :class:`deep.curvature.operators.CurvatureOperator` over the parameter block ``params``
(:mod:`deep.curvature.params`; all trainable parameters by default).  It works on a detached snapshot of theta
taken at construction through ``torch.func.functional_call``: the model's parameters, ``.grad`` and
buffers are never changed, and later changes to the model are not seen.  Model, loss and data pass the
door of :mod:`deep.curvature.door` at construction (once: data it already checked is not checked again).  Mode-dependent modules
(Dropout, BatchNorm) run in eval mode during each product (:func:`deep.curvature.inputs.evaluation`).

=======================  ==========================================================================
strategy                 one product H v
=======================  ==========================================================================
forward_over_reverse     per chunk ``jvp(grad(L_i))`` (torch.func): a forward pass and a reverse pass
                         carrying tangents.  Losses without forward-mode support (``F.mse_loss``:
                         "ZeroTensors are immutable", ``huber_loss``) fall back to reverse_over_reverse.
reverse_over_reverse     per chunk: forward, ``grad`` with ``create_graph``, and a backward of <g_i, v>
                         (double backward); nothing kept between products.
cached_double_backward   the graph of g = sum_i (n_i/N) grad L_i built once (``create_graph=True``) and
                         kept: each product is one backward pass through it (no forward, no first
                         backward).  Chunks whose graphs would exceed ``memory_budget`` bytes are not
                         kept and are recomputed per product as in reverse_over_reverse.  ``matmat``
                         multiplies blocks of columns in one batched pass when the graph is small.
compiled                 (opt-in) per chunk one ``torch.compile``'d function: forward, gradient and
                         the vjp of the gradient fused by the compiler, recomputed at each product;
                         falls back to cached_double_backward if compilation fails.
=======================  ==========================================================================

:func:`hessian_operator` with ``strategy="auto"`` (the default) returns cached_double_backward with the
default budget (a quarter of the free memory): the full graph when it fits, per-chunk products for the
rest.  Per-chunk double backward beat forward-over-reverse on every network of the benchmarks, so
forward-over-reverse is never chosen automatically (the measured costs: ``benchmarks/README.md``).
The operator's ``strategy`` attribute names what was used.

Every operator also gives the gradient g (:meth:`ModelOperator.gradient`), the loss, and the gradient of
a curvature, grad_theta (u^T H(theta) v) (:meth:`ModelOperator.curvature_gradient`, a third-derivative
product, which the central flows of :mod:`deep.flows` need; cached_double_backward takes it through its
kept graph: two backward passes per pair, no forward).  Third derivatives run under
:func:`third_order_ops`: attention (``F.scaled_dot_product_attention``) on its math backend, whose fused
CPU and CUDA kernels have no double backward, and ``F.layer_norm`` composed of plain operations, whose
fused kernel's derivatives are silently wrong from the third order on (torch 2.13 treats the saved mean
and 1/std as constants there: pytorch/pytorch#175754; measured in ``tests/test_third_derivatives.py``).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from aeos_base import checks

from .door import check_measurement_inputs
from .inputs import CheckedData, Data, LossFn, check_loss, check_model, chunks, evaluation, forward
from .operators import CurvatureOperator
from .params import ParamLayout, ParamSelection
from .reductions import group_of, reduce_mean
from .twice import check_graph, second_derivatives

#: The strategies :func:`hessian_operator` knows ("auto" picks one).
STRATEGIES = ("auto", "forward_over_reverse", "reverse_over_reverse", "cached_double_backward", "compiled")


def _layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
                eps: float = 1e-5) -> Tensor:
    """F.layer_norm from mean and variance: (x - mean) / sqrt(var + eps) * weight + bias over the last
    dimensions (the same function, differentiable to any order by autograd)."""
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    centered = input - input.mean(dims, keepdim=True)
    out = centered * torch.rsqrt((centered * centered).mean(dims, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    return out + bias if bias is not None else out


class _ComposedLayerNorm(torch.overrides.TorchFunctionMode):
    """Every ``F.layer_norm`` (``nn.LayerNorm`` included) inside the mode is :func:`_layer_norm`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.layer_norm:
            return _layer_norm(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def third_order_ops() -> Iterator[None]:
    """Inside the block, ops whose third derivatives autograd gets right: ``F.scaled_dot_product_attention``
    on its math backend (the fused kernels have no double backward) and ``F.layer_norm`` composed of plain
    operations (the fused kernel's third derivatives are wrong: pytorch/pytorch#175754).  The functions
    computed are the same."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH), _ComposedLayerNorm():
        _THIRD_ORDER[0] += 1
        try:
            yield
        finally:
            _THIRD_ORDER[0] -= 1


_THIRD_ORDER = [0]  # how many third_order_ops blocks are open (a kept graph remembers whether it was built in one)


def default_memory_budget(device: torch.device) -> int:
    """Bytes the cached gradient graph may take: a quarter of the free memory of ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 4)
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GiB free
        free = 8 << 30
    return int(free // 4)


class ModelOperator(CurvatureOperator):
    """Base of the operators built from (model, loss_fn, data, params): snapshot, layout, chunk loop."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Any, params: ParamSelection = None) -> None:
        self.model, self.loss_fn = check_model(model), check_loss(loss_fn)
        if not (isinstance(data, CheckedData) and data.checked_for(model, loss_fn)):
            data = check_measurement_inputs(model, loss_fn, data, params)  # the door (deep.curvature.door)
        self.data: Data = data
        self.group = group_of(self.data)  # a deep.Shard: every chunk sum is all-reduced over its ranks
        self.layout = ParamLayout.of(model, params)
        super().__init__(self.layout.n, self.layout.dtype, self.layout.device)
        trainable = set(self.layout.names)
        self._params = {n: p.detach().clone() for n, p in model.named_parameters() if n in trainable}
        # Frozen parameters and (cloned) buffers: a module writing its buffers cannot change the model.
        self._fixed = {n: b.detach().clone() for n, b in model.named_buffers()}
        self._fixed.update({n: p.detach() for n, p in model.named_parameters() if n not in trainable})

    def chunks(self):
        """(inputs, targets, n_i) of every chunk, on the operator's device and dtype."""
        return chunks(self.data, self.device, self.dtype)

    def matvec(self, v: Tensor) -> Tensor:
        """A v (:meth:`CurvatureOperator.matvec`); a model or loss without a second derivative is a
        ValueError naming the module responsible (:mod:`deep.curvature.twice`)."""
        with self.twice_differentiable():
            return super().matvec(v)

    __call__ = matvec

    def twice_differentiable(self):
        """The context of every product: torch's error for an operation without a second derivative
        becomes one ValueError naming the module (or the loss) that uses it."""
        def first_chunk():
            inputs, targets, _ = next(iter(self.chunks()))
            return inputs, targets

        def call(model, inputs):
            with evaluation(model):
                return forward(model, {}, inputs)
        return second_derivatives(self.model, self.loss_fn, first_chunk, call)

    def chunk_loss(self, inputs, targets):
        """theta_B -> L_i(theta_B) of one chunk (a function of the {name: tensor} dict of the block)."""
        def loss(params: dict[str, Tensor]) -> Tensor:
            with evaluation(self.model):
                return self.loss_fn(forward(self.model, (params, self._fixed), inputs), targets)
        return loss

    def loss(self) -> float:
        """L(theta) = sum_i (n_i/N) L_i(theta) at the snapshot (units of ``loss_fn``)."""
        kept = getattr(self, "_loss_sum", None)  # the cached strategy: summed while its graph was built
        if kept is not None:
            return float(reduce_mean(kept.clone(), self._count, self.group))
        total, count = torch.zeros(1, dtype=torch.float64, device=self.device), 0
        with torch.no_grad():
            for inputs, targets, n in self.chunks():
                total += n * float(self.chunk_loss(inputs, targets)(self._params))
                count += n
        return float(reduce_mean(total, count, self.group))

    def gradient(self) -> Tensor:
        """g = dL/dtheta over the block, flat (one gradient per chunk, by ``torch.func.grad``)."""
        acc = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        count = 0
        for inputs, targets, n in self.chunks():
            acc.add_(self.layout.flatten(grad(self.chunk_loss(inputs, targets))(self._params)), alpha=n)
            count += n
        return reduce_mean(acc, count, self.group)

    def curvature_gradient(self, u: Tensor, v: Tensor) -> Tensor:
        """grad_theta (u^T H(theta) v) over the block, flat, for fixed flat u, v: the third derivative of L
        contracted twice, D^3 L[u, v, .] (symmetric in u, v).  Units: loss units per cubed parameter
        unit, times those of u and v.  See :meth:`curvature_gradients`."""
        return self.curvature_gradients(torch.as_tensor(u).reshape(1, -1), torch.as_tensor(v).reshape(1, -1))[0]

    def curvature_gradients(self, U: Tensor, V: Tensor) -> Tensor:
        """Row j: grad_theta (U_j^T H(theta) V_j) for (m, n) matrices U, V of flat directions.  Per chunk by
        ``torch.func``: ``vmap`` over the m pairs of the gradient of theta -> <u, H_i(theta) v>, itself
        three reverse passes (no forward mode, so every loss works, ``F.mse_loss`` included); chunks are
        weighted by size (and all-reduced over a :class:`deep.Shard`'s ranks)."""
        with self.twice_differentiable():
            return self._curvature_gradients(U, V)

    def _curvature_gradients(self, U: Tensor, V: Tensor) -> Tensor:
        U, V = self._checked_pairs(U, V)
        batched = [{name: t.reshape(U.shape[0], *shape) for name, t, shape in
                    zip(self.layout.names, torch.split(M, list(self.layout.numels), dim=1), self.layout.shapes)}
                   for M in (U, V)]
        acc = torch.zeros(U.shape, dtype=self.dtype, device=self.device)
        count = 0
        with third_order_ops():
            for inputs, targets, n in self.chunks():
                per_pair = vmap(_curvature_gradient(self.chunk_loss(inputs, targets)), in_dims=(None, 0, 0))
                parts = per_pair(self._params, *batched)
                acc.add_(torch.cat([parts[name].reshape(U.shape[0], -1) for name in self.layout.names], dim=1),
                         alpha=n)
                count += n
        return reduce_mean(acc, count, self.group)

    def _checked_pairs(self, U: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
        U = torch.as_tensor(U).to(device=self.device, dtype=self.dtype)
        V = torch.as_tensor(V).to(device=self.device, dtype=self.dtype)
        if U.ndim != 2 or U.shape != V.shape or U.shape[1] != self.n:
            raise ValueError(f"U and V must both have shape (m, {self.n}); got {tuple(U.shape)} and {tuple(V.shape)}")
        return U, V

    def _per_chunk(self, product, v: Tensor) -> Tensor:
        tangents = self.layout.split(v)
        acc = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        count = 0
        for inputs, targets, n in self.chunks():
            acc.add_(self.layout.flatten(product(self.chunk_loss(inputs, targets), tangents)), alpha=n)
            count += n
        return reduce_mean(acc, count, self.group)


def _curvature_gradient(loss):
    """(theta, u, v) -> grad_theta (u^T H_i(theta) v) for one chunk's loss (three reverse passes)."""
    def along(params: dict[str, Tensor], v: dict[str, Tensor]) -> Tensor:
        g = grad(loss)(params)
        return sum((g[name] * v[name]).sum() for name in g)

    def curvature(params: dict[str, Tensor], u: dict[str, Tensor], v: dict[str, Tensor]) -> Tensor:
        hv = grad(along)(params, v)
        return sum((hv[name] * u[name]).sum() for name in hv)
    return grad(curvature)


def _double_backward(loss, params: dict[str, Tensor], tangents: dict[str, Tensor]) -> list[Tensor]:
    leaves = {k: t.detach().requires_grad_(True) for k, t in params.items()}
    order = list(leaves.values())
    with torch.enable_grad():
        g = torch.autograd.grad(loss(leaves), order, create_graph=True, materialize_grads=True)
        check_graph(list(g))
        live = [i for i, gi in enumerate(g) if gi.requires_grad]  # a gradient constant in theta: H rows 0
        if not live:
            return [torch.zeros_like(t) for t in order]
        keys = list(leaves)
        return list(torch.autograd.grad([g[i] for i in live], order, [tangents[keys[i]] for i in live],
                                        materialize_grads=True))


class ReverseOverReverse(ModelOperator):
    """H v per chunk by double backward (forward, grad with create_graph, backward of <g_i, v>)."""

    strategy = "reverse_over_reverse"

    def _matvec(self, v: Tensor) -> Tensor:
        return self._per_chunk(lambda loss, t: _double_backward(loss, self._params, t), v)


class ForwardOverReverse(ModelOperator):
    """H v per chunk as ``jvp(grad(L_i))`` (torch.func); reverse-over-reverse for losses without forward AD."""

    strategy = "forward_over_reverse"

    def _product(self, loss, tangents):
        if self.strategy == "forward_over_reverse":
            try:
                return jvp(grad(loss), (self._params,), (tangents,))[1]
            except (RuntimeError, NotImplementedError) as err:
                text = str(err)
                if "ZeroTensor" not in text and "forward AD" not in text and "forward mode AD" not in text:
                    raise
                self.strategy = "reverse_over_reverse (forward AD unsupported by the loss)"
        return _double_backward(loss, self._params, tangents)

    def _matvec(self, v: Tensor) -> Tensor:
        return self._per_chunk(self._product, v)


class GraphMeter:
    """Bytes of the distinct tensors autograd saves while a graph is built (saved_tensors_hooks).

    The pack hook hands back ``t.detach()``: a saved output returned with its own ``grad_fn`` would make
    a reference cycle through the graph that no garbage collection frees (every kept graph leaked:
    pytorch/pytorch#189025); detaching is lossless, autograd restores the grad_fn when it unpacks."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, int]] = set()
        self.bytes = 0

    def pack(self, t: Tensor) -> Tensor:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) if t.layout == torch.strided else None
        if key is not None and key not in self.seen:
            self.seen.add(key)
            self.bytes += key[1]
        return t.detach()


class CachedDoubleBackward(ModelOperator):
    """H v as one backward pass through the kept graph of the full-batch gradient g.

    The graph of g = sum_i (n_i/N) grad L_i is built at the first product, chunk by chunk, while its
    saved tensors are counted; chunks beyond ``memory_budget`` bytes are not kept and cost a full double
    backward per product.  ``cached_chunks`` / ``total_chunks`` and ``graph_bytes`` report what was kept.
    """

    strategy = "cached_double_backward"

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Any, params: ParamSelection = None,
                 memory_budget: int | None = None) -> None:
        super().__init__(model, loss_fn, data, params)
        self.memory_budget = (default_memory_budget(self.device) if memory_budget is None
                              else checks.integer("memory_budget", memory_budget, low=0))
        self._graph: tuple[list[Tensor], list[Tensor]] | None = None
        self._loss_sum: Tensor | None = None  # sum_i n_i L_i, summed while the graph is built
        self._third_order = False  # whether the kept graph was built under third_order_ops
        self._rest: list[tuple[tuple, Any, int]] = []
        self.graph_bytes, self.cached_chunks, self.total_chunks, self._count = 0, 0, 0, 0
        self._batched = True

    def _build(self) -> None:
        self._third_order = _THIRD_ORDER[0] > 0
        leaves = {k: t.detach().clone().requires_grad_(True) for k, t in self._params.items()}
        order = [leaves[name] for name in self.layout.names]
        total: list[Tensor] | None = None
        loss_sum = torch.zeros(1, dtype=torch.float64, device=self.device)
        for inputs, targets, n in self.chunks():
            self.total_chunks += 1
            self._count += n
            if self._rest:  # over budget already: every later chunk is recomputed per product
                self._rest.append((inputs, targets, n))
                continue
            counter = GraphMeter()
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
                loss = self.chunk_loss(inputs, targets)(leaves)
                g = torch.autograd.grad(loss, order, create_graph=True, materialize_grads=True)
            loss_sum += n * float(loss.detach())
            if self.total_chunks == 1:
                check_graph(list(g))
            if self.graph_bytes + counter.bytes > self.memory_budget:
                self._rest.append((inputs, targets, n))  # this chunk's graph is dropped here
                continue
            self.graph_bytes += counter.bytes
            self.cached_chunks += 1
            total = [n * gi for gi in g] if total is None else [t + n * gi for t, gi in zip(total, g)]
        self._graph = (order, total or [])
        self._loss_sum = None if self._rest else loss_sum  # else loss() takes its own pass
        if self._rest:
            self.strategy = (f"cached_double_backward ({self.cached_chunks} of {self.total_chunks} chunks cached, "
                             "the rest reverse_over_reverse)")

    def _matvec(self, v: Tensor) -> Tensor:
        if self._graph is None:
            self._build()
        order, total = self._graph
        tangents = self.layout.split(v)
        parts = [tangents[name] for name in self.layout.names]
        acc = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        live = [i for i, t in enumerate(total) if t.requires_grad]
        if live:
            hv = torch.autograd.grad([total[i] for i in live], order, grad_outputs=[parts[i] for i in live],
                                     retain_graph=True, materialize_grads=True)
            acc.add_(self.layout.flatten(list(hv)).detach())
        for inputs, targets, n in self._rest:
            acc.add_(self.layout.flatten(_double_backward(self.chunk_loss(inputs, targets), self._params,
                                                          tangents)), alpha=n)
        return reduce_mean(acc, self._count, self.group)

    def block_size(self) -> int:
        """Columns per backward pass in :meth:`matmat`: as many as keep (kept graph bytes) x (columns) within
        :data:`BATCH_BYTES` (at most :data:`MAX_BLOCK`); 1 when chunks are recomputed or batching failed."""
        if self._graph is None:
            self._build()
        if self._rest or not self._batched or self.graph_bytes == 0:
            return 1
        return int(max(1, min(MAX_BLOCK, BATCH_BYTES // self.graph_bytes)))

    def _matmat(self, V: Tensor) -> Tensor:
        """H V: blocks of :meth:`block_size` columns, each one backward pass through the kept graph batched
        over its columns (``is_grads_batched``, a vmap over the backward); column by column otherwise."""
        block = self.block_size()
        order, total = self._graph
        live = [i for i, t in enumerate(total) if t.requires_grad]
        if block == 1 or not live:
            return super()._matmat(V)
        out = torch.zeros_like(V)
        for start in range(0, V.shape[1], block):
            cols = V[:, start:start + block]
            m = cols.shape[1]
            parts = [p.T.reshape(m, *shape) for p, shape in zip(torch.split(cols, list(self.layout.numels)),
                                                                 self.layout.shapes)]
            try:
                hv = torch.autograd.grad([total[i] for i in live], order, [parts[i] for i in live], retain_graph=True,
                                         is_grads_batched=True, materialize_grads=True)
            except (RuntimeError, NotImplementedError):  # an operation without a batching rule: one at a time
                self._batched = False
                return super()._matmat(V)
            out[:, start:start + m] = torch.cat([h.detach().reshape(m, -1) for h in hv], dim=1).T
        return reduce_mean(out, self._count, self.group)

    def start_direction(self) -> Tensor:
        """The full-batch gradient g, read off the kept graph (built if needed; no extra product)."""
        if self._graph is None:
            with self.twice_differentiable():
                self._build()
        order, total = self._graph
        g = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        if total:
            g.add_(self.layout.flatten([t.detach() for t in total]))
        for inputs, targets, n in self._rest:
            g.add_(self.layout.flatten(grad(self.chunk_loss(inputs, targets))(self._params)), alpha=n)
        return reduce_mean(g, self._count, self.group)

    def curvature_gradients(self, U: Tensor, V: Tensor) -> Tensor:
        """Row j: grad_theta (U_j^T H V_j), through the kept graph of g when every chunk is kept: H V_j by
        one backward pass through it, itself recorded (``create_graph``; once per distinct V_j), then the
        gradient of <U_j, H V_j> by a backward pass through that; no forward pass (the per-chunk
        ``torch.func`` route of :meth:`ModelOperator.curvature_gradients` otherwise)."""
        U, V = self._checked_pairs(U, V)
        if self._graph is not None and not self._third_order:
            self.release()  # built outside third_order_ops: its fused layer norm goes wrong at the third order
        if self._graph is None:
            with third_order_ops():
                self._build()
        order, total = self._graph
        if self._rest or not total:
            return super().curvature_gradients(U, V)
        live = [i for i, t in enumerate(total) if t.requires_grad]
        rows, kept = [], []  # kept: (v, H v recorded), shared by the rows with the same v
        with torch.enable_grad():
            for u, v in zip(U, V):
                if not live:
                    rows.append(torch.zeros(self.n, dtype=self.dtype, device=self.device))
                    continue
                hv = next((h for w, h in kept if torch.equal(w, v)), None)
                if hv is None:
                    parts_v = list(self.layout.split(v).values())
                    hv = torch.autograd.grad([total[i] for i in live], order, grad_outputs=[parts_v[i] for i in live],
                                             retain_graph=True, create_graph=True, materialize_grads=True)
                    kept.append((v, hv))
                along = sum((h * p).sum() for h, p in zip(hv, self.layout.split(u).values()) if h.requires_grad)
                if not isinstance(along, Tensor) or not along.requires_grad:  # H constant in theta
                    rows.append(torch.zeros(self.n, dtype=self.dtype, device=self.device))
                    continue
                third = torch.autograd.grad(along, order, retain_graph=True, materialize_grads=True)
                rows.append(self.layout.flatten([t.detach() for t in third]))
        return reduce_mean(torch.stack(rows), self._count, self.group)

    def release(self) -> None:
        """Free the kept graph (it is rebuilt at the next product)."""
        self._graph, self._rest, self._loss_sum = None, [], None
        self.graph_bytes, self.cached_chunks, self.total_chunks, self._count = 0, 0, 0, 0


#: The ``torch.compile`` backend of ``strategy="compiled"`` (inductor: C++ on a CPU, Triton on a GPU).
COMPILE_BACKEND = "inductor"

#: model -> {loss_fn: compiled product}: one compilation per (model, loss_fn), reused by later operators.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_product(model: nn.Module, loss_fn: LossFn):
    """(theta_B, fixed, v, inputs, targets) -> H_i v of one chunk, compiled: forward, gradient and the vjp
    of the gradient in one graph (reverse over reverse), kept for the next operator over the same model."""
    per_model = _COMPILED.setdefault(model, {})
    if loss_fn not in per_model:
        def product(params, fixed, tangents, inputs, targets):
            def loss(p):
                return loss_fn(functional_call(model, (p, fixed), inputs), targets)
            return vjp(grad(loss), params)[1](tangents)[0]
        per_model[loss_fn] = torch.compile(product, backend=COMPILE_BACKEND, dynamic=False)
    return per_model[loss_fn]


class CompiledReverseOverReverse(ModelOperator):
    """H v per chunk by one ``torch.compile``'d function (opt-in: ``strategy="compiled"``).

    The compiler fuses the forward pass, the gradient and its vjp of each chunk; the product recomputes
    all three, unlike the kept graph of cached_double_backward.  Compiled at the first product (seconds
    to minutes) and reused by later operators over the same model and loss while the shapes stay the
    same (one compilation per chunk shape).  If compilation fails, the operator falls back to
    cached_double_backward and ``strategy`` says so.  Whether it pays is measured per network in
    ``benchmarks/README.md`` (on a CPU it did not).
    """

    strategy = "compiled"

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Any, params: ParamSelection = None,
                 memory_budget: int | None = None) -> None:
        super().__init__(model, loss_fn, data, params)
        self._args, self._fallback = (model, loss_fn, data, params, memory_budget), None

    def _matvec(self, v: Tensor) -> Tensor:
        if self._fallback is not None:
            return self._fallback.matvec(v)
        product = _compiled_product(self.model, self.loss_fn)
        tangents = self.layout.split(v)
        acc = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        count = 0
        try:
            with evaluation(self.model):
                for inputs, targets, n in self.chunks():
                    acc.add_(self.layout.flatten(product(self._params, self._fixed, tangents, inputs, targets)),
                             alpha=n)
                    count += n
        except Exception as err:  # noqa: BLE001 - any compiler failure: measure without it
            self._fallback = CachedDoubleBackward(*self._args)
            self.strategy = f"cached_double_backward (compilation failed: {type(err).__name__})"
            return self._fallback.matvec(v)
        return reduce_mean(acc, count, self.group)

    def start_direction(self) -> Tensor:
        """The full-batch gradient g."""
        return self.gradient()


#: A batched product through the kept graph spans at most this many bytes of graph times columns: small
#: graphs (whose products are dominated by per-operation overhead) are multiplied by many columns at once,
#: large ones column by column, where batching measured no faster (``benchmarks/README.md``).
BATCH_BYTES = 8 << 20

#: Columns of one batched product at most.
MAX_BLOCK = 64

_CLASSES = {"forward_over_reverse": ForwardOverReverse, "reverse_over_reverse": ReverseOverReverse,
            "cached_double_backward": CachedDoubleBackward, "compiled": CompiledReverseOverReverse}


def hessian_operator(model: nn.Module, loss_fn: LossFn, data: Any, *, strategy: str = "auto",
                     params: ParamSelection = None, memory_budget: int | None = None) -> ModelOperator:
    """The Hessian H of the full-batch loss w.r.t. the block ``params``, as an operator v -> H v.

    Args:
        model, loss_fn, data: L(theta) = sum_i (n_i/N) loss_fn(model(x_i), y_i) (:mod:`deep.curvature.inputs`).
        strategy: one of :data:`STRATEGIES`; "auto" is cached_double_backward within ``memory_budget``.
        params: the parameter block (:mod:`deep.curvature.params`); None: all trainable parameters.
        memory_budget: bytes the kept gradient graph may take (cached strategy); None: a quarter of the
            free memory of the model's device.

    Units of H v: loss units per squared parameter unit, times the units of v.
    """
    checks.choice("strategy", strategy, STRATEGIES)
    if strategy in ("auto", "cached_double_backward", "compiled"):
        return _CLASSES["cached_double_backward" if strategy == "auto" else strategy](model, loss_fn, data, params,
                                                                                      memory_budget)
    return _CLASSES[strategy](model, loss_fn, data, params)
