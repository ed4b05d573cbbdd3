"""measure_edge and S_P for the optimizers beyond the paper's seven, against dense float64 references.

References written here, independent of the package's readers: P replayed in numpy from the gradients and
iterates recorded before each real step (the textbook recurrence of each class, from torch 2.13's and
pytorch_optimizer's sources), the dense Hessian from ``torch.autograd.functional.hessian``, Kronecker
factors by numpy ``eigh`` and ``kron``, and numpy ``eigvalsh`` of D^1/2 (H + W) D^1/2 with D = e P^-1.
"Exactly as the step used it" is checked on the step itself where the update is linear in P^-1 (Shampoo,
SOAP across a refresh of its eigenbasis): the parameter change equals -e P^-1 (its gradient or momentum).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from torch import nn

import deep
from aeos_theory import OPTIMIZERS
from deep.curvature import BlockPreconditioner, KroneckerBlock, preconditioner_of
from deep.curvature.params import ParamLayout
from support import dense_hessian, mse, tiny_problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOL = dict(tol=1e-10, max_iter=203)


def _train(model, opts, x, y, steps: int):
    """Real full-batch steps; returns, per step, the flat iterate and the flat gradient before it (numpy)."""
    opts = opts if isinstance(opts, list) else [opts]
    seen = []
    for _ in range(steps):
        for o in opts:
            o.zero_grad()
        mse(model(x), y).backward()
        seen.append((torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy(),
                     torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy()))
        for o in opts:
            o.step()
    return seen


def _split(model, flat):
    out, i = [], 0
    for p in model.parameters():
        out.append(flat[i:i + p.numel()].reshape(p.shape))
        i += p.numel()
    return out


def _top(H, half, w=0.0):
    """lambda_max(half (H + w I) half^T) for a dense D^1/2 (matrix) or its diagonal (vector)."""
    half = np.diag(half) if half.ndim == 1 else half
    return float(np.linalg.eigvalsh(half @ (H + w * np.eye(len(H))) @ half.T)[-1])


# ---------------------------------------------------------------- diagonal P, replayed in numpy
def _replay(name: str, seen, hyper: dict, model) -> tuple[np.ndarray, float, float]:
    """(diag of D = e / P, the coupled decay W, c_t) after len(seen) steps, from the textbook recurrences."""
    t, wd = len(seen), hyper.get("weight_decay", 0.0)
    grads = [g + (0.0 if name == "adafactor" else wd) * x for x, g in seen]
    lr = hyper["lr"]
    if name == "adagrad":
        p = np.sqrt(0.1 + sum(g**2 for g in grads)) + 1e-10
        return lr / p, wd, 2 * (1 + (t - 1) * hyper["lr_decay"])
    if name == "adamax":
        u = np.zeros_like(grads[0])
        for g in grads:
            u = np.maximum(0.999 * u, np.abs(g) + 1e-8)
        return lr / u, wd, 2 * 1.9 / 0.1 * (1 - 0.9**t)
    if name == "adadelta":
        s, a = np.zeros_like(grads[0]), np.zeros_like(grads[0])
        for g in grads:
            s = 0.9 * s + 0.1 * g**2
            delta = np.sqrt(a + 1e-6) / np.sqrt(s + 1e-6) * g
            a_before, a = a, 0.9 * a + 0.1 * delta**2
        return lr * np.sqrt(a_before + 1e-6) / np.sqrt(s + 1e-6), wd, 2.0
    if name == "radam":
        b2, v = 0.999, np.zeros_like(grads[0])
        for g in grads:
            v = b2 * v + (1 - b2) * g**2
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        rect = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) if rho > 5 else 1.0
        p = (np.sqrt(v) + 1e-8) / math.sqrt(1 - b2**t) if rho > 5 else np.ones_like(v)
        return lr / p, wd, 2 * 1.9 / 0.1 * (1 - 0.9**t) / rect
    if name == "asgd":
        return np.full_like(grads[0], lr), wd + hyper["lambd"], 2 * (1 + hyper["lambd"] * lr * (t - 1)) ** 0.75
    if name == "adafactor":  # factored second moment of the matrices, EMA of the vectors; relative step, clipping
        d, eps1 = [], torch.finfo(torch.float64).eps
        shapes = [p.shape for p in model.parameters()]
        rows = [None] * len(shapes)
        for step, (x, g) in enumerate(seen, start=1):
            beta_t = 1 - step**-0.8
            parts_g, parts_x = _split(model, g), _split(model, x)
            d = []
            for i, (gi, xi) in enumerate(zip(parts_g, parts_x)):
                if gi.ndim == 2:
                    r, c = (gi**2).mean(axis=1, keepdims=True), (gi**2).mean(axis=0, keepdims=True)
                    rows[i] = (r, c) if rows[i] is None else (beta_t * rows[i][0] + (1 - beta_t) * r,
                                                              beta_t * rows[i][1] + (1 - beta_t) * c)
                    v = rows[i][0] @ rows[i][1] / max(rows[i][0].mean(), eps1)
                else:
                    rows[i] = (1 - beta_t) * gi**2 if rows[i] is None else beta_t * rows[i] + (1 - beta_t) * gi**2
                    v = rows[i]
                p = np.sqrt(np.maximum(v, eps1**2))
                alpha = max(1e-3, np.sqrt((xi**2).mean())) * min(lr, step**-0.5)
                denom = max(1.0, np.sqrt(((gi / p) ** 2).mean()))
                d.append((alpha / denom / p).reshape(-1))
        return np.concatenate(d), 0.0, 2 - lr * wd
    raise AssertionError(name)


DIAGONAL = {
    "adagrad": (lambda p: torch.optim.Adagrad(p, lr=5e-2, lr_decay=0.05, initial_accumulator_value=0.1,
                                              weight_decay=0.1), {"lr": 5e-2, "lr_decay": 0.05, "weight_decay": 0.1}),
    "adamax": (lambda p: torch.optim.Adamax(p, lr=1e-2, weight_decay=0.2), {"lr": 1e-2, "weight_decay": 0.2}),
    "adadelta": (lambda p: torch.optim.Adadelta(p, lr=1.0, weight_decay=0.1), {"lr": 1.0, "weight_decay": 0.1}),
    "radam": (lambda p: torch.optim.RAdam(p, lr=1e-2, weight_decay=0.1), {"lr": 1e-2, "weight_decay": 0.1}),
    "asgd": (lambda p: torch.optim.ASGD(p, lr=2e-2, lambd=0.5, weight_decay=0.1),
             {"lr": 2e-2, "lambd": 0.5, "weight_decay": 0.1}),
    "adafactor": (lambda p: torch.optim.Adafactor(p, lr=5e-2, weight_decay=0.5), {"lr": 5e-2, "weight_decay": 0.5}),
}


@pytest.mark.parametrize("name", list(DIAGONAL))
@pytest.mark.parametrize("steps", [4, 9])
def test_measure_edge_equals_the_dense_reference(name, steps):
    """eta_S_P = lambda_max(D^1/2 (H + W) D^1/2) to 1e-6 against numpy, c_t against the closed form written in
    :func:`_replay` (RAdam: warm at step 4, rectified at 9); the ratio is their quotient."""
    model, x, y = tiny_problem(seed=2)
    opt = DIAGONAL[name][0](model.parameters())
    seen = _train(model, opt, x, y, steps)
    d, w, c = _replay(name, seen, DIAGONAL[name][1], model)
    reference = _top(dense_hessian(model, x, y), np.sqrt(d), w)
    edge = deep.measure_edge(model, mse, [(x, y)], opt, **TOL)
    assert edge.optimizer == name and edge.step == steps
    assert edge.eta_S_P == pytest.approx(reference, rel=1e-6)
    assert edge.constant == pytest.approx(c, rel=1e-12)
    assert edge.ratio == pytest.approx(reference / c, rel=1e-6)
    tracked = deep.SharpnessTracker(**TOL).measure(model, mse, [(x, y)], opt)
    assert tracked["eta_S_P"] == pytest.approx(reference, rel=1e-6)
    if name == "radam":
        assert edge.note.startswith("RAdam warm" if steps == 4 else "RAdam rectified")
        assert edge.note.endswith("rectified from step 6")


def test_make_optimizer_builds_every_registry_entry_with_torch_defaults():
    """Every name of the registry builds its class (torch.optim's, or pytorch_optimizer's when installed) with
    the defaults of its source; Muon on matrices."""
    expected = {"adagrad": ("Adagrad", {"lr_decay": 0.0, "eps": 1e-10}), "adamax": ("Adamax", {"betas": (0.9, 0.999)}),
                "adadelta": ("Adadelta", {"rho": 0.9, "eps": 1e-6}), "radam": ("RAdam", {"betas": (0.9, 0.999)}),
                "asgd": ("ASGD", {"lambd": 1e-4, "alpha": 0.75}), "adafactor": ("Adafactor", {"weight_decay": 0.0}),
                "muon": ("Muon", {"momentum": 0.95, "nesterov": True, "weight_decay": 0.1}),
                "muon_plain": ("Muon", {"momentum": 0.95, "nesterov": False}),
                "shampoo": ("Shampoo", {"momentum": 0.0}), "soap": ("SOAP", {"betas": (0.95, 0.95), "weight_decay": 1e-2})}
    from deep.training.optim import make_optimizer
    from test_deep_measure_precond import TORCH_OF

    assert set(expected) | set(TORCH_OF) == set(OPTIMIZERS)
    model, *_ = _matrices_model()
    for name, (cls, defaults) in expected.items():
        if importlib.util.find_spec(OPTIMIZERS[name].torch_module) is None:
            continue  # pytorch_optimizer (the optional extra) is not installed
        opt = make_optimizer(name, model.parameters(), {"eta": 0.1})
        assert type(opt).__name__ == cls
        for key, value in defaults.items():
            assert opt.param_groups[0][key] == value, (name, key)


# ---------------------------------------------------------------- block preconditioners
def _matrices_model(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A bias-free 5-7-3 tanh MLP (a wide and a tall weight, 56 parameters) on random data, float64."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7, bias=False), nn.Tanh(), nn.Linear(7, 3, bias=False)).double()
    return model, torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randn(30, 3, generator=g,
                                                                                    dtype=torch.float64)


def _power(matrix: np.ndarray, power: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.clip(values, 0, None) ** power) @ vectors.T


def _muon_half(model, seen, mu: float, lr: float) -> np.ndarray:
    """D^1/2 of Muon, dense: per weight (m x n) with M = (1 - mu) g + mu b (b the EMA), (lr k)^1/2 times
    (M M^T)^-1/4 (x) I (wide, row-major) or I (x) (M^T M)^-1/4 (tall), k = sqrt(max(1, m/n))."""
    blocks = []
    bufs = [np.zeros(p.shape) for p in model.parameters()]
    for _, g in seen:
        ms = []
        for i, gi in enumerate(_split(model, g)):
            bufs[i] = mu * bufs[i] + (1 - mu) * gi
            ms.append((1 - mu) * gi + mu * bufs[i])
    for m in ms:
        rows, cols = m.shape
        k = math.sqrt(max(1, rows / cols))
        if rows <= cols:
            blocks.append(math.sqrt(lr * k) * np.kron(_power(m @ m.T, -0.25), np.eye(cols)))
        else:
            blocks.append(math.sqrt(lr * k) * np.kron(np.eye(rows), _power(m.T @ m, -0.25)))
    n = sum(b.shape[0] for b in blocks)
    out, i = np.zeros((n, n)), 0
    for b in blocks:
        out[i:i + len(b), i:i + len(b)] = b
        i += len(b)
    return out


def test_muon_edge_equals_the_dense_kronecker_reference():
    """Muon (Nesterov, torch's defaults but lr): eta_S_P against numpy's (M M^T)^-1/4 (x) I and
    I (x) (M^T M)^-1/4 with M replayed from the gradients, to 1e-6; c = (1 + mu)(2 - lr wd)/((1 - mu)(1 + 2 mu))."""
    model, x, y = _matrices_model()
    opt = torch.optim.Muon(model.parameters(), lr=0.02)
    seen = _train(model, opt, x, y, 6)
    half = _muon_half(model, seen, 0.95, 0.02)
    edge = deep.measure_edge(model, mse, [(x, y)], opt, **TOL)
    assert edge.optimizer == "muon" and edge.step is None and "approximation" in edge.note
    assert edge.eta_S_P == pytest.approx(_top(dense_hessian(model, x, y), half), rel=1e-6)
    assert edge.constant == pytest.approx(1.95 * (2 - 0.02 * 0.1) / (0.05 * 2.9), rel=1e-12)


def test_muon_and_adamw_together():
    """Muon on the weights, AdamW on the biases: each part's edge on its own block of H against numpy, and the
    combined ratio lambda_max(D_c^1/2 H D_c^1/2), D_c = D_i / c_i, against the dense whole."""
    model, x, y = tiny_problem(seed=3)
    weights = [p for p in model.parameters() if p.ndim == 2]
    biases = [p for p in model.parameters() if p.ndim == 1]
    muon, adamw = torch.optim.Muon(weights, lr=0.02), torch.optim.AdamW(biases, lr=1e-2)
    _train(model, [muon, adamw], x, y, 5)
    H = dense_hessian(model, x, y)
    layout = ParamLayout.of(model)
    dense = preconditioner_of([muon, adamw], model, layout).to_dense().numpy()  # checked piecewise below
    is_weight = np.concatenate([np.full(p.numel(), p.ndim == 2) for p in model.parameters()])
    b1, t = 0.9, 5
    v_hat = np.concatenate([adamw.state[p]["exp_avg_sq"].numpy().reshape(-1) for p in biases]) / (1 - 0.999**t)
    bias_half = 1 / np.sqrt(np.sqrt(v_hat) + 1e-8)
    np.testing.assert_allclose(np.diag(dense)[~is_weight], bias_half, rtol=1e-12)
    combined = deep.measure_edge(model, mse, [(x, y)], [muon, adamw], **TOL)
    parts = {p.optimizer: p for p in combined.parts}
    c_muon, c_adamw = 1.95 * (2 - 0.02 * 0.1) / (0.05 * 2.9), 1.9 * (2 - 1e-2 * 1e-2) * (1 - b1**t) / 0.1
    scale = np.where(is_weight, 0.02, 1e-2)  # every weight here is wide or square: Muon's k = 1... or sqrt(m/n)
    k = np.concatenate([np.full(p.numel(), math.sqrt(max(1, p.shape[0] / p.shape[1])) if p.ndim == 2 else 1.0)
                        for p in model.parameters()])
    half = np.sqrt(scale * k)[:, None] * dense
    w_idx, b_idx = np.flatnonzero(is_weight), np.flatnonzero(~is_weight)
    assert parts["muon"].eta_S_P == pytest.approx(_top(H[np.ix_(w_idx, w_idx)], half[np.ix_(w_idx, w_idx)]), rel=1e-6)
    assert parts["adamw"].eta_S_P == pytest.approx(_top(H[np.ix_(b_idx, b_idx)], half[np.ix_(b_idx, b_idx)]), rel=1e-6)
    assert parts["muon"].constant == pytest.approx(c_muon, rel=1e-12)
    assert parts["adamw"].constant == pytest.approx(c_adamw, rel=1e-12)
    normalised = np.where(is_weight, 1 / math.sqrt(c_muon), 1 / math.sqrt(c_adamw))[:, None] * half
    assert combined.ratio == pytest.approx(_top(H, normalised), rel=1e-6)
    tracked = deep.SharpnessTracker(**TOL).measure(model, mse, [(x, y)], [muon, adamw])
    assert tracked["edge_ratio"] == pytest.approx(combined.ratio, rel=1e-6)
    assert tracked["edge_ratios"]["muon"] == pytest.approx(parts["muon"].ratio, rel=1e-6)


def test_shampoo_p_is_the_one_its_step_used_and_its_edge_the_dense_one():
    """pytorch_optimizer's Shampoo (momentum 0, factors recomputed every 2 steps, so the last step used stale
    ones): the step's change equals -lr P^-1 g with P^-1 from the reader; eta_S_P against numpy's
    L^-1/8 (x) R^-1/8 of the factors replayed from the gradients up to the last recomputation."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    model, x, y = _matrices_model(seed=1)
    opt = pytorch_optimizer.Shampoo(model.parameters(), lr=0.05, preconditioning_compute_steps=2)
    seen = _train(model, opt, x, y, 5)
    layout = ParamLayout.of(model)
    inverse = np.linalg.matrix_power(preconditioner_of(opt, model, layout).to_dense().numpy(), 2)
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    np.testing.assert_allclose(seen[-1][0] - after, 0.05 * inverse @ seen[-1][1], rtol=1e-9, atol=1e-13)
    blocks = []
    for i, p in enumerate(model.parameters()):
        gs = [_split(model, g)[i] for _, g in seen[:4]]  # the factors of step 4, the last recomputation
        left = 1e-6 * np.eye(p.shape[0]) + sum(g @ g.T for g in gs)
        right = 1e-6 * np.eye(p.shape[1]) + sum(g.T @ g for g in gs)
        blocks.append(np.kron(_power(left, -1 / 8), _power(right, -1 / 8)))
    half = np.block([[blocks[0], np.zeros((35, 21))], [np.zeros((21, 35)), blocks[1]]]) * math.sqrt(0.05)
    edge = deep.measure_edge(model, mse, [(x, y)], opt, **TOL)
    assert edge.optimizer == "shampoo" and edge.step == 5 and edge.constant == 2.0
    assert edge.eta_S_P == pytest.approx(_top(dense_hessian(model, x, y), half), rel=1e-6)


