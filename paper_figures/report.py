"""Data first, pictures second: the figures' numbers as CSV/JSON, ``summary.json`` and the gallery.

``summary.json``: ``{"scale", "command", "invocation", "clean_cache_run", "figures": {name: {"title",
"numbers", "caption", "files", "runs", "seeds", "seconds", "cpu_seconds"} or {"error"}}}``;
``invocation`` (and ``clean_cache_run``, the last invocation that computed every figure from an empty
cache) records the figures, wall and CPU seconds, runs computed and reused, and the ``environment``:
machine, versions, jobs and threads (:func:`environment`).  Headline numbers are the dicts of
:mod:`paper_figures.intervals`.  The gallery ``README.md``: a header generated from those records, then
every PNG with its caption and its numbers, readable on GitHub without running anything.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from aeos_base import files
from paper_figures import intervals
from paper_figures.registry import FIGURES

#: The packages whose versions summary.json records.
VERSIONS = ("torch", "numpy", "numba", "scipy", "matplotlib")

#: The gallery's file name in the output folder (GitHub shows it when the folder is opened).
GALLERY = "README.md"


def data_dir(out: Path) -> Path:
    """``<out>/data``, created if missing: where each figure saves its numbers before drawing."""
    folder = Path(out) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load_summary(out: Path) -> dict:
    """The folder's ``summary.json``, or an empty one when it is missing or unreadable."""
    path = Path(out) / "summary.json"
    if path.is_file():
        try:
            summary = files.read_json(path)
            if isinstance(summary, dict) and isinstance(summary.get("figures"), dict):
                return summary
        except (OSError, ValueError):
            pass
    return {"figures": {}}


def write_summary(out: Path, summary: Mapping[str, Any]) -> Path:
    ordered = dict(summary)
    figures = summary.get("figures", {})
    ordered["figures"] = {name: figures[name] for name in FIGURES if name in figures}
    return files.write_json(Path(out) / "summary.json", ordered)


def _processor() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(jobs: int, run_threads: list[int]) -> dict[str, Any]:
    """The machine and software an invocation ran on: CPU model and count, operating system, Python and
    :data:`VERSIONS`, the ``jobs`` processes, the BLAS/OpenMP threads each worker process gets, and the
    torch threads of the training runs (their configs' ``threads``)."""
    cpus = os.cpu_count() or 1
    versions = {}
    for package in VERSIONS:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"processor": _processor(), "cpus": cpus, "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), **versions, "jobs": jobs,
            "threads_per_worker": max(1, cpus // jobs), "torch_threads_per_run": sorted(set(run_threads))}


def format_number(value: Any) -> str:
    """Numbers as printed in the gallery: 4 significant digits, integers as they are, a headline as
    "mean [low, high] over n seeds (per seed: ...)"."""
    if intervals.is_headline(value):
        shown = intervals.text(value)
        if value["method"] == intervals.T_INTERVAL:
            shown += " (per seed: " + ", ".join(format_number(v) for v in value["values"]) + ")"
        return shown
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_number(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_number(v)}" for k, v in value.items()) + "}"
    return str(value)


def _flatten(numbers: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in numbers.items():
        name = f"{prefix}{key}"
        if intervals.is_headline(value):
            rows.append((name, value))
        elif isinstance(value, Mapping) and value and all(not isinstance(v, Mapping) for v in value.values()) \
                and len(value) <= 6:
            rows.append((name, value))
        elif isinstance(value, Mapping):
            rows.extend(_flatten(value, prefix=f"{name}."))
        else:
            rows.append((name, value))
    return rows


def header(summary: Mapping[str, Any], command: str) -> list[str]:
    """The gallery's opening lines, every number read from ``summary``: what produced it, on which machine and
    software, and how long the whole set took from a clean cache and the last invocation."""
    clean, last = summary.get("clean_cache_run"), summary.get("invocation")
    lines = [f"Produced by `{command}` (scale: {summary.get('scale', '?')})."]
    env = (clean or last or {}).get("environment")
    if env:
        lines[0] += (f" Machine: {env['processor']}, {env['cpus']} cores, {env['system']}; Python {env['python']}, "
                     + ", ".join(f"{p} {env.get(p)}" for p in VERSIONS) + f"; {env['jobs']} job(s) with "
                     f"{env['threads_per_worker']} BLAS thread(s) each, torch threads per training run "
                     f"{', '.join(map(str, env['torch_threads_per_run'])) or 'n/a'}.")
    for inv, what in ((clean, "Every figure from a clean cache"), (last, "Last invocation")):
        if inv:
            cpu = inv.get("cpu_seconds_of_computed_runs")
            lines.append(f"{what}: {len(inv['figures'])} figure(s) in {inv['seconds']} s wall with --jobs {inv['jobs']}"
                         + (f", {cpu} s CPU in the {inv['computed_runs']} runs computed" if cpu is not None else
                            f", {inv['computed_runs']} runs computed")
                         + f", {inv['reused_runs']} reused from the cache (finished {inv.get('finished', '?')}).")
    return lines


def write_gallery(path: Path, out: Path, summary: Mapping[str, Any], command: str) -> Path:
    """Markdown gallery at ``path``; image links are relative to ``path``'s folder."""
    path = Path(path)
    rel = os.path.relpath(Path(out).resolve(), path.parent.resolve())
    prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
    figures = summary.get("figures", {})
    lines = ["# aeos: the figures", ""]
    for line in header(summary, command):
        lines += [line, ""]
    lines += [f"Every number below is read from [`summary.json`]({prefix}summary.json); a number measured on "
              "several seeds reads \"mean [low, high] over n seeds\", the 95% Student t interval of the mean "
              "(`paper_figures.intervals`), with every seed's value. Each figure's data is in "
              f"[`data/`]({prefix}data/) (CSV/JSON), and every image has a vector PDF beside it.", ""]
    for index, name in enumerate(FIGURES, start=1):
        entry = figures.get(name)
        if entry is None:
            continue
        lines.append(f"## {index}. `{name}`: {entry.get('title', '')}")
        lines.append("")
        if "error" in entry:
            lines += [f"**Not produced**: {entry['error']}", ""]
            continue
        lines += [f"![{name}]({prefix}{name}.png)", "", entry.get("caption", ""), ""]
        seeds = entry.get("seeds") or []
        lines += [f"[PDF]({prefix}{name}.pdf) · runs: {entry.get('runs', '?')} · seeds: "
                  f"{', '.join(map(str, seeds)) if seeds else 'none (deterministic)'} · "
                  f"compute + draw: {format_number(entry.get('seconds'))} s wall, "
                  f"{format_number(entry.get('cpu_seconds'))} s CPU in its runs", ""]
        rows = _flatten(entry.get("numbers", {}))
        if rows:
            lines += ["| measured | value |", "|---|---|"]
            lines += [f"| `{k}` | {format_number(v)} |" for k, v in rows]
            lines.append("")
    return files.atomic_write_text(path, "\n".join(lines))
