"""Batch sharpness: raw, with Adam's P and along the optimizer's next step, over random minibatches.

References, none of them the package's own code: per-example gradients (plain ``loss.backward()``) and dense
per-example Hessians (``torch.autograd.functional.hessian``), from which g_B and H_B of any batch are
averages; the exact expectation over all C(10, 3) = 120 batches of a 10-example data set; Adam's P and its
step, and heavy ball's step, written out from torch's documented update and the optimizer's state; the
spread of the estimate over independent seeds (for its standard error).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import deep
from deep.measure.batch import MIN_SAMPLES, batch_seed, batch_sharpness_forms
from support import autograd_gradient, dense_hessian, mse, tiny_problem

N, B = 10, 3


class Reference:
    """g_i, H_i of each example (dense, float64) and the forms of any batch, by hand."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.g = np.stack([autograd_gradient(model, x[i:i + 1], y[i:i + 1]).numpy() for i in range(len(x))])
        self.H = np.stack([dense_hessian(model, x[i:i + 1], y[i:i + 1], vectorize=True) for i in range(len(x))])
        self.theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()

    def batch(self, members) -> tuple[np.ndarray, np.ndarray]:
        members = list(members)
        return self.g[members].mean(axis=0), self.H[members].mean(axis=0)

    def pair(self, members, form: str, opt=None) -> tuple[float, float]:
        """(A, B) of one batch: raw g^T H g and |g|^2; preconditioned and update as in deep.measure.batch."""
        g, H = self.batch(members)
        if form == "raw":
            return g @ H @ g, g @ g
        wd = opt.param_groups[0]["weight_decay"]
        gh = g + wd * self.theta
        u = gh / adam_p(opt) if form == "preconditioned" else next_step(opt, gh)
        return u @ (H + wd * np.eye(len(g))) @ u, gh @ u

    def exact(self, form: str, opt=None) -> float:
        pairs = np.array([self.pair(s, form, opt) for s in itertools.combinations(range(N), B)])
        return pairs[:, 0].mean() / pairs[:, 1].mean()


def state(opt, key: str) -> np.ndarray:
    return np.concatenate([opt.state[p][key].reshape(-1).numpy() for g in opt.param_groups for p in g["params"]])


def adam_p(opt) -> np.ndarray:
    """Adam's P of its last step, from its state: sqrt(v_t) / sqrt(1 - beta2^t) + eps (1 for SGD)."""
    group = opt.param_groups[0]
    if isinstance(opt, torch.optim.SGD):
        return np.ones(sum(p.numel() for p in group["params"]))
    t = float(opt.state[group["params"][0]]["step"])
    return np.sqrt(state(opt, "exp_avg_sq")) / math.sqrt(1 - group["betas"][1] ** t) + group["eps"]


def next_step(opt, gh: np.ndarray) -> np.ndarray:
    """The step theta_t - theta_(t+1) of torch's Adam or SGD with momentum for the gradient gh (decay included)."""
    group = opt.param_groups[0]
    lr = group["lr"]
    if isinstance(opt, torch.optim.SGD):
        return lr * (group["momentum"] * state(opt, "momentum_buffer") + gh)
    (b1, b2), t = group["betas"], float(opt.state[group["params"][0]]["step"]) + 1
    m = b1 * state(opt, "exp_avg") + (1 - b1) * gh
    v = b2 * state(opt, "exp_avg_sq") + (1 - b2) * gh**2
    return lr / (1 - b1**t) * m / (np.sqrt(v) / math.sqrt(1 - b2**t) + group["eps"])


def trained(optimizer: str = "adam", n: int = N):
    """The tiny problem (203 parameters, float64) on n examples after 4 full-batch steps of Adam (lr 1e-2,
    coupled weight decay 0.1) or of heavy ball (lr 1e-2, momentum 0.9, weight decay 0.1)."""
    model, x, y = tiny_problem(seed=1, n=n)
    opt = (torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.1) if optimizer == "adam" else
           torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=0.1))
    for _ in range(4):
        opt.zero_grad()
        mse(model(x), y).backward()
        opt.step()
    opt.zero_grad()
    return model, x, y, opt


