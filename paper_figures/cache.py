"""The run cache: every independent computation behind a figure, stored in the output folder by its config.

A :class:`Run` names a function by import path (``"sims.experiments:dense_quadratic_run"``) and the
JSON keyword arguments to call it with.  Figures name the package's own experiment functions directly
(``sims.experiments``, ``deep`` training through :mod:`paper_figures.figures.training`), so a figure
never re-implements a computation.  A function that declares a ``run_dir`` parameter also gets the
run's folder, to checkpoint into.

The key of a run is the SHA-256 of (``CACHE_VERSION``, fn, config), so the same run requested by two
figures is computed once, a second invocation of the command finds every result and only redraws, and
an interrupted invocation resumes: finished runs are reused, and a long run that checkpoints into its
folder (the deep-net training runs do) continues from its checkpoint.

Layout: ``<out>/runs/<key>/config.json`` (what was asked), ``<out>/runs/<key>/result.json`` (written
atomically, last: its presence means "done"), plus whatever the run itself writes into that folder.
A run holds an exclusive lock on its folder while it computes (a second writer stops at once), and a
result is checked when read (:meth:`RunCache.problem`: valid JSON, the run's own key, columns of equal
length; for a deep training run also every column of :data:`deep.training.runlog.COLUMNS`, numbers or null, its
status, and the rows its own config and ``train/summary.json`` say it has; the minibatch columns
:data:`deep.training.runlog.BATCH_COLUMNS` may be absent from a result computed before they existed, whose other
columns are the same): an entry that fails is computed again, and the command says so.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from aeos_base import files
from aeos_base.threads import torch_threads

#: Bump to invalidate every cached result (after a change to what a run computes).
CACHE_VERSION = 4


def _canonical(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Run:
    """One cached computation: ``fn`` ("package.module:function") called with the keywords ``config``."""

    fn: str
    config: Mapping[str, Any] = field(hash=False)
    label: str = field(default="", compare=False)
    cost: float = field(default=1.0, compare=False)  # rough seconds; the longest runs start first

    @property
    def key(self) -> str:
        """16 hex digits of SHA-256 over (CACHE_VERSION, fn, config)."""
        text = _canonical({"version": CACHE_VERSION, "fn": self.fn, "config": dict(self.config)})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def function(self) -> Callable[..., Mapping[str, Any]]:
        module, _, name = self.fn.partition(":")
        return getattr(importlib.import_module(module), name)


class RunCache:
    """Results of :class:`Run` objects under ``root`` (``<out>/runs``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def run_dir(self, run: Run) -> Path:
        return self.root / run.key

    def has(self, run: Run) -> bool:
        """True when ``run`` has a result that passes :meth:`problem`."""
        return self.problem(run) is None

    def problem(self, run: Run) -> str | None:
        """Why the stored result of ``run`` cannot be used (None: it can; "missing": never finished)."""
        path = self.run_dir(run) / "result.json"
        if not path.is_file():
            return "missing"
        try:
            result = files.read_json(path)
        except (ValueError, OSError) as err:
            return str(err)
        if not isinstance(result, dict) or result.get("_key") != run.key:
            return f"{path} is not the result of this run (no matching _key)"
        if run.fn.endswith(TRAINING):
            return _training_problem(path, run.config, result)
        metrics = result.get("metrics")
        if metrics is not None:
            lengths = {len(v) for v in metrics.values()} if isinstance(metrics, dict) else {-1}
            if lengths != {result.get("rows")}:
                return f"{path} holds metrics columns of lengths {sorted(lengths)} for {result.get('rows')} rows"
        return None

    def load(self, run: Run) -> dict:
        """The stored result of ``run`` (KeyError if it has none that passes :meth:`problem`)."""
        problem = self.problem(run)
        if problem is not None:
            raise KeyError(f"run {run.label or run.fn} ({run.key}) has no usable result: {problem}")
        return files.read_json(self.run_dir(run) / "result.json")

    def prepare(self, run: Run) -> Path:
        """Create the run's folder and write its config.json; return the folder."""
        folder = self.run_dir(run)
        folder.mkdir(parents=True, exist_ok=True)
        files.write_json(folder / "config.json", {"fn": run.fn, "config": dict(run.config),
                                                  "cache_version": CACHE_VERSION})
        return folder

    def store(self, run: Run, result: Mapping[str, Any]) -> None:
        """Write result.json atomically (a crash never leaves a half-written result)."""
        files.write_json(self.run_dir(run) / "result.json", result, indent=None)


#: How the function of a deep training run ends (``paper_figures.figures.training:train``).
TRAINING = "training:train"
_STATUSES = ("completed", "diverged", "target_reached")


def _training_problem(path: Path, config: Mapping[str, Any], result: dict) -> str | None:
    """Why the result of a deep training run with TrainConfig fields ``config`` cannot be used (None: it can).

    It must hold ``status``, ``last_step`` (<= steps; = steps when completed), ``rows`` and ``metrics``: every
    column of :data:`deep.training.runlog.COLUMNS` (the minibatch columns :data:`~deep.training.runlog.BATCH_COLUMNS`
    may be absent: a result computed before they existed), ``rows`` numbers or nulls long, its ``step`` column the
    run's grid (:func:`deep.training.run_folder.row_steps`), and agree with ``train/summary.json`` beside it when
    present.  A figure that reads the minibatch columns checks that they are there.
    """
    from deep import TrainConfig
    from deep.training.run_folder import row_steps
    from deep.training.runlog import BATCH_COLUMNS, COLUMNS, SUMMARY

    status, last, rows, metrics = (result.get(k) for k in ("status", "last_step", "rows", "metrics"))
    if not isinstance(metrics, dict):
        return f"{path} holds no metrics table"
    missing = [c for c in COLUMNS if c not in metrics and c not in BATCH_COLUMNS]
    if missing:
        return f"{path} lacks the metrics columns {', '.join(missing)}"
    if status not in _STATUSES or not _is_int(last) or not _is_int(rows):
        return f"{path} lacks the run's status, last_step or rows (got {status!r}, {last!r}, {rows!r})"
    for name in (c for c in COLUMNS if c in metrics):
        values = metrics[name]
        if not isinstance(values, list) or len(values) != rows:
            return f"{path} holds a metrics column {name} that is not a list of {rows} values"
        bad = next((v for v in values if v is not None and not _is_number(v)), None)
        if bad is not None:
            return f"{path} holds {bad!r} in metrics column {name}, where numbers (or null) belong"
    steps = config.get("steps", TrainConfig.steps)
    every = config.get("measure_every", TrainConfig.measure_every)
    if not 0 <= last <= steps or (status == "completed" and last != steps):
        return f"{path} says {status} at step {last} for a run of {steps} steps"
    expected = row_steps(steps, every, last)
    if metrics["step"] != expected:
        return (f"{path} holds {rows} rows (steps {_span(metrics['step'])}) where a run {status} at step {last} "
                f"measured every {every} steps has {len(expected)} (steps {_span(expected)})")
    summary_path = path.parent / "train" / SUMMARY
    if summary_path.is_file():
        try:
            summary = files.read_json(summary_path)
        except (ValueError, OSError) as err:
            return str(err)
        recorded = tuple(summary.get(k) for k in ("status", "step", "rows")) if isinstance(summary, dict) else None
        if recorded != (status, last, rows):
            return f"{path} (status, last step, rows) = {(status, last, rows)} but {summary_path} says {recorded}"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _span(steps: list) -> str:
    return f"{steps[0]}..{steps[-1]}" if steps else "none"


#: torch threads of every run, whatever ``--jobs`` (torch's reductions round differently on 1 and 2 threads, so
#: the same run gave other numbers under another ``--jobs``); training runs also fix their own (``threads``).
RUN_THREADS = 1


def execute(run: Run, root: str) -> tuple[str, dict]:
    """Compute ``run`` into its folder under ``root`` and store the result; returns (key, result).

    Module level so that a process pool can pickle it.
    """
    cache = RunCache(Path(root))
    with files.exclusive_lock(cache.run_dir(run), f"cache entry of run {run.label or run.fn}"):
        folder = cache.prepare(run)
        function = run.function()
        kwargs = dict(run.config)
        if "run_dir" in inspect.signature(function).parameters:
            kwargs["run_dir"] = folder
        start, cpu = time.perf_counter(), time.process_time()
        with torch_threads(RUN_THREADS):
            result = dict(function(**kwargs))
        # wall and CPU seconds of this process (all its threads): for the gallery and the --dry-run estimates
        result.update(_key=run.key, _seconds=round(time.perf_counter() - start, 3),
                      _cpu_seconds=round(time.process_time() - cpu, 3))
        cache.store(run, result)
    return run.key, files.to_jsonable(result)
