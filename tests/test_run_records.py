"""Run records that cannot lie: a run folder proves its config and rows, one writer at a time, kills at any
point resume to the same numbers, the figures' cache checks its entries, and every failure of the
command line is one line with a documented exit code.

References: an uninterrupted run of the same config (rows identical but for wall time), the files'
own bytes (truncated, edited, swapped here by hand), and the exit-code contract of aeos_base.command.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from aeos_base import files
from aeos_base.command import RecordError
from deep import TrainConfig, read_metrics, run
from deep.cli import main as train_main
from deep.training.runlog import load_checkpoint, save_checkpoint
from support import run_cli, same_rows, train_args

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(dataset="digits", n=200, model="mlp", width=32, loss="mse", optimizer="adam", hyper={"eta": 0.01},
             steps=60, measure_every=10, seed=3)


def _cli(argv: list[str], main=train_main) -> tuple[int, str, str]:
    return run_cli(main, argv)


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _crash_after(monkeypatch, checkpoints: int) -> None:
    """Make the run die right after its ``checkpoints``-th checkpoint (as a kill would)."""
    import deep.training.runlog

    save, calls = deep.training.runlog.save_checkpoint, []

    def crash(path, state):
        save(path, state)
        calls.append(state["step"])
        if len(calls) == checkpoints:
            raise KeyboardInterrupt

    monkeypatch.setattr(deep.training.runlog, "save_checkpoint", crash)


def _partial(tmp_path: Path, monkeypatch, name: str, cfg: dict = SMALL, checkpoints: int = 3) -> Path:
    out = tmp_path / name
    _crash_after(monkeypatch, checkpoints)
    with pytest.raises(KeyboardInterrupt):
        run(TrainConfig(**cfg), out, progress=False)
    monkeypatch.undo()
    return out


# ------------------------------------------------------------------ the config is proven
def test_a_folder_without_config_json_is_refused(tmp_path, monkeypatch):
    """Deleting config.json and resuming with another lr used to continue the old run under a new label."""
    out = _partial(tmp_path, monkeypatch, "r")
    (out / "config.json").unlink()
    for lr in ("5e-3", "0.01"):
        code, _, err = _cli(train_args(dict(SMALL, hyper={"eta": float(lr)}), out))
        assert code == 1 and "no config.json" in _one_line(err)


def test_a_checkpoint_of_another_config_is_refused(tmp_path, monkeypatch):
    a = _partial(tmp_path, monkeypatch, "a")
    b = _partial(tmp_path, monkeypatch, "b", dict(SMALL, hyper={"eta": 0.02}))
    shutil.copy(a / "checkpoint.pt", b / "checkpoint.pt")
    with pytest.raises(RecordError, match=r"another config \(differs in: hyper.eta: 0.01 in the checkpoint, "
                                          r"0.02 in the command\)"):
        run(TrainConfig(**dict(SMALL, hyper={"eta": 0.02})), b, progress=False)


def test_a_folder_of_another_config_names_the_differing_values(tmp_path, monkeypatch):
    out = _partial(tmp_path, monkeypatch, "r")
    code, _, err = _cli(train_args(dict(SMALL, hyper={"eta": 0.005}, seed=4), out))
    assert code == 2
    assert "differs in: hyper.eta: 0.01 in the folder, 0.005 in the command; seed: 3 in the folder, 4 in the " \
           "command" in _one_line(err)


def test_a_checkpoint_without_its_proofs_or_unreadable_is_refused(tmp_path, monkeypatch):
    out = _partial(tmp_path, monkeypatch, "r")
    state = load_checkpoint(out / "checkpoint.pt")
    del state["config"]
    save_checkpoint(out / "checkpoint.pt", state)
    with pytest.raises(RecordError, match="lacks config"):
        run(TrainConfig(**SMALL), out, progress=False)
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code, _, err = _cli(train_args(SMALL, out))
    assert code == 1 and "cannot be read as a checkpoint" in _one_line(err)
    (out / "checkpoint.pt").write_bytes(b"")
    code, _, err = _cli(train_args(SMALL, out))
    assert code == 1 and "checkpoint.pt" in _one_line(err)


def test_a_checkpoint_from_other_versions_is_refused(tmp_path, monkeypatch):
    out = _partial(tmp_path, monkeypatch, "r")
    state = load_checkpoint(out / "checkpoint.pt")
    state["versions"]["torch"] = "1.0.0"
    save_checkpoint(out / "checkpoint.pt", state)
    with pytest.raises(RecordError, match="torch 1.0.0 -> "):
        run(TrainConfig(**SMALL), out, progress=False)


# ------------------------------------------------------------------ the rows are proven
def test_rows_before_the_checkpoint_cannot_change_or_vanish(tmp_path, monkeypatch):
    out = _partial(tmp_path, monkeypatch, "r", checkpoints=4)
    lines = (out / "metrics.csv").read_text().splitlines(keepends=True)
    for broken in (lines[:1] + lines[2:],                        # a row lost
                   lines[:1] + [lines[2], lines[1]] + lines[3:],  # two rows swapped
                   lines[:2] + [lines[2].replace(",", ",9", 1)] + lines[3:]):  # a value edited
        (out / "metrics.csv").write_text("".join(broken))
        with pytest.raises(RecordError, match="metrics.csv"):
            run(TrainConfig(**SMALL), out, progress=False)
    (out / "metrics.csv").write_text("".join(lines) + "70,0.5")  # a torn line after the checkpoint: fine
    reference = read_metrics(run(TrainConfig(**SMALL), tmp_path / "ref", progress=False))
    assert same_rows(read_metrics(run(TrainConfig(**SMALL), out, progress=False)), reference)


def test_a_run_started_with_other_columns_is_not_continued_in_the_same_file(tmp_path, monkeypatch):
    """A folder whose metrics.csv has the columns of an earlier version (before the minibatch columns) is
    refused on resume: appending rows of another layout would make the file unreadable."""
    import deep.training.runlog as runlog

    monkeypatch.setattr(runlog, "COLUMNS", tuple(c for c in runlog.COLUMNS if c not in runlog.BATCH_COLUMNS))
    out = _partial(tmp_path, monkeypatch, "r", checkpoints=2)
    with pytest.raises(RecordError, match="has other columns than this version of aeos writes"):
        run(TrainConfig(**SMALL), out, progress=False)


@pytest.mark.parametrize("damage", ["two rows", "torn last line", "deleted"])
def test_a_finished_run_verifies_its_rows_before_saying_completed(tmp_path, damage):
    out = tmp_path / "r"
    run(TrainConfig(**SMALL), out, progress=False)
    lines = (out / "metrics.csv").read_text().splitlines(keepends=True)
    if damage == "deleted":
        (out / "metrics.csv").unlink()
    else:
        (out / "metrics.csv").write_text("".join(lines[:3]) if damage == "two rows" else "".join(lines)[:-3])
    code, out_text, err = _cli(train_args(SMALL, out))
    assert code == 1 and out_text == "" and "metrics.csv" in _one_line(err)


# ------------------------------------------------------------------ one writer, and kills
def test_a_second_writer_stops_at_once(tmp_path):
    out = tmp_path / "r"
    cfg = dict(SMALL, steps=4000, measure_every=500)
    proc = subprocess.Popen([sys.executable, "-m", "deep.cli", *train_args(cfg, out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        start = time.monotonic()
        with pytest.raises(RecordError, match=r"being written by pid \d+"):
            run(TrainConfig(**cfg), out, progress=False)
        assert time.monotonic() - start < 30  # refused before any training
        code, _, err = _cli(train_args(cfg, out))
        assert code == 1 and "being written by pid" in _one_line(err)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9
    with files.exclusive_lock(out):  # the OS released the dead writer's lock
        pass


def test_sigterm_stops_like_ctrl_c_and_the_run_resumes_to_the_same_rows(tmp_path):
    """SIGTERM (what a job scheduler sends) once a checkpoint exists: exit 130 with one line on stderr (it
    used to be 143 and silent), and the same command resumes to the rows of an uninterrupted run."""
    cfg = dict(SMALL, steps=400, measure_every=20)
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "deep.cli", *train_args(cfg, out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert _one_line(err) == "terminated (SIGTERM)"
    assert not (out / "summary.json").exists()  # stopped before the end: the resume below has work to do
    reference = read_metrics(run(TrainConfig(**cfg), tmp_path / "ref", progress=False))
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert same_rows(read_metrics(out), reference)


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_loses_and_duplicates_nothing(tmp_path):
    cfg = dict(SMALL, steps=200, measure_every=20)
    reference = read_metrics(run(TrainConfig(**cfg), tmp_path / "ref", progress=False))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "deep.cli", *train_args(cfg, out)]
    rng = random.Random(7)
    for _ in range(4):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert same_rows(read_metrics(out), reference)
    assert not list(out.glob(".*.tmp"))


def test_killed_mid_checkpoint_resumes_to_the_same_rows(tmp_path, monkeypatch):
    """Death after the new checkpoint's temporary file is written and fsynced but before it replaces the
    old one: the old checkpoint stands, the stale file is cleaned up, the rows come out identical."""
    reference = read_metrics(run(TrainConfig(**SMALL), tmp_path / "ref", progress=False))
    out = tmp_path / "r"
    replace, calls = os.replace, []

    def die_on_third_checkpoint(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            calls.append(dst)
            if len(calls) == 3:
                raise SystemExit("killed")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", die_on_third_checkpoint)
    with pytest.raises(SystemExit):
        run(TrainConfig(**SMALL), out, progress=False)
    monkeypatch.undo()
    assert same_rows(read_metrics(run(TrainConfig(**SMALL), out, progress=False)), reference)
    assert not list(out.glob(".*.tmp"))


# ------------------------------------------------------------------ divergence and exit codes
def test_divergence_by_growth_is_recorded_with_exit_code_3(tmp_path):
    """RMSprop at lr 10 blows the loss up by orders of magnitude without overflowing: diverged, exit 3."""
    cfg = dict(SMALL, optimizer="rmsprop", hyper={"eta": 10.0}, steps=50)
    code, out, err = _cli(train_args(cfg, tmp_path / "r"))
    assert code == 3 and out == "" and _one_line(err).startswith("diverged at step")
    rows = read_metrics(tmp_path / "r")
    assert rows[-1]["train_loss"] > 1e4 * rows[0]["train_loss"] or not math.isfinite(rows[-1]["train_loss"])
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("where", ["train", "figures", "simulate"])
def test_os_errors_are_one_line_and_exit_1(tmp_path, where):
    from paper_figures.console import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = {"train": train_args(dict(SMALL, steps=1), blocker / "run"),
            "figures": ["figures", "--scale", "tiny", "--only", "thresholds", "--out", str(blocker / "figs"),
                        "--no-progress"],
            "simulate": ["simulate", "--eta", "0.01", "--steps", "10", "--out", str(blocker / "s.csv")]}[where]
    code, _, err = _cli(argv, main)
    assert code == 1 and "Not a directory" in _one_line(err)


def test_a_failed_atomic_write_names_the_target_not_its_temporary_file(tmp_path):
    target = tmp_path / "missing" / "summary.json"
    with pytest.raises(FileNotFoundError) as caught:
        files.write_json(target, {"a": 1})
    assert caught.value.filename == str(target) and ".tmp" not in str(caught.value)


def test_empty_out_is_bad_input(tmp_path):
    from paper_figures.console import main

    for argv in (["train", "--out", "", "--lr", "0.1"], ["figures", "--out", ""],
                 ["simulate", "--eta", "0.1", "--steps", "1", "--out", ""]):
        code, _, err = _cli(argv, main)
        assert code == 2 and "empty" in _one_line(err)


# ------------------------------------------------------------------ the figures' cache
def _fake_figure(runs):
    module = types.ModuleType("fake_figure")
    module.TITLE = "fake"
    module.plan = lambda ctx: runs

    def finish(ctx, planned, results, out):
        from paper_figures import style

        fig, axes = style.figure(1, 1, width="column")
        axes[0, 0].plot(results[0]["metrics"]["step"], results[0]["metrics"]["sharpness"])
        style.save(fig, out, "thresholds")
        return {"numbers": {"last": [r["metrics"]["eta_S_P"][-1] for r in results]}, "caption": "fake"}

    module.finish = finish
    return module


def _tiny_runs():
    from paper_figures.figures import training

    base = dict(dataset="digits", n=100, model="mlp", width=16, loss="mse")
    return [training.train_run(f"tiny {opt}", optimizer=opt, hyper={"eta": eta}, steps=40, measure_every=10,
                               base=base) for opt, eta in (("adam", 0.01), ("gd", 0.5))]


def test_jobs_1_and_jobs_2_give_identical_numbers(tmp_path, monkeypatch):
    """In-process (--jobs 1, this process's threads) and pool (--jobs 2) runs fix their own thread count."""
    from paper_figures import pipeline, registry

    runs = _tiny_runs()
    monkeypatch.setattr(pipeline, "load", lambda name: _fake_figure(runs))
    torch.set_num_threads(2)
    ctx = registry.Context(scale="tiny")
    assert pipeline.Production(["thresholds"], ctx, tmp_path / "one", "t").run(jobs=1, progress=False) == 0
    assert pipeline.Production(["thresholds"], ctx, tmp_path / "two", "t").run(jobs=2, progress=False) == 0
    for r in runs:
        one = files.read_json(tmp_path / "one" / "runs" / r.key / "result.json")
        two = files.read_json(tmp_path / "two" / "runs" / r.key / "result.json")
        metrics = {k: v for k, v in one["metrics"].items() if k != "wall_time"}
        assert metrics == {k: v for k, v in two["metrics"].items() if k != "wall_time"}


def test_bad_cache_entries_are_recomputed_and_say_so(tmp_path, monkeypatch, capsys):
    from paper_figures import pipeline, registry

    runs = _tiny_runs()
    monkeypatch.setattr(pipeline, "load", lambda name: _fake_figure(runs))
    ctx = registry.Context(scale="tiny")
    assert pipeline.Production(["thresholds"], ctx, tmp_path, "t").run(progress=False) == 0
    good = [files.read_json(tmp_path / "runs" / r.key / "result.json")["metrics"]["eta_S_P"] for r in runs]
    first, second = (tmp_path / "runs" / r.key for r in runs)
    (first / "result.json").write_text("{garbage")
    (second / "result.json").write_text("{}")
    capsys.readouterr()
    assert pipeline.Production(["thresholds"], ctx, tmp_path, "t").run(progress=False) == 0
    err = capsys.readouterr().err
    assert "recomputing run tiny adam" in err and "recomputing run tiny gd" in err
    # a train folder cut short with no result.json: the run is proven broken and recomputed from step 0
    (first / "result.json").unlink()
    lines = (first / "train" / "metrics.csv").read_text().splitlines(keepends=True)
    (first / "train" / "metrics.csv").write_text("".join(lines[:3]))
    assert pipeline.Production(["thresholds"], ctx, tmp_path, "t").run(progress=False) == 0
    assert "recomputing" in capsys.readouterr().err
    now = [files.read_json(tmp_path / "runs" / r.key / "result.json")["metrics"]["eta_S_P"] for r in runs]
    assert json.dumps(now) == json.dumps(good)


def _cut(result: dict, rows: int) -> dict:
    return {**result, "rows": rows, "metrics": {k: v[:rows] for k, v in result["metrics"].items()}}


TRAINING_DAMAGE = {
    "no metrics": (lambda r: {"_key": r["_key"]}, "holds no metrics table"),
    "cut to 3 rows": (lambda r: _cut(r, 3), "holds 3 rows (steps 0..20) where a run completed at step 40 "
                                            "measured every 10 steps has 5 (steps 0..40)"),
    "a column lost": (lambda r: {**r, "metrics": {k: v for k, v in r["metrics"].items() if k != "edge_ratio"}},
                      "lacks the metrics columns edge_ratio"),
    "a string cell": (lambda r: {**r, "metrics": {**r["metrics"], "sharpness": ["abc", *r["metrics"]["step"][1:]]}},
                      "holds 'abc' in metrics column sharpness"),
    "no status": (lambda r: {k: v for k, v in r.items() if k != "status"}, "lacks the run's status"),
    "says diverged": (lambda r: {**_cut(r, 3), "status": "diverged", "last_step": 20},
                      "(status, last step, rows) = ('diverged', 20, 3) but"),
}


@pytest.mark.parametrize("damage", list(TRAINING_DAMAGE))
def test_training_results_that_do_not_match_their_run_are_recomputed(tmp_path, monkeypatch, capsys, damage):
    """A training result.json must hold every column of deep.training.runlog.COLUMNS, numbers, its status, and as many
    rows as its own config (every measure_every steps from 0, and the last step) and train/summary.json say:
    one cut consistently to 3 rows used to give a GD median of 0.83 instead of 2.01."""
    from paper_figures import pipeline, registry

    runs = _tiny_runs()
    monkeypatch.setattr(pipeline, "load", lambda name: _fake_figure(runs))
    ctx = registry.Context(scale="tiny")
    assert pipeline.Production(["thresholds"], ctx, tmp_path, "t").run(progress=False) == 0
    path = tmp_path / "runs" / runs[1].key / "result.json"
    good = files.read_json(path)
    change, reason = TRAINING_DAMAGE[damage]
    files.write_json(path, change(good))
    capsys.readouterr()
    assert pipeline.Production(["thresholds"], ctx, tmp_path, "t").run(progress=False) == 0
    err = capsys.readouterr().err
    assert "recomputing run tiny gd seed 0: " in err and reason in err, err
    now = files.read_json(path)
    assert {k: v for k, v in now["metrics"].items() if k != "wall_time"} == \
        {k: v for k, v in good["metrics"].items() if k != "wall_time"}


@pytest.mark.parametrize("optimizer, eta, fields, status", [("gd", 0.5, {"target_loss": 0.29}, "target_reached"),
                                                             ("rmsprop", 10.0, {}, "diverged")])
def test_training_results_that_stop_off_the_grid_pass_the_check(tmp_path, optimizer, eta, fields, status):
    """A run that reaches its target or diverges between two measurements ends with that step's row (the
    grid below it, then the step itself); the check accepts it, so it is not recomputed at every invocation."""
    from paper_figures.cache import RunCache, execute
    from paper_figures.figures import training

    base = dict(dataset="digits", n=100, model="mlp", width=16, loss="mse")
    run_ = training.train_run("stops early", optimizer=optimizer, hyper={"eta": eta}, steps=400, measure_every=7,
                              base=base, **fields)
    _, result = execute(run_, str(tmp_path))
    last = result["last_step"]
    assert result["status"] == status and last % 7 != 0
    assert result["metrics"]["step"] == list(range(0, last, 7)) + [last]
    assert RunCache(tmp_path).problem(run_) is None


def test_figure_errors_name_the_figure_and_the_run(tmp_path, monkeypatch):
    """A result that turns bad after the command checked it, and a drawing bug: each is one line naming the
    figure (and the run), in summary.json and on stderr."""
    from paper_figures import pipeline, registry

    runs = _tiny_runs()
    monkeypatch.setattr(pipeline, "load", lambda name: _fake_figure(runs))
    ctx = registry.Context(scale="tiny")
    assert pipeline.Production(["thresholds"], ctx, tmp_path, "t").run(progress=False) == 0
    production = pipeline.Production(["thresholds"], ctx, tmp_path, "t")
    (tmp_path / "runs" / runs[1].key / "result.json").write_text(json.dumps({"_key": runs[1].key}))
    error = production.finish("thresholds")["error"]
    assert error.startswith(f"figure thresholds: run tiny gd seed 0 ({runs[1].key}) has no usable result: ")
    assert "holds no metrics table" in error

    broken = _fake_figure(runs)
    broken.finish = lambda ctx, planned, results, out: results[0]["nothing"]
    monkeypatch.setattr(pipeline, "load", lambda name: broken)
    production = pipeline.Production(["thresholds"], ctx, tmp_path, "t")
    assert production.run(progress=False) == 1
    entry = files.read_json(tmp_path / "summary.json")["figures"]["thresholds"]
    assert entry["error"] == "figure thresholds: drawing failed: KeyError: 'nothing' (traceback in errors.log)"


def test_a_locked_cache_entry_is_not_computed_twice(tmp_path):
    from paper_figures.cache import RunCache, execute

    run_ = _tiny_runs()[0]
    with files.exclusive_lock(RunCache(tmp_path).run_dir(run_)):
        with pytest.raises(RecordError, match="cache entry of run tiny adam .* being written by pid"):
            execute(run_, str(tmp_path))


@pytest.mark.slow
def test_pool_workers_stop_when_the_driver_is_killed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "paper_figures", "--scale", "tiny", "--only", "deep_adam",
                             "--jobs", "2", "--no-progress", "--out", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.monotonic() + 120
    while len(workers) < 2 and time.monotonic() < deadline:
        workers = {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == proc.pid}
        time.sleep(0.2)
    time.sleep(2)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{w}").exists() and _parent(Path(f"/proc/{w}")) != 0 for w in workers):
        assert time.monotonic() < deadline, "pool workers outlived their driver"
        time.sleep(0.2)


def _parent(proc_dir: Path) -> int:
    try:
        stat = (proc_dir / "stat").read_text()
    except OSError:
        return 0
    if stat.rsplit(")", 1)[1].split()[0] == "Z":  # a zombie has exited
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])
