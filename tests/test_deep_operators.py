"""The operator protocol, the HVP strategies, parameter blocks and both ends of the spectrum.

Independent references: the dense float64 Hessian from ``torch.autograd.functional.hessian`` (``support``)
and numpy ``eigh``, scipy ``eigsh`` on the exported LinearOperator, and preconditioners replayed in
numpy from Adam's recorded gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import eigsh
from support import dense_hessian, mse, tiny_problem

import deep
from deep.curvature.lanczos import lanczos
from deep.curvature.operators import CallableOperator, CurvatureOperator, DiagonalOperator, PreconditionedOperator
from deep.curvature.hessian import CachedDoubleBackward, hessian_operator

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STRATEGIES = ("forward_over_reverse", "reverse_over_reverse", "cached_double_backward")


def adam_steps(model, x, y, steps=5, b2=0.99):
    """Adam steps; returns the optimizer and P = sqrt(v / (1 - b2^t)) + eps replayed in numpy."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, b2))
    v = 0.0
    for _ in range(steps):
        opt.zero_grad()
        mse(model(x), y).backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
        v = b2 * v + (1 - b2) * g**2
        opt.step()
    return opt, np.sqrt(v / (1 - b2**steps)) + 1e-8


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_is_the_dense_hessian(strategy):
    model, x, y = tiny_problem(seed=3)
    H = dense_hessian(model, x, y)
    chunks = [(x[:13], y[:13]), (x[13:], y[13:])]
    op = hessian_operator(model, mse, chunks, strategy=strategy)
    assert isinstance(op, CurvatureOperator) and op.strategy == strategy and op.shape == (203, 203)
    np.testing.assert_allclose(op.to_dense().numpy(), H, rtol=1e-9, atol=1e-11)
    assert op.matvecs == 203


