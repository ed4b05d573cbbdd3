"""A run folder that proves what it holds: one writer at a time, a config it can show, rows it can verify.

The rules, checked every time a run folder is opened (:meth:`RunFolder.check`):

* **One writer.** An exclusive lock on ``<folder>/.lock`` (:func:`aeos_base.files.exclusive_lock`) is
  held for the whole run; the operating system releases it when the process dies, so a killed run never
  leaves it stuck, and a second process writing the same folder stops at once with a message naming the
  holder's pid.
* **The config is proven three ways.** ``config.json``, the command's config and the config stored in
  ``checkpoint.pt`` (with the package, torch, numpy and Python versions it ran with; the torch thread
  count is part of the config) must all agree.  A folder with records but no ``config.json``, a
  checkpoint without a config, or any difference is refused, naming it.
* **Rows are proven by hashes.** Each checkpoint stores how many ``metrics.csv`` rows it covers and the
  SHA-256 of the file up to them (rows are fsynced before the checkpoint that covers them); a resume
  keeps exactly those rows after checking the hash, and only when the file's columns are the ones this
  version writes (a run started by a version with other columns is not continued in the same file).
  ``summary.json`` stores the hash of the finished file, and reopening a finished run checks it before
  reporting the run as done.

A folder that breaks a rule raises :class:`aeos_base.command.RecordError` (``aeos train`` exits 1
with one line); a config that differs from the command's raises ValueError (exit 2: the command asks
for another run than the folder holds).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from aeos_base import files
from aeos_base.command import RecordError

from . import runlog

#: Fields of the config that do not change the numbers, so may differ on resume.
_FREE = ("device",)
#: What a checkpoint must hold to prove its run.
_PROOF = ("config", "versions", "rows", "metrics_sha256", "step")


def versions() -> dict[str, str]:
    """The versions a run's numbers depend on: the package, torch, numpy and Python."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy
    import torch

    try:
        aeos = version("aeos")
    except PackageNotFoundError:  # running from a source tree without an install
        aeos = "unknown"
    return {"aeos": aeos, "torch": str(torch.__version__), "numpy": str(numpy.__version__),
            "python": sys.version.split()[0]}


def rows_digest(path: Path, rows: int) -> str:
    """SHA-256 of ``metrics.csv``'s header and first ``rows`` complete lines (RecordError if it has fewer)."""
    data = path.read_bytes() if path.exists() else b""
    complete = data.split(b"\n")[:-1]  # what follows the last newline is a torn line (or nothing)
    if len(complete) < rows + 1:
        raise RecordError(f"{path} holds {max(len(complete) - 1, 0)} complete rows where the run's records "
                          f"prove {rows}: rows were lost")
    return hashlib.sha256(b"\n".join(complete[: rows + 1]) + b"\n").hexdigest()


def row_steps(steps: int, measure_every: int, last_step: int) -> list[int]:
    """The steps of the rows of a run of ``steps`` updates that stopped at ``last_step`` <= ``steps``:
    every ``measure_every``-th step from 0 below ``last_step`` (the trainer's measurement grid), then
    ``last_step`` itself (the final step of a completed run, the step of a divergence or of reaching the
    target loss).  A completed run has ceil(steps / measure_every) + 1 rows."""
    return list(range(0, last_step, measure_every)) + [last_step]


_ABSENT = object()


def _differences(saved: Mapping[str, Any], wanted: Mapping[str, Any], where: str) -> list[str]:
    """Each field (nested ones dotted: ``hyper.eta``) where the config ``saved`` in ``where`` differs from
    ``wanted`` (the command's), with both values: ``hyper.eta: 0.001 in the folder, 0.005 in the command``.
    Fields of :data:`_FREE` may differ."""
    out = []
    for key in sorted(set(saved) | set(wanted)):
        old, new = saved.get(key, _ABSENT), wanted.get(key, _ABSENT)
        if key in _FREE or old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out += [f"{key}.{line}" for line in _differences(old, new, where)]
        else:
            out.append(f"{key}: {_value(old)} in {where}, {_value(new)} in the command")
    return out


def _value(value: Any) -> str:
    return "absent" if value is _ABSENT else repr(value)


@dataclass(frozen=True)
class Opened:
    """What :meth:`RunFolder.check` found: ``saved`` config.json (None for a new run), ``finished``, and
    the verified ``checkpoint`` state to resume from (None to start at step 0)."""

    saved: dict[str, Any] | None
    finished: bool
    checkpoint: dict[str, Any] | None


