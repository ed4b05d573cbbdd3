"""Independent references and small problems shared by the tests (imported by test modules; fixtures
wrapping them live in ``conftest.py``).

Nothing here calls the package's own measurement code: dense Hessians come from
``torch.autograd.functional.hessian``, gradients from plain ``loss.backward()``, the fake CIFAR-10
folder is written in the official pickle format by hand.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1/2 ||f - y||^2 averaged over the chunk's examples (the paper's square loss), written out here."""
    return 0.5 * ((outputs - targets) ** 2).sum(dim=1).mean()


def tiny_problem(seed: int = 0, n: int = 40, dtype: torch.dtype = torch.float64):
    """MLP 5-12-8-3 tanh (203 parameters) on random regression data: (model, x, y)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
    x = torch.randn(n, 5, generator=g, dtype=dtype)
    y = torch.randn(n, 3, generator=g, dtype=dtype)
    return model, x, y


def digits_problem(n: int = 300, hidden: int = 40, seed: int = 0):
    """sklearn digits (first n, /16, one-hot) and a 64-hidden-10 tanh MLP (3010 parameters at hidden 40)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data[:n] / 16.0, dtype=torch.float32)
    y = torch.nn.functional.one_hot(torch.tensor(d.target[:n]), 10).float()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))
    return model, x, y


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss=mse) -> np.ndarray:
    """H of the full-batch loss by torch.autograd.functional.hessian on the flat parameter vector."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def total(flat):
        parts = dict(zip(names, (c.view(s) for c, s in zip(flat.split([s.numel() for s in shapes]), shapes))))
        return loss(torch.func.functional_call(model, parts, (x,)), y)

    return torch.autograd.functional.hessian(total, flat0).numpy()


def autograd_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Plain loss.backward() gradient (no torch.func), flat; the model's .grad is left cleared."""
    model.zero_grad()
    mse(model(x), y).backward()
    g = torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()])
    model.zero_grad()
    return g


def write_fake_cifar(folder: Path, per_batch: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """data_batch_1..5 as the official python release stores them: dict(b'data' uint8 (N, 3072), b'labels')."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    datas, labels = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        lab = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump({b"batch_label": f"training batch {i} of 5".encode(), b"labels": lab, b"data": data,
                         b"filenames": [b"x.png"] * per_batch}, fh)
        datas.append(data)
        labels += lab
    return np.concatenate(datas), np.array(labels)
