"""The `aeos threshold` command: values against closed forms, formula, and one-line errors with exit status 2.

The values are compared with the closed forms of the paper's threshold table written here
((2 + 2 beta1)/((1 - beta1) eta) for Adam, 2/eta for GD, ...), not with aeos_theory.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from aeos_theory.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(["threshold", *args])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_aeos_entry_point_prints_38000_and_the_formula():
    """The installed command end to end, in a fresh process."""
    out = subprocess.run([sys.executable, "-m", "paper_figures.console", "threshold", "--beta1", "0.9",
                          "--eta", "0.001"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "38000"  # (2 + 2 * 0.9) / ((1 - 0.9) * 0.001)
    assert "beta1" in lines[1] and "eta" in lines[1] and "z = -1" in lines[1]
    assert lines[2] == "eta * threshold = 38"


@pytest.mark.parametrize(
    "args, first",
    [
        (["--optimizer", "gd", "--eta", "0.05"], f"{2 / 0.05:.10g}"),
        (["--optimizer", "heavy_ball", "--eta", "0.1", "--beta", "0.9"], f"{(2 + 2 * 0.9) / 0.1:.10g}"),
        (["--optimizer", "nadam", "--eta", "1", "--beta1", "0.9"], f"{(2 + 1.8) / (0.1 * 2.8):.10g}"),
        (["--beta1", "0.9", "--eta", "0.001", "--step", "1"], f"{3.8 * (1 - 0.9) / (0.1 * 0.001):.10g}"),
        (["--optimizer", "heavy_ball", "--eta", "0.1", "--beta", "0", "--dampening", "0.5"], f"{2 / 0.1:.10g}"),
        (["--optimizer", "adamw", "--eta", "0.001", "--weight-decay", "100", "--step", "5"],
         f"{1.9 * (2 - 0.1) * (1 - 0.9**5) / (0.1 * 0.001):.10g}"),
    ],
)
def test_other_optimizers_match_closed_forms(capsys, args, first):
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert out.splitlines()[0] == first


def test_latex_output(capsys):
    code, out, _ = run(capsys, "--optimizer", "nesterov", "--eta", "0.01", "--latex")
    assert code == 0 and "\\frac" in out


@pytest.mark.parametrize(
    "args, words",
    [
        (["--beta1", "1.5", "--eta", "0.001"], "beta1 must satisfy 0 <= beta1 < 1"),
        (["--eta", "-1"], "eta must satisfy 0 < eta"),
        (["--eta", "nan"], "eta must be finite"),
        (["--eta", "abc"], "invalid float value"),
        (["--optimizer", "lion", "--eta", "0.1"], "invalid choice"),
        (["--optimizer", "gd", "--eta", "0.1", "--beta1", "0.9"], "unknown: beta1"),
        (["--eta", "0.001", "--step", "0"], "step must be an integer with 1 <= step <= 1e+300"),
        ([], "eta is required"),
    ],
)
def test_bad_input_exit_2_one_line(capsys, args, words):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert words in err and "Traceback" not in err


def test_nadam_step_threshold_matches_bisection_of_torchs_map(capsys):
    """--step 1000 for NAdam: the value equals bisection of torch's 1000th update (support.step_map), and
    the step coefficients are printed."""
    from support import bisect_threshold

    code, out, _ = run(capsys, "--optimizer", "nadam", "--eta", "0.001", "--step", "1000")
    assert code == 0
    hyper = {"eta": 1e-3, "beta1": 0.9, "momentum_decay": 0.004, "weight_decay": 0.0}
    assert float(out.splitlines()[0]) == pytest.approx(bisect_threshold("nadam", hyper, 1000), rel=1e-9)
    assert "at step t = 1000: c1_t = " in out and "c2_t = " in out


def test_a_huge_step_is_answered_at_once(capsys):
    """Step 10^20 - 1: NAdam's momentum schedule has settled (mu_t = beta1, Pi_t = 0 in float64), so the value is
    the settled (2 + 2 beta1)/((1 - beta1)(1 + 2 beta1) eta); step 10^8 used to take 43 s."""
    import time

    run(capsys, "--optimizer", "nadam", "--eta", "1e-3", "--step", "10")  # the sympy derivation, once
    start = time.perf_counter()
    code, out, err = run(capsys, "--optimizer", "nadam", "--eta", "1e-3", "--step", "99999999999999999999")
    assert time.perf_counter() - start < 5.0
    assert code == 0, err
    assert out.splitlines()[0] == f"{3.8 / (0.1 * 2.8 * 1e-3):.10g}"
    code, out, err = run(capsys, "--optimizer", "nadam", "--eta", "1e-3", "--step", "1" + "0" * 400)
    assert code == 2 and "step must be an integer with 1 <= step <= 1e+300, got 1e+400 (an int)" in err
