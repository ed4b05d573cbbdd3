"""The files of a run folder: ``config.json``, ``metrics.csv``, ``checkpoint.pt``, ``summary.json``.

* ``config.json``: the :class:`deep.TrainConfig`, the resolved hyperparameters, the git hash, the
  command, versions, and a log of every resume.
* ``metrics.csv`` is appended one row per measurement and flushed at once, so a killed run keeps
  every row it wrote.  Floats are written with ``repr`` (exact round trip).
* ``checkpoint.pt`` is written atomically (:func:`aeos_theory.files.atomic_write`): a kill leaves either
  the old or the new checkpoint whole.
* ``summary.json`` is written last; its presence means the run is over (status and final step).

Resuming keeps the rows with ``step <= checkpoint step`` and drops the rest (rows written after the
last checkpoint, or a half-written last line), so no row is lost or duplicated.
"""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch

from aeos_theory import files

METRICS = "metrics.csv"
CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"

#: Columns of ``metrics.csv``: step t (updates taken), train loss and accuracy at theta_t, the learning
#: rate ``lr`` of the next update (the schedule's), raw sharpness S = lambda_max(H), preconditioned
#: S_P = lambda_max(P^-1/2 (H + W) P^-1/2) (W the coupled weight decay; S + wd when P = I), the
#: threshold on S_P of the t-th update from aeos_theory (``eta_threshold`` / lr), ``eta_S_P`` = lr S_P and
#: ``eta_threshold`` c_t (38 for Adam at beta1 = 0.9 once the bias correction has faded, 2 for gd),
#: ``edge_ratio`` = eta_S_P / eta_threshold (1 at the edge), the HVPs the measurement used, whether Lanczos
#: met its tolerance (1/0) and the cumulative training wall time in seconds.
COLUMNS = ("step", "train_loss", "train_accuracy", "lr", "sharpness", "preconditioned_sharpness", "threshold",
           "eta_S_P", "eta_threshold", "edge_ratio", "hvps", "converged", "wall_time")

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
    """Rows of a ``metrics.csv`` (or of the run folder holding it) as dicts of numbers.

    ``step``, ``hvps`` and ``converged`` are ints, the rest floats (NaN where not measured).  A
    half-written last line (a run killed mid-write) is ignored.
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
        lines = [",".join(COLUMNS)] + [",".join(_format(row[c]) for c in COLUMNS) for row in kept]
        files.atomic_write_text(self.path, "\n".join(lines) + "\n")
        self.rows = len(kept)
        self._fh = open(self.path, "a", newline="")

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (missing columns become NaN) and flush it to the OS."""
        self._fh.write(",".join(_format(row.get(c)) for c in COLUMNS) + "\n")
        self._fh.flush()
        self.rows += 1

    def close(self) -> None:
        self._fh.close()


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """``torch.save`` of ``state`` onto ``path``, atomically."""
    files.atomic_write(path, lambda fh: torch.save(dict(state), fh))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The dict saved by :func:`save_checkpoint` (tensors on CPU)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def git_hash(start: str | os.PathLike | None = None) -> str | None:
    """The commit hash of the checkout holding this package (``None`` if not a git checkout/no commit)."""
    where = Path(start) if start is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunFolder:
    """The folder of one run and the rules for reusing it: the same config resumes, another is refused."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.config, self.metrics = self.path / CONFIG, self.path / METRICS
        self.checkpoint, self.summary = self.path / CHECKPOINT, self.path / SUMMARY

    def saved(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The folder's ``config.json`` (None if new); ValueError if it holds another config."""
        if not self.config.exists():
            return None
        saved = files.read_json(self.config)
        old = {k: v for k, v in saved.get("config", {}).items() if k != "device"}
        new = {k: v for k, v in config.items() if k != "device"}
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(f"out_dir {str(self.path)!r} holds a run with a different config (differs in: "
                             f"{', '.join(diff)}); use a new folder or the same config to resume")
        return saved

    def finished(self) -> bool:
        return self.summary.exists()

    def write_config(self, saved: dict[str, Any] | None, record: Mapping[str, Any], command: str | None) -> None:
        """Create ``config.json`` from ``record`` (plus git hash, command, versions), or log a resume in it."""
        if saved is not None:
            saved.setdefault("resumed", []).append({"time": _now(), "command": command})
            files.write_json(self.config, saved, indent=2)
            return
        self.path.mkdir(parents=True, exist_ok=True)
        files.write_json(self.config, {
            **record, "git_hash": git_hash(), "command": command, "created": _now(), "torch": torch.__version__,
            "python": sys.version.split()[0], "columns": list(COLUMNS)}, indent=2)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        files.write_json(self.summary, summary, indent=2)
