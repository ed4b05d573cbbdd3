"""Run folders: resume after a kill, determinism, divergence, target, errors, every model/optimizer.

References: an uninterrupted run of the same config (rows must be identical, wall time aside), the
Adam bias-corrected threshold written out here, (2 + 2 beta1)(1 - beta1^t)/((1 - beta1) eta), and
the CLI contract (bad input: exit 2, one stderr line; a diverged run: exit 3, one stderr line
naming the step and the loss its row holds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from deep import TrainConfig, read_metrics, run
from deep.cli import main
from support import run_cli, same_rows, train_args

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(dataset="digits", n=200, model="mlp", width=32, loss="mse", optimizer="adam", hyper={"eta": 0.01},
             steps=300, measure_every=20, seed=3)


def test_minibatch_resume_after_a_crash_continues_the_same_batches(tmp_path, monkeypatch):
    """A crash right after the 3rd checkpoint (in-process), then run() again: identical to one run."""
    import deep.training.runlog

    cfg = TrainConfig(**dict(SMALL, batch_size=50, steps=200))
    reference = read_metrics(run(cfg, tmp_path / "ref", progress=False))
    save, calls = deep.training.runlog.save_checkpoint, []

    def crash_after_three(path, state):
        save(path, state)
        calls.append(state["step"])
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(deep.training.runlog, "save_checkpoint", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(deep.training.runlog, "save_checkpoint", save)
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [0, 20, 40]
    resumed = read_metrics(run(cfg, tmp_path / "b", progress=False))
    assert [r["step"] for r in resumed] == list(range(0, 201, 20)) and same_rows(resumed, reference)


def test_same_seed_same_metrics_other_seed_differs(tmp_path):
    cfg = dict(SMALL, steps=60, batch_size=32, optimizer="rmsprop", hyper={"eta": 1e-3, "beta": 0.5})
    a = read_metrics(run(TrainConfig(**cfg), tmp_path / "a", progress=False))
    b = read_metrics(run(TrainConfig(**cfg), tmp_path / "b", progress=False))
    c = read_metrics(run(TrainConfig(**dict(cfg, seed=4)), tmp_path / "c", progress=False))
    assert same_rows(a, b) and not same_rows(a, c)
    assert all(math.isfinite(r["preconditioned_sharpness"]) for r in a[1:])


def test_adam_threshold_column_is_bias_corrected(tmp_path):
    rows = read_metrics(run(TrainConfig(**dict(SMALL, steps=30, measure_every=10)), tmp_path / "r", progress=False))
    b1, eta = 0.9, 0.01
    for r in rows:
        t = max(r["step"], 1)
        assert math.isclose(r["threshold"], (2 + 2 * b1) * (1 - b1 ** t) / ((1 - b1) * eta), rel_tol=1e-12)
        if r["step"] > 0:
            assert math.isclose(r["eta_S_P"], eta * r["preconditioned_sharpness"], rel_tol=1e-12)


def test_adam_with_weight_decay_records_early_thresholds(tmp_path):
    """eta = 0.01, wd = 20 is valid (eta wd = 0.2), though eta / (1 - beta1) * wd = 2 at step 1: the run
    records the wd-free threshold (2 + 2 b1)(1 - b1^t)/((1 - b1) eta) from step 0 on (coupled decay is in
    the measured curvature, H + wd I, not in the threshold) and edge_ratio = eta_S_P / eta_threshold."""
    hyper = {"eta": 0.01, "weight_decay": 20.0}
    rows = read_metrics(run(TrainConfig(**dict(SMALL, hyper=hyper, steps=10, measure_every=5)), tmp_path / "wd",
                            progress=False))
    assert [r["step"] for r in rows] == [0, 5, 10]
    for r in rows:
        t = max(r["step"], 1)
        assert math.isclose(r["threshold"], 3.8 * (1 - 0.9 ** t) / (0.1 * 0.01), rel_tol=1e-12)
        assert math.isclose(r["eta_threshold"], 0.01 * r["threshold"], rel_tol=1e-12) and r["lr"] == 0.01
        if r["step"] > 0:
            assert math.isclose(r["edge_ratio"], r["eta_S_P"] / r["eta_threshold"], rel_tol=1e-12)


def test_divergence_is_recorded_not_raised(tmp_path):
    out = tmp_path / "div"
    cfg = TrainConfig(**dict(SMALL, optimizer="gd", hyper={"eta": 5.0}, activation="identity", steps=100))
    rows = read_metrics(run(cfg, out, progress=False))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and rows[-1]["step"] == summary["step"] < 100
    blown = lambda loss: not math.isfinite(loss) or loss > 1e4 * rows[0]["train_loss"]  # noqa: E731  (documented)
    assert blown(rows[-1]["train_loss"]) and not any(blown(r["train_loss"]) for r in rows[:-1])
    before = (out / "metrics.csv").read_text()
    run(cfg, out, progress=False)  # a finished folder is left alone
    assert (out / "metrics.csv").read_text() == before


def test_cli_on_a_diverged_run_names_the_step_and_its_loss_on_stderr(tmp_path):
    """`aeos train` of RMSProp at lr 10: exit status 3, one stderr line naming the diverged step (the last
    row's, summary.json's) and the loss recorded there, nothing on stdout."""
    out = tmp_path / "div"
    cfg = dict(SMALL, optimizer="rmsprop", hyper={"eta": 10.0}, steps=50, measure_every=10)
    code, stdout, stderr = run_cli(main, train_args(cfg, out))
    summary, rows = json.loads((out / "summary.json").read_text()), read_metrics(out)
    assert code == 3 and summary["status"] == "diverged" and stdout == ""
    step, loss = summary["step"], rows[-1]["train_loss"]
    assert 0 < step == rows[-1]["step"] < 50 and not (math.isfinite(loss) and loss <= 1e4 * rows[0]["train_loss"])
    assert stderr.count("\n") == 1 and stderr.startswith(f"diverged at step {step}: train_loss {loss:.6g} (")


def test_target_loss_stops_the_run(tmp_path):
    out = tmp_path / "t"
    rows = read_metrics(run(TrainConfig(**dict(SMALL, target_loss=0.2)), out, progress=False))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "target_reached" and rows[-1]["train_loss"] <= 0.2 < rows[-2]["train_loss"]
    assert math.isfinite(rows[-1]["sharpness"]) and rows[-1]["step"] == summary["step"] < 300


@pytest.mark.parametrize("cfg", [
    dict(dataset="text", n=8, context=16, model="transformer", width=16, depth=1, loss="ce", optimizer="adamw",
         hyper={"eta": 1e-3}),
    dict(dataset="digits", n=64, model="cnn", width=4, loss="ce", optimizer="nesterov", hyper={"eta": 0.1}),
    dict(dataset="cifar10", n=8, model="resnet", width=4, depth=1, loss="mse", optimizer="nadam", hyper={"eta": 1e-3}),
    dict(dataset="synthetic", n=64, model="mlp", width=8, loss="mse", optimizer="heavy_ball",
         hyper={"eta": 0.1, "beta": 0.9, "dampening": 0.5}, batch_size=16),
], ids=["transformer-adamw", "cnn-nesterov", "resnet-nadam", "mlp-heavy_ball-minibatch"])
def test_every_model_and_optimizer_trains_and_measures(tmp_path, cfg, fake_cifar):
    if cfg["dataset"] == "cifar10":
        cfg = dict(cfg, data_dir=str(fake_cifar))
    rows = read_metrics(run(TrainConfig(**dict(cfg, steps=4, measure_every=2, seed=0)), tmp_path / "r", progress=False))
    assert [r["step"] for r in rows] == [0, 2, 4]
    for r in rows[1:]:
        assert math.isfinite(r["sharpness"]) and math.isfinite(r["preconditioned_sharpness"]) and r["hvps"] > 0
        assert math.isfinite(r["train_loss"]) and 0 <= r["train_accuracy"] <= 1


def _cli_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["train", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_cli_bad_flags_exit_2_with_one_line(tmp_path, capsys):
    out = ["--out", str(tmp_path / "x"), "--no-progress"]
    assert "eta must satisfy 0 < eta" in _cli_error(capsys, *out, "--lr", "-1")
    assert "invalid choice: 'mnist'" in _cli_error(capsys, *out, "--lr", "1", "--dataset", "mnist")
    assert "invalid choice" in _cli_error(capsys, *out, "--lr", "1", "--optimizer", "lion")
    assert "takes hyperparameters" in _cli_error(capsys, *out, "--lr", "1", "--optimizer", "gd", "--beta1", "0.9")
    assert "beta1 must satisfy" in _cli_error(capsys, *out, "--lr", "1", "--beta1", "1.5")
    assert "invalid int value" in _cli_error(capsys, *out, "--lr", "1", "--steps", "many")
    assert "measure_every must be an integer >= 1" in _cli_error(capsys, *out, "--lr", "1", "--measure-every", "0")
    assert "the official CIFAR-10 python batches" in _cli_error(
        capsys, *out, "--lr", "1", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"))
    assert "transformer" in _cli_error(capsys, *out, "--lr", "1", "--model", "transformer")
    assert "n must be an integer with 1 <= n <= 1797" in _cli_error(capsys, *out, "--lr", "1", "--n", "5000")
    assert not (tmp_path / "x").exists()  # bad input leaves no half-made run folder behind
    assert "device must be" in _cli_error(capsys, *out, "--lr", "1", "--device", "tpu")
    import torch

    if not torch.cuda.is_available():
        assert "CUDA is not available" in _cli_error(capsys, *out, "--lr", "1", "--device", "cuda")


def test_cli_refuses_a_folder_with_another_config(tmp_path, capsys):
    out = tmp_path / "r"
    run(TrainConfig(**dict(SMALL, steps=2, measure_every=1)), out, progress=False)
    err = _cli_error(capsys, "--out", str(out), "--lr", "0.5", "--no-progress")
    assert "different config" in err


def test_recorded_sharpness_equals_dense_hessian_eigh(tmp_path):
    """Last row of a chunked float64 Adam run vs numpy eigh of the dense Hessian at the checkpoint.

    H from torch.autograd.functional.hessian of the one-chunk MSE; P = sqrt(v / (1 - beta2^t)) + eps
    from the checkpointed Adam state, written out here; with coupled weight decay wd = 0.5 the optimizer
    descends L + wd/2 |theta|^2, so S_P = top eig of P^-1/2 (H + wd I) P^-1/2.
    """
    import numpy as np
    import torch
    from support import dense_hessian

    from deep import build_model, load_digits
    from deep.training.runlog import load_checkpoint

    cfg = TrainConfig(dataset="digits", n=50, model="mlp", width=8, depth=1, loss="mse", optimizer="adam",
                      hyper={"eta": 0.01, "weight_decay": 0.5}, steps=10, measure_every=5, chunk_size=16,
                      dtype="float64", tol=1e-10, max_hvps=700, seed=1)
    last = read_metrics(run(cfg, tmp_path / "r", progress=False))[-1]
    state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert state["step"] == last["step"] == 10
    model = build_model("mlp", (64,), 10, width=8, depth=1, seed=1).double()
    model.load_state_dict(state["model"])
    X, y = load_digits(50)
    H = dense_hessian(model, X.double(), y.double())
    names = [n for n, _ in model.named_parameters()]
    assert np.isclose(np.linalg.eigvalsh(H)[-1], last["sharpness"], rtol=1e-6)
    b2, eps = 0.999, 1e-8
    v = torch.cat([state["optimizer"]["state"][i]["exp_avg_sq"].reshape(-1) for i in range(len(names))]).numpy()
    p = np.sqrt(v / (1 - b2 ** 10)) + eps
    s_p = np.linalg.eigvalsh((H + 0.5 * np.eye(len(p))) / np.sqrt(np.outer(p, p)))[-1]  # coupled decay wd = 0.5
    assert np.isclose(s_p, last["preconditioned_sharpness"], rtol=1e-6)
    assert np.isclose(last["eta_S_P"], 0.01 * s_p, rtol=1e-6)
