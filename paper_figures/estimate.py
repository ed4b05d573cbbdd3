"""``aeos figures --dry-run``: what an invocation would compute, and its estimated CPU time, computing nothing.

For each figure: its runs, seeds and steps per run at the chosen scale, and the CPU seconds they would
take, extrapolated from a gallery's measured costs (by default the committed quick gallery): every run
carries a cost model (:attr:`paper_figures.cache.Run.cost`: estimated seconds, proportional to steps,
examples and model size, :func:`paper_figures.figures.training.cost_of`), and each figure's ratio of
measured CPU seconds to modelled seconds at the gallery's scale rescales its runs at the new scale.
A figure the gallery did not measure keeps the model's own seconds ("model" in the table).  Runs
shared by two figures count once in the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from paper_figures.cache import Run
from paper_figures.figures.common import seed_of
from paper_figures.registry import Context, load


def run_steps(run: Run) -> int | None:
    """The optimizer (or simulation) steps of a run: its config's ``steps``, or that of the training run it
    follows; None for a run without steps (a bisection)."""
    config: Mapping[str, Any] = run.config
    for key in ("run", "train"):
        if isinstance(config.get(key), Mapping):
            config = config[key]
    steps = config.get("steps")
    return int(steps) if steps is not None else None


@dataclass(frozen=True)
class Estimate:
    """One figure at one scale: its runs, their seeds and steps, and the estimated CPU seconds."""

    figure: str
    runs: list[Run]
    seconds: float
    basis: str  # "measured" (rescaled from a gallery) or "model"


def calibration(name: str, gallery: Mapping[str, Any]) -> float | None:
    """Measured CPU seconds per modelled second of figure ``name`` in ``gallery`` (a summary.json), at the
    gallery's scale; None when the gallery did not measure it."""
    entry = gallery.get("figures", {}).get(name, {})
    measured = entry.get("cpu_seconds")
    scale = gallery.get("scale")
    if not measured or scale is None:
        return None
    modelled = sum(r.cost for r in load(name).plan(Context(scale=scale)))
    return measured / modelled if modelled > 0 else None


def estimate(names: Sequence[str], ctx: Context, gallery: Mapping[str, Any]) -> list[Estimate]:
    """An :class:`Estimate` per figure at ``ctx``'s scale (its runs' cost rescaled by :func:`calibration`)."""
    out = []
    for name in names:
        runs = load(name).plan(ctx)
        ratio = calibration(name, gallery)
        out.append(Estimate(name, runs, sum(r.cost for r in runs) * (ratio or 1.0),
                            "measured" if ratio is not None else "model"))
    return out


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _span(values: list[int]) -> str:
    if not values:
        return "-"
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def table(estimates: Sequence[Estimate], scale: str, gallery: Mapping[str, Any]) -> str:
    """The estimates as an aligned text table with a total (shared runs counted once)."""
    cells = [("figure", "runs", "seeds", "steps per run", "est. CPU", "from")]
    for e in estimates:
        seeds = sorted({seed_of(r.config) for r in e.runs} - {None})
        steps = [s for s in (run_steps(r) for r in e.runs) if s is not None]
        cells.append((e.figure, str(len(e.runs)), f"{len(seeds)} ({_span(seeds)})" if len(seeds) > 1 else "1",
                      _span(steps), _duration(e.seconds), e.basis))
    seen: dict[str, float] = {}
    for e in estimates:
        per_cost = e.seconds / max(sum(r.cost for r in e.runs), 1e-12)
        for r in e.runs:
            seen.setdefault(r.key, r.cost * per_cost)
    widths = [max(len(row[i]) for row in cells) for i in range(6)]
    basis = (f"extrapolated from the measured CPU time of the {gallery.get('scale')} gallery's runs"
             if any(e.basis == "measured" for e in estimates) else "from the cost model alone (no measured gallery)")
    lines = [f"aeos figures at scale {scale}: what it would compute (nothing is run). CPU time {basis}, "
             "one core per run:"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(2, "  ".join("-" * w for w in widths))
    lines.append(f"total: {len(seen)} distinct runs, about {_duration(sum(seen.values()))} of CPU "
                 f"({_duration(sum(seen.values()) / 2)} on 2 cores if the runs pack perfectly)")
    return "\n".join(lines)
