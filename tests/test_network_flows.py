"""Flows of networks as people train them: torch optimizers and schedulers followed, or refused; float32.

References: the learning rates a ``torch.optim`` optimizer and its scheduler actually use, update by
update, in a torch loop written here; the rows of ``deep.run`` for the same configuration; the float64
flow for the float32 one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import deep
from deep.flows.follow import lr_factors
from deep.flows.network import central_flow, flow_of_run
from deep.training.schedules import WarmupCosine

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 24


def _mlp(seed: int = 1) -> torch.nn.Module:
    return deep.build_model("mlp", (64,), 10, width=8, depth=1, seed=seed)


def _adamw_and_scheduler(model: torch.nn.Module):
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.1)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(6, STEPS, 0.1))


def _lrs_used(model: torch.nn.Module, steps: int) -> list[float]:
    """The lr of updates 1..steps of AdamW under the scheduler, read in a torch loop before each step."""
    model = _mlp()
    optimizer, scheduler = _adamw_and_scheduler(model)
    used = []
    for _ in range(steps):
        used.append(optimizer.param_groups[0]["lr"])
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        scheduler.step()
    return used


def test_a_flow_follows_a_torch_optimizer_and_its_scheduler():
    """AdamW and a LambdaLR warmup-cosine passed as objects: the flow's lr at every update is the one the
    torch loop uses (the records hold the lr of the update just taken), the flow is the one of the
    package name with the same factors, and the model, the optimizer and the scheduler are untouched."""
    data = deep.load_digits(40)
    model = _mlp()
    optimizer, scheduler = _adamw_and_scheduler(model)
    before = [p.detach().clone() for p in model.parameters()]
    used = _lrs_used(model, STEPS)
    np.testing.assert_allclose(np.array(lr_factors(scheduler, STEPS)) * 0.02, used, rtol=1e-15)
    flow = central_flow(model, deep.mse, data, optimizer, scheduler=scheduler, steps=STEPS, record_every=4)
    by_name = central_flow(model, deep.mse, data, "adamw", eta=0.02, weight_decay=0.1, steps=STEPS, record_every=4,
                           scheduler=[u / 0.02 for u in used])
    assert flow.status == by_name.status == "completed"
    for column in flow.records:
        if column != "wall_time":
            np.testing.assert_array_equal(flow.column(column), by_name.column(column))
    step = flow.column("step").astype(int)
    np.testing.assert_allclose(flow.column("lr"), [used[max(s, 1) - 1] for s in step], rtol=1e-15)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None and p.dtype == torch.float32 for p in model.parameters())
    assert not optimizer.state and scheduler.last_epoch == 0 and optimizer.param_groups[0]["lr"] == used[0]


def test_a_flow_of_a_run_has_the_runs_learning_rates(tmp_path):
    """flow_of_run follows the run's own scheduler: its rows carry the lr of deep.run's rows, step by step."""
    config = dict(dataset="digits", n=40, model="mlp", width=8, depth=1, loss="mse", optimizer="adamw",
                  hyper={"eta": 0.02, "weight_decay": 0.1}, steps=STEPS, measure_every=4, schedule="warmup_cosine",
                  warmup_steps=6, seed=0, threads=1)
    rows = deep.read_metrics(deep.run(deep.TrainConfig(**config), tmp_path / "run", progress=False))
    flow = flow_of_run(config)
    assert flow.column("step").tolist() == [r["step"] for r in rows]
    np.testing.assert_allclose(flow.column("lr"), [r["lr"] for r in rows], rtol=1e-12)
    np.testing.assert_allclose(flow.column("eta_threshold")[1:], [r["eta_threshold"] for r in rows][1:], rtol=1e-9)


def test_what_a_flow_cannot_follow_is_refused_by_name():
    data, model = deep.load_digits(20), _mlp()
    params = list(model.parameters())

    def refused(optimizer, match, scheduler=None):
        with pytest.raises(ValueError, match=match):
            central_flow(model, deep.mse, data, optimizer, scheduler=scheduler, steps=4)

    refused(torch.optim.Rprop(params), r"optimizer torch\.optim\.Rprop cannot be followed by a central flow")
    refused(torch.optim.Adagrad(params), r"optimizer torch\.optim\.Adagrad \(the package's 'adagrad'\) cannot be followed")
    refused(torch.optim.SGD(params, lr=0.1, momentum=0.9), r"torch\.optim\.SGD \(the package's 'heavy_ball'\) cannot")
    refused(torch.optim.Adam(params, amsgrad=True), r"torch\.optim\.Adam with amsgrad=True .* cannot be followed")
    refused(torch.optim.RMSprop(params, centered=True), r"RMSprop with centered=True .* cannot be followed")
    refused(torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}]),
            "optimizer param groups must share one setting")
    refused(torch.optim.Adam(params[:1]), "optimizer must hold exactly the model's trainable parameters")
    stepped = torch.optim.Adam(params)
    for p in params:
        p.grad = torch.zeros_like(p)
    stepped.step()
    refused(stepped, r"optimizer \(torch\.optim\.Adam\) has taken steps already")
    adam = torch.optim.Adam(params)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(adam)
    refused(adam, r"scheduler torch\.optim\.lr_scheduler\.ReduceLROnPlateau cannot be followed .* from the losses",
            plateau)
    adam = torch.optim.Adam(params)
    cycle = torch.optim.lr_scheduler.OneCycleLR(adam, max_lr=0.01, total_steps=10)
    refused(adam, r"OneCycleLR cannot be followed .* it changes betas", cycle)
    adam = torch.optim.Adam(params)
    torch.optim.lr_scheduler.LinearLR(adam)
    refused(adam, "has a scheduler attached .* pass it as scheduler=")
    refused(torch.optim.Adam(params), "scheduler must be attached to the optimizer it schedules",
            torch.optim.lr_scheduler.LinearLR(torch.optim.Adam(params)))
    refused("heavy_ball", "optimizer must be one of gd, rmsprop, adam, adamw, nadam; got 'heavy_ball'")
    with pytest.raises(ValueError, match="batch_size must be None"):
        flow_of_run({"dataset": "digits", "n": 50, "optimizer": "gd", "hyper": {"eta": 0.1}, "batch_size": 10})


def test_a_float32_flow_agrees_with_the_float64_flow():
    """AdamW with a warmup then cosine on a small MLP, to the edge: the float32 flow's loss and eta S_P
    within 1e-4 of the float64 flow's (measured: a few 1e-6), the model left in float32."""
    config = dict(dataset="digits", n=60, model="mlp", width=8, depth=1, loss="mse", optimizer="adamw",
                  hyper={"eta": 0.03, "weight_decay": 0.1}, steps=60, measure_every=10, schedule="warmup_cosine",
                  warmup_steps=10, seed=0, threads=1)
    double, single = flow_of_run(config), flow_of_run(config, dtype="float32")
    assert double.status == single.status == "completed" and single.w.dtype == torch.float32
    for column in ("train_loss", "eta_S_P"):
        np.testing.assert_allclose(single.column(column)[1:], double.column(column)[1:], rtol=1e-4)