@pytest.fixture(scope="module")
def problems():
    """{optimizer: (model, x, y, optimizer, Reference)} for Adam and heavy ball, built once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    built = {}
    for name in ("adam", "heavy_ball"):
        model, x, y, opt = trained(name)
        built[name] = (model, x, y, opt, Reference(model, x, y))
    yield built
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adam_problem(problems):
    return problems["adam"]


@pytest.mark.parametrize("form", ["raw", "preconditioned", "update"])
def test_the_estimate_is_the_exact_expectation_over_all_batches(adam_problem, form):
    """n = 10, batch 3: within 4 standard errors of the expectation over all 120 batches, raw and with Adam."""
    model, x, y, opt, ref = adam_problem
    res = batch_sharpness_forms(model, mse, (x, y), B, opt, forms=(form,), samples=400, tol=1e-9, seed=7)[form]
    exact = ref.exact(form, opt)
    assert res.samples == 400 and 0 < res.stderr < 0.05 * abs(exact)
    assert abs(res.value - exact) < 4 * res.stderr, (res, exact)


def _same_batches(reference: Reference, form: str, opt, samples: int, seed: int) -> tuple[float, float]:
    """(R, stderr) by hand on the batches the documented sampler draws: randperm(N)[:b] from Generator(seed)."""
    generator = torch.Generator().manual_seed(seed)
    pairs = np.array([reference.pair(torch.randperm(N, generator=generator)[:B].tolist(), form, opt)
                      for _ in range(samples)])
    A, Bs = pairs[:, 0], pairs[:, 1]
    r = A.sum() / Bs.sum()
    return r, math.sqrt(np.sum((A - r * Bs) ** 2) / (samples * (samples - 1))) / abs(Bs.mean())


@pytest.mark.parametrize("one_at_a_time", [False, True])
@pytest.mark.parametrize("optimizer, form", [("adam", "raw"), ("adam", "preconditioned"), ("adam", "update"),
                                             ("heavy_ball", "preconditioned"), ("heavy_ball", "update")])
def test_the_estimate_is_the_hand_computed_ratio_of_the_same_batches(monkeypatch, problems, optimizer, form,
                                                                    one_at_a_time):
    """Adam's form with its P frozen as read by hand (sqrt(v_hat) + eps), Adam's and heavy ball's next step by
    hand: value and delta-method stderr of the same 25 batches to 1e-10, vectorised (vmap) or one at a time."""
    import deep.curvature.minibatch

    if one_at_a_time:
        monkeypatch.setattr(deep.curvature.minibatch, "VECTORIZE_MAX_BATCH", 0)
    model, x, y, opt, reference = problems[optimizer]
    res = batch_sharpness_forms(model, mse, (x, y), B, opt, forms=(form,), samples=25, tol=1e-9, seed=3)[form]
    value, stderr = _same_batches(reference, form, opt, 25, 3)
    assert res.value == pytest.approx(value, rel=1e-10) and res.stderr == pytest.approx(stderr, rel=1e-9)
    assert res.samples == 25 and not res.converged


OPTIMIZERS = {
    "adamw amsgrad": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, amsgrad=True),
    "nadam": lambda ps: torch.optim.NAdam(ps, lr=1e-2, weight_decay=0.05),
    "rmsprop centered momentum": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.5, centered=True),
    "sgd nesterov": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.1),
    "adamax (not in the package's list: one gradient at a time)":
        lambda ps: torch.optim.Adamax(ps, lr=1e-2),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("stepped", [0, 3])
def test_the_next_step_is_the_optimizers_own(name, stepped):
    """NextStep's K steps at once against torch itself: a deep copy of the model and optimizer taking the step."""
    import copy

    from deep.curvature.params import ParamLayout
    from deep.measure.next_step import NextStep

    model, x, y = tiny_problem(seed=1, n=N)
    opt = OPTIMIZERS[name](model.parameters())
    for _ in range(stepped):
        opt.zero_grad()
        mse(model(x), y).backward()
        opt.step()
    G = torch.randn(3, 203, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    steps = NextStep(opt, model, ParamLayout.of(model)).step(G)
    for g, step in zip(G, steps):
        twin, twin_opt = copy.deepcopy((model, opt))
        for p, part in zip(twin.parameters(), g.split([p.numel() for p in twin.parameters()])):
            p.grad = part.view_as(p).clone()
        before = torch.cat([p.detach().reshape(-1).clone() for p in twin.parameters()])
        twin_opt.step()
        expected = before - torch.cat([p.detach().reshape(-1) for p in twin.parameters()])
        torch.testing.assert_close(step, expected, rtol=1e-12, atol=1e-15)


def test_adam_reports_eta_bs_p_against_its_threshold_and_the_step_ratio_against_2(adam_problem):
    model, x, y, opt, _ = adam_problem
    forms = batch_sharpness_forms(model, mse, (x, y), B, opt, forms=("preconditioned", "update"), samples=30)
    pre, upd = forms["preconditioned"], forms["update"]
    c4 = (2 + 2 * 0.9) * (1 - 0.9**4) / (1 - 0.9)  # Adam's threshold constant of its 4th update
    assert (pre.optimizer, pre.step, pre.lr, pre.constant) == ("adam", 4, (1e-2,), pytest.approx(c4))
    assert pre.eta_value == pytest.approx(1e-2 * pre.value) and pre.ratio == pytest.approx(pre.eta_value / c4)
    assert (upd.step, upd.constant, upd.eta_value, upd.ratio) == (5, 2.0, upd.value, upd.value / 2)
    assert pre.samples == upd.samples  # the same batches
    assert "tensor" not in repr(pre) and len(repr(pre)) < 200


def test_param_groups_at_different_lr_give_eta_bs_p_with_each_groups_lr():
    """Two groups (lr 1e-2 and 3e-3): eta * BS_P = E[gh^T D (H + W) D gh] / E[gh^T D gh], D = diag(lr_g / P), by hand
    on the same batches; BS_P itself is still the one of P alone."""
    model, x, y = tiny_problem(seed=1, n=N)
    first, rest = list(model.parameters())[:2], list(model.parameters())[2:]
    opt = torch.optim.Adam([{"params": first, "lr": 1e-2}, {"params": rest, "lr": 3e-3}], weight_decay=0.1)
    for _ in range(4):
        opt.zero_grad()
        mse(model(x), y).backward()
        opt.step()
    ref = Reference(model, x, y)
    res = deep.batch_sharpness(model, mse, (x, y), B, opt, samples=20, tol=1e-9, seed=2)
    lr = np.concatenate([np.full(p.numel(), g["lr"]) for g in opt.param_groups for p in g["params"]])
    generator = torch.Generator().manual_seed(2)
    pairs = []
    for _ in range(20):
        g, H = ref.batch(torch.randperm(N, generator=generator)[:B].tolist())
        gh = g + 0.1 * ref.theta
        u = lr * gh / adam_p(opt)
        pairs.append((u @ (H + 0.1 * np.eye(len(g))) @ u, gh @ u))
    A, Bs = np.array(pairs).T
    assert res.eta_value == pytest.approx(A.sum() / Bs.sum(), rel=1e-10) and res.lr == (1e-2, 3e-3)
    assert res.value == pytest.approx(_same_batches(ref, "preconditioned", opt, 20, 2)[0], rel=1e-10)


def test_a_step_of_lr_0_has_an_update_ratio_of_0(adam_problem):
    """The last step of a schedule to 0 moves nothing: the update ratio is 0, and eta * BS_P with lr=0 is 0."""
    model, x, y, opt, _ = adam_problem
    pre = deep.batch_sharpness(model, mse, (x, y), B, opt, lr=0.0, samples=10)
    assert (pre.eta_value, pre.ratio) == (0.0, 0.0) and pre.value > 0
    opt.param_groups[0]["lr"] = 0.0
    try:
        upd = deep.batch_sharpness(model, mse, (x, y), B, opt, direction="update", samples=10)
    finally:
        opt.param_groups[0]["lr"] = 1e-2
    assert (upd.value, upd.stderr, upd.ratio, upd.lr) == (0.0, 0.0, 0.0, (0.0,))


def test_the_full_batch_is_the_rayleigh_quotient_exactly(adam_problem):
    """batch = n: g^T H g / |g|^2 of the whole data set (dense reference), one sample, stderr 0; and Adam's form."""
    model, x, y, opt, ref = adam_problem
    g, H = ref.batch(range(N))
    res = deep.batch_sharpness(model, mse, (x, y), N)
    assert (res.samples, res.stderr, res.converged) == (1, 0.0, True)
    assert res.value == pytest.approx(g @ H @ g / (g @ g), rel=1e-12)
    chunks = [(x[:4], y[:4]), (x[4:], y[4:])]  # any chunking of the same examples
    pre = deep.batch_sharpness(model, mse, chunks, N, opt)
    a, b = ref.pair(range(N), "preconditioned", opt)
    assert (pre.stderr, pre.value) == (0.0, pytest.approx(a / b, rel=1e-12))


def test_the_standard_error_matches_the_spread_over_seeds(adam_problem):
    """The delta-method stderr of 30 batches against the standard deviation of 40 independent estimates."""
    model, x, y, _, _ = adam_problem
    runs = [deep.batch_sharpness(model, mse, (x, y), B, samples=30, tol=1e-9, seed=s) for s in range(40)]
    spread = np.std([r.value for r in runs], ddof=1)
    typical = math.sqrt(np.mean([r.stderr**2 for r in runs]))
    assert 0.75 < spread / typical < 1.33, (spread, typical)


def test_sampling_stops_at_the_tolerance(adam_problem):
    model, x, y, _, _ = adam_problem
    loose = deep.batch_sharpness(model, mse, (x, y), B, tol=0.1, samples=1000)
    assert loose.converged and MIN_SAMPLES <= loose.samples < 1000 and loose.stderr <= 0.1 * loose.value
    capped = deep.batch_sharpness(model, mse, (x, y), B, tol=1e-6, samples=15)
    assert not capped.converged and capped.samples == 15
    again = deep.batch_sharpness(model, mse, (x, y), B, tol=0.1, samples=1000)
    assert again == loose  # the seed fixes the batches


def test_measuring_leaves_the_model_and_the_optimizer_untouched(adam_problem):
    model, x, y, opt, _ = adam_problem
    before = [p.detach().clone() for p in model.parameters()]
    saved = {k: v.clone() for k, v in opt.state[next(model.parameters())].items()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    batch_sharpness_forms(model, mse, (x, y), B, opt, forms=("raw", "preconditioned", "update"), samples=12)
    assert all(torch.equal(a, p) and torch.equal(p.grad, torch.ones_like(p)) for a, p in zip(before, model.parameters()))
    assert all(torch.equal(v, opt.state[next(model.parameters())][k]) for k, v in saved.items())
    for p in model.parameters():
        p.grad = None


class _Scalar(nn.Module):
    """A model vmap cannot batch (it reads a Python number off a tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_problem(seed=1)[0]

    def forward(self, x):
        return self.net(x) * (1.0 if float(x.sum().item()) < 1e9 else 0.0)


def test_a_model_vmap_cannot_batch_is_measured_one_batch_at_a_time():
    _, x, y = tiny_problem(seed=1, n=N)
    model = _Scalar().double()
    res = deep.batch_sharpness(model, mse, (x, y), B, samples=12, tol=1e-9)
    reference = deep.batch_sharpness(model.net, mse, (x, y), B, samples=12, tol=1e-9)
    assert res.value == pytest.approx(reference.value, rel=1e-12)


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_the_package_models_are_vectorised_as_they_are_run_alone(monkeypatch, name):
    """vmap over batches of the CNN and the Transformer (float64) equals the batches one at a time."""
    import deep.curvature.minibatch

    data = deep.load("text", 12, context=8) if name == "transformer" else deep.load("digits", 12)
    model = deep.build_model(name, data.input_shape, data.num_classes, width=8, depth=1, seed=0).double()
    data = data.to("cpu", torch.float64)
    loss = deep.cross_entropy
    together = deep.batch_sharpness(model, loss, data, 4, samples=6, tol=1e-9)
    monkeypatch.setattr(deep.curvature.minibatch, "VECTORIZE_MAX_BATCH", 0)
    alone = deep.batch_sharpness(model, loss, data, 4, samples=6, tol=1e-9)
    assert math.isfinite(together.value) and together.value == pytest.approx(alone.value, rel=1e-10)


def _rprop(model, x, y):
    opt = torch.optim.Rprop(model.parameters())
    mse(model(x), y).backward()
    opt.step()
    return opt


BAD = {
    "batch_size 0": (lambda m, x, y: dict(batch_size=0), "batch_size must be an integer with 1 <= batch_size <= 10"),
    "batch_size > n": (lambda m, x, y: dict(batch_size=11), "batch_size must be an integer with 1 <= batch_size <= 10"),
    "P unreadable": (lambda m, x, y: dict(optimizer=_rprop(m, x, y)), "Rprop"),
    "no step yet": (lambda m, x, y: dict(optimizer=torch.optim.Adam(m.parameters())), "taken no step"),
    "update without optimizer": (lambda m, x, y: dict(direction="update"), "optimizer must be given"),
    "dropout in train mode": (lambda m, x, y: dict(model=nn.Sequential(m, nn.Dropout(0.1))),
                              "Dropout '1' is in train mode with dropout p = 0.1; call model.eval()"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_value_error(case):
    model, x, y = tiny_problem(seed=1, n=N)
    change, message = BAD[case]
    args = dict(model=model, loss_fn=mse, data=(x, y), batch_size=B, samples=2)
    args.update(change(model, x, y))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        deep.batch_sharpness(**args)


def test_a_model_with_dropout_in_eval_mode_is_measured():
    model, x, y = tiny_problem(seed=1, n=N)
    with_dropout = nn.Sequential(model, nn.Dropout(0.5)).eval()
    assert deep.batch_sharpness(with_dropout, mse, (x, y), B, samples=12).value == \
        deep.batch_sharpness(model, mse, (x, y), B, samples=12).value


# ------------------------------------------------------------------------------------------ training runs
RUN = dict(dataset="digits", n=60, model="mlp", width=8, depth=1, loss="mse", optimizer="adam",
           hyper={"eta": 0.01}, steps=20, measure_every=10, seed=2, dtype="float64")


def test_minibatch_runs_record_the_batch_columns(tmp_path):
    """Every row: BS and the update ratio with their stderr; eta * BS_P from the first update on (Adam has no P
    before it); the batches drawn stop at 5% relative stderr or at the cap."""
    from deep.training.train import BATCH_SAMPLES, BATCH_TOL

    rows = deep.read_metrics(deep.run(deep.TrainConfig(**RUN, batch_size=6), tmp_path / "mb", progress=False))
    assert [r["step"] for r in rows] == [0, 10, 20]
    for r in rows:
        assert MIN_SAMPLES <= r["batch_samples"] <= BATCH_SAMPLES
        for name in ("batch_sharpness", "batch_update_ratio") + (("eta_BS_P",) if r["step"] else ()):
            value, stderr = r[name], r[f"{name}_stderr"]
            assert math.isfinite(value) and 0 < stderr and (stderr <= BATCH_TOL * abs(value)
                                                            or r["batch_samples"] == BATCH_SAMPLES), (name, r)
    assert math.isnan(rows[0]["eta_BS_P"])


def test_full_batch_runs_record_the_exact_rayleigh_quotient(tmp_path):
    """A full-batch run's minibatch columns are those of the whole data set: at the last step, g^T H g / |g|^2
    of the checkpointed model (dense reference), one sample, stderr 0."""
    from deep.training.runlog import load_checkpoint

    out = tmp_path / "fb"
    rows = deep.read_metrics(deep.run(deep.TrainConfig(**RUN), out, progress=False))
    assert all(r["batch_samples"] == 1 and r["batch_sharpness_stderr"] == 0 for r in rows)
    data = deep.load("digits", 60).to("cpu", torch.float64)
    model = deep.build_model("mlp", data.input_shape, 10, width=8, depth=1, seed=2).double()
    model.load_state_dict(load_checkpoint(out / "checkpoint.pt")["model"])
    g = autograd_gradient(model, data.X, data.y).numpy()
    H = dense_hessian(model, data.X, data.y)
    assert rows[-1]["batch_sharpness"] == pytest.approx(g @ H @ g / (g @ g), rel=1e-9)


def test_metrics_written_before_the_batch_columns_read_as_nan(tmp_path):
    from deep.training.runlog import BATCH_COLUMNS, COLUMNS

    old = [c for c in COLUMNS if c not in BATCH_COLUMNS]
    (tmp_path / "metrics.csv").write_text(",".join(old) + "\n" + ",".join(["0"] * len(old)) + "\n")
    row, = deep.read_metrics(tmp_path)
    assert row["step"] == 0 and all(math.isnan(row[c]) for c in BATCH_COLUMNS)


def test_cached_training_results_without_the_batch_columns_still_pass(tmp_path):
    from deep.training.runlog import BATCH_COLUMNS, COLUMNS
    from paper_figures.cache import _training_problem

    config = dict(steps=20, measure_every=10)
    metrics = {c: [0.0, 1.0, 2.0] for c in COLUMNS}
    metrics["step"] = [0, 10, 20]
    result = dict(status="completed", last_step=20, rows=3, metrics=metrics)
    old = dict(result, metrics={c: v for c, v in metrics.items() if c not in BATCH_COLUMNS})
    assert _training_problem(tmp_path / "result.json", config, result) is None
    assert _training_problem(tmp_path / "result.json", config, old) is None
    short = dict(result, metrics={**metrics, "eta_BS_P": [1.0]})
    assert "eta_BS_P that is not a list of 3" in _training_problem(tmp_path / "result.json", config, short)


def test_the_batch_seed_is_fixed_by_the_run_seed_and_step():
    seeds = {batch_seed(s, t) for s in range(3) for t in (0, 10, 20)}
    assert len(seeds) == 9 and batch_seed(1, 10) == batch_seed(1, 10)


def test_the_minibatch_edge_experiment_returns_each_runs_late_levels(tmp_path):
    """Configs over batch sizes (the full batch as n) and seeds; each run's late medians and spreads against the
    rows themselves (numpy on the last 40% of the steps)."""
    from deep.training.minibatch_edge import late_levels, minibatch_edge, minibatch_edge_configs

    base = {k: v for k, v in RUN.items() if k in ("dataset", "n", "model", "width", "depth", "loss", "dtype")}
    configs = minibatch_edge_configs([6, 60], seeds=(0, 1), steps={6: 20, 60: 10}, measure_every=5, base=base,
                                     hyper={"eta": 0.01})
    assert [(c.batch_size, c.seed, c.steps) for c in configs] == [(6, 0, 20), (6, 1, 20), (None, 0, 10), (None, 1, 10)]
    records = minibatch_edge(tmp_path, configs[1:3])
    assert [(r["batch_size"], r["seed"], r["status"]) for r in records] == [(6, 1, "completed"), (60, 0, "completed")]
    rows = records[0]["rows"]
    late = [r["eta_BS_P"] for r in rows if r["step"] >= 12]
    assert records[0]["levels"]["eta_BS_P"] == {"median": np.median(late), "p10": np.percentile(late, 10),
                                                "p90": np.percentile(late, 90), "rows": 2}
    assert late_levels(rows, 1.0)["eta_S_P"]["rows"] == 4  # step 0 has no P: NaN skipped
