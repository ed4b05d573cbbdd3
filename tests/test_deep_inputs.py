"""What a user passes just works: data forms, torch.nn and functional losses, dtypes, train-mode models.

Independent references: dense float64 Hessians from ``torch.autograd.functional.hessian`` (``support``)
with the loss written out in the test, and numpy ``eigh``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import dense_hessian, mse, tiny_problem
from torch import nn

import deep
from deep.curvature.hessian import hessian_operator

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STRATEGIES = ("auto", "forward_over_reverse", "reverse_over_reverse", "cached_double_backward")


def top(H: np.ndarray) -> float:
    return float(np.linalg.eigvalsh(H)[-1])


def test_every_form_of_data_gives_the_full_batch_sharpness():
    model, x, y = tiny_problem(seed=1, n=37)
    expected = top(dense_hessian(model, x, y))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)  # last batch: 5
    dataset = deep.Dataset("toy", x, y, 3, (5,), "regression")
    for data in ((x, y), [(x, y)], loader, dataset, [(x[:30], y[:30]), (x[30:], y[30:])]):
        assert deep.sharpness(model, mse, data, tol=1e-10, max_iter=203) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_torch_losses_work_with_every_strategy(strategy):
    model, x, y = tiny_problem(seed=2)
    H = dense_hessian(model, x, y, loss=lambda f, t: ((f - t) ** 2).mean())  # nn.MSELoss written out
    v = torch.randn(203, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for loss in (nn.MSELoss(), F.mse_loss):
        op = hessian_operator(model, loss, (x, y), strategy=strategy)
        np.testing.assert_allclose(op(v).numpy(), H @ v.numpy(), rtol=1e-9, atol=1e-12)
    if strategy == "forward_over_reverse":  # jvp over grad of mse_loss fails in torch: the fallback says so
        assert "forward AD unsupported" in op.strategy
    labels = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(1))
    Hce = dense_hessian(model, x, labels, loss=lambda f, t: -torch.log_softmax(f, 1)[torch.arange(40), t].mean())
    op = hessian_operator(model, nn.CrossEntropyLoss(), (x, labels), strategy=strategy)
    np.testing.assert_allclose(op(v).numpy(), Hce @ v.numpy(), rtol=1e-9, atol=1e-12)


def test_data_is_cast_to_the_models_dtype_and_sum_losses_are_refused():
    model, x, y = tiny_problem(seed=3)  # float64 model
    expected = top(dense_hessian(model, x, y))
    s = deep.sharpness(model, mse, (x.float(), y.float()), tol=1e-10, max_iter=203)
    assert s == pytest.approx(expected, rel=1e-5)  # the float32 data's round-off only
    with pytest.raises(ValueError, match="reduction='mean'"):
        deep.sharpness(model, nn.MSELoss(reduction="sum"), (x, y))
    with pytest.raises(ValueError, match="data must be"):
        deep.sharpness(model, mse, x)


def test_train_mode_dropout_and_batchnorm_are_measured_in_eval_mode_and_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.Tanh(), nn.Dropout(0.5),
                          nn.Linear(12, 3)).double()
    x = torch.randn(40, 5, dtype=torch.float64)
    y = torch.randn(40, 3, dtype=torch.float64)
    model.train()
    model(x)  # running statistics of BatchNorm away from their initial values
    model.eval()
    expected = top(dense_hessian(model, x, y))  # eval-mode function: dropout off, running statistics
    model.train()
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    values = [deep.sharpness(model, mse, (x, y), tol=1e-10, max_iter=200, seed=s) for s in (0, 1)]
    assert values == pytest.approx([expected, expected], rel=1e-8)
    assert model.training and all(m.training for m in model.modules())
    for k, b in model.named_buffers():
        assert torch.equal(b, buffers[k])
