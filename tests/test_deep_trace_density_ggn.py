"""Trace estimators, stochastic Lanczos quadrature and the Gauss-Newton operator against dense references.

Independent references: dense float64 Hessians (``torch.autograd.functional.hessian``), Jacobians
(``torch.autograd.functional.jacobian``) and output-space loss Hessians written in the test, numpy
``eigh``/``trace``/matrix powers; P replayed in numpy from Adam's gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import dense_hessian, digits_problem, mse, tiny_problem
from torch import nn

import deep
from deep.curvature.density import lanczos_quadrature, lanczos_quadratures
from deep.curvature.ggn import GGNOperator
from deep.curvature.hessian import hessian_operator
from deep.curvature.operators import CallableOperator
from deep.curvature.trace import block_krylov_range, trace_estimate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits_mlp():
    """A 64-20-10 tanh MLP (1510 parameters) after 200 Adam steps on 300 digits, float64: the model, data,
    optimizer, dense H, P replayed in numpy, and the eigenvalues of H and of P^-1/2 H P^-1/2."""
    threads = torch.get_num_threads()  # module scope: set up before the one_torch_thread fixture, so restore here
    torch.set_num_threads(1)
    model, x, y = digits_problem(n=300, hidden=20)
    model, x, y = model.double(), x.double(), y.double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    v = 0.0
    for _ in range(200):
        opt.zero_grad()
        mse(model(x), y).backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
        v = 0.999 * v + 0.001 * g**2
        opt.step()
    p = np.sqrt(v / (1 - 0.999**200)) + 1e-8
    H = dense_hessian(model, x, y)
    d = 1 / np.sqrt(p)
    yield model, x, y, opt, H, p, eigvalsh(H), eigvalsh(d[:, None] * H * d[None, :])
    torch.set_num_threads(threads)


def eigvalsh(A: np.ndarray) -> np.ndarray:
    """LAPACK's symmetric eigenvalues through torch (numpy's BLAS is slow on this shared machine)."""
    return torch.linalg.eigvalsh(torch.as_tensor(A)).numpy()


def test_trace_estimators_within_five_percent_with_100_hvps(digits_mlp):
    model, x, y, opt, H, p, _, _ = digits_mlp
    exact = np.trace(H)
    op = hessian_operator(model, mse, (x, y))
    errors = {}
    for method in ("lanczos_hutch++", "hutch++", "hutchinson"):
        results = [trace_estimate(op, hvps=100, estimator=method, seed=s) for s in range(6)]
        assert all(r.hvps == 100 and r.estimator == method for r in results)
        rel = np.array([r.estimate / exact - 1 for r in results])
        errors[method] = float(np.sqrt(np.mean(rel**2)))
        # the reported standard error is the spread of the estimates (within a factor 3 of the rms error)
        stderr = np.mean([r.stderr for r in results]) / exact
        assert errors[method] / 3 < stderr < 3 * errors[method] + 1e-6, (method, errors[method], stderr)
    assert errors["lanczos_hutch++"] < 0.05 and errors["hutch++"] < 0.05
    assert errors["lanczos_hutch++"] < errors["hutch++"] < errors["hutchinson"]
    # the preconditioned trace is tr(P^-1 H)
    res = deep.hessian_trace(model, mse, (x, y), opt, hvps=100, seed=0)
    assert res.estimate == pytest.approx(np.sum(np.diag(H) / p), rel=0.05)


def test_trace_is_exact_when_the_lanczos_range_spans_the_space():
    model, x, y = tiny_problem(seed=2)
    H = dense_hessian(model, x, y)
    res = deep.hessian_trace(model, mse, (x, y), hvps=406, estimator="lanczos_hutch++")
    assert res.estimate == pytest.approx(np.trace(H), rel=1e-9) and res.stderr == 0.0
    with pytest.raises(ValueError, match="estimator must be one of"):
        deep.hessian_trace(model, mse, (x, y), estimator="xtrace")


def test_block_krylov_range_spans_the_block_krylov_space():
    """Q of block_krylov_range against the space [S, A S, A^2 S] built densely in numpy from the same block S."""
    rng = np.random.default_rng(0)
    B = rng.standard_normal((40, 40))
    A = B @ B.T / 40 + np.diag(np.linspace(0, 5, 40))
    op = CallableOperator(lambda v: torch.as_tensor(A) @ v, 40, dtype=torch.float64)
    Q, low_rank = block_krylov_range(op, 12, 4, torch.Generator().manual_seed(3))
    np.testing.assert_allclose(Q.T.numpy() @ Q.numpy(), np.eye(12), atol=1e-12)
    assert low_rank == pytest.approx(np.trace(Q.T.numpy() @ A @ Q.numpy()), rel=1e-12) and op.matvecs == 12
    S = (2 * torch.randint(0, 2, (40, 4), generator=torch.Generator().manual_seed(3), dtype=torch.int8) - 1).double()
    K = np.hstack([np.linalg.matrix_power(A, j) @ S.numpy() for j in range(3)])
    residual = K - Q.numpy() @ (Q.numpy().T @ K)
    assert np.linalg.norm(residual) < 1e-9 * np.linalg.norm(K)
    Q, low_rank = block_krylov_range(op, 40, 6, torch.Generator().manual_seed(3))  # the whole space
    assert low_rank == pytest.approx(np.trace(A), rel=1e-12)


def test_probes_advanced_together_equal_one_probe_at_a_time():
    model, x, y = tiny_problem(seed=3)
    op = hessian_operator(model, mse, (x, y))
    assert op.block_size() > 1  # products of the probes batched
    Z = torch.randn(203, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    nodes, weights = lanczos_quadratures(op, Z, steps=10)
    assert op.matvecs == 30
    for j in range(3):
        alone = hessian_operator(model, mse, (x, y), strategy="reverse_over_reverse")  # one product at a time
        n1, w1 = lanczos_quadrature(alone, Z[:, j], steps=10)
        np.testing.assert_allclose(nodes[j].numpy(), n1.numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(weights[j].numpy(), w1.numpy(), rtol=1e-7, atol=1e-12)


def test_lanczos_quadrature_reproduces_the_moments_of_the_probe():
    model, x, y = tiny_problem(seed=3)
    H = dense_hessian(model, x, y)
    op = hessian_operator(model, mse, (x, y))
    v = torch.randn(203, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    nodes, weights = lanczos_quadrature(op, v, steps=8)
    u = v.numpy() / np.linalg.norm(v.numpy())
    assert weights.sum().item() == pytest.approx(1.0, rel=1e-12)
    Hp = np.eye(203)
    for power in range(2 * 8):  # Gauss quadrature with 8 nodes is exact through degree 15
        expected = u @ Hp @ u
        got = float(torch.sum(weights * nodes**power))
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-10 * np.abs(np.linalg.eigvalsh(H)).max() ** power)
        Hp = Hp @ H


def test_spectral_density_matches_the_dense_spectrum(digits_mlp):
    model, x, y, opt, H, p, ev, evp = digits_mlp
    dens = deep.spectral_density(model, mse, (x, y), steps=40, probes=6, seed=0)
    integral = np.sum((dens.density[1:] + dens.density[:-1]) * np.diff(dens.grid)) / 2
    assert integral == pytest.approx(1.0, rel=1e-9) and dens.hvps == 240
    assert dens.nodes.shape == dens.weights.shape == (6, 40)
    np.testing.assert_allclose(dens.weights.sum(axis=1), 1.0, rtol=1e-9)
    assert dens.nodes.max() == pytest.approx(ev[-1], rel=1e-6)  # the extreme Ritz values converge first
    assert ev[0] - 1e-9 <= dens.nodes.min() < 0  # Ritz values interlace: inside [lambda_min, lambda_max]
    # first and second moments (1/n) tr(A), A = H and H^2, within 4 standard errors of a Rademacher
    # probe: Var(z^T A z) = 2 (||A||_F^2 - sum_i A_ii^2)
    n = len(ev)
    for power, A in ((1, H), (2, H @ H)):
        std = np.sqrt(2 * (np.sum(A**2) - np.sum(np.diag(A) ** 2)) / 6) / n
        assert abs(dens.moment(power) - np.trace(A) / n) < 4 * std
    # the quadrature's mass above lambda_max / 2 (a handful of outliers) is the share of eigenvalues there,
    # within 4 standard errors: Var(z^T Pi z) = 2 (||Pi||_F^2 - sum_i Pi_ii^2) for the projector Pi on them
    w, V = torch.linalg.eigh(torch.as_tensor(H))
    top = V[:, w > w[-1] / 2].numpy()
    Pi_diag = np.sum(top**2, axis=1)
    std = np.sqrt(2 * (top.shape[1] - np.sum(Pi_diag**2)) / 6) / n
    mass = np.mean(np.sum(dens.weights * (dens.nodes > ev[-1] / 2), axis=1))
    assert abs(mass - top.shape[1] / n) < 4 * std and top.shape[1] >= 3
    pre = deep.spectral_density(model, mse, (x, y), opt, steps=40, probes=2, seed=1)
    assert pre.nodes.max() == pytest.approx(evp[-1], rel=1e-6)


def _dense_ggn(model, x, targets, loss) -> np.ndarray:
    """sum over the batch of J^T H_L J, with J from autograd.functional.jacobian and H_L = d^2 loss / df^2."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [q.shape for q in model.parameters()]
    flat0 = torch.cat([q.detach().reshape(-1) for q in model.parameters()])

    def outputs(flat):
        parts = dict(zip(names, (c.view(s) for c, s in zip(flat.split([s.numel() for s in shapes]), shapes))))
        return torch.func.functional_call(model, parts, (x,)).reshape(-1)

    J = torch.autograd.functional.jacobian(outputs, flat0).numpy()
    f0 = outputs(flat0).detach()
    HL = torch.autograd.functional.hessian(lambda f: loss(f.view(len(x), -1), targets), f0).numpy()
    return J.T @ HL @ J


