"""Logs written to a file hold whole lines, never progress-bar redraws; ``make`` passes extra flags through.

* ``aeos train`` with stderr redirected to a file: no carriage return, one line per tenth of the run.
* The figures' progress (``paper_figures.pipeline``) with stderr a file: whole lines only.
* On a terminal the bar is tqdm's, as before.
* ``make -n figures ARGS=...`` and ``make -n test ARGS=...`` show the flags on the command.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import pytest

from aeos_base.progress import LineProgress, progress


def test_aeos_train_into_a_log_file_writes_lines_not_redraws(tmp_path):
    log = tmp_path / "train.log"
    with open(log, "w") as err:
        done = subprocess.run([sys.executable, "-m", "paper_figures.console", "train", "--dataset", "digits", "--n", "60",
                               "--model", "mlp", "--width", "4", "--depth", "1", "--lr", "1e-3", "--steps", "20",
                               "--measure-every", "10", "--out", str(tmp_path / "run")], stderr=err, stdout=subprocess.PIPE,
                              text=True, timeout=300)
    assert done.returncode == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split(": ")[1].split(" steps")[0] for line in lines] == [f"{2 * i}/20" for i in range(1, 11)]
    assert lines[-1].startswith("adam eta=0.001: 20/20 steps (100%)") and "eta*S_P=" in lines[-1]


def test_the_figures_progress_into_a_log_file_writes_lines(tmp_path, monkeypatch):
    from paper_figures.pipeline import _Progress

    log = open(tmp_path / "figures.log", "w")
    monkeypatch.setattr(sys, "stderr", log)
    bar = _Progress(3, True, lambda runs: ["thresholds"])
    for label in ("a", "b", "c"):
        bar.describe([object()], label)
        bar.advance()
    bar.close()
    log.close()
    text = (tmp_path / "figures.log").read_text()
    assert "\r" not in text and text.splitlines()[-1].startswith("thresholds: 3/3 runs (100%)")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_tqdm_bar_and_a_file_gets_lines():
    from tqdm import tqdm

    assert isinstance(progress(10, file=_Terminal()), tqdm)
    lines = LineProgress(100, desc="run", unit="steps", file=io.StringIO())
    for _ in range(100):
        lines.update()
    lines.close()
    assert lines.file.getvalue().count("\n") == 10  # a line per tenth, the last one at 100/100
    quiet = progress(10, enabled=False, file=_Terminal())
    quiet.update(10)
    quiet.close()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target, flags", [("figures", "--only thresholds --jobs 2"), ("test", "-x tests/test_theory.py")])
def test_make_passes_extra_flags_through(repo_root, target, flags):
    # run as a top-level make even under `make test` (a sub-make prints "Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    out = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.installed", target, f"ARGS={flags}"],
                         cwd=repo_root, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].endswith(flags)
