"""Small helpers shared by the figures: reading result columns, rounding for the summary, threshold constants.

No physics lives here: late-time medians come from :mod:`sims.summary`, thresholds from
:mod:`aeos_theory`.
"""

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