def test_ggn_equals_the_dense_gauss_newton_for_mse_and_cross_entropy():
    model, x, y = tiny_problem(seed=5)
    labels = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(0))
    ce = nn.CrossEntropyLoss()
    for loss, targets in ((mse, y), (ce, labels)):
        G = _dense_ggn(model, x, targets, loss)
        op = GGNOperator(model, loss, [(x[:15], targets[:15]), (x[15:], targets[15:])])
        np.testing.assert_allclose(op.to_dense().numpy(), G, rtol=1e-8, atol=1e-11)
        assert np.linalg.eigvalsh(G)[0] > -1e-10  # PSD for a convex loss
        s = deep.sharpness(model, loss, (x, targets), curvature="ggn", tol=1e-10, max_iter=203)
        assert s == pytest.approx(np.linalg.eigvalsh(G)[-1], rel=1e-7)
    # a linear model under the square loss: G = H exactly
    lin = nn.Linear(5, 3).double()
    np.testing.assert_allclose(GGNOperator(lin, mse, (x, y)).to_dense().numpy(), dense_hessian(lin, x, y),
                               rtol=1e-10, atol=1e-12)
    # S of the GGN tracked beside S of H
    tracker = deep.SharpnessTracker(curvature="ggn", tol=1e-8, max_iter=203)
    assert tracker.measure(model, mse, (x, y))["sharpness"] == pytest.approx(np.linalg.eigvalsh(_dense_ggn(
        model, x, y, mse))[-1], rel=1e-6)
