"""Full batch across processes with torch.distributed (2 gloo processes on the CPU, spawned here).

References: the same quantities computed in this single process on the whole batch (float64 for the
measurements: they agree to round-off); an uninterrupted run of the same command (a killed distributed
run must resume to identical rows).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deep import TrainConfig, read_metrics, run
from support import adam_trained, full_batch_measurements, same_rows, sharded_measurements, tiny_problem, train_args

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(dataset="digits", n=200, model="mlp", width=32, loss="mse", optimizer="adam", hyper={"eta": 0.01},
             steps=40, measure_every=10, seed=3)


def test_sharded_measurements_equal_one_process(tmp_path):
    """Loss, gradient, HVP, S, S_P, eta_S_P and a seeded trace from two shards equal the whole batch's, and so do
    the batch sharpness's seeded minibatches (drawn from the whole data set, each rank adding its members)."""
    import torch.multiprocessing as mp

    mp.start_processes(sharded_measurements, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2,
                       start_method="spawn", join=True)
    model, x, y = tiny_problem(seed=2, n=41)
    opt = adam_trained(model, x, y)
    expected = full_batch_measurements(model, opt, [(x, y)])  # the whole batch in this process
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # replicated and in step: every rank holds the same numbers
    for key, value in expected.items():
        np.testing.assert_allclose(ranks[0][key], value, rtol=1e-10, atol=1e-13, err_msg=key)


def test_two_processes_train_as_one(tmp_path):
    """`aeos train --nproc 2` (elastic launcher, gloo) against one process: the same rows to 1e-4 before
    the edge; rank 0 alone writes; the process count is part of the recorded config."""
    one = read_metrics(run(TrainConfig(**SMALL), tmp_path / "one", progress=False))
    cmd = [sys.executable, "-m", "deep.cli", *train_args(dict(SMALL, nproc=2), tmp_path / "two")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("completed at step 40") == 1 and done.stderr == ""
    two = read_metrics(tmp_path / "two")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [0, 10, 20, 30, 40]
    for a, b in zip(one, two):
        for column in ("train_loss", "train_accuracy", "sharpness", "preconditioned_sharpness", "eta_S_P"):
            if not math.isnan(a[column]):
                assert b[column] == pytest.approx(a[column], rel=1e-4), column
    assert json.loads((tmp_path / "two" / "config.json").read_text())["config"]["nproc"] == 2


def test_two_ranks_with_the_same_chunking_are_identical(tmp_path):
    """Two ranks, each holding one of the two chunks of a one-process run: every sum is then the same two
    terms (a + b == b + a in floating point), so the rows are identical, bit for bit, past the point where
    the dynamics would amplify any round-off."""
    cfg = dict(SMALL, steps=120, measure_every=20, chunk_size=100)
    one = read_metrics(run(TrainConfig(**cfg), tmp_path / "one", progress=False))
    cmd = [sys.executable, "-m", "deep.cli", *train_args(dict(cfg, nproc=2), tmp_path / "two")]
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    assert same_rows(read_metrics(tmp_path / "two"), one)


def _ranks_of(launcher: int) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes (from /proc)."""
    ranks = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != launcher:
                continue
            env = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError):
            continue
        if "RANK" in env:
            ranks[int(env["RANK"])] = int(proc.name)
    return ranks


KILLED_RUN = dict(SMALL, steps=120, measure_every=20, nproc=2)


@pytest.fixture(scope="module")
def uninterrupted_rows(tmp_path_factory):
    """The rows of KILLED_RUN run to the end without interruption (shared by both victims)."""
    folder = tmp_path_factory.mktemp("uninterrupted") / "ref"
    cmd = [sys.executable, "-m", "deep.cli", *train_args(KILLED_RUN, folder)]
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=600).returncode == 0
    return read_metrics(folder)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
def test_killing_any_rank_stops_the_run_and_it_resumes(tmp_path, victim, uninterrupted_rows):
    cfg, reference = KILLED_RUN, uninterrupted_rows
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "deep.cli", *train_args(cfg, out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "metrics.csv").exists() and (out / "metrics.csv").read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    os.kill(_ranks_of(proc.pid)[victim], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and not (out / "summary.json").exists()
    assert err.decode().count("\n") == 1 and f"rank {victim} of 2 was killed by SIGKILL" in err.decode()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert same_rows(read_metrics(out), reference)


def test_the_torchrun_form_of_the_readme(tmp_path):
    """`torchrun --standalone --nproc-per-node 2 -m deep.cli -- train ...` (no --nproc: it is torchrun's world
    size) gives the rows of `aeos train --nproc 2`."""
    cfg = dict(SMALL, steps=20)
    ours = [sys.executable, "-m", "deep.cli", *train_args(dict(cfg, nproc=2), tmp_path / "ours")]
    assert subprocess.run(ours, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    theirs = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "deep.cli",
              "--", *train_args(cfg, tmp_path / "torchrun")]
    done = subprocess.run(theirs, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "torchrun" / "config.json").read_text())["config"]["nproc"] == 2
    assert same_rows(read_metrics(tmp_path / "torchrun"), read_metrics(tmp_path / "ours"))


def test_resuming_with_another_process_count_is_refused(tmp_path):
    """The process count is part of the config: a one-process run is not resumed by two ranks (exit 2, one
    line on stderr from rank 0 alone)."""
    run(TrainConfig(**dict(SMALL, steps=10)), tmp_path / "r", progress=False)
    cmd = [sys.executable, "-m", "deep.cli", *train_args(dict(SMALL, steps=10, nproc=2), tmp_path / "r")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "differs in: nproc" in done.stderr


def test_nproc_outside_a_launch_is_bad_input(tmp_path):
    with pytest.raises(ValueError, match="WORLD_SIZE=1"):
        run(TrainConfig(**dict(SMALL, nproc=2)), tmp_path / "r", progress=False)


def test_figure_runs_shard_through_the_launcher(tmp_path):
    """`aeos figures --nproc 2`: a figure's training run started as 2 ranks (python -m deep.training.rank)
    returns the same cached columns as the one-process run, to 1e-4 before the edge."""
    from paper_figures.figures.training import train

    one = train(tmp_path / "one", **SMALL)
    two = train(tmp_path / "two", **dict(SMALL, nproc=2))
    assert (two["status"], two["last_step"], two["rows"]) == (one["status"], one["last_step"], one["rows"]) \
        == ("completed", 40, 5)
    for column in ("train_loss", "sharpness", "preconditioned_sharpness"):
        np.testing.assert_allclose(two["metrics"][column], one["metrics"][column], rtol=1e-4, err_msg=column)
