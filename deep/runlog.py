"""The files of a run folder: ``config.json``, ``metrics.csv``, ``checkpoint.pt``, ``summary.json``.

* ``metrics.csv`` is appended one row per measurement and flushed at once, so a killed run keeps
  every row it wrote.  Floats are written with ``repr`` (exact round trip).
* ``checkpoint.pt`` is written to a temporary file in the same folder and moved over the old one
  with ``os.replace`` (atomic on POSIX): a kill leaves either the old or the new checkpoint whole.
* Resuming keeps the rows with ``step <= checkpoint step`` and drops the rest (rows written after
  the last checkpoint, or a half-written last line), so no row is lost or duplicated.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

import torch

METRICS = "metrics.csv"
CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"

#: Columns of ``metrics.csv``: step (updates taken), train loss and accuracy at theta_step, raw
#: sharpness S = lambda_max(H), preconditioned S_P = lambda_max(P^-1/2 H P^-1/2) (= S when P = I),
#: the threshold on S_P from aeos_theory, eta * S_P and eta * threshold (38 for Adam at beta1 = 0.9,
#: 2 for gd), the HVPs the measurement used, whether Lanczos met its tolerance (1/0) and the
#: cumulative training wall time in seconds.
COLUMNS = ("step", "train_loss", "train_accuracy", "sharpness", "preconditioned_sharpness", "threshold",
           "eta_S_P", "eta_threshold", "hvps", "converged", "wall_time")

_INTS = ("step", "hvps", "converged")


def _format(value: Any) -> str:
    if value is None:
        return "nan"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _parse(name: str, text: str) -> float | int:
    if name in _INTS:
        try:
            return int(text)
        except ValueError:
            return math.nan  # type: ignore[return-value]
    return float(text)


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as dicts of numbers (``step``, ``hvps`` as int; NaN where not measured).

    A half-written last line (a run killed mid-write) is ignored.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.DictReader(io.StringIO(text)))
    return [{k: _parse(k, v) for k, v in row.items()} for row in rows]


class MetricsWriter:
    """Appends rows to ``metrics.csv`` and flushes each one; keeps only rows up to a step on open."""

    def __init__(self, path: str | os.PathLike, keep_through_step: int | None):
        """Open ``path``; keep existing rows with step <= ``keep_through_step`` (None: keep none)."""
        self.path = Path(path)
        kept: list[dict[str, float]] = []
        if self.path.exists() and keep_through_step is not None:
            kept = [r for r in read_metrics(self.path) if r["step"] <= keep_through_step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            fh.write(",".join(COLUMNS) + "\n")
            for row in kept:
                fh.write(",".join(_format(row[c]) for c in COLUMNS) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self.rows = len(kept)
        self._fh = open(self.path, "a", newline="")

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (missing columns become NaN) and flush it to the OS."""
        self._fh.write(",".join(_format(row.get(c)) for c in COLUMNS) + "\n")
        self._fh.flush()
        self.rows += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file, fsync, then ``os.replace`` onto ``path`` (atomic)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(dict(state), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The dict saved by :func:`save_checkpoint` (tensors on CPU)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def git_hash(start: str | os.PathLike | None = None) -> str | None:
    """The commit hash of the checkout holding this package (``None`` if not a git checkout/no commit)."""
    where = Path(start) if start is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None

