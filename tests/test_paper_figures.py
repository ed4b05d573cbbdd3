"""paper_figures end to end at a tiny scale: summary numbers against closed forms, the gallery against
summary.json (its header from the recorded machine and versions), valid PNG/PDF files, output where the
user says (and never into a tracked folder by default), the run cache (a second invocation recomputes
nothing; an interrupted one resumes), seeds in every sampled figure's plan, ``--check`` against a
gallery, ``--dry-run`` estimates, and bad CLI input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from paper_figures import cli, estimate, intervals, pipeline, registry, report
from paper_figures.cache import Run, RunCache
from paper_figures.figures.common import seed_of

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
    assert numbers["max_relative_error"]["mean"] < 1e-4 and numbers["max_relative_error"]["method"] == "deterministic"
    b = 0.9  # closed forms of the paper's threshold table (eta * lambda*), independent of aeos_theory
    closed = {"adam": (2 + 2 * b) / (1 - b), "nadam": (2 + 2 * b) / ((1 - b) * (1 + 2 * b)),
              "heavy_ball": 2 + 2 * b, "nesterov": (2 + 2 * b) / (1 + 2 * b)}
    for opt, value in closed.items():
        assert numbers[opt]["empirical_constant_at_0.9"]["mean"] == pytest.approx(value, rel=1e-4)
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
    assert f"| `max_relative_error` | {numbers['max_relative_error']['mean']:.4g} |" in gallery


def test_summary_and_gallery_header_record_the_machine_and_versions(thresholds_out: Path) -> None:
    """The invocation's environment in summary.json is this interpreter's, and the gallery's header is written
    from it (never by hand); every figure records its CPU seconds and seeds."""
    import platform
    from importlib import metadata

    summary = json.loads((thresholds_out / "summary.json").read_text())
    env = summary["invocation"]["environment"]
    assert env["python"] == platform.python_version() and env["cpus"] == os.cpu_count() and env["jobs"] == 1
    for package in ("torch", "numpy", "numba"):
        assert env[package] == metadata.version(package)
    header = (thresholds_out / "README.md").read_text().split("## 1.")[0]
    assert f"torch {env['torch']}, numpy {env['numpy']}, numba {env['numba']}" in header
    assert f"{env['cpus']} cores" in header and f"{summary['invocation']['seconds']} s wall" in header
    entry = summary["figures"]["thresholds"]
    assert entry["cpu_seconds"] > 0 and entry["seeds"] == []


def test_make_figures_writes_only_where_git_ignores(repo_root: Path) -> None:
    """`make figures` runs the command with its default --out, and git ignores that folder and --check's."""
    recipe = (repo_root / "Makefile").read_text().split("\nfigures:")[1].split("\n\n")[0]
    assert "-m paper_figures" in recipe and "--out" not in recipe
    for folder in (cli.DEFAULT_OUT, cli.DEFAULT_CHECK_OUT):
        probe = subprocess.run(["git", "check-ignore", "-q", f"{folder}/summary.json"], cwd=repo_root)
        assert probe.returncode == 0, f"{folder} is not ignored by git"


#: Figures with nothing sampled (a bisection, a grid of runs from x0 = 1): no seeds.
DETERMINISTIC = ("thresholds", "phase_diagrams")


@pytest.mark.parametrize("scale, least", [("quick", 3), ("full", 5)])
def test_every_sampled_figure_runs_each_condition_at_several_seeds(scale: str, least: int) -> None:
    """At quick (full) scale every condition of a sampled figure, its config but the seed, runs at >= 3 (5)
    seeds."""
    ctx = registry.Context(scale=scale)
    for name in registry.FIGURES:
        runs = registry.load(name).plan(ctx)
        conditions: dict[str, set[int]] = {}
        for run in runs:
            config = json.loads(json.dumps(run.config))
            for holder in (config, config.get("run"), config.get("train"), config.get("config")):
                if isinstance(holder, dict):
                    holder.pop("seed", None)
            conditions.setdefault(run.fn + json.dumps(config, sort_keys=True), set()).add(seed_of(run.config))
        counts = {len(seeds) for seeds in conditions.values()}
        if name in DETERMINISTIC:
            assert counts == {1}, name
        else:
            assert min(counts) >= least, (name, counts)


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


@pytest.fixture(scope="module")
def quadratic_gallery(tmp_path_factory) -> Path:
    """The quadratic_aeos figure at tiny scale (2 seeds): a small gallery to check against."""
    out = tmp_path_factory.mktemp("gallery")
    assert _main("--scale", "tiny", "--only", "quadratic_aeos", "--out", str(out), "--jobs", "1") == 0
    return out


