"""Preconditioned sharpness S_P = lambda_max(P^-1/2 H P^-1/2) with P read from real torch.optim state.

Independent reference: P replayed in numpy from the recorded gradients of every step (the textbook
update of each optimizer), the dense Hessian from ``torch.autograd.functional.hessian``
and numpy ``eigh`` of D H D with D = P^-1/2.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from support import dense_hessian, mse, tiny_problem

import deep
from aeos_theory.optimizers import OPTIMIZERS
from deep.measure import SharpnessTracker, top_eigenpairs
from deep.training.optim import make_optimizer
from deep.curvature.preconditioners import SUPPORTED, is_identity, preconditioner_diagonal

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 6

# name -> (constructor, numpy replay of P from the list of flat gradients)
CASES = {
    "adam": (lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.9, 0.99), eps=1e-8), dict(kind="adam", b2=0.99, eps=1e-8)),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
              dict(kind="adam", b2=0.95, eps=1e-6)),
    "adam_amsgrad": (lambda p: torch.optim.Adam(p, lr=2e-2, amsgrad=True, eps=1e-8),
                     dict(kind="adam", b2=0.999, eps=1e-8, amsgrad=True)),
    "nadam": (lambda p: torch.optim.NAdam(p, lr=1e-2, betas=(0.9, 0.99), eps=1e-7), dict(kind="nadam", b2=0.99, eps=1e-7)),
    "rmsprop": (lambda p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-8), dict(kind="rms", alpha=0.9, eps=1e-8)),
    "rmsprop_centered": (lambda p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-8, centered=True, momentum=0.5),
                         dict(kind="rms", alpha=0.9, eps=1e-8, centered=True)),
    "adagrad": (lambda p: torch.optim.Adagrad(p, lr=1e-2, eps=1e-10, initial_accumulator_value=0.1),
                dict(kind="adagrad", init=0.1, eps=1e-10)),
    "sgd": (lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9), dict(kind="sgd")),
}


def replay_p(grads: list[np.ndarray], kind: str, **h) -> np.ndarray:
    """diag P after len(grads) steps, from the textbook recurrences in numpy."""
    t = len(grads)
    z = np.zeros_like(grads[0])
    if kind == "sgd":
        return np.ones_like(z)
    if kind in ("adam", "nadam"):
        v, vmax = z.copy(), z.copy()
        for g in grads:
            v = h["b2"] * v + (1 - h["b2"]) * g**2
            vmax = np.maximum(vmax, v)
        v = vmax if h.get("amsgrad") else v
        return np.sqrt(v / (1 - h["b2"] ** t)) + h["eps"]
    if kind == "rms":
        s, gbar = z.copy(), z.copy()
        for g in grads:
            s = h["alpha"] * s + (1 - h["alpha"]) * g**2
            gbar = h["alpha"] * gbar + (1 - h["alpha"]) * g
        return np.sqrt(s - gbar**2 if h.get("centered") else s) + h["eps"]
    if kind == "adagrad":
        return np.sqrt(h["init"] + sum(g**2 for g in grads)) + h["eps"]
    raise AssertionError(kind)


def trained(case: str, seed: int = 0):
    """Tiny float64 net after STEPS real optimizer steps; returns model, data, optimizer, gradients."""
    model, x, y = tiny_problem(seed=seed)
    opt = CASES[case][0](model.parameters())
    grads = []
    for _ in range(STEPS):
        opt.zero_grad()
        mse(model(x), y).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy())
        opt.step()
    return model, x, y, opt, grads


@pytest.mark.parametrize("case", list(CASES))
def test_preconditioned_sharpness_equals_dense_eigh(case):
    model, x, y, opt, grads = trained(case)
    p_ref = replay_p(grads, **CASES[case][1])
    p = preconditioner_diagonal(opt, model).numpy()
    np.testing.assert_allclose(p, p_ref, rtol=1e-10)
    H = dense_hessian(model, x, y)
    d = 1 / np.sqrt(p_ref)
    ev = np.linalg.eigvalsh(d[:, None] * H * d[None, :])
    s_p = deep.preconditioned_sharpness(model, mse, [(x, y)], opt, tol=1e-10, max_iter=203)
    assert isinstance(s_p, float)
    assert s_p == pytest.approx(ev[-1], rel=1e-6)
    top2 = deep.preconditioned_sharpness(model, mse, [(x[:25], y[:25]), (x[25:], y[25:])], opt, k=2,
                                         tol=1e-10, max_iter=203)
    np.testing.assert_allclose(top2, ev[::-1][:2], rtol=1e-6)
    # S_P is also the top eigenvalue of the non-symmetric P^-1 H
    assert s_p == pytest.approx(max(np.linalg.eigvals(H / p_ref[:, None]).real), rel=1e-6)
    s = deep.sharpness(model, mse, [(x, y)], tol=1e-10, max_iter=203)
    assert s == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-6)


@pytest.mark.parametrize("case", ["adam", "rmsprop_centered", "adagrad"])
def test_params_and_optimizer_state_left_exactly_as_they_were(case):
    model, x, y, opt, _ = trained(case, seed=1)
    mse(model(x), y).backward()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    state = copy.deepcopy(opt.state_dict())
    tracker = SharpnessTracker(k=2, tol=1e-6, diagnostics=True)
    tracker.measure(model, mse, [(x, y)], opt)
    tracker.measure(model, mse, [(x, y)], opt)
    top_eigenpairs(model, mse, [(x, y)], opt, k=3)
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]) and torch.equal(p.grad, grads[n])
    after = opt.state_dict()
    assert after["param_groups"] == state["param_groups"]
    assert after["state"].keys() == state["state"].keys()
    for i, st in state["state"].items():
        assert st.keys() == after["state"][i].keys()
        for key, val in st.items():
            assert torch.equal(torch.as_tensor(after["state"][i][key]), torch.as_tensor(val)), key
    # the optimizer still steps identically to a deep copy that was never measured
    twin_model, *_ = tiny_problem(seed=1)
    twin_model.load_state_dict(model.state_dict())
    twin = CASES[case][0](twin_model.parameters())
    twin.load_state_dict(state)
    for m, o in ((model, opt), (twin_model, twin)):
        o.zero_grad()
        mse(m(x), y).backward()
        o.step()
    for p, q in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(p, q)


def test_result_flags_preconditioned_and_eigenvectors():
    model, x, y, opt, grads = trained("adam", seed=2)
    res = top_eigenpairs(model, mse, [(x, y)], opt, tol=1e-10, max_iter=203)
    assert res.preconditioned and res.converged and res.hvps <= 203
    H = dense_hessian(model, x, y)
    d = 1 / np.sqrt(replay_p(grads, **CASES["adam"][1]))
    u = res.eigenvectors[:, 0].numpy()
    np.testing.assert_allclose((d[:, None] * H * d[None, :]) @ u, res.top * u, atol=1e-7 * res.top)


def test_no_step_yet_unknown_class_and_foreign_params_raise():
    model, x, y = tiny_problem()
    data = [(x, y)]
    for fresh in (torch.optim.Adam(model.parameters()), torch.optim.RMSprop(model.parameters()),
                  torch.optim.Adagrad(model.parameters())):
        with pytest.raises(ValueError, match="no step yet"):
            deep.preconditioned_sharpness(model, mse, data, fresh)
    with pytest.raises(ValueError, match="^optimizer Rprop has no edge of stability to measure"):
        deep.preconditioned_sharpness(model, mse, data, torch.optim.Rprop(model.parameters()))
    with pytest.raises(ValueError, match="torch.optim.SGD, Adam, AdamW, RMSprop, NAdam, Adagrad"):
        deep.preconditioned_sharpness(model, mse, data, torch.optim.Optimizer(model.parameters(), {}))

    class MyAdam(torch.optim.Adam):
        pass

    with pytest.raises(ValueError, match="exact class"):
        deep.preconditioned_sharpness(model, mse, data, MyAdam(model.parameters()))
    other, *_ = tiny_problem(seed=3)
    with pytest.raises(ValueError, match="not in the optimizer"):
        deep.preconditioned_sharpness(model, mse, data, torch.optim.SGD(other.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="optimizer must be"):
        deep.preconditioned_sharpness(model, mse, data, None)
    with pytest.raises(ValueError, match="optimizer must be"):
        deep.preconditioned_sharpness(model, mse, data, "adam")


# package name -> (torch class, keyword arguments, rule of its P), written here from torch.optim's docs
TORCH_OF = {
    "gd": ("SGD", {"lr": 0.1, "momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False}, "sgd"),
    "heavy_ball": ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": False}, "sgd"),
    "nesterov": ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": True}, "sgd"),
    "adam": ("Adam", {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0}, "adam"),
    "adamw": ("AdamW", {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}, "adam"),
    "rmsprop": ("RMSprop", {"lr": 0.1, "alpha": 0.99, "eps": 1e-8, "momentum": 0, "weight_decay": 0}, "rms"),
    "nadam": ("NAdam", {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0}, "nadam"),
}


@pytest.mark.parametrize("name", list(TORCH_OF))
def test_every_registry_optimizer_builds_torch_and_its_p_is_read(name):
    """make_optimizer builds the torch class with torch's defaults (written in TORCH_OF), and after real
    steps its P equals the numpy replay of that torch class's textbook rule (the optimizers beyond the
    paper's seven: tests/test_zoo_deep.py)."""
    assert set(TORCH_OF) <= set(OPTIMIZERS)
    cls, kwargs, kind = TORCH_OF[name]
    model, x, y = tiny_problem(seed=5)
    opt = make_optimizer(name, model.parameters(), {"eta": 0.1})
    assert type(opt) is getattr(torch.optim, cls)
    for key, value in kwargs.items():
        assert opt.param_groups[0][key] == value, key
    assert is_identity(opt) == (kind == "sgd") and cls in SUPPORTED
    grads = []
    for _ in range(3):
        opt.zero_grad()
        mse(model(x), y).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy())
        opt.step()
    hyper = {"adam": dict(kind="adam", b2=0.999, eps=1e-8), "nadam": dict(kind="nadam", b2=0.999, eps=1e-8),
             "rms": dict(kind="rms", alpha=0.99, eps=1e-8), "sgd": dict(kind="sgd")}[kind]
    np.testing.assert_allclose(preconditioner_diagonal(opt, model).numpy(), replay_p(grads, **hyper), rtol=1e-10)
