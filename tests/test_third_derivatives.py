"""Third-derivative products grad_w (u^T H(w) v) on what Transformers contain, against finite differences.

For each part (attention through ``F.scaled_dot_product_attention``, LayerNorm, GELU, embeddings, tied
input and output weights, and a whole causal block with all of them) a small float64 model; the
reference is the central difference (f(w + eps e) - f(w - eps e)) / (2 eps) of f(w) = u^T H(w) v along
random directions e, with H(w) v computed here by plain double backward (``torch.autograd``) on
``torch.func.functional_call`` under the math attention backend, independently of ``deep``.  Both routes
of :mod:`deep.curvature.hessian` are checked: through the kept graph (cached_double_backward, what the
flows use) and per chunk by ``torch.func`` (reverse_over_reverse).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from deep.curvature.hessian import ReverseOverReverse, hessian_operator
from deep.training.losses import cross_entropy, mse

VOCAB, CONTEXT, WIDTH = 7, 5, 8

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Attention(nn.Module):
    """Causal self-attention by F.scaled_dot_product_attention on real inputs (b, t, d)."""

    def __init__(self, heads: int = 2):
        super().__init__()
        self.heads, self.qkv, self.out = heads, nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, 3)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        return self.out(mixed)


class Tied(nn.Module):
    """Token embedding -> tanh -> logits through the same matrix (head.weight is tok.weight)."""

    def __init__(self):
        super().__init__()
        self.tok, self.head = nn.Embedding(VOCAB, WIDTH), nn.Linear(WIDTH, VOCAB, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, x):
        return self.head(torch.tanh(self.tok(x)))


class Block(nn.Module):
    """Token and position embeddings, a pre-LayerNorm causal block (SDPA attention, GELU MLP), a final
    LayerNorm and logits tied to the token embedding."""

    def __init__(self, heads: int = 2):
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, WIDTH), nn.Embedding(CONTEXT, WIDTH)
        self.ln1, self.ln2, self.ln = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.heads, self.qkv, self.proj = heads, nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Linear(2 * WIDTH, WIDTH))

    def forward(self, x):
        b, t = x.shape
        h = self.tok(x) + self.pos(torch.arange(t))
        q, k, v = self.qkv(self.ln1(h)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        h = h + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1))
        h = h + self.mlp(self.ln2(h))
        return self.ln(h) @ self.tok.weight.T


def _part(name: str):
    """(model, loss, data) of one part, float64, from a fixed seed."""
    torch.manual_seed(0)
    tokens = torch.randint(0, VOCAB, (4, CONTEXT))
    targets = torch.randint(0, VOCAB, (4, CONTEXT))
    real = torch.randn(4, CONTEXT, WIDTH, dtype=torch.float64)
    if name == "attention":
        return Attention().double(), mse, (real, torch.randn(4, CONTEXT, 3, dtype=torch.float64))
    if name == "layernorm":
        model = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.LayerNorm(WIDTH), nn.Linear(WIDTH, 3))
        return model.double(), mse, (real, torch.randn(4, CONTEXT, 3, dtype=torch.float64))
    if name in ("gelu", "gelu_tanh"):
        act = nn.GELU(approximate="tanh" if name == "gelu_tanh" else "none")
        model = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), act, nn.Linear(2 * WIDTH, 3))
        return model.double(), mse, (real, torch.randn(4, CONTEXT, 3, dtype=torch.float64))
    if name == "embedding":
        model = nn.Sequential(nn.Embedding(VOCAB, WIDTH), nn.Tanh(), nn.Linear(WIDTH, VOCAB))
        return model.double(), cross_entropy, (tokens, targets)
    if name == "tied":
        return Tied().double(), cross_entropy, (tokens, targets)
    return Block().double(), cross_entropy, (tokens, targets)


def _u_h_v(model: nn.Module, loss_fn, data, w: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> float:
    """u^T H(w) v by double backward on functional_call (named_parameters order, tied weights once)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    leaves = [t.reshape(s).clone().requires_grad_(True) for t, s in zip(torch.split(w, [s.numel() for s in shapes]),
                                                                       shapes)]
    with sdpa_kernel(SDPBackend.MATH), torch.enable_grad():
        loss = loss_fn(functional_call(model, dict(zip(names, leaves)), (data[0],)), data[1])
        g = torch.autograd.grad(loss, leaves, create_graph=True)
        hv = torch.autograd.grad(torch.cat([x.reshape(-1) for x in g]) @ v, leaves)
    return float(torch.cat([x.reshape(-1) for x in hv]) @ u)


@pytest.mark.parametrize("part", ["attention", "layernorm", "gelu", "gelu_tanh", "embedding", "tied", "block"])
def test_third_derivative_matches_central_differences(part):
    model, loss_fn, data = _part(part)
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gen = torch.Generator().manual_seed(1)
    U, V, E = (torch.randn(2, w.numel(), generator=gen, dtype=torch.float64) for _ in range(3))
    kept = hessian_operator(model, loss_fn, data).curvature_gradients(U, V)  # the flows' route
    per_chunk = ReverseOverReverse(model, loss_fn, data).curvature_gradients(U, V)
    torch.testing.assert_close(kept, per_chunk, rtol=1e-10, atol=1e-12)
    eps = 1e-5
    for j in range(2):
        for e in E:
            difference = (_u_h_v(model, loss_fn, data, w + eps * e, U[j], V[j])
                          - _u_h_v(model, loss_fn, data, w - eps * e, U[j], V[j])) / (2 * eps)
            assert float(kept[j] @ e) == pytest.approx(difference, rel=1e-6, abs=1e-9 * float(kept[j].norm()))


def test_tied_weights_are_one_parameter_and_the_model_is_untouched():
    """The tied matrix is one block of w (named_parameters lists it once) and both of its uses enter its
    third derivative; the products leave the model's parameters and gradients as they were."""
    model, loss_fn, data = _part("tied")
    before = [p.detach().clone() for p in model.parameters()]
    op = hessian_operator(model, loss_fn, data)
    assert op.n == VOCAB * WIDTH and len(list(model.parameters())) == 1
    u = torch.randn(op.n, dtype=torch.float64)
    assert float(op.curvature_gradient(u, u).norm()) > 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_a_kept_graph_is_freed_with_its_operator():
    """The graph a cached operator keeps, with the activations it saved, goes when the operator goes (a flow
    builds one per step; a saved activation handed back with its own grad_fn by the graph meter's hook
    made a cycle no collection frees).  Reference: the tensors the garbage collector tracks, counted
    before an operator is built and after it is dropped."""
    import gc
    import warnings

    model, loss_fn, data = _part("embedding")
    ones = torch.ones(1, sum(p.numel() for p in model.parameters()), dtype=torch.float64)

    def tensors() -> int:
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # isinstance on torch.distributed's deprecated reduce_op warns
            return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())

    hessian_operator(model, loss_fn, data).curvature_gradients(ones, ones)  # first-use caches
    before = tensors()
    for _ in range(3):
        hessian_operator(model, loss_fn, data).curvature_gradients(ones, ones)
    assert tensors() <= before