def test_cached_strategy_respects_the_memory_budget():
    model, x, y = tiny_problem(seed=4)
    H = dense_hessian(model, x, y)
    v = torch.randn(203, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    chunks = [(x[:10], y[:10]), (x[10:25], y[10:25]), (x[25:], y[25:])]
    full = CachedDoubleBackward(model, mse, chunks)
    full(v)
    assert full.cached_chunks == full.total_chunks == 3 and full.graph_bytes > 0
    one = CachedDoubleBackward(model, mse, chunks, memory_budget=full.graph_bytes // 2)
    none = CachedDoubleBackward(model, mse, chunks, memory_budget=0)
    for op in (one, none):
        np.testing.assert_allclose(op(v).numpy(), H @ v.numpy(), rtol=1e-9, atol=1e-11)
    assert 1 <= one.cached_chunks < 3 and "chunks cached" in one.strategy
    assert none.cached_chunks == 0 and none.graph_bytes == 0
    # the automatic choice is the cached strategy, and its start direction is the full-batch gradient
    auto = hessian_operator(model, mse, chunks)
    assert auto.strategy == "cached_double_backward"
    model.zero_grad()
    mse(model(x), y).backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(auto.start_direction(), g, rtol=1e-10, atol=1e-12)


def test_batched_products_through_the_kept_graph(monkeypatch):
    """matmat of the cached strategy: blocks of columns in one batched backward pass, equal to H V."""
    from deep.curvature import hessian

    model, x, y = tiny_problem(seed=6)
    H = dense_hessian(model, x, y)
    V = torch.randn(203, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    chunks = [(x[:13], y[:13]), (x[13:], y[13:])]
    op = CachedDoubleBackward(model, mse, chunks)
    assert op.block_size() > 1  # a small graph: many columns per pass (this call builds the graph)
    monkeypatch.setattr(hessian, "BATCH_BYTES", 7 * op.graph_bytes)  # blocks of 7: 7 + 7 + 6 columns
    assert op.block_size() == 7
    np.testing.assert_allclose(op.matmat(V).numpy(), H @ V.numpy(), rtol=1e-9, atol=1e-11)
    assert op.matvecs == 20
    original = torch.autograd.grad

    def no_batching_rule(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented")
        return original(*args, **kwargs)
    monkeypatch.setattr(torch.autograd, "grad", no_batching_rule)
    fallback = CachedDoubleBackward(model, mse, chunks)
    np.testing.assert_allclose(fallback.matmat(V).numpy(), H @ V.numpy(), rtol=1e-9, atol=1e-11)
    assert fallback.block_size() == 1  # remembered: later products go one at a time
    monkeypatch.setattr(torch.autograd, "grad", original)
    over = CachedDoubleBackward(model, mse, chunks, memory_budget=0)  # nothing kept: one column at a time
    assert over.block_size() == 1
    np.testing.assert_allclose(over.matmat(V[:, :3]).numpy(), H @ V[:, :3].numpy(), rtol=1e-9, atol=1e-11)
    opt, p = adam_steps(model, x, y)
    pre = deep.curvature_operator(model, mse, chunks, opt)
    assert pre.block_size() == 7
    M = np.diag(p ** -0.5) @ dense_hessian(model, x, y) @ np.diag(p ** -0.5)
    np.testing.assert_allclose(pre.matmat(V).numpy(), M @ V.numpy(), rtol=1e-8, atol=1e-10)


def test_compiled_strategy_is_the_dense_hessian_and_falls_back(monkeypatch):
    """strategy="compiled" through dynamo and AOT autograd (the "aot_eager" backend stands in for inductor's
    C++ compilation, minutes here; the benchmark runs inductor), and the fallback when compilation fails."""
    from deep.curvature import hessian

    model, x, y = tiny_problem(seed=3)
    H = dense_hessian(model, x, y)
    V = torch.randn(203, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    monkeypatch.setattr(hessian, "COMPILE_BACKEND", "aot_eager")
    op = hessian_operator(model, mse, (x, y), strategy="compiled")
    np.testing.assert_allclose(op.matmat(V).numpy(), H @ V.numpy(), rtol=1e-9, atol=1e-11)
    assert op.strategy == "compiled" and model in hessian._COMPILED  # kept for the next operator

    def broken(graph, example_inputs):
        raise RuntimeError("no compiler here")
    monkeypatch.setattr(hessian, "COMPILE_BACKEND", broken)
    other, x2, y2 = tiny_problem(seed=4)
    fallback = hessian_operator(other, mse, (x2, y2), strategy="compiled")
    np.testing.assert_allclose(fallback.matmat(V).numpy(), dense_hessian(other, x2, y2) @ V.numpy(), rtol=1e-9,
                               atol=1e-11)
    assert fallback.strategy.startswith("cached_double_backward (compilation failed")


def test_protocol_scipy_export_user_operator_and_composition():
    model, x, y = tiny_problem(seed=5)
    H = dense_hessian(model, x, y)
    op = deep.curvature_operator(model, mse, [(x, y)])
    ref = np.sort(np.linalg.eigvalsh(H))[::-1]
    top = eigsh(op.to_scipy(), k=2, which="LA", tol=1e-10, v0=np.ones(203))[0][::-1]
    np.testing.assert_allclose(top, ref[:2], rtol=1e-8)
    # a user's plain function is an operator too (through lanczos and as a CallableOperator)
    Ht = torch.tensor(H)
    res = lanczos(lambda v: Ht @ v, 203, tol=1e-10, max_iter=203, dtype=torch.float64)
    assert res.eigenvalues[0].item() == pytest.approx(ref[0], rel=1e-9)
    user = CallableOperator(lambda v: Ht @ v, 203, dtype=torch.float64)
    assert lanczos(user, tol=1e-10, max_iter=203).eigenvalues[0].item() == pytest.approx(ref[0], rel=1e-9)
    # H + diag(wd): coupled weight decay shifts the spectrum; P^-1/2 (H + D) P^-1/2 by composition
    wd = torch.full((203,), 0.3, dtype=torch.float64)
    shifted = op + DiagonalOperator(wd)
    assert lanczos(shifted, tol=1e-10, max_iter=203).eigenvalues[0].item() == pytest.approx(ref[0] + 0.3, rel=1e-9)
    p = torch.linspace(0.5, 2.0, 203, dtype=torch.float64)
    d = p.rsqrt().numpy()
    pre = PreconditionedOperator(shifted, p)
    expected = np.linalg.eigvalsh(d[:, None] * (H + 0.3 * np.eye(203)) * d[None, :])[-1]
    assert lanczos(pre, tol=1e-10, max_iter=203).eigenvalues[0].item() == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="flat vector"):
        op(torch.ones(3, dtype=torch.float64))


def test_smallest_end_of_the_spectrum_for_h_and_preconditioned():
    model, x, y = tiny_problem(seed=6)
    opt, p = adam_steps(model, x, y)
    H = dense_hessian(model, x, y)
    ev = np.linalg.eigvalsh(H)
    assert ev[0] < 0  # a tanh net off its minimum has negative curvature
    low = deep.sharpness(model, mse, (x, y), which="smallest", tol=1e-10, max_iter=203)
    assert low == pytest.approx(ev[0], rel=1e-6)
    low3 = deep.sharpness(model, mse, (x, y), k=3, which="smallest", tol=1e-10, max_iter=203)
    np.testing.assert_allclose(low3, ev[:3], rtol=1e-6)
    d = 1 / np.sqrt(p)
    evp = np.linalg.eigvalsh(d[:, None] * H * d[None, :])
    res = deep.top_eigenpairs(model, mse, (x, y), opt, k=2, which="smallest", tol=1e-10, max_iter=203)
    np.testing.assert_allclose(res.eigenvalues, evp[:2], rtol=1e-6)
    assert res.which == "smallest" and res.preconditioned and res.strategy == "cached_double_backward"
    with pytest.raises(ValueError, match="which must be one of largest, smallest"):
        deep.sharpness(model, mse, (x, y), which="top")


def test_parameter_blocks_give_the_dense_sub_block():
    model, x, y = tiny_problem(seed=7)
    opt, p = adam_steps(model, x, y)
    H = dense_hessian(model, x, y)
    names = [n for n, _ in model.named_parameters()]
    sizes = [q.numel() for q in model.parameters()]
    offsets = dict(zip(names, np.cumsum([0] + sizes[:-1])))
    block = ["2.weight", "2.bias"]  # the middle layer
    idx = np.concatenate([np.arange(offsets[n], offsets[n] + model.get_parameter(n).numel()) for n in block])
    H_bb = H[np.ix_(idx, idx)]
    for selection in (block, model[2], [model[2].weight, model[2].bias]):
        s = deep.sharpness(model, mse, (x, y), params=selection, tol=1e-10, max_iter=len(idx))
        assert s == pytest.approx(np.linalg.eigvalsh(H_bb)[-1], rel=1e-7)
    d = 1 / np.sqrt(p[idx])
    s_p = deep.preconditioned_sharpness(model, mse, (x, y), opt, params=block, tol=1e-10, max_iter=len(idx))
    assert s_p == pytest.approx(np.linalg.eigvalsh(d[:, None] * H_bb * d[None, :])[-1], rel=1e-7)
    op = hessian_operator(model, mse, (x, y), params=block)
    assert op.layout.names == tuple(block) and op.n == len(idx)
    tracked = deep.SharpnessTracker(params=block, tol=1e-10, max_iter=len(idx), diagnostics=True).measure(
        model, mse, (x, y), opt)
    assert tracked["sharpness"] == pytest.approx(np.linalg.eigvalsh(H_bb)[-1], rel=1e-7)
    assert tracked["preconditioned_sharpness"] == pytest.approx(s_p, rel=1e-7) and 0 <= tracked["gradient_overlap"] <= 1
    with pytest.raises(ValueError, match="params names must be"):
        deep.sharpness(model, mse, (x, y), params=["nope"])
    with pytest.raises(ValueError, match="wrap it in a list"):
        deep.sharpness(model, mse, (x, y), params="2.weight")