def test_soap_p_is_the_one_its_step_used_across_a_refresh_of_its_eigenbasis():
    """SOAP with its eigenbasis refreshed every 3 updates, read after the update that refreshed it (its state
    then holds the next basis): the update equals (1 - lr wd)(-lr/(1 - b1^t) P^-1 m) with P from the reader
    (P = Q diag(sqrt(v) + eps) Q^T / sqrt(1 - b2^t)); eta_S_P against numpy's Q diag(d^-1/2) Q^T built with kron."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    model, x, y = _matrices_model(seed=2)
    opt = pytorch_optimizer.SOAP(model.parameters(), lr=0.01, precondition_frequency=3)
    seen = _train(model, opt, x, y, 4)  # group step 4: update 3, after which Q is refreshed
    layout = ParamLayout.of(model)
    pre = preconditioner_of(opt, model, layout)
    inverse = np.linalg.matrix_power(pre.to_dense().numpy(), 2)
    t, b1, lr, wd = 3, 0.95, 0.01, 1e-2
    m = np.concatenate([opt.state[p]["exp_avg"].numpy().reshape(-1) for p in model.parameters()])
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    step = lr / (1 - b1**t)  # SOAP's lr sqrt(1 - b2^t)/(1 - b1^t) on (sqrt(v) + eps)^-1: P holds the sqrt
    np.testing.assert_allclose(after, (1 - lr * wd) * (seen[-1][0] - step * inverse @ m), rtol=1e-9, atol=1e-13)
    edge = deep.measure_edge(model, mse, [(x, y)], opt, **TOL)
    assert edge.optimizer == "soap" and edge.step == 3
    assert edge.constant == pytest.approx(1.95 * (2 - lr * wd) * (1 - b1**t) / ((1 - lr * wd) * 0.05), rel=1e-12)
    assert edge.eta_S_P == pytest.approx(_top(dense_hessian(model, x, y), math.sqrt(lr) * pre.to_dense().numpy()),
                                         rel=1e-6)


def test_a_users_preconditioner():
    """A user's Kronecker P (random SPD factors) as a BlockPreconditioner, as a mapping of functions and as an
    object with inv_sqrt: S_P against numpy's kron; measure_edge with lr= and constant=."""
    model, x, y = _matrices_model(seed=3)
    rng = np.random.default_rng(0)
    factors = []
    for p in model.parameters():
        pair = []
        for d in p.shape:
            a = rng.standard_normal((d, d))
            pair.append(_power(a @ a.T + d * np.eye(d), -0.5))
        factors.append(pair)
    half = np.block([[np.kron(*factors[0]), np.zeros((35, 21))], [np.zeros((21, 35)), np.kron(*factors[1])]])
    reference = _top(dense_hessian(model, x, y), half)
    layout = ParamLayout.of(model)
    blocks = {name: KroneckerBlock([torch.tensor(f) for f in pair]) for name, pair in zip(layout.names, factors)}
    user = BlockPreconditioner(layout, blocks)
    assert deep.preconditioned_sharpness(model, mse, [(x, y)], user, **TOL) == pytest.approx(reference, rel=1e-6)
    functions = {name: block.inv_sqrt for name, block in blocks.items()}
    assert deep.preconditioned_sharpness(model, mse, [(x, y)], functions, **TOL) == pytest.approx(reference, rel=1e-6)

    class Mine:
        def inv_sqrt(self, v):
            return torch.as_tensor(half) @ v.double()

    assert deep.preconditioned_sharpness(model, mse, [(x, y)], Mine(), **TOL) == pytest.approx(reference, rel=1e-6)
    edge = deep.measure_edge(model, mse, [(x, y)], Mine(), lr=0.1, constant=2.0, **TOL)
    assert edge.eta_S_P == pytest.approx(0.1 * reference, rel=1e-6) and edge.ratio == pytest.approx(0.05 * reference)
    tracked = deep.SharpnessTracker(**TOL).measure(model, mse, [(x, y)], user)
    assert tracked["preconditioned_sharpness"] == pytest.approx(reference, rel=1e-6)
    with pytest.raises(ValueError, match="needs lr= .* and constant="):
        deep.measure_edge(model, mse, [(x, y)], Mine())


