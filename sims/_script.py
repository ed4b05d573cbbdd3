"""Shared plumbing of the ``python -m sims.<name>`` scripts: arguments, output files, figures.

Data first: every script writes its numbers (CSV / JSON) before drawing the figure from them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    return p


def out_dir(path: str) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def to_jsonable(obj):
    """numpy arrays / scalars -> lists / floats (NaN -> None) so that json.dump writes valid JSON."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if np.isfinite(x) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=1))
    os.replace(tmp, path)


class RowLog:
    """A CSV that is appended to row by row (flushed), so an interrupted sweep resumes where it stopped.

    ``keys(fn)`` returns the set of fn(row) over the rows already on disk; rows are never rewritten.
    """

    def __init__(self, path: Path, fields: Sequence[str]) -> None:
        self.path, self.fields = path, list(fields)
        self.rows: list[dict] = []
        if path.exists() and path.stat().st_size > 0:
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames != self.fields:
                    raise ValueError(f"{path} has columns {reader.fieldnames}, expected {self.fields}; "
                                     "use a fresh --out folder")
                # a torn last line (interrupted write) lacks fields: DictReader fills them with None
                self.rows = [row for row in reader
                             if all(row.get(k) is not None for k in self.fields) and row[self.fields[-1]] != ""]
            self._rewrite()  # drops a torn last line left by an interruption
        else:
            self._rewrite()

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)

    def keys(self, fn: Callable[[dict], object]) -> set:
        return {fn(row) for row in self.rows}

    def append(self, row: dict) -> None:
        clean = {k: row[k] for k in self.fields}
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(clean)
            f.flush()
            os.fsync(f.fileno())
        self.rows.append({k: str(v) for k, v in clean.items()})


def write_csv(path: Path, fields: Sequence[str], rows: Iterable[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        for row in rows:
            w.writerow({k: row[k] for k in fields})
    os.replace(tmp, path)


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.0, 4.0)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes


def save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_main(main: Callable[[Optional[Sequence[str]]], int]) -> None:
    """Run a script's main: ValueError -> exit status 2 with one line on stderr (no traceback)."""
    try:
        sys.exit(main(None))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
