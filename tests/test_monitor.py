"""``deep.Monitor`` in a researcher's own loop, end to end, and its callbacks in the real libraries.

The loop: a GPT with causal SDPA and tied embeddings (float64), AdamW with weight decay, a linear warmup and a
cosine schedule whose last update has lr 0, ``monitor.step()`` after ``scheduler.step()``.  Each row is checked
against quantities computed here: the lr of the update just taken (the schedule's formula), eta * S_P = lr S_P
with S_P from scipy ``eigsh`` on plain-autograd HVPs and P rebuilt from AdamW's state
(``support.eigsh_top``), AdamW's threshold constant (1 + beta1)(2 - lr wd)(1 - beta1^t)/(1 - beta1) written out,
the full-batch loss, and the oscillation from the iterates kept here.  The CSV has the columns of
``metrics.csv`` and reads back equal.  TensorBoard, Lightning and the Hugging Face ``Trainer`` run for real
when installed, and are skipped otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch
from support import TinyGPT, eigsh_top, lm_loss, token_data

import deep
from deep.training.runlog import COLUMNS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS, WARMUP, EVERY, LR, WD, BETA1 = 12, 3, 4, 0.05, 0.1, 0.9


def _factor(t: int) -> float:
    """lr / LR of update t + 1 (t = 0, 1, ...): linear warmup, then a cosine reaching 0 at the last update."""
    if t < WARMUP:
        return (t + 1) / WARMUP
    return 0.5 * (1 + math.cos(math.pi * (t - WARMUP) / (STEPS - 1 - WARMUP)))


def _loop(tmp_path, **monitor):
    torch.manual_seed(0)
    model = TinyGPT().double()
    X, y = token_data()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, betas=(BETA1, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, _factor)
    mon = deep.Monitor(model, lm_loss, (X, y), opt, every=EVERY, csv=tmp_path / "edge.csv", **monitor)
    iterates, checks = {}, []
    for t in range(1, STEPS + 1):
        opt.zero_grad()
        lm_loss(model(X), y).backward()
        opt.step()
        schedule.step()
        iterates[t] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        row = mon.step()
        assert (row is not None) == (t % EVERY == 0)
        if row is not None:
            (_, b2), eps = opt.param_groups[0]["betas"], opt.param_groups[0]["eps"]
            v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in model.parameters()])
            p_diag = torch.sqrt(v / (1 - b2**t)) + eps
            with torch.no_grad():
                loss = float(lm_loss(model(X), y))
            checks.append((row, eigsh_top(model, lm_loss, [(X, y)], p_diag.rsqrt()),
                           eigsh_top(model, lm_loss, [(X, y)]), loss, iterates.get(t - 1), iterates.get(t - 2),
                           iterates[t]))
    mon.close()
    return mon, checks


def test_monitor_in_a_users_loop_records_what_the_reference_computes(tmp_path):
    mon, checks = _loop(tmp_path, tol=1e-9)
    assert [row["step"] for row, *_ in checks] == [4, 8, 12]
    for row, s_p, s, loss, w1, w2, w in checks:
        t = row["step"]
        lr = LR * _factor(t - 1)  # the update just taken, t, ran at the schedule's lr of update t
        assert row["lr"] == pytest.approx(lr, rel=1e-12, abs=1e-300)
        assert row["sharpness"] == pytest.approx(s, rel=1e-6)
        assert row["preconditioned_sharpness"] == pytest.approx(s_p, rel=1e-6)
        assert row["eta_S_P"] == pytest.approx(lr * s_p, rel=1e-6, abs=0)
        constant = (1 + BETA1) * (2 - lr * WD) * (1 - BETA1**t) / (1 - BETA1)
        assert row["eta_threshold"] == pytest.approx(constant, rel=1e-12)
        assert row["edge_ratio"] == pytest.approx(lr * s_p / constant, rel=1e-6, abs=0)
        assert row["threshold"] == (pytest.approx(constant / lr, rel=1e-12) if lr > 0 else math.inf)
        assert row["train_loss"] == pytest.approx(loss, rel=1e-12)
        assert row["oscillation_total"] == pytest.approx(float((w - 2 * w1 + w2).norm()) / 4, rel=1e-12)
    last = checks[-1][0]
    assert last["lr"] == 0.0 and last["eta_S_P"] == 0.0 and last["edge_ratio"] == 0.0  # cosine to 0: no step
    written = deep.read_metrics(tmp_path / "edge.csv")
    assert (tmp_path / "edge.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    assert [r["step"] for r in written] == [4, 8, 12]
    for got, row in zip(written, mon.rows):
        for key in COLUMNS:
            assert got[key] == pytest.approx(float(row[key]), nan_ok=True), key
    assert mon.seconds > 0 and mon.overhead > 0 and "3 rows" in repr(mon)


def test_sharpness_every_skips_the_solve_for_s_in_between(tmp_path):
    mon, checks = _loop(tmp_path, sharpness_every=2)
    solved = [not math.isnan(row["sharpness"]) for row in mon.rows]
    assert solved == [True, False, True]
    assert all(math.isfinite(row["preconditioned_sharpness"]) for row in mon.rows)


def test_monitor_refuses_bad_arguments(tmp_path):
    model = TinyGPT()
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="every must"):
        deep.Monitor(model, lm_loss, token_data(), opt, every=0)
    with pytest.raises(ValueError, match="optimizer must be a torch.optim.Optimizer"):
        deep.Monitor(model, lm_loss, token_data(), None)


def test_tensorboard_scalars_equal_the_rows(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mon, _ = _loop(tmp_path, tensorboard=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("aeos/eta_S_P")]
    assert logged == [(row["step"], pytest.approx(row["eta_S_P"], rel=1e-6)) for row in mon.rows]


def _gpt_module():
    lightning = pytest.importorskip("lightning")

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.gpt = TinyGPT().double()

        def forward(self, idx):
            return self.gpt(idx)

        def training_step(self, batch, batch_idx):
            return lm_loss(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=LR, weight_decay=WD)

    return lightning, Module


def test_lightning_callback_measures_in_lightnings_loop(tmp_path):
    lightning, Module = _gpt_module()
    torch.manual_seed(0)
    X, y = token_data()
    module = Module()
    callback = deep.training.lightning_callback(lm_loss, (X, y), every=3, tol=1e-9)
    trainer = lightning.Trainer(max_steps=6, callbacks=[callback], logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                                default_root_dir=tmp_path)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=len(X))
    trainer.fit(module, loader)
    rows = callback.monitor.rows
    assert [row["step"] for row in rows] == [3, 6]
    opt = trainer.optimizers[0]
    edge = deep.measure_edge(module, lm_loss, (X, y), opt, tol=1e-10, max_iter=300)  # after the last update
    assert rows[-1]["eta_S_P"] == pytest.approx(edge.eta_S_P, rel=1e-6)


def test_huggingface_callback_measures_in_the_trainers_loop(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config)  # attention through SDPA
    X, _ = token_data(n=8, context=6)
    examples = [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x} for x in X]
    full_batch = [{"input_ids": X, "attention_mask": torch.ones_like(X), "labels": X}]
    callback = deep.training.huggingface_callback(full_batch, every=2, tol=1e-8)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8,
                                          learning_rate=1e-2, report_to=[], save_strategy="no",
                                          logging_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=examples, callbacks=[callback])
    trainer.train()
    rows = callback.monitor.rows
    assert [row["step"] for row in rows] == [2, 4]
    opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    edge = deep.measure_edge(model, deep.model_loss, full_batch, opt, tol=1e-10, max_iter=300)
    assert rows[-1]["eta_S_P"] == pytest.approx(edge.eta_S_P, rel=1e-4)
    assert rows[-1]["lr"] == pytest.approx(edge.lr[0], rel=1e-12)
