"""paper_figures end to end at a tiny scale: summary numbers against closed forms, the gallery against
summary.json, valid PNG/PDF files, output where the user says, the run cache (a second invocation
recomputes nothing; an interrupted one resumes), and bad CLI input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from paper_figures import cli, pipeline, registry, report
from paper_figures.cache import Run, RunCache

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _main(*argv: str) -> int:
    return cli.main([*argv, "--no-progress"])


def _check_images(out: Path, name: str) -> None:
    png, pdf = (out / f"{name}.png").read_bytes(), (out / f"{name}.pdf").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-1024:] and len(pdf) > 5000


@pytest.fixture(scope="module")
def thresholds_out(tmp_path_factory) -> Path:
    """The thresholds figure at tiny scale, run from an empty folder without --out."""
    cwd = tmp_path_factory.mktemp("cwd")
    before = os.getcwd()
    os.chdir(cwd)
    try:
        assert _main("--scale", "tiny", "--only", "thresholds", "--jobs", "1") == 0
    finally:
        os.chdir(before)
    return cwd / cli.DEFAULT_OUT


def test_output_goes_to_a_folder_in_the_current_directory(thresholds_out: Path) -> None:
    assert thresholds_out.is_dir() and thresholds_out.name == "aeos_figures"
    assert {p.name for p in thresholds_out.iterdir()} >= {"thresholds.png", "thresholds.pdf", "summary.json",
                                                          "README.md", "data", "runs"}


def test_thresholds_numbers_match_closed_forms(thresholds_out: Path) -> None:
    fig = json.loads((thresholds_out / "summary.json").read_text())["figures"]["thresholds"]
    numbers = fig["numbers"]
    assert numbers["max_relative_error"] < 1e-4
    b = 0.9  # closed forms of the paper's threshold table (eta * lambda*), independent of aeos_theory
    closed = {"adam": (2 + 2 * b) / (1 - b), "nadam": (2 + 2 * b) / ((1 - b) * (1 + 2 * b)),
              "heavy_ball": 2 + 2 * b, "nesterov": (2 + 2 * b) / (1 + 2 * b)}
    for opt, value in closed.items():
        assert numbers[opt]["empirical_constant_at_0.9"] == pytest.approx(value, rel=1e-4)
    rows = (thresholds_out / "data" / "thresholds.csv").read_text().splitlines()
    assert rows[0].startswith("optimizer,momentum") and len(rows) == 1 + 4 * 4
    _check_images(thresholds_out, "thresholds")


def test_gallery_shows_the_numbers_of_summary_json(thresholds_out: Path) -> None:
    """Every number of the figure's summary entry appears in the gallery's table, formatted, and the
    image it links to exists."""
    summary = json.loads((thresholds_out / "summary.json").read_text())
    gallery = (thresholds_out / "README.md").read_text()
    assert "![thresholds](thresholds.png)" in gallery
    numbers = summary["figures"]["thresholds"]["numbers"]
    for key, value in report._flatten(numbers):
        assert f"| `{key}` | {report.format_number(value)} |" in gallery
    assert f"| `max_relative_error` | {numbers['max_relative_error']:.4g} |" in gallery


def test_second_invocation_only_redraws(thresholds_out: Path, capsys) -> None:
    results = sorted((thresholds_out / "runs").glob("*/result.json"))
    assert len(results) == 4
    before = {p: p.stat().st_mtime_ns for p in results}
    png = thresholds_out / "thresholds.png"
    png.unlink()
    capsys.readouterr()
    assert _main("--scale", "tiny", "--only", "thresholds", "--out", str(thresholds_out)) == 0
    assert "computed 0 runs, reused 4 from the cache" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in results} == before
    _check_images(thresholds_out, "thresholds")


@pytest.mark.slow
def test_quadratic_aeos_hovers_at_38(tmp_path: Path) -> None:
    assert _main("--scale", "tiny", "--only", "quadratic_aeos", "--out", str(tmp_path), "--jobs", "1") == 0
    numbers = json.loads((tmp_path / "summary.json").read_text())["figures"]["quadratic_aeos"]["numbers"]
    medians = [v["late_median_eta_S_P"] for k, v in numbers.items() if k.startswith("eta=")]
    assert medians and all(abs(m - 38.0) <= 2.0 for m in medians)  # 38 = (2 + 2 * 0.9) / (1 - 0.9)
    _check_images(tmp_path, "quadratic_aeos")


@pytest.mark.slow
def test_figures_with_their_own_run_functions_run_end_to_end(tmp_path: Path) -> None:
    """spectral_density restores its training run's last checkpoint and central_flows runs the flows of its
    training runs: the real run functions, which the drawing test replaces by fakes, at tiny scale."""
    assert _main("--scale", "tiny", "--only", "spectral_density,central_flows", "--out", str(tmp_path),
                 "--jobs", "2") == 0
    figures = json.loads((tmp_path / "summary.json").read_text())["figures"]
    density = figures["spectral_density"]["numbers"]
    assert density["step"] == 150 and 0 < density["eta_S_P"] < 2 * density["threshold"] and density["S"] > 0
    gd = figures["central_flows"]["numbers"]["gd"]
    assert gd["edge_step"] is not None and gd["central_max_edge_deviation"] < 0.05
    assert gd["central_median_relative_error"] < 0.1
    for name in ("spectral_density", "central_flows"):
        _check_images(tmp_path, name)


# ------------------------------------------------------------------ cache and resume (fake figure)
CALLS: list[int] = []
FAIL = {"on": False}


def _fake_compute(i: int) -> dict:
    CALLS.append(i)
    if i == 2 and FAIL["on"]:
        raise RuntimeError("simulated interruption")
    return {"value": i ** 2}


def _fake_module() -> types.ModuleType:
    module = types.ModuleType("fake_figure")
    module.TITLE = "fake"
    module.plan = lambda ctx: [Run(f"{__name__}:_fake_compute", {"i": i}, label=f"fake {i}") for i in range(3)]

    def finish(ctx, runs, results, out):
        from paper_figures import style

        fig, axes = style.figure(1, 1, width="column")
        axes[0, 0].plot([r["value"] for r in results])
        style.save(fig, out, "thresholds")
        return {"numbers": {"sum": sum(r["value"] for r in results)}, "caption": "fake"}

    module.finish = finish
    return module


def test_interrupted_invocation_resumes(tmp_path: Path, monkeypatch) -> None:
    CALLS.clear()
    FAIL["on"] = True
    monkeypatch.setattr(pipeline, "load", lambda name: _fake_module())
    ctx = registry.Context(scale="tiny")
    assert pipeline.Production(["thresholds"], ctx, tmp_path, "test").run(progress=False) == 1  # run 2 fails
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "simulated interruption" in summary["figures"]["thresholds"]["error"]
    assert sorted(CALLS) == [0, 1, 2]
    FAIL["on"] = False
    CALLS.clear()
    assert pipeline.Production(["thresholds"], ctx, tmp_path, "test").run(progress=False) == 0
    assert CALLS == [2]  # runs 0 and 1 came from the cache, run 2 (same key) is computed now
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["figures"]["thresholds"]["numbers"] == {"sum": 0 + 1 + 4}


def test_run_key_depends_on_config_only() -> None:
    a = Run("m:f", {"x": 1, "y": [1, 2]}, label="a")
    b = Run("m:f", {"y": [1, 2], "x": 1}, label="b")
    assert a.key == b.key and a.key != Run("m:f", {"x": 2, "y": [1, 2]}).key
    assert Run("m:g", {"x": 1, "y": [1, 2]}).key != a.key
    with pytest.raises(KeyError):
        RunCache(Path("/nonexistent")).load(a)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("argv, needle", [
    (["--only", "nope"], "--only must name figures among"),
    (["--jobs", "0"], "--jobs must be an integer with 1 <= --jobs <= 256"),
    (["--jobs", "two"], "invalid int value"),
    (["--quick", "--full"], "not allowed with argument"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_aeos_figures_subcommand_bad_input(repo_root: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "paper_figures.console", "figures", "--only", "thresholds,bogus"],
                          cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "'bogus'" in proc.stderr
