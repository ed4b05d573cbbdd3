"""The empirical Fisher and K-FAC operators against dense float64 references, and against curvlinops.

References: per-example (per-token) gradients from plain ``loss.backward()`` on each term alone, summed
as (1/T) sum_t g_t g_t^T; K-FAC's factors written out in numpy for a two-layer tanh MLP (inputs,
tanh' and the loss Hessians in the outputs from ``torch.autograd.functional.hessian``), and the exact
Gauss-Newton block from ``torch.autograd.functional.jacobian`` for one example through one linear layer.
The curvlinops comparisons run in the same process and are skipped when curvlinops is not installed
(``make peers``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import mse, tiny_problem
from torch import nn

import deep
from deep.curvature.fisher import EmpiricalFisherOperator
from deep.curvature.ggn import GGNOperator
from deep.curvature.kfac import KFACOperator


class TokenCE(nn.Module):
    """Cross-entropy over every token of (b, T, V) logits (a mean over b T terms)."""

    reduction = "mean"

    def forward(self, f, y):
        return nn.functional.cross_entropy(f.reshape(-1, f.shape[-1]), y.reshape(-1))


def per_term_gradients(model: nn.Module, terms) -> np.ndarray:
    """Rows g_t = grad of each term's own loss, by plain backward on that term alone."""
    rows = []
    for loss in terms:
        model.zero_grad()
        loss().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy())
    model.zero_grad()
    return np.array(rows)


def classification_problem(seed: int = 0):
    model, x, _ = tiny_problem(seed=seed, n=23)
    labels = torch.randint(0, 3, (23,), generator=torch.Generator().manual_seed(seed))
    return model, x, labels


def test_empirical_fisher_is_the_mean_outer_product_of_per_example_gradients():
    model, x, y = tiny_problem(seed=3, n=23)
    _, _, labels = classification_problem(3)
    for loss, targets in ((mse, y), (nn.CrossEntropyLoss(), labels)):
        G = per_term_gradients(model, [lambda i=i: loss(model(x[i:i + 1]), targets[i:i + 1]) for i in range(23)])
        op = EmpiricalFisherOperator(model, loss, [(x[:9], targets[:9]), (x[9:], targets[9:])])
        F = op.to_dense().numpy()
        np.testing.assert_allclose(F, G.T @ G / 23, rtol=1e-9, atol=1e-12)
        built = deep.curvature_operator(model, loss, (x, targets), curvature="empirical_fisher")
        v = torch.randn(203, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        np.testing.assert_allclose((built @ v).numpy(), G.T @ (G @ v.numpy()) / 23, rtol=1e-9, atol=1e-12)


def test_empirical_fisher_of_a_sequence_model_has_one_term_per_token():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(5, 4), nn.Tanh(), nn.Linear(4, 5)).double()
    x = torch.randint(0, 5, (3, 4), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (3, 4), generator=torch.Generator().manual_seed(2))
    ce = nn.CrossEntropyLoss()
    G = per_term_gradients(model, [lambda b=b, t=t: ce(model(x[b:b + 1])[0, t:t + 1], y[b, t:t + 1])
                                   for b in range(3) for t in range(4)])
    F = EmpiricalFisherOperator(model, TokenCE(), (x, y)).to_dense().numpy()
    np.testing.assert_allclose(F, G.T @ G / 12, rtol=1e-9, atol=1e-12)


def _kfac_by_hand(model: nn.Sequential, x: torch.Tensor, targets, loss) -> np.ndarray:
    """Dense K-FAC of a Linear-tanh-Linear network in numpy: A1 = mean x x^T, A2 = mean a a^T (a = tanh z1),
    B2 = mean h_n (the per-example loss Hessians in the outputs), B1 = mean D_n W2^T h_n W2 D_n with
    D_n = diag(1 - a_n^2); blocks kron(B, A) (row-major weights) and B (biases)."""
    lin1, lin2 = model[0], model[2]
    X = x.numpy()
    a = torch.tanh(lin1(x)).detach()
    f = lin2(a).detach()
    n = len(x)
    h = np.array([torch.autograd.functional.hessian(lambda out, i=i: loss(out[None], targets[i:i + 1]) , f[i]).numpy()
                  for i in range(n)])
    W2, A = lin2.weight.detach().numpy(), a.numpy()
    D = 1 - A ** 2
    B2 = h.mean(axis=0)
    B1 = np.mean([(W2 * D[i]).T @ h[i] @ (W2 * D[i]) for i in range(n)], axis=0)
    A1, A2 = X.T @ X / n, A.T @ A / n
    blocks = [np.kron(B1, A1), B1, np.kron(B2, A2), B2]
    size = sum(b.shape[0] for b in blocks)
    out, i = np.zeros((size, size)), 0
    for b in blocks:
        out[i:i + b.shape[0], i:i + b.shape[0]] = b
        i += b.shape[0]
    return out