def test_quadratic_aeos_hovers_at_38(quadratic_gallery: Path) -> None:
    numbers = json.loads((quadratic_gallery / "summary.json").read_text())["figures"]["quadratic_aeos"]["numbers"]
    medians = [v["late_median_eta_S_P"] for k, v in numbers.items() if k.startswith("eta=")]
    assert medians and all(m["n"] == 2 for m in medians)
    # 38 = (2 + 2 * 0.9) / (1 - 0.9): every seed's late median near it, and inside the interval of the mean
    assert all(abs(v - 38.0) <= 2.0 for m in medians for v in m["values"])
    assert all(m["interval"][0] <= 38.0 <= m["interval"][1] for m in medians)
    _check_images(quadratic_gallery, "quadratic_aeos")


def test_check_agrees_with_its_own_gallery_and_fails_a_shifted_one(quadratic_gallery: Path, tmp_path: Path,
                                                                  capsys) -> None:
    """--check regenerates the figure into a scratch folder and prints one row per headline: on this machine
    the fresh means equal the committed ones (exit 0); against a copy whose late median was moved 10 of
    its interval widths away it reports DISAGREE and exits 1."""
    scratch = tmp_path / "scratch"
    capsys.readouterr()
    assert _main("--check", "--against", str(quadratic_gallery), "--only", "quadratic_aeos", "--out", str(scratch),
                 "--jobs", "1") == 0
    table = capsys.readouterr().out
    committed = json.loads((quadratic_gallery / "summary.json").read_text())
    headlines = dict(intervals.headlines(committed["figures"]["quadratic_aeos"]["numbers"]))
    for number in headlines:
        assert any(line.split()[:2] == ["quadratic_aeos", number] and line.split()[-1] == "inside"
                   for line in table.splitlines()), (number, table)
    assert table.splitlines()[-1] == f"{len(headlines)} numbers: {len(headlines)} inside"

    shifted = tmp_path / "shifted"
    shifted.mkdir()
    moved = committed["figures"]["quadratic_aeos"]["numbers"]["eta=0.01"]["late_median_eta_S_P"]
    width = moved["interval"][1] - moved["interval"][0]
    moved.update(mean=moved["mean"] + 10 * width, interval=[v + 10 * width for v in moved["interval"]])
    (shifted / "summary.json").write_text(json.dumps(committed))
    assert _main("--check", "--against", str(shifted), "--only", "quadratic_aeos", "--out", str(scratch),
                 "--jobs", "1") == 1
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if "eta=0.01.late_median_eta_S_P" in line)
    assert row.split()[-1] == "DISAGREE" and "1 number(s) disagree" in captured.err


def test_check_runs_at_the_gallery_scale_only(quadratic_gallery: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--check", "--quick", "--against", str(quadratic_gallery), "--no-progress"])
    assert exc.value.code == 2 and "--check compares at the scale of the --against gallery (tiny)" in \
        capsys.readouterr().err


def test_full_dry_run_prints_runs_seeds_steps_and_rescaled_cpu_time(quadratic_gallery: Path, capsys) -> None:
    """--full --dry-run computes nothing and prints, for the figure, the full plan's runs, seeds and steps,
    and its CPU time: the gallery's measured CPU seconds times (full plan's modelled cost / tiny plan's)."""
    before = sorted(p.name for p in quadratic_gallery.iterdir())
    assert _main("--full", "--dry-run", "--against", str(quadratic_gallery), "--only", "quadratic_aeos") == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in quadratic_gallery.iterdir()) == before
    full = registry.load("quadratic_aeos").plan(registry.Context(scale="full"))
    tiny = registry.load("quadratic_aeos").plan(registry.Context(scale="tiny"))
    measured = json.loads((quadratic_gallery / "summary.json").read_text())["figures"]["quadratic_aeos"]["cpu_seconds"]
    seconds = measured * sum(r.cost for r in full) / sum(r.cost for r in tiny)
    row = next(line for line in out.splitlines() if line.startswith("quadratic_aeos"))
    steps = sorted({r.config["steps"] for r in full})
    assert row.split()[1:5] == [str(len(full)), "10", "(0-9)", f"{steps[0]}-{steps[-1]}"]
    assert row.split()[-1] == "measured" and estimate._duration(seconds) in row


