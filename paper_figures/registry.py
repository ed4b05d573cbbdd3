"""The figures, in gallery order, and the contract every figure module follows.

A figure module ``paper_figures.figures.<name>`` defines

* ``TITLE``: one line, shown in the gallery;
* ``plan(ctx: Context) -> list[Run]``: the independent runs it needs (cached by config, see
  :mod:`paper_figures.cache`); cheap, computes nothing;
* ``finish(ctx: Context, runs, results, out: Path) -> dict``: saves the figure's numbers as data
  (CSV/JSON under ``out/data``) *first*, then draws ``out/<name>.png`` and ``.pdf`` from them, and
  returns ``{"numbers": {...}, "caption": "..."}`` for ``summary.json`` and the gallery.
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
    "minibatch",
    "transformer",
    "nadam_schedule",
    "lr_schedule",
    "spectral_density",
    "central_flows",
)

#: Sizes: "tiny" (tests only, seconds), "quick" (all of them in minutes on 2 CPU cores), "full" (paper
#: scale, for a GPU).
SCALES: tuple[str, ...] = ("tiny", "quick", "full")


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
