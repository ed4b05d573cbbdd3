"""deep.measure_edge and the run logs: the edge read from a live optimizer, against independent references.

References written here: dense float64 Hessians (torch.autograd.functional.hessian), P replayed from the
optimizer's own state with the textbook formula, D = diag(lr_group / P) and the coupled decay W per
coordinate built by hand, numpy eigvalsh, and thresholds by bisection of torch's update maps
(``support.step_map``) or closed forms typed here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support import bisect_threshold, dense_hessian, mse, tiny_problem

import deep
from deep import TrainConfig, read_metrics, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(model, opt, x, y, steps: int, scheduler=None) -> None:
    for _ in range(steps):
        opt.zero_grad()
        mse(model(x), y).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def _stepped(opt, model, x, y, steps: int = 1):
    _train(model, opt, x, y, steps)
    return opt


def _reference(model, x, y, opt, p_of, decoupled: bool = False, lrs=None) -> float:
    """lambda_max(D^1/2 (H + W) D^1/2) with D = lr_g / P and W the coupled decay, in numpy (coordinates in
    the order of model.parameters(), as the dense Hessian's, whatever the order of the groups); ``lrs`` the
    groups' lr in the update taken (default: their current lr, when no scheduler moved it)."""
    H = dense_hessian(model, x, y)
    lrs = [g["lr"] for g in opt.param_groups] if lrs is None else lrs
    group_of = {id(param): (group, lr) for group, lr in zip(opt.param_groups, lrs) for param in group["params"]}
    d, w = [], []
    for param in model.parameters():
        group, lr = group_of[id(param)]
        d.append(np.full(param.numel(), lr) / p_of(opt.state[param], group).reshape(-1))
        w.append(np.full(param.numel(), 0.0 if decoupled else group["weight_decay"]))
    d, w = np.sqrt(np.concatenate(d)), np.concatenate(w)
    return float(np.linalg.eigvalsh(d[:, None] * (H + np.diag(w)) * d[None, :])[-1])


def _adam_p(state, group):
    t = float(state["step"])
    return (np.sqrt(state["exp_avg_sq"].numpy() / (1 - group["betas"][1] ** t)) + group["eps"])


def _groups(model, lrs, wds):
    first, rest = [model[0].weight, model[0].bias], [p for p in list(model.parameters())[2:]]
    return [{"params": first, "lr": lrs[0], "weight_decay": wds[0]},
            {"params": rest, "lr": lrs[1], "weight_decay": wds[1]}]


def test_adam_two_groups_and_a_scheduler():
    """Two param groups (lr, coupled wd differ) under a LambdaLR that halves the lr every 4 steps: the edge
    uses each group's lr in the 10th update (the same as now: 0.5^(9 // 4) = 0.5^(10 // 4));
    c_t = (2 + 2 b1)(1 - b1^t)/(1 - b1) at t = 10."""
    model, x, y = tiny_problem(seed=3)
    opt = torch.optim.Adam(_groups(model, (2e-2, 5e-3), (0.1, 0.0)), betas=(0.8, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 ** (t // 4))
    _train(model, opt, x, y, 10, sched)
    assert [g["lr"] for g in opt.param_groups] == [2e-2 * 0.25, 5e-3 * 0.25]
    edge = deep.measure_edge(model, mse, [(x, y)], opt, tol=1e-10, max_iter=203)
    assert edge.step == 10 and edge.optimizer == "adam" and edge.lr == (5e-3, 1.25e-3)
    assert edge.eta_S_P == pytest.approx(_reference(model, x, y, opt, _adam_p), rel=1e-7)
    assert edge.constant == pytest.approx((2 + 1.6) * (1 - 0.8**10) / 0.2, rel=1e-12)
    assert edge.ratio == pytest.approx(edge.eta_S_P / edge.constant, rel=1e-12)
    # the tracker, warm started, sees the same edge (groups with different lr: solved on D's operator)
    tracked = deep.SharpnessTracker(tol=1e-10, max_iter=203).measure(model, mse, [(x, y)], opt)
    assert tracked["eta_S_P"] == pytest.approx(edge.eta_S_P, rel=1e-7)
    assert math.isnan(tracked["preconditioned_sharpness"]) and tracked["edge_constant"] == edge.constant


def test_the_edge_is_that_of_the_update_just_taken_under_a_warmup():
    """Adam under LinearLR warmup: after t steps and t scheduler steps the group holds the lr of update t + 1,
    (t + 1)/t times the one update t used.  eta_S_P uses the lr of update t, with P and c_t of update t:
    against numpy's eigvalsh of D^1/2 H D^1/2, D = lr_used / P, to 1e-6; an explicit lr= agrees; the
    tracker's lr and eta_S_P too."""
    model, x, y = tiny_problem(seed=7)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=20)
    _train(model, opt, x, y, 10, warmup)
    used = 1e-2 * (0.1 + 0.9 * 9 / 20)  # update 10 ran after 9 scheduler steps
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * (0.1 + 0.9 * 10 / 20), rel=1e-12)  # update 11's
    edge = deep.measure_edge(model, mse, [(x, y)], opt, tol=1e-10, max_iter=203)
    assert edge.lr == pytest.approx((used,), rel=1e-12) and edge.step == 10
    reference = _reference(model, x, y, opt, _adam_p, lrs=[used])
    assert edge.eta_S_P == pytest.approx(reference, rel=1e-6)
    assert edge.ratio == pytest.approx(reference / ((2 + 1.8) * (1 - 0.9**10) / 0.1), rel=1e-6)
    explicit = deep.measure_edge(model, mse, [(x, y)], opt, lr=used, tol=1e-10, max_iter=203)
    assert explicit.eta_S_P == pytest.approx(edge.eta_S_P, rel=1e-9)
    tracked = deep.SharpnessTracker(tol=1e-10, max_iter=203).measure(model, mse, [(x, y)], opt)
    assert tracked["lr"] == pytest.approx(used, rel=1e-12)
    assert tracked["eta_S_P"] == pytest.approx(reference, rel=1e-6)


def test_a_group_whose_update_used_lr_0_takes_no_step():
    """lr 0 in the update taken is an edge of 0, not an error: a frozen group beside a stepping one adds nothing
    (D = 0 on it, against the dense reference); when every group's lr was 0 (the last step of a schedule to 0)
    eta_S_P and the ratio are 0 with no product, and a loop tracked to that step runs to the end."""
    model, x, y = tiny_problem(seed=8)
    opt = torch.optim.AdamW(_groups(model, (1e-2, 0.0), (0.1, 0.1)))
    _train(model, opt, x, y, 5)
    edge = deep.measure_edge(model, mse, [(x, y)], opt, tol=1e-10, max_iter=203)
    assert edge.lr == (1e-2, 0.0)
    assert edge.eta_S_P == pytest.approx(_reference(model, x, y, opt, _adam_p, decoupled=True), rel=1e-6)
    assert edge.constant == pytest.approx(1.9 * (2 - 1e-2 * 0.1) * (1 - 0.9**5) / 0.1, rel=1e-12)

    model, x, y = tiny_problem(seed=9)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    steps = 12  # update t + 1 runs at 1e-2 (1 - t / (steps - 1)): the last one, after steps - 1 scheduler steps, at 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - min(t, steps - 1) / (steps - 1))
    tracker, rows = deep.SharpnessTracker(tol=1e-6, max_iter=203), []
    for _ in range(steps):
        _train(model, opt, x, y, 1, sched)
        rows.append(tracker.measure(model, mse, [(x, y)], opt))
    assert rows[-1]["lr"] == 0.0 and rows[-1]["eta_S_P"] == 0.0 and rows[-1]["edge_ratio"] == 0.0
    assert rows[-1]["edge_constant"] == pytest.approx(1.9 * 2 * (1 - 0.9**steps) / 0.1, rel=1e-12)  # eta -> 0
    assert all(r["eta_S_P"] > 0 for r in rows[:-1])
    last = deep.measure_edge(model, mse, [(x, y)], opt)
    assert (last.eta_S_P, last.ratio, last.hvps, last.eigenvector) == (0.0, 0.0, 0, None)


@pytest.mark.parametrize("t", [1, 10, 100, 1000])
def test_nadam_threshold_follows_its_momentum_schedule(t):
    """NAdam after t steps (the state's step and mu_product set as torch leaves them): c_t equals the
    bisection of torch's t-th update map, and eta_S_P the dense reference."""
    model, x, y = tiny_problem(seed=4)
    opt = torch.optim.NAdam(model.parameters(), lr=1e-2, betas=(0.9, 0.999), momentum_decay=0.004)
    _train(model, opt, x, y, 2)
    for state in opt.state.values():  # jump the schedule to step t (P stays that of step 2)
        state["step"].fill_(t)
    hyper = {"eta": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "momentum_decay": 0.004}
    edge = deep.measure_edge(model, mse, [(x, y)], opt, tol=1e-10, max_iter=203)
    assert edge.constant == pytest.approx(1e-2 * bisect_threshold("nadam", hyper, t), rel=1e-9)
    p_of = lambda s, g: np.sqrt(s["exp_avg_sq"].numpy() / (1 - 0.999 ** float(s["step"]))) + 1e-8  # noqa: E731
    assert edge.eta_S_P == pytest.approx(_reference(model, x, y, opt, p_of), rel=1e-7)


def test_adamw_decay_is_decoupled_and_in_the_constant():
    model, x, y = tiny_problem(seed=5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=5.0)
    _train(model, opt, x, y, 7)
    edge = deep.measure_edge(model, mse, [(x, y)], opt, tol=1e-10, max_iter=203)
    assert edge.optimizer == "adamw"
    assert edge.constant == pytest.approx(1.9 * (2 - 1e-2 * 5.0) * (1 - 0.9**7) / 0.1, rel=1e-12)
    assert edge.eta_S_P == pytest.approx(_reference(model, x, y, opt, _adam_p, decoupled=True), rel=1e-7)


def _adamw_c(lr_wd: float, t: int, b1: float = 0.9) -> float:
    """AdamW's c_t = (1 + b1)(2 - lr wd)(1 - b1^t)/(1 - b1), typed here."""
    return (1 + b1) * (2 - lr_wd) * (1 - b1**t) / (1 - b1)


def test_adamw_with_a_no_decay_group_uses_the_smaller_constant():
    """AdamW's usual groups: weights decayed (wd = 0.1), biases not (wd = 0).  The groups' c_t differ by
    lr wd / 2 = 5e-4 relative; the edge takes the smaller, that of the decayed group; eta_S_P is the dense
    reference with D = lr / P and no W (the decay is decoupled)."""
    model, x, y = tiny_problem(seed=7)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.AdamW([{"params": weights, "weight_decay": 0.1}, {"params": biases, "weight_decay": 0.0}],
                            lr=1e-2)
    _train(model, opt, x, y, 6)
    edge = deep.measure_edge(model, mse, [(x, y)], opt, tol=1e-10, max_iter=203)
    assert edge.optimizer == "adamw" and edge.step == 6 and edge.lr == (1e-2, 1e-2)
    assert edge.constant == pytest.approx(_adamw_c(1e-2 * 0.1, 6), rel=1e-12)
    assert edge.constant < _adamw_c(0.0, 6)
    assert edge.eta_S_P == pytest.approx(_reference(model, x, y, opt, _adam_p, decoupled=True), rel=1e-7)
    assert edge.ratio == pytest.approx(edge.eta_S_P / edge.constant, rel=1e-12)


def test_adamw_with_two_learning_rates():
    """Two AdamW groups at lr 1e-2 and 3e-3 (wd = 0.05 both): c_t differ through lr wd by 1.75e-4 relative; the
    edge takes the smaller (lr wd = 5e-4), and eta_S_P is the dense reference with each group's own lr in D."""
    model, x, y = tiny_problem(seed=8)
    opt = torch.optim.AdamW(_groups(model, (1e-2, 3e-3), (0.05, 0.05)))
    _train(model, opt, x, y, 9)
    edge = deep.measure_edge(model, mse, [(x, y)], opt, tol=1e-10, max_iter=203)
    assert edge.optimizer == "adamw" and edge.lr == (1e-2, 3e-3)
    assert edge.constant == pytest.approx(_adamw_c(1e-2 * 0.05, 9), rel=1e-12)
    assert edge.eta_S_P == pytest.approx(_reference(model, x, y, opt, _adam_p, decoupled=True), rel=1e-7)
    tracked = deep.SharpnessTracker(tol=1e-10, max_iter=203).measure(model, mse, [(x, y)], opt)
    assert tracked["eta_S_P"] == pytest.approx(edge.eta_S_P, rel=1e-7) and tracked["edge_constant"] == edge.constant


def test_adamw_groups_whose_constants_differ_beyond_the_tolerance_are_refused():
    """lr wd = 1e-2 against 0: c_t differ by 5e-3 relative, more than deep.measure.edge.CONSTANT_RTOL = 1e-3."""
    model, x, y = tiny_problem(seed=7)
    opt = torch.optim.AdamW(_groups(model, (1e-2, 1e-2), (1.0, 0.0)))
    _train(model, opt, x, y, 2)
    assert deep.measure.edge.CONSTANT_RTOL == 1e-3
    with pytest.raises(ValueError, match=r"different threshold constants .* relative tolerance 0.001"):
        deep.measure_edge(model, mse, [(x, y)], opt)


def test_sgd_momentum_zero_ignores_dampening_and_decay_shifts_the_curvature():
    """SGD(momentum=0, dampening=0.5): torch skips the momentum branch, the threshold is 2 (not 4); with
    coupled weight decay wd the edge is lr (S + wd)."""
    model, x, y = tiny_problem(seed=6)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.0, dampening=0.5, weight_decay=0.3)
    _train(model, opt, x, y, 3)
    edge = deep.measure_edge(model, mse, [(x, y)], opt, tol=1e-10, max_iter=203)
    S = float(np.linalg.eigvalsh(dense_hessian(model, x, y))[-1])
    assert edge.constant == pytest.approx(2.0, rel=1e-12) and edge.step is None
    assert edge.eta_S_P == pytest.approx(0.05 * (S + 0.3), rel=1e-7)
    tracked = deep.SharpnessTracker(tol=1e-10, max_iter=203).measure(model, mse, [(x, y)], opt)
    assert tracked["preconditioned_sharpness"] == pytest.approx(S + 0.3, rel=1e-7)  # no extra HVP for SGD
    assert tracked["hvps_preconditioned"] == 0
    heavy = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    assert deep.measure_edge(model, mse, [(x, y)], heavy, step=1).constant == pytest.approx(2.0)  # first update: GD
    assert deep.measure_edge(model, mse, [(x, y)], heavy, step=5).constant == pytest.approx(3.8)


def test_sgd_with_two_learning_rates_is_measured_on_the_edge_operator():
    """SGD groups at lr 1.0 (first layer) and 0.01 (the rest), one coupled wd = 0.1: eta_S_P is
    lambda_max(D^1/2 (H + wd I) D^1/2) with D = diag(lr_g) typed here, not lr_0 (S + wd); the tracker agrees
    with measure_edge and reports no single S_P."""
    model, x, y = tiny_problem(seed=9)
    opt = torch.optim.SGD(_groups(model, (1.0, 0.01), (0.1, 0.1)), momentum=0.9)
    _train(model, opt, x, y, 3)
    H = dense_hessian(model, x, y)
    first = model[0].weight.numel() + model[0].bias.numel()
    d = np.sqrt(np.concatenate([np.full(first, 1.0), np.full(H.shape[0] - first, 0.01)]))
    reference = float(np.linalg.eigvalsh(d[:, None] * (H + 0.1 * np.eye(len(d))) * d[None, :])[-1])
    assert reference < 0.5 * 1.0 * (np.linalg.eigvalsh(H)[-1] + 0.1)  # far from the lr_0 (S + wd) shortcut
    edge = deep.measure_edge(model, mse, [(x, y)], opt, step=3, tol=1e-10, max_iter=203)
    assert edge.eta_S_P == pytest.approx(reference, rel=1e-7) and edge.lr == (1.0, 0.01)
    tracked = deep.SharpnessTracker(tol=1e-10, max_iter=203).measure(model, mse, [(x, y)], opt, step=3)
    assert tracked["eta_S_P"] == pytest.approx(reference, rel=1e-7)
    assert tracked["edge_constant"] == pytest.approx(3.8, rel=1e-12)  # heavy ball, beta = 0.9: 2 + 2 beta
    assert tracked["edge_ratio"] == pytest.approx(reference / 3.8, rel=1e-7)
    assert math.isnan(tracked["preconditioned_sharpness"]) and tracked["hvps_preconditioned"] > 0

def test_errors_name_what_cannot_be_read():
    model, x, y = tiny_problem()
    data = [(x, y)]
    rprop = torch.optim.Rprop(model.parameters())
    _train(model, rprop, x, y, 1)
    with pytest.raises(ValueError, match="^optimizer Rprop has no edge of stability to measure: its step is"):
        deep.measure_edge(model, mse, data, rprop)
    with pytest.raises(ValueError, match="^optimizer SparseAdam has no edge of stability to measure"):
        deep.measure_edge(model, mse, data, torch.optim.SparseAdam(model.parameters()))
    with pytest.raises(ValueError, match="setting the package describes"):  # decoupled decay with NAdam
        deep.measure_edge(model, mse, data, _stepped(torch.optim.NAdam(model.parameters(), weight_decay=0.1,
                                                                         decoupled_weight_decay=True), model, x, y))
    with pytest.raises(ValueError, match="no step yet"):
        deep.measure_edge(model, mse, data, torch.optim.Adam(model.parameters()))
    with pytest.raises(ValueError, match="maximize=True"):
        deep.measure_edge(model, mse, data, torch.optim.SGD(model.parameters(), lr=0.1, maximize=True))
    betas = torch.optim.Adam([{"params": [model[0].weight], "betas": (0.9, 0.999)},
                              {"params": [p for n, p in model.named_parameters() if n != "0.weight"],
                               "betas": (0.5, 0.999)}])
    _train(model, betas, x, y, 1)
    with pytest.raises(ValueError, match="different threshold constants"):
        deep.measure_edge(model, mse, data, betas)
    with pytest.raises(ValueError, match="optimizer must be a torch.optim.Optimizer"):
        deep.measure_edge(model, mse, data, "adam")


# ------------------------------------------------------------------ run logs
SMALL = dict(dataset="digits", n=200, model="mlp", width=32, loss="mse", seed=3)


def test_warmup_cosine_rows_record_the_schedule_and_the_edge(tmp_path):
    """lr column = the warmup-then-cosine formula written here, at the update the row describes (update t
    ran at the schedule's value after t - 1 scheduler steps; row 0 shows the first update's);
    eta_threshold = lr * the bias-corrected threshold; edge_ratio = eta_S_P / eta_threshold."""
    cfg = TrainConfig(**SMALL, optimizer="adam", hyper={"eta": 1e-2}, steps=40, measure_every=10,
                      schedule="warmup_cosine", warmup_steps=10, final_lr_ratio=0.2)
    rows = read_metrics(run(cfg, tmp_path / "r", progress=False))
    for r in rows:
        t = r["step"]
        u = max(t - 1, 0)  # the scheduler steps taken before update t
        factor = (u + 1) / 10 if u < 10 else 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * min(u - 10, 30) / 30))
        assert r["lr"] == pytest.approx(1e-2 * factor, rel=1e-12)
        assert r["eta_threshold"] == pytest.approx(3.8 * (1 - 0.9 ** max(t, 1)) / 0.1, rel=1e-12)
        if t > 0:
            assert r["edge_ratio"] == pytest.approx(r["eta_S_P"] / r["eta_threshold"], rel=1e-12)
            assert r["eta_S_P"] == pytest.approx(r["lr"] * r["preconditioned_sharpness"], rel=1e-12)


def test_nadam_run_log_uses_the_threshold_of_each_step(tmp_path):
    cfg = TrainConfig(**SMALL, optimizer="nadam", hyper={"eta": 1e-2}, steps=30, measure_every=10)
    rows = read_metrics(run(cfg, tmp_path / "n", progress=False))
    hyper = {"eta": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "momentum_decay": 0.004}
    for r in rows:
        assert r["eta_threshold"] == pytest.approx(1e-2 * bisect_threshold("nadam", hyper, max(r["step"], 1)),
                                                   rel=1e-9)
    assert rows[-1]["eta_threshold"] < 0.5 * (2 + 1.8) / (0.1 * 2.8)  # far below the settled 13.57 early on
