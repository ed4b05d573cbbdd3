"""Small numeric helpers shared by the figures (reading trajectories; no physics lives here)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def column(rows: Mapping[str, Sequence] | Sequence[Mapping], name: str) -> np.ndarray:
    """Column ``name`` as a float array (None -> NaN), from a dict of lists or a list of dicts."""
    if isinstance(rows, Mapping):
        values = rows[name]
    else:
        values = [row.get(name) for row in rows]
    return np.array([np.nan if v is None or v == "" else float(v) for v in values], dtype=float)


def late_window(steps: np.ndarray, fraction: float = 0.4) -> np.ndarray:
    """Mask of the last ``fraction`` of the run, by step: step >= (1 - fraction) * last step."""
    steps = np.asarray(steps, dtype=float)
    if steps.size == 0:
        return np.zeros(0, dtype=bool)
    return steps >= (1.0 - fraction) * np.nanmax(steps)


def late_median(steps: np.ndarray, values: np.ndarray, fraction: float = 0.4) -> float | None:
    """Median of ``values`` over the last ``fraction`` of the run (NaNs ignored; None if empty)."""
    v = np.asarray(values, dtype=float)[late_window(steps, fraction)]
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def late_range(steps: np.ndarray, values: np.ndarray, fraction: float = 0.4) -> list[float] | None:
    """[min, max] of ``values`` over the last ``fraction`` of the run."""
    v = np.asarray(values, dtype=float)[late_window(steps, fraction)]
    v = v[np.isfinite(v)]
    return [float(v.min()), float(v.max())] if v.size else None


def first_passage(steps: np.ndarray, values: np.ndarray, level: float) -> int | None:
    """First recorded step at which ``values`` >= ``level`` (None if never)."""
    idx = np.flatnonzero(np.asarray(values, dtype=float) >= level)
    return int(steps[idx[0]]) if idx.size else None


def rounded(value: float | None, digits: int = 4) -> float | None:
    """``value`` to ``digits`` significant digits for summary.json (None stays None)."""
    if value is None or not np.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def fmt(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits for captions ("n/a" when missing)."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"
