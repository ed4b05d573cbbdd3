"""The generalised Gauss-Newton matrix G of a full-batch loss, as a curvature operator.

With f(x_i; theta) the network's outputs on chunk i, J_i = df/dtheta and H_L,i the Hessian of the
chunk's loss with respect to the outputs,

    G = sum_i (n_i / N) J_i^T H_L,i J_i,        H = G + sum over outputs of (dL/df) d^2 f / dtheta^2.

G drops the second term (which vanishes where the residuals do), so for a loss convex in the outputs
G is positive semi-definite.  H_L is taken by autograd from ``loss_fn`` itself, so any loss works:
for the square loss 1/(2n) sum ||f - y||^2 it is I/n, for cross-entropy (1/n)(diag(p) - p p^T) with
p = softmax(f) (curvlinops' and BackPACK's GGN for MSE and cross-entropy).

One product G v per chunk, through graphs built once and kept (like the cached Hessian strategy):
J v by the double-vjp trick (a backward pass through the graph of J^T u, linear in a dummy u),
H_L (J v) through the graph of dL/df, and J^T w by a backward pass through the forward graph.
Chunks beyond ``memory_budget`` bytes are rebuilt at each product.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from aeos_base import checks

from .hessian import GraphMeter, ModelOperator, default_memory_budget
from .inputs import LossFn, evaluation, forward
from .params import ParamSelection
from .reductions import reduce_mean
from .twice import check_graph


class _ChunkGraphs:
    """Kept graphs of one chunk: outputs f(theta), J^T u (linear in u), and dL/df."""

    def __init__(self, op: "GGNOperator", leaves: dict[str, Tensor], order: list[Tensor], inputs, targets) -> None:
        with torch.enable_grad():
            with evaluation(op.model):
                self.out = forward(op.model, (leaves, op._fixed), inputs)
            if not isinstance(self.out, Tensor):
                raise ValueError("curvature='ggn' needs a model that returns a tensor of outputs; got a "
                                 f"{type(self.out).__name__}")
            out_leaf = self.out.detach().requires_grad_(True)
            self.out_leaf = out_leaf
            self.dl_df = torch.autograd.grad(op.loss_fn(out_leaf, targets), out_leaf, create_graph=True)[0]
            self.u = torch.zeros_like(self.out, requires_grad=True)
            self.jt_u = torch.autograd.grad(self.out, order, grad_outputs=self.u, create_graph=True,
                                            materialize_grads=True)
        check_graph([*self.jt_u, self.dl_df])
        self.order = order

    def jacobian_product(self, parts: list[Tensor]) -> Tensor:
        """J v, shaped like the outputs (a backward pass through the graph of J^T u, linear in u)."""
        live = [i for i, t in enumerate(self.jt_u) if t.requires_grad]
        return torch.autograd.grad([self.jt_u[i] for i in live], self.u, [parts[i] for i in live],
                                   retain_graph=True, materialize_grads=True)[0]

    def output_curvature(self, jv: Tensor) -> Tensor | None:
        """H_L (J v) through the graph of dL/df (None for a loss linear in the outputs: H_L = 0)."""
        if not self.dl_df.requires_grad:
            return None
        return torch.autograd.grad(self.dl_df, self.out_leaf, jv, retain_graph=True)[0]

    def transpose_product(self, w: Tensor | None) -> list[Tensor]:
        """J^T w for w shaped like the outputs (a backward pass through the forward graph); None: 0."""
        if w is None:
            return [torch.zeros_like(p) for p in self.order]
        return list(torch.autograd.grad(self.out, self.order, w, retain_graph=True, materialize_grads=True))

    def product(self, parts: list[Tensor]) -> list[Tensor]:
        """J^T H_L J v."""
        return self.transpose_product(self.output_curvature(self.jacobian_product(parts)))

    def gradient(self) -> list[Tensor]:
        return list(torch.autograd.grad(self.out, self.order, self.dl_df.detach(), retain_graph=True,
                                        materialize_grads=True))


class GGNOperator(ModelOperator):
    """G v = sum_i (n_i/N) J_i^T H_L,i J_i v over the chunks of ``data`` (module docstring).

    Units: those of the Hessian (loss units per squared parameter unit).  ``loss_fn`` must take the
    model's raw outputs (e.g. logits for cross-entropy).
    """

    strategy = "ggn"
    chunk_graphs = _ChunkGraphs  # what one chunk keeps and how it multiplies (a subclass swaps it)

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Any, params: ParamSelection = None,
                 memory_budget: int | None = None) -> None:
        super().__init__(model, loss_fn, data, params)
        self.memory_budget = (default_memory_budget(self.device) if memory_budget is None
                              else checks.integer("memory_budget", memory_budget, low=0))
        self._kept: list[tuple[_ChunkGraphs, int]] | None = None
        self._rest: list[tuple[tuple, Any, int]] = []
        self._count = 0

    def _leaves(self) -> tuple[dict[str, Tensor], list[Tensor]]:
        leaves = {k: t.detach().clone().requires_grad_(True) for k, t in self._params.items()}
        return leaves, [leaves[name] for name in self.layout.names]

    def _build(self) -> None:
        self._leaves_order = self._leaves()
        self._kept, used = [], 0
        for inputs, targets, n in self.chunks():
            self._count += n
            if self._rest:
                self._rest.append((inputs, targets, n))
                continue
            counter = GraphMeter()
            with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
                graphs = self.chunk_graphs(self, *self._leaves_order, inputs, targets)
            if used + counter.bytes > self.memory_budget:
                self._rest.append((inputs, targets, n))
                continue
            used += counter.bytes
            self._kept.append((graphs, n))

    def _each_chunk(self):
        if self._kept is None:
            self._build()
        yield from self._kept
        for inputs, targets, n in self._rest:  # over the budget: rebuilt for this product only
            yield self.chunk_graphs(self, *self._leaves(), inputs, targets), n

    def _matvec(self, v: Tensor) -> Tensor:
        tangents = self.layout.split(v)
        parts = [tangents[name] for name in self.layout.names]
        acc = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        for graphs, n in self._each_chunk():
            acc.add_(self.layout.flatten(graphs.product(parts)).detach(), alpha=n)
        return reduce_mean(acc, self._count, self.group)

    def start_direction(self) -> Tensor:
        """The full-batch gradient g = sum_i (n_i/N) J_i^T dL_i/df (from the kept graphs)."""
        acc = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        with self.twice_differentiable():
            for graphs, n in self._each_chunk():
                acc.add_(self.layout.flatten(graphs.gradient()).detach(), alpha=n)
        return reduce_mean(acc, self._count, self.group)
