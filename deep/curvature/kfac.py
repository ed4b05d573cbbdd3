"""K-FAC: the Kronecker-factored approximation of the Gauss-Newton matrix (or of the empirical Fisher).

For a ``torch.nn.Linear`` or ``torch.nn.Conv2d`` layer with weight W (d_out x d_in; a convolution's weight
flattened to d_out x (c_in k_h k_w)), inputs a (one per example and per position the weight is shared
over: a token, a convolution patch) and would-be output gradients b, the layer's block of the curvature
is approximated as a Kronecker product (Martens and Grosse 2015; Grosse and Martens 2016 for
convolutions; the "expand" rule of Eschenhagen et al. 2023 for weight sharing):

    C_W ~ A (x) B,   A = (1/(N R)) sum_{n,r} a_nr a_nr^T,   B = (1/T) sum_{n,r,k} b_nrk b_nrk^T,

with N examples, R shared positions per example, T loss terms in the full batch, and one b per term
and column k of a factor S of the loss' curvature in the outputs:

* ``fisher="type-2"`` (default): the Gauss-Newton matrix G = J^T H_L J.  The loss of a chunk is a mean
  of T_i terms l_t, each a function of one row f_t of the outputs (last axis: classes or targets); its
  term Hessians h_t = d^2 l_t / df_t^2 (taken by autograd from ``loss_fn``, C backward passes) are
  factored h_t = S_t S_t^T (symmetric square root), and b_tk is the backward pass of column k of S_t;
* ``fisher="empirical"``: the empirical Fisher (:mod:`deep.curvature.fisher`): S_t = e_t = dl_t/df_t.

A product is B V A for a weight block V (d_out x d_in) and B v for a bias (weight and bias kept apart,
curvlinops' default); the blocks of different layers do not interact.  The factors are computed at the
first product (one forward pass and C + 1 backward passes per chunk) and kept; products are then a few
small matrix multiplications.  For one example through one linear layer K-FAC is exact: A (x) B = G.

This is curvlinops' ``KFACLinearOperator`` (``fisher_type="type-2"`` or ``"empirical"``,
``kfac_approx="expand"``, ``separate_weight_and_bias=True``) for cross-entropy and ``torch.nn.MSELoss``
(type-2; for its empirical K-FAC with ``MSELoss`` curvlinops' B is C times ours, as for the empirical
Fisher).  Only the parameters of Linear and Conv2d layers (``groups=1``, zero padding) are supported: a
``params`` block with any other parameter is a ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from aeos_base import checks

from .fisher import term_rows
from .hessian import ModelOperator
from .inputs import LossFn, evaluation
from .params import ParamSelection
from .reductions import reduce_sum

#: The curvature K-FAC approximates: the Gauss-Newton matrix ("type-2") or the empirical Fisher.
FISHER_TYPES = ("type-2", "empirical")


@dataclass
class _Layer:
    """One Linear or Conv2d layer of the block: its parameters' names and its running factor sums."""

    module: nn.Module
    weight: str | None
    bias: str | None
    a_sum: Tensor | None = None
    a_count: int = 0
    b_sum: Tensor | None = None
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)


def _layers(model: nn.Module, names: tuple[str, ...]) -> dict[str, _Layer]:
    """module name -> _Layer for every Linear/Conv2d holding a parameter of the block; ValueError for a
    parameter anywhere else."""
    wanted, layers = set(names), {}
    for mod_name, module in model.named_modules():
        own = {f"{mod_name}.{p}" if mod_name else p: p for p, _ in module.named_parameters(recurse=False)}
        held = {full: short for full, short in own.items() if full in wanted}
        if not held:
            continue
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"):
            raise ValueError(f"curvature='kfac' supports Conv2d with groups=1 and zero padding; {mod_name} has "
                             f"groups={module.groups}, padding_mode={module.padding_mode!r}")
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise ValueError("curvature='kfac' needs every parameter of the block in a torch.nn.Linear or Conv2d "
                             f"layer; {sorted(held)} belong to a {type(module).__name__} (select a block with "
                             "params=)")
        weight = next((f for f, s in held.items() if s == "weight"), None)
        bias = next((f for f, s in held.items() if s == "bias"), None)
        layers[mod_name] = _Layer(module, weight, bias)
        wanted -= set(held)
    return layers


def _input_rows(module: nn.Module, x: Tensor) -> Tensor:
    """The layer's inputs as rows a_nr: (N R, d_in); a convolution's patches (torch's unfold order, the
    order of weight.reshape(d_out, -1))."""
    if isinstance(module, nn.Conv2d):
        patches = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding,
                           stride=module.stride)  # (N, c_in k_h k_w, positions)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return x.reshape(-1, x.shape[-1])


def _output_rows(module: nn.Module, g: Tensor) -> Tensor:
    """Gradients at the layer's outputs as rows b_nr: (N R, d_out)."""
    if isinstance(module, nn.Conv2d):
        return g.flatten(2).transpose(1, 2).reshape(-1, g.shape[1])
    return g.reshape(-1, g.shape[-1])


