"""Summaries of a recorded trajectory: the late-time window, its median and range, first passages.

Used for simulated and measured runs alike (``sims``, the figures of ``paper_figures``): the level a
run *settles* at is the median of a quantity (eta * S_P, say) over the last ``fraction`` of its steps.
"""

from __future__ import annotations

import numpy as np

#: The default late window: the last 40% of a run's steps.
LATE_FRACTION = 0.4


def late_window(steps: np.ndarray, fraction: float = LATE_FRACTION) -> np.ndarray:
    """Mask of the records with step >= (1 - fraction) * last step."""
    steps = np.asarray(steps, dtype=float)
    if steps.size == 0:
        return np.zeros(0, dtype=bool)
    return steps >= (1.0 - fraction) * np.nanmax(steps)


def _late(steps: np.ndarray, values: np.ndarray, fraction: float) -> np.ndarray:
    v = np.asarray(values, dtype=float)[late_window(steps, fraction)]
    return v[np.isfinite(v)]


def late_median(steps: np.ndarray, values: np.ndarray, fraction: float = LATE_FRACTION) -> float | None:
    """Median of ``values`` over the late window (NaNs ignored; None if nothing is left)."""
    v = _late(steps, values, fraction)
    return float(np.median(v)) if v.size else None


def late_range(steps: np.ndarray, values: np.ndarray, fraction: float = LATE_FRACTION) -> list[float] | None:
    """[min, max] of ``values`` over the late window (None if empty)."""
    v = _late(steps, values, fraction)
    return [float(v.min()), float(v.max())] if v.size else None


def first_passage(steps: np.ndarray, values: np.ndarray, level: float) -> int | None:
    """First recorded step at which ``values`` >= ``level`` (None if never)."""
    idx = np.flatnonzero(np.asarray(values, dtype=float) >= level)
    return int(np.asarray(steps)[idx[0]]) if idx.size else None
