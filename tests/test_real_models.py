"""Models as researchers write them today, measured without choosing a kernel.

* A GPT with causal ``F.scaled_dot_product_attention``, float64: S and S_P against scipy ``eigsh`` on
  Hessian-vector products written in ``support.eigsh_top`` (plain autograd on the model, math backend), to
  1e-6; the user's own attention-kernel setting is the same after the measurement.
* ``nn.MultiheadAttention`` in eval mode (its fused fast path) and in train mode: the same reference.
* Tied embeddings count once: the dense Hessian of the package equals ``torch.autograd.functional.hessian`` of
  the loss written out with the shared matrix W used twice.
* Hugging Face style dict batches with :func:`deep.model_loss`: the same numbers as the (X, y) chunks of the
  same examples, weighted by examples.
* An operation without a second derivative (``torch.cdist``, an ``@once_differentiable`` Function, a CTC loss)
  is one ValueError naming the module (or the loss), for every strategy and the Gauss-Newton matrix.
* A ``DataLoader(drop_last=True)`` that drops examples from the full batch is warned about, with the count.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import TinyGPT, dense_hessian, eigsh_top, lm_loss, token_data
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.attention import SDPBackend, sdpa_kernel

import deep
from deep.curvature import curvature_operator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _adamw_steps(model, X, y, steps=5, lr=0.05):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    for _ in range(steps):
        opt.zero_grad()
        lm_loss(model(X), y).backward()
        opt.step()
    return opt


def _adam_p(opt, model) -> torch.Tensor:
    """P = sqrt(v / (1 - beta2^t)) + eps from AdamW's state, rebuilt here."""
    (_, beta2), eps = opt.param_groups[0]["betas"], opt.param_groups[0]["eps"]
    states = [opt.state[p] for p in model.parameters()]
    v = torch.cat([s["exp_avg_sq"].reshape(-1) for s in states])
    return torch.sqrt(v / (1 - beta2 ** float(states[0]["step"]))) + eps


def test_gpt_with_causal_sdpa_matches_eigsh_on_its_own_hvps():
    torch.manual_seed(0)
    model = TinyGPT().double()
    X, y = token_data()
    opt = _adamw_steps(model, X, y)
    S = deep.sharpness(model, lm_loss, (X, y), tol=1e-10, max_iter=200)
    assert S == pytest.approx(eigsh_top(model, lm_loss, [(X, y)]), rel=1e-6)
    S_P = deep.preconditioned_sharpness(model, lm_loss, (X, y), opt, tol=1e-10, max_iter=200)
    assert S_P == pytest.approx(eigsh_top(model, lm_loss, [(X, y)], _adam_p(opt, model).rsqrt()), rel=1e-6)
    for strategy in ("reverse_over_reverse", "forward_over_reverse"):
        assert deep.sharpness(model, lm_loss, (X, y), tol=1e-10, max_iter=200, strategy=strategy) == pytest.approx(S, rel=1e-9)


def test_the_users_attention_kernel_setting_is_restored():
    torch.manual_seed(0)
    model = TinyGPT().double()
    X, y = token_data()
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # the user's choice: flash only
        S = deep.sharpness(model, lm_loss, (X, y), tol=1e-8)
        assert torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.math_sdp_enabled()
        model(X).sum().backward()  # their training still runs on the flash kernel
    assert torch.backends.cuda.math_sdp_enabled()
    assert S == pytest.approx(eigsh_top(model, lm_loss, [(X, y)]), rel=1e-6)


class _MHANet(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, dropout=dropout)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.tanh(self.embed(x))
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.out(a).mean(dim=1)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_multihead_attention_matches_eigsh(mode):
    torch.manual_seed(1)
    model = _MHANet(dropout=0.1 if mode == "train" else 0.0).double()
    model.train(mode == "train")
    g = torch.Generator().manual_seed(2)
    X, y = torch.randn(12, 5, 3, generator=g, dtype=torch.float64), torch.randn(12, 2, generator=g, dtype=torch.float64)
    S = deep.sharpness(model, deep.mse, (X, y), tol=1e-10, max_iter=200)
    model.eval()  # the reference: the deterministic network a measurement is of (Dropout off)
    assert S == pytest.approx(eigsh_top(model, deep.mse, [(X, y)]), rel=1e-6)


class _TiedLM(nn.Module):
    """h = tanh(W[idx] A), logits = h W^T: the embedding W is also the output layer."""

    def __init__(self, vocab: int = 7, width: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width, bias=False)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, idx):
        return self.head(torch.tanh(self.mix(self.embed(idx))))


