"""Data first, pictures second: the figures' numbers as CSV/JSON, ``summary.json`` and the gallery.

``summary.json``: ``{"scale", "command", "figures": {name: {"title", "numbers", "caption", "files",
"runs", "seconds"} or {"error"}}}``.  The gallery ``README.md``: every PNG with its caption and its
numbers, readable on GitHub without running anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from aeos_base import files
from paper_figures.registry import FIGURES

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


def format_number(value: Any) -> str:
    """Numbers as printed in the gallery: 4 significant digits, integers as they are."""
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
        if isinstance(value, Mapping) and value and all(not isinstance(v, Mapping) for v in value.values()) \
                and len(value) <= 6:
            rows.append((name, value))
        elif isinstance(value, Mapping):
            rows.extend(_flatten(value, prefix=f"{name}."))
        else:
            rows.append((name, value))
    return rows


def write_gallery(path: Path, out: Path, summary: Mapping[str, Any], command: str) -> Path:
    """Markdown gallery at ``path``; image links are relative to ``path``'s folder."""
    path = Path(path)
    rel = os.path.relpath(Path(out).resolve(), path.parent.resolve())
    prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
    figures = summary.get("figures", {})
    lines = [
        "# aeos: the figures",
        "",
        f"Produced by `{command}` (scale: {summary.get('scale', '?')}). Every number below is read from "
        f"[`summary.json`]({prefix}summary.json); each figure's data is in [`data/`]({prefix}data/) "
        "(CSV/JSON), and every image has a vector PDF beside it.",
        "",
    ]
    for key, what in (("clean_cache_run", "Every figure from a clean cache"), ("invocation", "Last invocation")):
        inv = summary.get(key)
        if inv:
            lines += [f"{what}: {len(inv['figures'])} figure(s) in {inv['seconds']} s with --jobs {inv['jobs']} "
                      f"({inv['computed_runs']} runs computed, {inv['reused_runs']} reused from the cache; "
                      f"finished {inv.get('finished', '?')}).", ""]
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
        lines += [f"[PDF]({prefix}{name}.pdf) · runs: {entry.get('runs', '?')} · "
                  f"compute + draw: {format_number(entry.get('seconds'))} s", ""]
        rows = _flatten(entry.get("numbers", {}))
        if rows:
            lines += ["| measured | value |", "|---|---|"]
            lines += [f"| `{k}` | {format_number(v)} |" for k, v in rows]
            lines.append("")
    return files.atomic_write_text(path, "\n".join(lines))
