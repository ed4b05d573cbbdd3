"""deep.measure.per_example: h_i = w^T H_i w against each example's dense Hessian (torch.autograd.functional.hessian)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deep.measure.per_example import per_example_curvatures


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _dense_curvature(model: nn.Module, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    """w^T H_i w from the dense Hessian of one example's loss, built by torch.autograd.functional.hessian."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts, at = {}, 0
        for name, shape in zip(names, shapes):
            size = shape.numel()
            parts[name] = theta[at:at + size].view(shape)
            at += size
        out = torch.func.functional_call(model, parts, (x[None],))
        return ((out - y[None]) ** 2).mean()

    hessian = torch.autograd.functional.hessian(loss, flat)
    return float(w @ hessian @ w)


def test_per_example_curvatures_match_dense_hessians_over_two_chunks() -> None:
    model = _model()
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, 2, generator=g, dtype=torch.float64)
    n = sum(p.numel() for p in model.parameters())
    w = torch.randn(n, generator=g, dtype=torch.float64)
    mse = lambda out, y: ((out - y) ** 2).mean()  # noqa: E731
    h = per_example_curvatures(model, mse, [(X[:4], Y[:4]), (X[4:], Y[4:])], w)
    expected = torch.tensor([_dense_curvature(model, X[i], Y[i], w) for i in range(7)], dtype=torch.float64)
    assert h.shape == (7,)
    assert torch.allclose(h, expected, rtol=1e-10, atol=1e-12)


def test_direction_of_the_wrong_shape_is_refused() -> None:
    model = _model()
    with pytest.raises(ValueError, match="direction must be a flat vector"):
        per_example_curvatures(model, nn.MSELoss(), [(torch.zeros(2, 3).double(), torch.zeros(2, 2).double())],
                               torch.zeros(5, dtype=torch.float64))
