"""The figures, in gallery order, and the contract every figure module follows.

A figure module ``paper_figures.figures.<name>`` defines

* ``TITLE``: one line, shown in the gallery;
* ``plan(ctx: Context) -> list[Run]``: the independent runs it needs (cached by config, see
  :mod:`paper_figures.cache`); cheap, computes nothing;
* ``finish(ctx: Context, runs, results, out: Path) -> dict``: saves the figure's numbers as data
  (CSV/JSON under ``out/data``) *first*, then draws ``out/<name>.png`` and ``.pdf`` from them, and
  returns ``{"numbers": {...}, "caption": "...", "data": [files]}`` for ``summary.json`` and the gallery.

Seeds.  Training at the edge is chaotic (another BLAS, another trajectory), so a number measured on one
seed is one sample.  A figure whose numbers come from training or sampling runs plans every condition
once per seed of ``ctx.seeds()`` (2 at tiny, 3 at quick, 5 at full; ``ctx.seeds(full=10)`` asks for
more), putting the seed into each run's config (``training.train_run(..., seed=s)``, ``"seed": s`` for
the sims runs), so the cache keys each seed's run apart and a run shared by two figures stays shared.
``finish`` groups the results by condition (:func:`paper_figures.figures.common.by_condition`) and

* reports each *headline number* (the ones its caption quotes and the check compares) as
  :func:`paper_figures.intervals.over_seeds` of its per-seed values: the mean, the 95% t interval, every
  seed's value and the seed list; a number no seed changes (a bisection, a grid) is
  :func:`paper_figures.intervals.exact`, with the tolerance another machine may differ by;
* quotes them in the caption with :func:`paper_figures.intervals.text` ("37.62 [36.1, 39.14] over 3
  seeds"), never a typed number;
* draws every seed thin and the mean over seeds bold (:func:`paper_figures.style.seeds_and_mean`), or
  the mean with its interval as an error bar;
* draws each threshold with :func:`paper_figures.style.threshold_line` (labelled outside the data) and
  legends outside the panels (:func:`paper_figures.style.legend`), so no text covers data.

Quick mode keeps every figure within the 10-minute budget of the whole quick gallery on 2 cores by
shrinking steps or models, never seeds below 3; each figure's docstring says what it shrinks.  A
training figure, in short::

    def plan(ctx):
        return [training.train_run(f"MLP adam batch={b}", optimizer="adam", hyper={"eta": 1e-3}, steps=1000,
                                   measure_every=100, base=deep_adam.networks(ctx)["MLP"], batch_size=b, seed=s)
                for b in (32, 128) for s in ctx.seeds()]

    def finish(ctx, runs, results, out):
        groups = by_condition(runs, results, lambda run: run.config["batch_size"])
        numbers = {f"batch={b}": training.seed_numbers(seeds, found, 1e-3)  # late_median_eta_S_P, sharpness_last
                   for b, (seeds, found) in groups.items()}
        ...  # data first (files.write_csv), then training.plot_seeds per group, style.threshold_line,
        ...  # style.legend(fig), style.save(fig, out, NAME)
        caption = "... " + intervals.text(numbers["batch=32"]["late_median_eta_S_P"]) + " ..."
        return {"numbers": numbers, "caption": caption, "data": [...]}

A new figure also gets its expected threshold lines and legend entries in ``tests/test_figure_drawing.py``
(``THRESHOLDS``, ``LEGENDS``), which reads them from the drawn figure.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

#: Every figure, in the order of the gallery.
FIGURES: tuple[str, ...] = (
    "thresholds",
    "phase_diagrams",
    "quadratic_aeos",
    "sharpening_contrast",
    "deep_adam",
    "deep_gd_vs_adam",
    "beta1_sweep",
    "rmsprop_and_momentum",
    "minibatch_edge",
    "transformer",
    "nadam_schedule",
    "lr_schedule",
    "optimizer_zoo",
    "spectral_density",
    "central_flows",
)

#: Sizes: "tiny" (tests only, seconds), "quick" (all of them in minutes on 2 CPU cores), "full" (paper
#: scale, for a GPU).
SCALES: tuple[str, ...] = ("tiny", "quick", "full")

#: How many seeds each condition of a seeded figure runs at each scale (seeds 0, 1, ..., n - 1).
SEEDS: dict[str, int] = {"tiny": 2, "quick": 3, "full": 5}


@dataclass(frozen=True)
class Context:
    """What a figure needs to know about the invocation: its ``scale``, a CIFAR-10 folder, and the
    processes ``nproc`` each training run shards its full batch over (:mod:`deep.training.distributed`)."""

    scale: str
    cifar_dir: str | None = None
    nproc: int = 1

    def pick(self, tiny, quick, full):
        """The value for this scale."""
        return {"tiny": tiny, "quick": quick, "full": full}[self.scale]

    def seeds(self, **counts: int) -> list[int]:
        """The seeds 0 .. n-1 of every condition at this scale: :data:`SEEDS`, or ``counts[scale]`` when
        the figure asks for another count (at least 3 at quick and full, 2 at tiny)."""
        n = counts.get(self.scale, SEEDS[self.scale])
        low = 2 if self.scale == "tiny" else 3
        if not isinstance(n, int) or n < low:
            raise ValueError(f"seeds at scale {self.scale} must be an integer >= {low}, got {n!r}")
        return list(range(n))


def load(name: str) -> ModuleType:
    """The module of figure ``name`` (ValueError naming the allowed names otherwise)."""
    if name not in FIGURES:
        raise ValueError(f"--only must name figures among {', '.join(FIGURES)}; got {name!r}")
    return importlib.import_module(f"paper_figures.figures.{name}")


def select(only: str | None) -> list[str]:
    """Figures chosen by ``--only`` (comma-separated names, or all when None), in paper order."""
    if only is None:
        return list(FIGURES)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    if not wanted:
        raise ValueError(f"--only must name figures among {', '.join(FIGURES)}; got {only!r}")
    for w in wanted:
        if w not in FIGURES:
            raise ValueError(f"--only must name figures among {', '.join(FIGURES)}; got {w!r}")
    return [f for f in FIGURES if f in wanted]