def test_tied_embeddings_count_once_against_the_loss_written_out():
    torch.manual_seed(3)
    model = _TiedLM().double()
    X, y = token_data(n=6, context=4, vocab=7, seed=3)
    op = curvature_operator(model, lm_loss, (X, y))
    W0, A0 = model.embed.weight.detach(), model.mix.weight.detach()
    assert op.n == W0.numel() + A0.numel()  # the shared matrix is one block of H

    def loss(flat):
        W, A = flat[: W0.numel()].view_as(W0), flat[W0.numel():].view_as(A0)
        logits = torch.tanh(W[X] @ A.T) @ W.T  # W used twice, by hand
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    dense = torch.autograd.functional.hessian(loss, torch.cat([W0.reshape(-1), A0.reshape(-1)]))
    torch.testing.assert_close(op.to_dense(), dense, rtol=1e-10, atol=1e-12)


@dataclasses.dataclass
class _Output:  # what a Hugging Face model returns: an object with .loss and .logits
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class _DictLM(nn.Module):
    """Called as model(input_ids=..., attention_mask=..., labels=...), like a Hugging Face model."""

    def __init__(self, computes_loss: bool) -> None:
        super().__init__()
        self.gpt, self.computes_loss = TinyGPT(), computes_loss

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.gpt(input_ids) * attention_mask.unsqueeze(-1)
        loss = lm_loss(logits, labels) if labels is not None and self.computes_loss else None
        return _Output(logits, loss)


@pytest.mark.parametrize("computes_loss", [True, False])
def test_dict_batches_with_model_loss_equal_the_same_examples_as_chunks(computes_loss):
    torch.manual_seed(4)
    model = _DictLM(computes_loss).double()
    X, y = token_data(n=8)
    mask = torch.ones_like(X)
    batches = [{"input_ids": X[:3], "attention_mask": mask[:3], "labels": y[:3]},
               {"input_ids": X[3:], "attention_mask": mask[3:], "labels": y[3:]}]  # 3 and 5 examples
    S = deep.sharpness(model, deep.model_loss, batches, tol=1e-10, max_iter=200)
    reference = deep.sharpness(model.gpt, lm_loss, [(X[:3], y[:3]), (X[3:], y[3:])], tol=1e-10, max_iter=200)
    assert S == pytest.approx(reference, rel=1e-9)
    assert deep.sharpness(model, deep.model_loss, batches[0], tol=1e-10, max_iter=200) == pytest.approx(
        deep.sharpness(model.gpt, lm_loss, (X[:3], y[:3]), tol=1e-10, max_iter=200), rel=1e-9)
    loss = curvature_operator(model, deep.model_loss, batches).loss()
    with torch.no_grad():
        assert loss == pytest.approx(float(lm_loss(model.gpt(X), y)), rel=1e-12)


def test_model_loss_says_what_it_needs():
    with pytest.raises(ValueError, match="needs outputs with a .loss, or .logits and a 'labels' entry"):
        deep.model_loss(_Output(torch.zeros(2, 3)), {"input_ids": torch.zeros(2)})


# ----------------------------------------------------------------------------- no second derivative
class _RBF(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(5, 4))

    def forward(self, x):
        return torch.exp(-torch.cdist(x, self.centers) ** 2)


class _Square(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _FusedSquare(nn.Module):
    def forward(self, x):
        return _Square.apply(x)


def _net(inner: nn.Module) -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), inner), nn.Linear(5 if isinstance(inner, _RBF) else 4, 2))


@pytest.mark.parametrize("strategy", ["cached_double_backward", "reverse_over_reverse", "forward_over_reverse", "ggn"])
@pytest.mark.parametrize("inner, name, words", [
    (_RBF, "1.1", "_RBF) uses an operation without a second derivative: the derivative for '_cdist_backward' is not "
                  "implemented"),
    (_FusedSquare, "1.1", "_FusedSquare) uses an operation without a second derivative: a torch.autograd.Function "
                          "whose backward is marked @once_differentiable"),
])
def test_a_module_without_a_second_derivative_is_named(strategy, inner, name, words):
    model = _net(inner())
    X, y = torch.randn(10, 4), torch.randn(10, 2)
    kwargs = {"curvature": "ggn"} if strategy == "ggn" else {"strategy": strategy}
    with pytest.raises(ValueError) as err:
        deep.sharpness(model, deep.mse, (X, y), **kwargs)
    assert f"nn.Module {name!r} ({words}" in str(err.value)