def test_kfac_equals_its_factors_written_out_for_a_two_layer_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(17, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.randn(17, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.randint(0, 3, (17,), generator=torch.Generator().manual_seed(2))
    for loss, targets in ((mse, y), (nn.MSELoss(), y), (nn.CrossEntropyLoss(), labels)):
        K = KFACOperator(model, loss, [(x[:5], targets[:5]), (x[5:], targets[5:])]).to_dense().numpy()
        np.testing.assert_allclose(K, _kfac_by_hand(model, x, targets, loss), rtol=1e-9, atol=1e-12)
        top = deep.sharpness(model, loss, (x, targets), curvature="kfac", tol=1e-10, max_iter=200)
        assert top == pytest.approx(np.linalg.eigvalsh(K)[-1], rel=1e-8)


def test_kfac_is_the_gauss_newton_for_one_example_through_one_layer():
    layer = nn.Linear(4, 3).double()
    x = torch.randn(1, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    flat0 = torch.cat([layer.weight.detach().reshape(-1), layer.bias.detach()])

    def outputs(flat):
        return x @ flat[:12].view(3, 4).T + flat[12:]
    J = torch.autograd.functional.jacobian(outputs, flat0)[0].numpy()  # (3, 15)
    for loss, target in ((nn.CrossEntropyLoss(), torch.tensor([1])), (mse, torch.zeros(1, 3, dtype=torch.float64))):
        h = torch.autograd.functional.hessian(lambda f: loss(f[None], target), outputs(flat0)[0].detach()).numpy()
        G = J.T @ h @ J
        K = KFACOperator(layer, loss, (x, target)).to_dense().numpy()
        np.testing.assert_allclose(K[:12, :12], G[:12, :12], rtol=1e-10, atol=1e-13)  # the weight block
        np.testing.assert_allclose(K[12:, 12:], G[12:, 12:], rtol=1e-10, atol=1e-13)  # the bias block
        assert np.abs(K[:12, 12:]).max() == 0  # weight and bias kept apart


def test_kfac_refuses_what_it_cannot_factor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3)).double()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="LayerNorm"):
        deep.curvature_operator(model, mse, (x, y), curvature="kfac")
    op = deep.curvature_operator(model, mse, (x, y), curvature="kfac", params=[model[0].weight, model[2].weight])
    assert op.to_dense().shape == (42, 42)
    with pytest.raises(ValueError, match="couples different rows"):
        KFACOperator(model[0], lambda f, t: f.sum() ** 2, (x, y)).matvec(torch.ones(30, dtype=torch.float64))
    with pytest.raises(ValueError, match="fisher"):
        KFACOperator(model[0], mse, (x, torch.zeros(5, 6, dtype=torch.float64)), fisher="mc")


def _curvlinops_dense(operator) -> np.ndarray:
    """The operator's matrix from one product with the identity (curvlinops multiplies the columns together)."""
    return (operator @ torch.eye(operator.shape[1], dtype=torch.float64)).numpy()


def test_against_curvlinops_empirical_fisher_and_kfac():
    curvlinops = pytest.importorskip("curvlinops")
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    cnn = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, stride=2), nn.Tanh(), nn.Flatten(),
                        nn.Linear(27, 3)).double()
    g = torch.Generator().manual_seed(0)
    inputs = {"mlp": torch.randn(11, 5, generator=g, dtype=torch.float64),
              "cnn": torch.randn(11, 2, 5, 5, generator=g, dtype=torch.float64)}
    labels = torch.randint(0, 3, (11,), generator=g)
    values = torch.randn(11, 3, generator=g, dtype=torch.float64)
    for name, model in (("mlp", mlp), ("cnn", cnn)):
        x, params = inputs[name], list(model.parameters())
        for loss, targets in ((nn.CrossEntropyLoss(), labels), (nn.MSELoss(), values)):
            data = [(x[:6], targets[:6]), (x[6:], targets[6:])]
            # curvlinops counts MSELoss's mean over the C = 3 outputs into its empirical terms: C times ours
            scale = 3.0 if isinstance(loss, nn.MSELoss) else 1.0
            if name == "mlp":  # the same products on the CNN: the convolution is K-FAC's own case
                ef = curvlinops.EFLinearOperator(model, loss, params, data, check_deterministic=False)
                np.testing.assert_allclose(_curvlinops_dense(ef), scale * EmpiricalFisherOperator(model, loss, data)
                                           .to_dense().numpy(), rtol=1e-6, atol=1e-9)
            for fisher in ("type-2", "empirical"):
                theirs = curvlinops.KFACLinearOperator(model, loss, params, data, fisher_type=fisher,
                                                       check_deterministic=False)
                ours = KFACOperator(model, loss, data, fisher=fisher).to_dense().numpy()
                np.testing.assert_allclose(_curvlinops_dense(theirs), (scale if fisher == "empirical" else 1.0) * ours,
                                           rtol=1e-6, atol=1e-9)


def test_gauss_newton_and_fisher_share_the_kept_graphs():
    """F = G when every term's loss Hessian is the outer product of its gradient: l = (f - y)^2 / 2 on one
    output with |f - y| = 1 (h = 1 = e^2)."""
    model, x, _ = tiny_problem(seed=1, n=10)
    model[-1] = nn.Linear(8, 1).double()
    f = model(x).detach()
    targets = f - torch.where(torch.arange(10)[:, None] % 2 == 0, 1.0, -1.0).double()
    G = GGNOperator(model, mse, (x, targets)).to_dense()
    F = EmpiricalFisherOperator(model, mse, (x, targets)).to_dense()
    torch.testing.assert_close(F, G, rtol=1e-10, atol=1e-12)
