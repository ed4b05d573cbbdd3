"""The ``python -m sims.<name>`` scripts: files written, numbers consistent, resume, bad input -> exit 2."""

from __future__ import annotations

import csv
import json

import pytest

from sims import _script, adam_quadratic, phase_diagram, sharpening_contrast, threshold_check


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_threshold_check_writes_and_resumes(tmp_path):
    out = tmp_path / "tc"
    assert threshold_check.main(["--out", str(out), "--optimizers", "gd", "adam", "--betas", "0", "0.9"]) == 0
    rows = _rows(out / "thresholds.csv")
    assert len(rows) == 3 and (out / "thresholds.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["max_rel_error"] < 1e-4
    # an interrupted run left a torn line: the rerun drops it, keeps the 3 rows, adds only the new beta
    with (out / "thresholds.csv").open("a") as f:
        f.write("adam,beta1,0.5,0.01")
    assert threshold_check.main(["--out", str(out), "--optimizers", "gd", "adam", "--betas", "0", "0.9", "0.5"]) == 0
    again = _rows(out / "thresholds.csv")
    assert again[:3] == rows and len(again) == 4 and again[3]["beta"] == "0.5"


def test_phase_diagram_agrees_with_theory(tmp_path):
    out = tmp_path / "pd"
    assert phase_diagram.main(["--out", str(out), "--optimizers", "gd", "nadam", "--n", "30", "--steps", "600"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"gd", "nadam"}
    assert all(v["disagreement_fraction"] <= 0.02 for v in summary.values())
    assert len(_rows(out / "phase_gd.csv")) == 900 and (out / "phase_diagram.png").stat().st_size > 0


def test_adam_quadratic_and_sharpening_scripts(tmp_path):
    assert adam_quadratic.main(["--out", str(tmp_path / "aq"), "--scale", "0.05"]) == 0
    rows = _rows(tmp_path / "aq" / "series.csv")
    assert {float(r["eta"]) for r in rows} == {1e-3, 3e-3, 1e-2}
    assert (tmp_path / "aq" / "adam_quadratic.png").stat().st_size > 0
    assert sharpening_contrast.main(["--out", str(tmp_path / "sc"), "--steps", "2000", "--record-every", "100"]) == 0
    summary = json.loads((tmp_path / "sc" / "summary.json").read_text())
    assert set(summary["runs"]) == {"gd", "adam"}
    assert len(_rows(tmp_path / "sc" / "series.csv")) == 2 * 21


def test_bad_input_exits_with_status_2(tmp_path, capsys):
    with pytest.raises(ValueError, match="n must be"):
        phase_diagram.main(["--out", str(tmp_path), "--n", "1"])

    def failing(argv):
        raise ValueError("eta must satisfy 0 < eta < inf, got -1.0")

    with pytest.raises(SystemExit) as exit_info:
        _script.run_main(failing)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: eta must satisfy 0 < eta < inf, got -1.0"
    with pytest.raises(ValueError, match="eta"):
        sharpening_contrast.main(["--out", str(tmp_path / "x"), "--eta", "-1"])
