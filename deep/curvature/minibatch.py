"""Random minibatches of a data set, and the gradient and curvature products of one batch's loss.

A batch B of b examples drawn from the N examples of ``data`` has the loss, gradient and Hessian

    L_B(theta) = (1/b) sum_{i in B} l_i(theta),    g_B = grad L_B(theta),    H_B = hess L_B(theta),

with ``loss_fn`` the mean over its chunk, as everywhere in :mod:`deep.curvature`.

**Sampling** (:class:`Population`).  The examples of ``data`` are numbered 0..N-1 in the order of its
chunks, and a batch is ``torch.randperm(N, generator=generator)[:b]``: b distinct examples, every subset
of size b equally likely, drawn exactly as a training run draws its minibatches (:mod:`deep.training.train`).
Under a :class:`~deep.curvature.inputs.Shard` the numbering runs over the ranks in order (rank r's examples
follow rank r - 1's), every rank draws the same batch from its own copy of the generator, computes the
terms of the members it holds, and the sums are all-reduced.  So a batch is drawn from the whole data set
whatever its split, and the same seed gives the same batches on one process and on W ranks (the numbers
agree to round-off).  The alternative, every rank drawing b/W examples of its own shard, would be
stratified sampling, whose expectation differs from the training run's.

**Products** (:class:`BatchCurvature`).  Per batch, g_B and H_B u_j for a few directions u_j = f_j(g_B)
chosen after g_B is known (g_B itself, P^-1 g_B, the optimizer's next step): one forward pass, one
backward pass that keeps its graph, and one backward pass through that graph per direction (the
double-backward Hessian-vector product of :mod:`deep.curvature.hessian`).  On one process, K batches of
at most :data:`VECTORIZE_MAX_BATCH` examples are computed together by ``torch.func.vmap``: each batch's
gradient and products from one ``vjp`` of its gradient (H_B is symmetric, so the pullback of u is H_B u)
when every f_j is a tensor function ``vmap`` can batch, else the gradients first, the directions of the K
batches (the optimizer's step is taken by torch's own code, which ``vmap`` cannot batch), then the
products (one more forward and backward pass).  On small batches this costs a fraction of K separate
passes (``benchmarks/batch_sharpness.py``); a model ``vmap`` cannot run is computed one batch at a time.
Mode-dependent modules run in eval mode (:func:`deep.curvature.inputs.evaluation`) and the model, its
gradients and buffers are never changed: the products run on a snapshot of theta taken at construction.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.func import functional_call, grad, vjp, vmap

from .inputs import LossFn, as_data, chunks, evaluation
from .params import ParamLayout
from .reductions import group_of, reduce_sum

#: Batches of at most this many examples are vectorised (``vmap``) on one process; larger ones run alone,
#: where a batched pass saves nothing (``benchmarks/batch_sharpness.py``).
VECTORIZE_MAX_BATCH = 128
#: Examples per vectorised group of batches (K = this // b, at most :data:`MAX_GROUP` batches).
GROUP_EXAMPLES = 2048
MAX_GROUP = 64
#: Bytes the K x (directions + 2) flat vectors of a vectorised group may take.
GROUP_MEMORY = 256 << 20

#: A direction: the gradients of K batches, (K, n), to their directions u, (K, n).
Direction = Callable[[Tensor], Tensor]


class Population:
    """The examples of ``data`` (anything :func:`deep.curvature.inputs.as_data` takes), numbered 0..N-1 over
    every rank of a :class:`~deep.curvature.inputs.Shard`, on ``device`` in ``dtype``.

    ``size`` is N, ``local`` this rank's count, ``offset`` the number of its first example.  The examples
    are held as one tensor per input (and one for the targets), concatenated from the chunks.
    """

    def __init__(self, data: Any, device: torch.device, dtype: torch.dtype) -> None:
        data = as_data(data)
        self.group = group_of(data)
        parts = list(chunks(data, device, dtype))
        for inputs, targets, n in parts:
            if not all(isinstance(x, Tensor) and x.ndim > 0 and x.shape[0] == n for x in (*inputs, targets)):
                raise ValueError("data must hold tensors whose first dimension counts the examples to draw "
                                 "minibatches from them (inputs and targets)")
        arity = {len(inputs) for inputs, _, _ in parts}
        if len(arity) != 1:
            raise ValueError(f"data chunks must all have the same number of inputs; got {sorted(arity)}")
        self.inputs = tuple(_cat([p[0][j] for p in parts]) for j in range(arity.pop()))
        self.targets = _cat([p[1] for p in parts])
        self.local = sum(p[2] for p in parts)
        self.offset, self.size = _placement(self.local, self.group)

    def draw(self, generator: torch.Generator, batch_size: int) -> Tensor:
        """One batch: ``batch_size`` distinct example numbers, ``randperm(N)[:b]`` (the training run's sampler)."""
        return torch.randperm(self.size, generator=generator)[:batch_size]

    def members(self, batch: Tensor) -> tuple[tuple[Tensor, ...], Tensor, int]:
        """(inputs, targets, count) of the members of ``batch`` that this rank holds, in the batch's order."""
        mine = batch[(batch >= self.offset) & (batch < self.offset + self.local)] - self.offset
        index = mine.to(self.targets.device)
        return tuple(x[index] for x in self.inputs), self.targets[index], int(mine.numel())

    def stacked(self, batches: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        """Inputs and targets of K batches of one process, each of shape (K, b, ...)."""
        index = batches.to(self.targets.device)
        return tuple(x[index] for x in self.inputs), self.targets[index]


def _cat(tensors: list[Tensor]) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _placement(local: int, group: Any) -> tuple[int, int]:
    """(offset, N): this rank's first example number and the total over the ranks of ``group``."""
    if group is None:
        return 0, local
    counts = torch.zeros(dist.get_world_size(group), dtype=torch.float64)
    counts[dist.get_rank(group)] = local
    reduce_sum(counts, group)
    return int(counts[: dist.get_rank(group)].sum()), int(counts.sum())


class BatchCurvature:
    """g_B and H_B u of minibatch losses at a snapshot of theta (module docstring).

    ``model``, ``loss_fn``: L_B = loss_fn(model(inputs_B), targets_B); ``layout``: the parameters differentiated
    (:class:`deep.curvature.params.ParamLayout`); ``group``: the process group whose ranks hold the other
    members of each batch (None: one process).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, layout: ParamLayout, group: Any = None) -> None:
        self.model, self.loss_fn, self.layout, self.group = model, loss_fn, layout, group
        trainable = set(layout.names)
        self.params = {n: p.detach().clone() for n, p in model.named_parameters() if n in trainable}
        self.fixed = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.fixed.update({n: p.detach() for n, p in model.named_parameters() if n not in trainable})
        self.vectorizable = group is None

    def theta(self) -> Tensor:
        """The snapshot theta, flat."""
        return self.layout.flatten(self.params)

    def _loss(self, params: dict[str, Tensor], inputs: tuple[Tensor, ...], targets: Tensor) -> Tensor:
        return self.loss_fn(functional_call(self.model, (params, self.fixed), inputs), targets)

    def group_size(self, batch_size: int, directions: int) -> int:
        """K, the batches computed together: 1 under a process group or for batches over
        :data:`VECTORIZE_MAX_BATCH` examples; else :data:`GROUP_EXAMPLES` // b, capped by :data:`MAX_GROUP` and by
        :data:`GROUP_MEMORY` for the K (directions + 2) flat vectors."""
        if not self.vectorizable or batch_size > VECTORIZE_MAX_BATCH:
            return 1
        itemsize = torch.empty((), dtype=self.layout.dtype).element_size()
        by_memory = GROUP_MEMORY // ((directions + 2) * self.layout.n * itemsize)
        return max(1, min(MAX_GROUP, GROUP_EXAMPLES // batch_size, by_memory))

    def one(self, inputs: tuple[Tensor, ...], targets: Tensor, count: int, batch_size: int,
            directions: Sequence[Direction]) -> tuple[Tensor, Tensor, Tensor]:
        """(g_B, U, H_B U) of one batch: U (m, n) stacks the directions f_j(g_B), H_B U their products.
        The m ``directions`` map a (K, n) stack of gradients to their directions (:data:`Direction`).

        ``inputs``, ``targets``: this rank's ``count`` members of a batch of ``batch_size`` examples; under a
        process group each rank adds its members' share (count / b of their mean) and the sums are all-reduced,
        so every rank gets the whole batch's g_B and products (a rank holding no member adds zeros).
        """
        n = self.layout.n
        with evaluation(self.model), torch.enable_grad():
            leaves = {k: t.detach().requires_grad_(True) for k, t in self.params.items()}
            order = [leaves[name] for name in self.layout.names]
            parts: list[Tensor] | None = None
            g = torch.zeros(n, dtype=self.layout.dtype, device=self.layout.device)
            if count:
                loss = self._loss(leaves, inputs, targets) * (count / batch_size)
                parts = list(torch.autograd.grad(loss, order, create_graph=True, materialize_grads=True))
                g = self.layout.flatten([p.detach() for p in parts])
            g = reduce_sum(g, self.group)
            U = torch.cat([f(g[None]) for f in directions]).to(g)
            HU = torch.zeros_like(U)
            live = [i for i, p in enumerate(parts or []) if p.requires_grad]  # constant gradients: H rows 0
            for j in range(U.shape[0]) if live else ():
                tangents = self.layout.split(U[j])
                hv = torch.autograd.grad([parts[i] for i in live], order,
                                         [tangents[self.layout.names[i]] for i in live],
                                         retain_graph=j + 1 < U.shape[0], materialize_grads=True)
                HU[j] = self.layout.flatten(list(hv))
        return g, U, reduce_sum(HU, self.group)

    def many(self, inputs: tuple[Tensor, ...], targets: Tensor, directions: Sequence[Direction],
             pure: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(G, U, HU) of K whole batches on one process, inputs and targets of shape (K, b, ...): G (K, n) the
        gradients, U (K, m, n) the directions, HU (K, m, n) their products, by ``torch.func.vmap``.  ``pure``:
        every direction is a tensor function vmap can batch (g -> g, g -> P^-1 g), so each batch's gradient and
        products come from one ``vjp`` of its gradient; otherwise (the optimizer's step) the gradients are
        computed first, then the directions of all K at once, then the products.  One batch at a time when the model
        cannot be vmapped (the next calls then go one at a time too)."""
        if self.vectorizable:
            try:
                return self._vectorized(inputs, targets, directions, pure)
            except (RuntimeError, NotImplementedError):
                self.vectorizable = False  # e.g. .item() in the model or loss: vmap cannot batch it
        results = [self.one(tuple(x[k] for x in inputs), targets[k], int(targets.shape[1]), int(targets.shape[1]),
                            directions) for k in range(targets.shape[0])]
        return tuple(torch.stack(r) for r in zip(*results))  # type: ignore[return-value]

    def _vectorized(self, inputs, targets, directions, pure: bool) -> tuple[Tensor, Tensor, Tensor]:
        gradient = grad(self._loss)
        flatten, split = self.layout.flatten, self.layout.split

        def products(x, y, u=None):
            g, pullback = vjp(lambda p: gradient(p, x, y), self.params)  # pullback(u) = H_B u (H symmetric)
            g = flatten(g)
            u = torch.cat([f(g[None]) for f in directions]).to(g) if u is None else u
            return g, u, torch.stack([flatten(pullback(split(u[j]))[0]) for j in range(u.shape[0])])

        with evaluation(self.model):
            if pure:
                return vmap(products)(inputs, targets)
            G = vmap(lambda x, y: flatten(gradient(self.params, x, y)))(inputs, targets)
            U = torch.stack([f(G) for f in directions], dim=1).to(G)
            _, _, HU = vmap(products)(inputs, targets, U)
        return G, U, HU