def test_a_loss_without_a_second_derivative_is_named():
    def ctc(outputs, targets):  # outputs (N, T, C): one sequence of T = 10 frames per example
        log_probs = outputs.log_softmax(-1).transpose(0, 1)
        return F.ctc_loss(log_probs, targets, torch.tensor([outputs.shape[1]]), torch.tensor([2]))

    with pytest.raises(ValueError, match=r"loss_fn \(ctc\) uses an operation without a second derivative: derivative "
                                         r"for aten::_ctc_loss_backward is not implemented"):
        deep.sharpness(nn.Linear(4, 5), ctc, [(torch.randn(1, 10, 4), torch.tensor([[1, 2]]))])


def test_the_package_gpt_does_not_trip_the_check():
    """The check looks for dead ends only: LayerNorm, GELU, SDPA (math) and embeddings pass."""
    model = TinyGPT().double()
    X, y = token_data()
    assert np.isfinite(deep.sharpness(model, lm_loss, (X, y), curvature="ggn"))


# ----------------------------------------------------------------------------- drop_last
def test_drop_last_that_drops_examples_is_warned_about_with_the_count():
    model = nn.Linear(3, 1)
    data = torch.utils.data.TensorDataset(torch.randn(10, 3), torch.randn(10, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4, drop_last=True)
    with pytest.warns(UserWarning, match=r"drop_last=True: 2 of its 10 examples \(10 is not a multiple of batch_size=4\)"):
        deep.sharpness(model, deep.mse, loader)
    even = torch.utils.data.DataLoader(data, batch_size=5, drop_last=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deep.sharpness(model, deep.mse, even)


# ----------------------------------------------------------------------------- short reprs
def test_results_print_short_without_their_tensors():
    import sims
    from sims.problems import dense_problem

    from deep.curvature.lanczos import lanczos

    model = nn.Sequential(nn.Linear(30, 40), nn.Tanh(), nn.Linear(40, 3))  # 1363 parameters
    X, y = torch.randn(50, 30), torch.randn(50, 3)
    opt = torch.optim.Adam(model.parameters())
    deep.mse(model(X), y).backward()
    opt.step()
    op = curvature_operator(model, deep.mse, (X, y))
    results = [deep.top_eigenpairs(model, deep.mse, (X, y)), lanczos(op), deep.measure_edge(model, deep.mse, (X, y), opt),
               deep.hessian_trace(model, deep.mse, (X, y), hvps=20),
               deep.spectral_density(model, deep.mse, (X, y), steps=10, probes=2),
               sims.central_flow("gd", dense_problem(seed=0, d=5).H, dense_problem(seed=0, d=5).x0, eta=0.01, steps=50,
                                 record_every=10)]
    for result in results:
        text = repr(result)
        assert len(text) < 300 and "eigenvectors" not in text and "\n" not in text, text
    assert repr(results[0]).startswith("SharpnessResult(eigenvalues=(")
    assert "records: 6 rows of" in repr(results[-1])


def test_every_measurement_runs_on_the_sdpa_gpt():
    """Trace, density, the edge and a central flow (third derivatives through vmap) on the SDPA GPT: finite, and
    the trace within 4 of its standard errors of the dense Hessian's (``torch.autograd.functional.hessian``,
    math backend)."""
    torch.manual_seed(6)
    model = TinyGPT(vocab=5, context=3, width=4, heads=2).double()
    X, y = token_data(n=4, context=3, vocab=5, seed=6)
    opt = _adamw_steps(model, X, y, steps=2)
    n = sum(p.numel() for p in model.parameters())
    trace = deep.hessian_trace(model, lm_loss, (X, y), hvps=n)
    with sdpa_kernel(SDPBackend.MATH):
        dense = dense_hessian(model, X, y, loss=lm_loss)
    assert abs(trace.estimate - float(np.trace(dense))) <= 4 * trace.stderr + 1e-8
    density = deep.spectral_density(model, lm_loss, (X, y), steps=8, probes=1)
    assert np.isfinite(density.density).all()
    assert np.isfinite(deep.measure_edge(model, lm_loss, (X, y), opt).eta_S_P)
    flow = deep.central_flow(model, lm_loss, (X, y), "gd", eta=0.5, steps=2, record_every=1)
    assert flow.status == "completed" and np.isfinite(flow.column("train_loss")).all()