# ---------------------------------------------------------------- the experiments of the optimizer_zoo figure
def test_zoo_run_and_summary():
    """A short Adagrad run: its rows are measure_edge's of the update just taken (checked at the last row by a
    fresh measure_edge on the same model state, recomputed here by training again with the same seed); the
    summary's mean and Student-t interval over three seeds against numpy and scipy by hand."""
    from scipy import stats

    from deep.training.zoo import zoo_run, zoo_summary

    runs = [zoo_run("adagrad", 0.05, seed, n=60, width=8, depth=1, steps=20, measure_every=10, tol=1e-8)
            for seed in range(3)]
    assert all(r["step"] == [10, 20] and not r["diverged"] for r in runs)
    assert all(math.isnan(v) is False and v > 0 for r in runs for v in r["edge_ratio"])
    assert runs[0]["edge_constant"] == [2.0, 2.0] and runs[0]["edge_ratio"] == [
        pytest.approx(e / 2.0, rel=1e-12) for e in runs[0]["eta_S_P"]]
    again = zoo_run("adagrad", 0.05, 0, n=60, width=8, depth=1, steps=20, measure_every=10, tol=1e-8)
    assert again["edge_ratio"] == runs[0]["edge_ratio"]  # deterministic for a seed
    (row,) = zoo_summary(runs, late=0.5)
    late = np.array([r["edge_ratio"][-1] for r in runs])
    half = stats.t.ppf(0.975, 2) * late.std(ddof=1) / math.sqrt(3)
    assert row["optimizer"] == "adagrad" and row["seeds"] == 3
    assert row["late_ratio"] == pytest.approx(late.mean(), rel=1e-12)
    assert (row["low"], row["high"]) == (pytest.approx(late.mean() - half), pytest.approx(late.mean() + half))


def test_muon_on_quadratic_measures_the_real_step():
    """The real Muon on a 3 x 5 quadratic: the ratios of both frozen P are finite and positive, and the dense
    ratio (to_dense, eigvalsh) equals the Lanczos one of measure_edge at the last step."""
    from deep.training.zoo import muon_on_quadratic

    r = muon_on_quadratic(0.02, shape=(3, 5), steps=60, measure_every=20)
    assert r["step"] == [20, 40, 60]
    assert all(v > 0 and math.isfinite(v) for rule in ("polar", "newton_schulz") for v in r[rule])
    assert r["last_measured_ratio"] == pytest.approx(r["polar"][-1], rel=1e-8)
    assert r["constant"] == pytest.approx(1.95 * 2 / (0.05 * 2.9), rel=1e-12)
