"""Headline numbers over seeds (paper_figures.intervals) and the check's verdicts (paper_figures.check).

References: Student t quantiles from a t table (t_{0.975, 2} = 4.302653, t_{0.975, 4} = 2.776445), the
interval written by hand from numpy's mean and ddof-1 standard deviation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from paper_figures import check, intervals

T_TABLE = {2: 4.302652729911275, 4: 2.7764451051977987}  # t_{0.975, df}


@pytest.mark.parametrize("values", [[37.94, 36.55, 38.37], [1.0, 2.0, 4.0, 8.0, 16.0]])
def test_t_interval_is_mean_plus_minus_t_times_standard_error(values) -> None:
    v = np.asarray(values)
    half = T_TABLE[v.size - 1] * v.std(ddof=1) / math.sqrt(v.size)
    low, high = intervals.t_interval(values)
    assert (low, high) == pytest.approx((v.mean() - half, v.mean() + half), rel=1e-9)


def test_over_seeds_keeps_every_seed_and_leaves_missing_values_out() -> None:
    h = intervals.over_seeds([37.94, None, 38.37, 36.55], [0, 1, 2, 3])
    assert h["seeds"] == [0, 1, 2, 3] and h["values"] == [37.94, None, 38.37, 36.55] and h["n"] == 3
    v = np.array([37.94, 38.37, 36.55])
    half = T_TABLE[2] * v.std(ddof=1) / math.sqrt(3)
    assert h["mean"] == pytest.approx(v.mean(), rel=1e-4)
    assert h["interval"] == pytest.approx([v.mean() - half, v.mean() + half], rel=1e-4)
    assert intervals.text(h) == f"{h['mean']:.4g} [{h['interval'][0]:.4g}, {h['interval'][1]:.4g}] over 3 of 4 seeds"
    one = intervals.over_seeds([5.0, None], [0, 1])
    assert one["interval"] is None and intervals.text(one) == "5 (over 1 of 2 seeds)"
    assert intervals.text(intervals.over_seeds([None, None], [0, 1])) == "n/a"
    with pytest.raises(ValueError, match="one entry per seed"):
        intervals.over_seeds([1.0], [0, 1])


def test_equal_values_give_a_zero_width_interval_and_exact_numbers_their_tolerance() -> None:
    assert intervals.over_seeds([2.0, 2.0, 2.0], [0, 1, 2])["interval"] == [2.0, 2.0]
    e = intervals.exact(38.0000009, tolerance=1e-5)
    assert e["interval"] == pytest.approx([38.0000009 - 1e-5, 38.0000009 + 1e-5]) and intervals.text(e) == "38"
    assert intervals.text(intervals.over_seeds([0.0321, 0.0338, 0.03], [0, 1, 2]), 3, scale=100, unit="%") \
        .startswith("3.2%")
    with pytest.raises(ValueError, match="tolerance"):
        intervals.exact(1.0, tolerance=-1)


def test_headlines_walks_nested_numbers_in_order() -> None:
    a, b = intervals.over_seeds([1.0, 2.0], [0, 1]), intervals.exact(3.0)
    numbers = {"x": {"level": a, "steps": 100}, "y": b, "z": [1, 2]}
    assert list(intervals.headlines(numbers)) == [("x.level", a), ("y", b)]


def _h(mean: float, low: float, high: float) -> dict:
    return {"mean": mean, "interval": [low, high], "n": 3, "seeds": [0, 1, 2], "values": [low, mean, high],
            "method": intervals.T_INTERVAL}


def test_verdicts() -> None:
    committed = _h(37.9, 36.5, 39.3)
    assert intervals.verdict(committed, _h(36.6, 35.0, 38.2)) == intervals.INSIDE
    assert intervals.verdict(committed, _h(35.5, 34.0, 37.0)) == intervals.OVERLAP
    assert intervals.verdict(committed, _h(33.0, 32.0, 34.0)) == intervals.DISAGREE
    assert intervals.verdict(committed, None) == intervals.MISSING
    assert intervals.verdict(committed, {**_h(1, 1, 1), "mean": None, "interval": None}) == intervals.MISSING
    assert intervals.verdict(committed, {**_h(37, 37, 37), "interval": None}) == intervals.UNDEFINED
    none = {**_h(1, 1, 1), "mean": None, "interval": None}
    assert intervals.verdict(none, none) == intervals.NO_VALUE and intervals.NO_VALUE not in intervals.FAILING
    assert intervals.verdict(none, committed) == intervals.UNDEFINED
    one_seed = {**_h(37, 37, 37), "interval": None}  # the committed number had one seed: nothing to compare with
    assert intervals.verdict(one_seed, one_seed) == intervals.NO_INTERVAL not in intervals.FAILING
    assert intervals.verdict(one_seed, committed) == intervals.NO_INTERVAL
    assert intervals.verdict(one_seed, none) == intervals.MISSING
    # intervals that meet after summary.json's rounding to 4 significant digits are not called apart
    assert intervals.verdict(_h(1.0, 1.0, 1.0), _h(1.0004, 1.0004, 1.0004)) == intervals.INSIDE
    assert intervals.verdict(_h(1.0, 1.0, 1.0), _h(1.002, 1.002, 1.002)) == intervals.DISAGREE


def test_check_table_lists_every_headline_with_its_verdict() -> None:
    committed = {"figures": {"f": {"numbers": {"a": _h(37.9, 36.5, 39.3), "b": {"c": _h(2.0, 1.9, 2.1)}}}}}
    fresh = {"figures": {"f": {"numbers": {"a": _h(33.0, 32.0, 34.0), "b": {"c": _h(2.0, 1.95, 2.05)},
                                           "d": _h(1.0, 0.5, 1.5)}}}}
    rows = check.compare(committed, fresh, ["f"])
    assert [(r.number, r.verdict) for r in rows] == [("a", "DISAGREE"), ("b.c", "inside"), ("d", "new")]
    assert [r.number for r in check.failed(rows)] == ["a"]
    text = check.table(rows)
    assert "37.9 [36.5, 39.3]" in text and "33 [32, 34]" in text
    assert text.splitlines()[-1] == "3 numbers: 1 DISAGREE, 1 inside, 1 new"
