"""Data first, pictures second: the figures' numbers as CSV/JSON, ``summary.json`` and the gallery.

``summary.json``: ``{"scale", "command", "figures": {name: {"title", "numbers", "caption", "files",
"runs", "seconds"} or {"error"}}}``.  ``FIGURES.md``: every PNG with its caption and its numbers,
readable on GitHub without running anything.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from paper_figures.cache import to_jsonable
from paper_figures.registry import FIGURES


def data_dir(out: Path) -> Path:
    folder = Path(out) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as CSV with a header; missing / non-finite values are empty cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns) if columns is not None else _columns(rows)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    return path


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(to_jsonable(value), f, indent=1)
    os.replace(tmp, path)
    return path


def _columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for k in row:
            seen.setdefault(k, None)
    return list(seen)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def load_summary(out: Path) -> dict:
    path = Path(out) / "summary.json"
    if path.is_file():
        try:
            with open(path) as f:
                summary = json.load(f)
            if isinstance(summary, dict) and isinstance(summary.get("figures"), dict):
                return summary
        except (OSError, json.JSONDecodeError):
            pass
    return {"figures": {}}


def write_summary(out: Path, summary: Mapping[str, Any]) -> Path:
    ordered = dict(summary)
    figures = summary.get("figures", {})
    ordered["figures"] = {name: figures[name] for name in FIGURES if name in figures}
    return write_json(Path(out) / "summary.json", ordered)


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
    for key, what in (("clean_cache_run", "All ten figures from a clean cache"), ("invocation", "Last invocation")):
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
