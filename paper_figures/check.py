"""``aeos figures --check``: regenerate the figures into a scratch folder and compare every headline number
with a committed gallery (by default the repository's, ``paper_figures/out``).

Training at the edge is chaotic, so another machine gives other trajectories; what must reproduce is each
headline's distribution over seeds.  For every headline (:mod:`paper_figures.intervals`) the table says
whether the fresh mean lies inside the committed 95% interval (``inside``), or the two intervals overlap
(``overlap``: the two sets of seeds are compatible), or not (``DISAGREE``: a real disagreement), and
whether a number is ``MISSING`` from the fresh run, ``UNDEFINED`` (fewer than 2 seeds gave a value, where
the committed gallery had an interval), has ``no value`` in either (no seed produced it, both times: that
agrees) or ``no interval`` in the committed gallery (fewer than 2 of its seeds gave a value: nothing to
compare with, both values shown; not a failure).
The command exits 1 when any number fails (or a figure could not be drawn), 0 otherwise.

How often two honest runs disagree by chance: with 3 seeds and normal per-seed values, two 95% t
intervals from the same distribution are disjoint about 0.5% of the time (measured on 400 000 simulated
pairs), so a gallery of N independent headlines fails by chance with probability about N x 0.5%.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from paper_figures import intervals, report

#: The repository's committed gallery.
COMMITTED = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True)
class Row:
    """One headline number: its figure, dotted path, committed and fresh headlines, and the verdict."""

    figure: str
    number: str
    committed: Mapping[str, Any] | None
    fresh: Mapping[str, Any] | None
    verdict: str


def compare(committed: Mapping[str, Any], fresh: Mapping[str, Any], names: Sequence[str]) -> list[Row]:
    """A :class:`Row` for every headline of the figures ``names`` in the committed summary (and every new one
    of the fresh summary, with the verdict "new")."""
    rows = []
    for name in names:
        old = dict(intervals.headlines(committed.get("figures", {}).get(name, {}).get("numbers", {})))
        new = dict(intervals.headlines(fresh.get("figures", {}).get(name, {}).get("numbers", {})))
        for number, headline in old.items():
            rows.append(Row(name, number, headline, new.get(number), intervals.verdict(headline, new.get(number))))
        rows += [Row(name, number, None, headline, "new") for number, headline in new.items() if number not in old]
    return rows


def _short(headline: Mapping[str, Any] | None) -> str:
    if headline is None or headline.get("mean") is None:
        return "-"
    if headline.get("interval") is None:
        return f"{headline['mean']:.4g}"
    low, high = headline["interval"]
    return f"{headline['mean']:.4g} [{low:.4g}, {high:.4g}]"


def table(rows: Sequence[Row]) -> str:
    """The rows as an aligned text table, then one line counting each verdict."""
    cells = [("figure", "number", "committed mean [95% interval]", "fresh mean [95% interval]", "verdict")]
    cells += [(r.figure, r.number, _short(r.committed), _short(r.fresh), r.verdict) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    counts = {v: sum(r.verdict == v for r in rows) for v in dict.fromkeys(r.verdict for r in rows)}
    lines.append(f"{len(rows)} numbers: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(lines)


def failed(rows: Sequence[Row]) -> list[Row]:
    """The rows whose verdict fails the check."""
    return [r for r in rows if r.verdict in intervals.FAILING]


def committed_summary(folder: Path) -> dict:
    """The ``summary.json`` of a gallery folder (ValueError naming ``--against`` when there is none)."""
    summary = report.load_summary(folder)
    if not summary.get("figures"):
        raise ValueError(f"--against must be a gallery folder holding a summary.json with figures, got {str(folder)!r}")
    return summary