def term_hessian_factors(out: Tensor, dl_df: Tensor) -> Tensor:
    """S_t with S_t S_t^T = h_t = d^2 l_t/df_t^2 for each of the T_i terms, (T_i, C, C), from the graph of
    ``dl_df`` = dL_i/df (L_i = (1/T_i) sum_t l_t): column c of every h_t by one backward pass with a 1 at
    output c of every row, then a symmetric square root (negative eigenvalues clipped at 0).

    ValueError when L_i is not such a sum of terms (its Hessian in the outputs couples different rows),
    checked on one random direction."""
    rows = term_rows(dl_df)
    terms, classes = rows.shape
    if not dl_df.requires_grad:  # linear in the outputs: h_t = 0
        return torch.zeros(terms, classes, classes, dtype=out.dtype, device=out.device)
    cols = []
    for c in range(classes):
        unit = torch.zeros_like(rows)
        unit[:, c] = 1
        cols.append(term_rows(torch.autograd.grad(dl_df, out, unit.reshape(dl_df.shape), retain_graph=True)[0]))
    h = torch.stack(cols, dim=2) * terms  # h[t, :, c] = column c of h_t
    probe = torch.randn(rows.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    probe = probe.to(device=out.device, dtype=out.dtype)
    direct = term_rows(torch.autograd.grad(dl_df, out, probe.reshape(dl_df.shape), retain_graph=True)[0]) * terms
    blockwise = torch.einsum("tij,tj->ti", h, probe)
    if float(torch.linalg.vector_norm(direct - blockwise)) > 1e-4 * float(torch.linalg.vector_norm(direct)) + 1e-30:
        raise ValueError("curvature='kfac' needs a loss that is a mean of terms each depending on one row of the "
                         "outputs (the last axis: classes or targets); this loss couples different rows")
    h = 0.5 * (h + h.transpose(1, 2))
    eigenvalues, vectors = torch.linalg.eigh(h.double())
    return (vectors * eigenvalues.clamp(min=0).sqrt().unsqueeze(1)).to(out.dtype)


class KFACOperator(ModelOperator):
    """K-FAC of G (``fisher="type-2"``) or of the empirical Fisher (``fisher="empirical"``); module docstring.

    Units: those of the Hessian (loss units per squared parameter unit).  ``factors`` maps each layer's
    name to its (A, B) once the first product has computed them.
    """

    strategy = "kfac"

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Any, params: ParamSelection = None,
                 fisher: str = "type-2") -> None:
        super().__init__(model, loss_fn, data, params)
        self.fisher = checks.choice("fisher", fisher, FISHER_TYPES)
        self.strategy = f"kfac ({self.fisher})"
        self._layers = _layers(model, self.layout.names)
        self.factors: dict[str, tuple[Tensor | None, Tensor]] | None = None

    def _hooks(self) -> list:
        def keep_input(layer):
            return lambda module, args: layer.inputs.append(args[0].detach())

        def keep_output(layer):
            return lambda module, args, output: layer.outputs.append(output)
        handles = []
        for layer in self._layers.values():
            handles.append(layer.module.register_forward_pre_hook(keep_input(layer)))
            handles.append(layer.module.register_forward_hook(keep_output(layer)))
        return handles

    def _accumulate(self, inputs, targets) -> int:
        """Add one chunk's a a^T and b b^T sums to every layer; returns the chunk's number of terms T_i."""
        leaves = {k: t.detach().requires_grad_(True) for k, t in self._params.items()}
        for layer in self._layers.values():
            layer.inputs, layer.outputs = [], []
        handles = self._hooks()
        try:
            with torch.enable_grad(), evaluation(self.model):
                out = functional_call(self.model, (leaves, self._fixed), inputs)
        finally:
            for h in handles:
                h.remove()
        with torch.enable_grad():
            out_leaf = out.detach().requires_grad_(True)
            dl_df = torch.autograd.grad(self.loss_fn(out_leaf, targets), out_leaf, create_graph=self.fisher == "type-2")[0]
            terms = term_rows(dl_df).shape[0]
            if self.fisher == "type-2":
                factors = term_hessian_factors(out_leaf, dl_df)
                columns = [factors[:, :, k] for k in range(factors.shape[2])]
            else:
                columns = [term_rows(dl_df.detach()) * terms]
            for layer in self._layers.values():
                if layer.weight is not None:
                    rows = torch.cat([_input_rows(layer.module, x) for x in layer.inputs])
                    layer.a_sum = _add(layer.a_sum, rows.T @ rows)
                    layer.a_count += rows.shape[0]
            layers = list(self._layers.values())
            outputs = [z for layer in layers for z in layer.outputs]
            for k, column in enumerate(columns):
                grads = torch.autograd.grad(out, outputs, column.reshape(out.shape), retain_graph=k < len(columns) - 1,
                                            allow_unused=True, materialize_grads=True)
                i = 0
                for layer in layers:
                    for z in layer.outputs:
                        rows = _output_rows(layer.module, grads[i])
                        layer.b_sum = _add(layer.b_sum, rows.T @ rows)
                        i += 1
        for layer in layers:
            layer.inputs, layer.outputs = [], []
        return terms

    def _compute_factors(self) -> None:
        terms = 0
        for inputs, targets, _n in self.chunks():
            terms += self._accumulate(inputs, targets)
        self.factors = {}
        for name, layer in self._layers.items():
            a_count = torch.tensor([float(layer.a_count), float(terms)], dtype=torch.float64, device=self.device)
            reduce_sum(a_count, self.group)
            b = reduce_sum(layer.b_sum, self.group) / float(a_count[1])
            a = None if layer.weight is None else reduce_sum(layer.a_sum, self.group) / float(a_count[0])
            self.factors[name] = (a, b)
            layer.a_sum = layer.b_sum = None

    def _matvec(self, v: Tensor) -> Tensor:
        if self.factors is None:
            self._compute_factors()
        parts = self.layout.split(v)
        out = {}
        for name, layer in self._layers.items():
            a, b = self.factors[name]
            if layer.weight is not None:
                w = parts[layer.weight]
                out[layer.weight] = (b @ w.reshape(w.shape[0], -1) @ a).reshape(w.shape)
            if layer.bias is not None:
                out[layer.bias] = b @ parts[layer.bias]
        return self.layout.flatten(out)


def _add(total: Tensor | None, term: Tensor) -> Tensor:
    return term if total is None else total + term