class RunFolder:
    """The folder of one run: its files, its lock and the proofs of its records (module docstring)."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        if not str(path).strip():
            raise ValueError("out_dir must be a folder path; got an empty string")
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out_dir must be a folder, got the file {str(path)!r}")
        self.config, self.metrics = self.path / runlog.CONFIG, self.path / runlog.METRICS
        self.checkpoint, self.summary = self.path / runlog.CHECKPOINT, self.path / runlog.SUMMARY

    def locked(self):
        """``with folder.locked():`` makes this process the folder's only writer (RecordError otherwise)."""
        return files.exclusive_lock(self.path, "run folder")

    def check(self, config: Mapping[str, Any]) -> Opened:
        """Prove the folder's records against ``config`` (the command's); see the module docstring."""
        if not self.config.exists():
            records = [p.name for p in (self.checkpoint, self.metrics, self.summary) if p.exists()]
            if records:
                raise RecordError(f"run folder {self.path} holds {', '.join(records)} but no config.json: it cannot "
                                  "prove which run they belong to; use a new folder")
            return Opened(None, False, None)
        saved = self._read_json(self.config)
        diff = _differences(saved.get("config", {}), config, "the folder")
        if diff:
            raise ValueError(f"out_dir {str(self.path)!r} holds a run with a different config (differs in: "
                             f"{'; '.join(diff)}); use a new folder or the same config to resume")
        if self.summary.exists():
            self._check_finished()
            return Opened(saved, True, None)
        if not self.checkpoint.exists():
            return Opened(saved, False, None)  # killed before its first checkpoint: start again
        return Opened(saved, False, self._check_checkpoint(config))

    def _check_finished(self) -> None:
        summary = self._read_json(self.summary)
        rows, digest = summary.get("rows"), summary.get("metrics_sha256")
        if not isinstance(rows, int) or not isinstance(digest, str):
            raise RecordError(f"{self.summary} lacks the row count and hash of metrics.csv; it cannot prove the "
                              "finished run's rows")
        if rows_digest(self.metrics, rows) != digest or self.metrics.read_bytes().count(b"\n") != rows + 1:
            raise RecordError(f"{self.metrics} does not match {self.summary} ({rows} rows and their hash): "
                              "the finished run's rows were changed or lost")

    def _check_checkpoint(self, config: Mapping[str, Any]) -> dict[str, Any]:
        state = runlog.load_checkpoint(self.checkpoint)
        missing = [k for k in _PROOF if k not in state]
        if missing:
            raise RecordError(f"{self.checkpoint} lacks {', '.join(missing)}: it cannot prove which run it "
                              "continues; use a new folder")
        diff = _differences(state["config"], config, "the checkpoint")
        if diff:
            raise RecordError(f"{self.checkpoint} was written by another config (differs in: {'; '.join(diff)}) "
                              "than config.json and the command")
        now = versions()
        changed = [f"{k} {state['versions'].get(k)} -> {now[k]}" for k in now if state["versions"].get(k) != now[k]]
        if changed:
            raise RecordError(f"{self.checkpoint} was written with other versions ({'; '.join(changed)}): "
                              "resuming would not reproduce its numbers")
        if rows_digest(self.metrics, state["rows"]) != state["metrics_sha256"]:
            raise RecordError(f"{self.metrics} rows covered by the checkpoint at step {state['step']} were changed "
                              "or reordered (their hash differs)")
        header = self.metrics.read_text().split("\n", 1)[0]
        if header != ",".join(runlog.COLUMNS):
            raise RecordError(f"{self.metrics} has other columns than this version of aeos writes (it was started "
                              "by an earlier one): resuming would mix two layouts in one file; use a new folder")
        return state

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        try:
            value = files.read_json(path)
        except ValueError as err:
            raise RecordError(str(err)) from None
        if not isinstance(value, dict):
            raise RecordError(f"{path} does not hold a JSON object")
        return value

    def write_config(self, saved: dict[str, Any] | None, record: Mapping[str, Any], command: str | None) -> None:
        """Create ``config.json`` from ``record`` (plus git hash, command, versions), or log a resume in it."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if saved is not None:
            saved.setdefault("resumed", []).append({"time": now, "command": command})
            files.write_json(self.config, saved, indent=2)
            return
        files.write_json(self.config, {**record, "git_hash": runlog.git_hash(), "command": command, "created": now,
                                       "versions": versions(), "columns": list(runlog.COLUMNS)}, indent=2)

    def save_checkpoint(self, state: Mapping[str, Any], config: Mapping[str, Any], rows: int) -> None:
        """Save ``state`` with its proofs: the config, the versions and the hash of the ``rows`` it covers."""
        runlog.save_checkpoint(self.checkpoint, {**state, "config": dict(config), "versions": versions(),
                                                 "rows": rows, "metrics_sha256": rows_digest(self.metrics, rows)})

    def write_summary(self, summary: Mapping[str, Any], rows: int) -> None:
        """Write ``summary.json`` (the run is over) with the row count and hash of the finished metrics.csv."""
        files.write_json(self.summary, {**summary, "rows": rows,
                                        "metrics_sha256": rows_digest(self.metrics, rows)}, indent=2)