@pytest.mark.slow
def test_figures_with_their_own_run_functions_run_end_to_end(tmp_path: Path) -> None:
    """spectral_density restores its training run's last checkpoint and central_flows runs the flows of its
    training runs: the real run functions, which the drawing test replaces by fakes, at tiny scale."""
    assert _main("--scale", "tiny", "--only", "spectral_density,central_flows", "--out", str(tmp_path),
                 "--jobs", "2") == 0
    figures = json.loads((tmp_path / "summary.json").read_text())["figures"]
    density = figures["spectral_density"]["numbers"]
    assert density["step"] == 150 and density["S"]["n"] == 2
    assert all(0 < v < 2 * density["threshold"] for v in density["eta_S_P"]["values"])
    gd = figures["central_flows"]["numbers"]["gd"]
    assert None not in gd["edge_step"] and max(gd["central_max_edge_deviation"]["values"]) < 0.05
    assert max(gd["central_median_relative_error"]["values"]) < 0.1
    for name in ("spectral_density", "central_flows"):
        _check_images(tmp_path, name)


@pytest.mark.slow
def test_optimizer_zoo_runs_end_to_end(tmp_path: Path) -> None:
    """optimizer_zoo at tiny scale with the real deep.training.zoo.zoo_run: every (optimizer, eta) it plans is
    reported over both seeds; the data CSV's threshold constants are the paper's closed forms written here
    (GD: 2; Adam at beta1 = 0.9: (2 + 2 beta1)(1 - beta1^t)/(1 - beta1) at step t) and its edge ratio is
    eta_S_P / c_t; each seed's late ratio is the median of the second half of its records, recomputed from the
    CSV with numpy."""
    import csv

    import numpy as np

    assert _main("--scale", "tiny", "--only", "optimizer_zoo", "--out", str(tmp_path), "--jobs", "1") == 0
    numbers = json.loads((tmp_path / "summary.json").read_text())["figures"]["optimizer_zoo"]["numbers"]
    planned = {(r.config["optimizer"], f"eta={r.config['eta']:g}")
               for r in registry.load("optimizer_zoo").plan(registry.Context(scale="tiny"))}
    assert {(name, key) for name, v in numbers.items() if isinstance(v, dict) and name != "skipped"
            for key in v} == planned
    rows = list(csv.DictReader((tmp_path / "data" / "optimizer_zoo.csv").open()))
    for row in (r for r in rows if r["optimizer"] != "muon"):  # Muon + AdamW: a combined ratio, no single c_t
        step, ratio, constant = int(row["step"]), float(row["edge_ratio"]), float(row["edge_constant"])
        if row["optimizer"] == "gd":
            assert constant == pytest.approx(2.0, rel=1e-9)
        if row["optimizer"] == "adam":
            assert constant == pytest.approx((2 + 2 * 0.9) * (1 - 0.9 ** step) / (1 - 0.9), rel=1e-9)
        assert ratio == pytest.approx(float(row["eta_S_P"]) / constant, rel=1e-9)
    for name, key in planned:
        headline = numbers[name][key]["late_edge_ratio"]
        assert headline["seeds"] == [0, 1]
        for seed, value in zip(headline["seeds"], headline["values"]):
            series = [float(r["edge_ratio"]) for r in rows if r["optimizer"] == name
                      and f"eta={float(r['eta']):g}" == key and int(r["seed"]) == seed]
            assert value == pytest.approx(float(np.median(series[len(series) - round(len(series) / 2):])), rel=1e-3)
    _check_images(tmp_path, "optimizer_zoo")


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


def test_minibatch_edge_curvatures_average_to_the_runs_last_eta_S_P(tmp_path: Path) -> None:
    """minibatch_edge's full-batch run function: the per-example curvatures h_i = w^T H_i w along w = P^-1/2 u
    (u the top eigenvector of P^-1/2 H P^-1/2 at the last checkpoint) average to S_P, which the trainer's own
    Lanczos measured at that step (eta S_P in its last row): two independent routes to one number."""
    from paper_figures.figures import minibatch_edge

    ctx = registry.Context(scale="tiny")
    (run,) = [r for r in minibatch_edge.plan(ctx) if r.fn.endswith(":edge_train") and r.config["seed"] == 0]
    result = minibatch_edge.edge_train(tmp_path, **run.config)
    h = np.asarray(result["curvatures"])
    eta, last = run.config["hyper"]["eta"], result["metrics"]["eta_S_P"][-1]
    assert h.shape == (run.config["n"],) and result["metrics"]["step"][-1] == run.config["steps"]
    assert eta * h.mean() == pytest.approx(last, rel=2e-2)
