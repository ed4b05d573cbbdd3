"""``aeos simulate`` / ``aeos bisect``: the CSV it writes against an independent numpy run, the settled
level against the closed form, the diverged exit code, and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from aeos_base import files
from sims.cli import main
from sims.reference import reference_run


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_simulate_writes_the_series_of_an_independent_numpy_run(tmp_path, capsys):
    """GD on the dense quadratic (seed 2, d = 6): every recorded loss equals the numpy reference's
    1/2 x^T H x at that step, with H and x0 rebuilt here from numpy's QR of the seeded Gaussian."""
    path = tmp_path / "series.csv"
    code, out, _ = run(capsys, "simulate", "--optimizer", "gd", "--eta", "0.01", "--steps", "50",
                       "--record-every", "10", "--d", "6", "--seed", "2", "--out", str(path))
    assert code == 0
    rng = np.random.default_rng(2)
    q, r = np.linalg.qr(rng.standard_normal((6, 6)))
    q = q * np.sign(np.diag(r))
    H = (q * np.logspace(0, 2, 6)) @ q.T
    H = 0.5 * (H + H.T)
    x0 = np.random.default_rng(3).standard_normal(6)
    xs, _ = reference_run("gd", H, x0, 0.01, 50)
    rows = files.read_csv(path)
    assert [int(r["step"]) for r in rows] == [0, 10, 20, 30, 40, 50]
    for row in rows:
        x = xs[int(row["step"])]
        assert float(row["loss"]) == pytest.approx(0.5 * x @ H @ x, rel=1e-10)
        assert float(row["sharpness"]) == pytest.approx(100.0, rel=1e-10)
    assert "threshold eta * lambda* = 2" in out


def test_simulate_reports_the_settled_level_and_divergence(capsys):
    code, out, _ = run(capsys, "simulate", "--optimizer", "adam", "--eta", "0.01", "--steps", "20000")
    assert code == 0
    median = float(out.split("late median eta * S_P = ")[1].split()[0])
    assert median == pytest.approx((2 + 2 * 0.9) / (1 - 0.9), abs=2.0)
    # eta * S = 0.05 * 100 = 5 > 2: GD diverges; recorded as such with its step, exit status 3
    code, out, _ = run(capsys, "simulate", "--optimizer", "gd", "--eta", "0.05", "--steps", "1000")
    assert code == 3 and "diverged at step" in out


def test_bisect_prints_the_closed_form(capsys):
    code, out, _ = run(capsys, "bisect", "--optimizer", "nesterov", "--eta", "0.1", "--beta", "0.5")
    assert code == 0
    values = dict(line.split(" = ", 1) for line in out.splitlines()[:2])
    closed = (2 + 2 * 0.5) / ((1 + 2 * 0.5) * 0.1)
    assert float(values["bisection lambda*"]) == pytest.approx(closed, rel=1e-6)
    assert float(values["exact     lambda*"]) == pytest.approx(closed, rel=1e-12)


@pytest.mark.parametrize("argv, words", [
    (["simulate", "--eta", "-1"], "eta must satisfy 0 < eta"),
    (["simulate", "--eta", "0.1", "--steps", "-5"], "steps must be an integer >= 0"),
    (["simulate", "--eta", "0.1", "--problem", "cube"], "invalid choice"),
    (["simulate", "--optimizer", "gd", "--eta", "0.1", "--beta1", "0.9"], "unknown: beta1"),
    (["bisect", "--eta", "0.1", "--rtol", "0"], "rtol must satisfy"),
])
def test_bad_input_is_one_line_and_status_2(capsys, argv, words):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and words in err, err
