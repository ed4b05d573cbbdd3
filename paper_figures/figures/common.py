"""Small helpers shared by the figures: reading result columns, rounding for the summary, threshold constants,
grouping a figure's runs by condition over seeds.

No physics lives here: late-time medians come from :mod:`sims.summary`, thresholds from
:mod:`aeos_theory`.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np


def column(rows: Mapping[str, Sequence] | Sequence[Mapping], name: str) -> np.ndarray:
    """Column ``name`` as a float array (None -> NaN), from a dict of lists or a list of dicts."""
    if isinstance(rows, Mapping):
        values = rows[name]
    else:
        values = [row.get(name) for row in rows]
    return np.array([np.nan if v is None or v == "" else float(v) for v in values], dtype=float)


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


def threshold_constant(optimizer: str, **hyper: float) -> float:
    """eta * lambda*, the dimensionless threshold constant of ``optimizer`` (38 for Adam at beta1 = 0.9),
    from :func:`aeos_theory.threshold_constant` (exact, derived)."""
    from aeos_theory import threshold_constant as constant

    return constant(optimizer, **hyper)


def seed_of(config: Mapping) -> int | None:
    """The seed of a run's config: its own ``seed``, or that of the training run it follows or steps (``run``,
    ``train``, ``config``); None for a run that samples nothing."""
    for key in ("run", "train", "config"):
        if isinstance(config.get(key), Mapping):
            return seed_of(config[key])
    return int(config["seed"]) if "seed" in config else None


def by_condition(runs: Sequence, results: Sequence[dict], condition: Callable[[Any], Hashable]
                 ) -> dict[Hashable, tuple[list[int], list[dict]]]:
    """Results grouped by ``condition(run)`` (in plan order): condition -> (seeds, results), the seeds in
    the order planned."""
    groups: dict[Hashable, tuple[list[int], list[dict]]] = {}
    for run, result in zip(runs, results):
        seeds, found = groups.setdefault(condition(run), ([], []))
        seeds.append(seed_of(run.config))
        found.append(result)
    return groups
