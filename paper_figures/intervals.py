"""Headline numbers over seeds: the mean, its 95% interval, and every seed's value.

A figure whose numbers come from training or sampling runs runs each condition at several seeds
(:meth:`paper_figures.registry.Context.seeds`) and reports each headline number as :func:`over_seeds`
of the per-seed values; a number that no seed changes (a bisection, a deterministic grid) is
:func:`exact`.  Both are plain dicts in ``summary.json``, recognised by :func:`is_headline`::

    {"mean": 37.62, "interval": [36.1, 39.14], "n": 3, "seeds": [0, 1, 2],
     "values": [37.94, 36.55, 38.37], "method": "t95"}

The interval (method ``"t95"``) is Student's t interval for the mean over seeds,

    mean +- t_{0.975, n-1} * s / sqrt(n),    s the sample standard deviation (ddof = 1),

which assumes the per-seed values roughly normal and is exact under that assumption for any n >= 2
(with n = 3, t_{0.975, 2} = 4.303: the interval is wide, honestly so).  A bootstrap interval is not
used: with 3 to 5 seeds it has a handful of distinct resamples and covers far less than 95%.  A value
that a seed could not produce (a run that diverged before the window, a level never reached) is None
in ``values`` and left out of the mean; with fewer than 2 values the interval is None.

Captions quote :func:`text` ("37.62 [36.1, 39.14] over 3 seeds"), never a typed number; the check
against a committed gallery (:mod:`paper_figures.check`) compares intervals with :func:`verdict`.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

#: Coverage of every interval of the figures.
CONFIDENCE = 0.95
#: The method tag of a seeded headline, and of a deterministic one.
T_INTERVAL, DETERMINISTIC = "t95", "deterministic"
#: Significant digits kept in summary.json (the same as every other number of the figures).
DIGITS = 4


def _round(value: float | None, digits: int = DIGITS) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Student's t interval (low, high) for the mean of ``values`` (None with fewer than 2 values)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return None
    mean, half = float(v.mean()), 0.0
    spread = float(v.std(ddof=1))
    if spread > 0:
        half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1)) * spread / math.sqrt(v.size)
    return mean - half, mean + half


def over_seeds(values: Sequence[float | None], seeds: Sequence[int]) -> dict[str, Any]:
    """The headline of one number measured once per seed: mean and t interval over the seeds whose value
    is not None, with every seed's value (4 significant digits) beside it."""
    if len(values) != len(seeds):
        raise ValueError(f"values must have one entry per seed ({len(seeds)}), got {len(values)}")
    present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    interval = t_interval(present)
    return {"mean": _round(float(np.mean(present))) if present else None,
            "interval": [_round(interval[0]), _round(interval[1])] if interval is not None else None,
            "n": len(present), "seeds": [int(s) for s in seeds],
            "values": [_round(float(v)) if v is not None else None for v in values], "method": T_INTERVAL}


def exact(value: float | None, tolerance: float = 0.0) -> dict[str, Any]:
    """The headline of a number no seed changes; ``tolerance`` (>= 0, same units) is how far another
    machine's value may lie from it (round-off of a bisection, say), so its interval is value +- tolerance."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    v = _round(value, 10) if value is not None else None
    return {"mean": v, "interval": [v - tolerance, v + tolerance] if v is not None else None,
            "n": 1 if v is not None else 0, "seeds": [], "values": [v], "method": DETERMINISTIC,
            "tolerance": tolerance}


def is_headline(obj: Any) -> bool:
    """True for the dicts :func:`over_seeds` and :func:`exact` make."""
    return isinstance(obj, Mapping) and obj.get("method") in (T_INTERVAL, DETERMINISTIC) and "interval" in obj


def headlines(numbers: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, dict]]:
    """Every headline in a figure's nested ``numbers``, as (dotted path, headline), in order."""
    for key, value in numbers.items():
        name = f"{prefix}{key}"
        if is_headline(value):
            yield name, value
        elif isinstance(value, Mapping):
            yield from headlines(value, prefix=f"{name}.")


def text(headline: Mapping[str, Any], digits: int = DIGITS, *, scale: float = 1.0, unit: str = "") -> str:
    """How captions and the gallery quote a headline: "37.62 [36.1, 39.14] over 3 seeds", a deterministic
    one as its value alone, "n/a" when no seed produced it; values times ``scale``, each followed by
    ``unit`` (``scale=100, unit="%"`` for percentages)."""
    mean = headline.get("mean")
    if mean is None:
        return "n/a"

    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{scale * value:.{digits}g}{unit}"

    if headline["method"] == DETERMINISTIC:
        return show(mean)
    n, seeds = headline["n"], len(headline["seeds"])
    over = f"over {n} seeds" if n == seeds else f"over {n} of {seeds} seeds"
    if headline.get("interval") is None:
        return f"{show(mean)} ({over})"
    low, high = headline["interval"]
    return f"{show(mean)} [{show(low)}, {show(high)}] {over}"


#: Verdicts of :func:`verdict`; the last three fail a check.
INSIDE, OVERLAP, NO_VALUE, NO_INTERVAL = "inside", "overlap", "no value", "no interval"
DISAGREE, MISSING, UNDEFINED = "DISAGREE", "MISSING", "UNDEFINED"
FAILING = (DISAGREE, MISSING, UNDEFINED)


def _widened(interval: Sequence[float], mean: float) -> tuple[float, float]:
    """An interval widened by half a unit of its 4th significant digit (summary.json keeps 4), so two
    intervals that touch after rounding are not called apart."""
    scale = max(abs(mean), abs(interval[0]), abs(interval[1]))
    slack = 0.5 * 10 ** (math.floor(math.log10(scale)) - DIGITS + 1) if scale > 0 else 0.0
    return interval[0] - slack, interval[1] + slack


def verdict(committed: Mapping[str, Any] | None, fresh: Mapping[str, Any] | None) -> str:
    """How a freshly measured headline compares with the committed one: ``inside`` (the fresh mean lies in
    the committed interval), ``overlap`` (it does not, but the two intervals overlap: the two sets of
    seeds are compatible), ``no value`` (no seed gave a value, in either: a stable flow that stopped in
    every seed, say), ``no interval`` (the committed number itself has no interval, fewer than 2 of its
    seeds gave a value: there is nothing to compare with, and the table shows both values), ``DISAGREE``
    (disjoint intervals: a real disagreement), ``MISSING`` (the fresh run lacks the number) or
    ``UNDEFINED`` (the committed number has an interval and the fresh one could not form one: fewer than 2
    seeds gave a value).  Both intervals are widened by the rounding of summary.json before comparing."""
    if committed is not None and committed.get("mean") is None and fresh is not None and fresh.get("mean") is None:
        return NO_VALUE
    if fresh is None or fresh.get("mean") is None:
        return MISSING
    if committed is not None and committed.get("mean") is not None and committed.get("interval") is None:
        return NO_INTERVAL
    if committed is None or committed.get("interval") is None or fresh.get("interval") is None:
        return UNDEFINED
    low, high = _widened(committed["interval"], committed["mean"])
    if low <= fresh["mean"] <= high:
        return INSIDE
    f_low, f_high = _widened(fresh["interval"], fresh["mean"])
    return OVERLAP if f_low <= high and low <= f_high else DISAGREE