def test_a_flow_runs_through_attention_layer_norm_and_tied_weights():
    """The whole causal block of tests/test_third_derivatives.py (SDPA attention, LayerNorm, GELU, tied
    embedding) under AdamW: every product goes through the third-order ops, the flow completes with
    finite rows."""
    from test_third_derivatives import CONTEXT, VOCAB, Block

    torch.manual_seed(0)
    tokens = torch.randint(0, VOCAB, (8, CONTEXT))
    targets = torch.roll(tokens, -1, dims=1)
    flow = central_flow(Block(), deep.cross_entropy, (tokens, targets), "adamw", eta=0.05, weight_decay=0.1,
                        steps=6, record_every=2)
    assert flow.status == "completed"
    assert all(math.isfinite(v) for c in ("train_loss", "lr", "eta_threshold") for v in flow.records[c])
    assert np.all(np.isfinite(flow.column("eta_S_P")[1:]))


def test_a_comparison_measures_the_run_at_every_step():
    """flow_comparison steps the run as deep.run does (same losses and lrs at the grid steps), measures the
    period-2 amplitude from three consecutive iterates at every step, and sums up on the same grid."""
    from deep.flows.experiments import comparison_rows, flow_comparison
    from deep.measure.oscillation import period_two_amplitude

    config = dict(dataset="digits", n=40, model="mlp", width=8, depth=1, loss="mse", optimizer="adamw",
                  hyper={"eta": 0.02, "weight_decay": 0.1}, steps=12, measure_every=4, schedule="warmup_cosine",
                  warmup_steps=3, seed=0, threads=1)
    result = flow_comparison(config)
    discrete = result["discrete"]
    assert discrete["step"] == list(range(13)) and math.isnan(discrete["oscillation_total"][1])
    model = deep.build_model("mlp", (64,), 10, width=8, depth=1, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(3, 12, 0.1))
    data = deep.load_digits(40)
    iterates = [torch.cat([p.detach().reshape(-1) for p in model.parameters()])]
    for _ in range(12):
        optimizer.zero_grad()
        deep.mse(model(data.X), data.y).backward()
        optimizer.step()
        scheduler.step()
        iterates.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    for t in (2, 7, 12):
        assert discrete["oscillation_total"][t] == pytest.approx(
            period_two_amplitude(iterates[t], iterates[t - 1], iterates[t - 2]), rel=1e-4, abs=1e-9)
    assert result["edge"]["step"] == [0, 4, 8, 12] and result["central"]["records"]["step"] == [0, 4, 8, 12]
    rows = comparison_rows(result, "adamw")
    assert [r["step"] for r in rows] == [0, 4, 8, 12] and {r["schedule"] for r in rows} == {"warmup_cosine"}
    assert set(result["numbers"]) >= {"central_median_relative_error", "stable_median_relative_error", "edge_step"}
