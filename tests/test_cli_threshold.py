"""The `aeos threshold` command: values, formula, and one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paper_figures.cli", *args], capture_output=True, text=True)


def test_adam_threshold_prints_38000_and_formula():
    out = run("threshold", "--beta1", "0.9", "--eta", "0.001")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "38000"
    assert "beta1" in lines[1] and "eta" in lines[1] and "z = -1" in lines[1]
    assert lines[2] == "eta * threshold = 38"


@pytest.mark.parametrize(
    "args, first",
    [
        (["--optimizer", "gd", "--eta", "0.05"], "40"),
        (["--optimizer", "heavy_ball", "--eta", "0.1", "--beta", "0.9"], "38"),
        (["--optimizer", "nadam", "--eta", "1", "--beta1", "0.9"], "13.57142857"),
        (["--beta1", "0.9", "--eta", "0.001", "--step", "1"], "3800"),
    ],
)
def test_other_optimizers(args, first):
    out = run("threshold", *args)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == first


def test_latex_output():
    out = run("threshold", "--optimizer", "nesterov", "--eta", "0.01", "--latex")
    assert out.returncode == 0 and "\\frac" in out.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--beta1", "1.5", "--eta", "0.001"], "beta1 must satisfy 0 <= beta1 < 1"),
        (["--eta", "-1"], "eta must satisfy 0 < eta"),
        (["--eta", "nan"], "eta must be finite"),
        (["--eta", "abc"], "invalid float value"),
        (["--optimizer", "lion", "--eta", "0.1"], "invalid choice"),
        (["--optimizer", "gd", "--eta", "0.1", "--beta1", "0.9"], "unknown: beta1"),
        (["--eta", "0.001", "--step", "0"], "t must be an integer step >= 1"),
        ([], "eta is required"),
    ],
)
def test_bad_input_exit_2_one_line(args, words):
    out = run("threshold", *args)
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert words in out.stderr and "Traceback" not in out.stderr
