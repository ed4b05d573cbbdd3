"""Figure 2: stable / divergent regions over (eta, lambda), one panel per optimizer.

Each cell is one run of ``sims.simulate_batch`` on L = 1/2 lambda x^2 from x0 = 1 (preconditioner
frozen at P = 1 for Adam, so lambda is the preconditioned curvature); a cell is divergent when the run
overflowed or |x_T| > |x_0| after T steps.  The theoretical boundary lambda* = c / eta from
``aeos_theory.stability_threshold`` is drawn over the grid, and the fraction of cells on the side
theory predicts is reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from aeos_base import files
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.registry import Context

TITLE = "Stability phase diagrams over (eta, lambda): simulated regions and the exact boundary"

#: panel -> (optimizer, hyperparameters, frozen P?)
PANELS: dict[str, tuple[str, dict, bool]] = {
    "GD": ("gd", {}, False),
    "heavy ball, beta = 0.9": ("heavy_ball", {"beta": 0.9}, False),
    "Nesterov, beta = 0.9": ("nesterov", {"beta": 0.9}, False),
    "Adam (frozen P), beta1 = 0.9": ("adam", {"beta1": 0.9}, True),
}
ETA_RANGE = (1e-3, 1e-1)
STABLE, DIVERGENT = "#56B4E9", "#E69F00"  # sky blue, orange (Okabe-Ito)


def plan(ctx: Context) -> list[Run]:
    n = ctx.pick(16, 48, 120)
    steps = ctx.pick(1000, 2000, 4000)
    return [Run("sims.experiments:phase_diagram",
                {"optimizer": opt, "hyper": hyper, "frozen": frozen, "n": n, "steps": steps,
                 "eta_range": list(ETA_RANGE)},
                label=f"phase {opt}", cost=n * n * steps * 1e-6) for opt, hyper, frozen in PANELS.values()]


def _boundary_errors(res: Mapping) -> np.ndarray:
    """Per eta column: |empirical boundary / theory - 1|, the empirical boundary taken as the geometric
    mean of the largest stable and the smallest divergent lambda of the column."""
    etas, lams = np.asarray(res["etas"]), np.asarray(res["lambdas"])
    div = np.asarray(res["divergent"], dtype=bool)
    errs = []
    for j, eta in enumerate(etas):
        col = div[:, j]
        if not col.any() or col.all():
            continue
        first = int(np.argmax(col))
        est = np.sqrt(lams[first] * lams[max(first - 1, 0)])
        errs.append(abs(est * eta / res["constant"] - 1.0))
    return np.asarray(errs)


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    numbers, grids = {}, {}
    for panel, res in zip(PANELS, results):
        div = np.asarray(res["divergent"], dtype=bool)
        pred = np.asarray(res["predicted_divergent"], dtype=bool)
        errs = _boundary_errors(res)
        spacing = float(res["lambdas"][1] / res["lambdas"][0]) - 1.0
        numbers[panel] = {
            "threshold_constant": res["constant"],
            "cells_agreeing_with_theory": intervals.exact(float((div == pred).mean()), 1.0 / div.size),
            "cells": int(div.size),
            "max_boundary_relative_error": intervals.exact(float(errs.max()), spacing) if errs.size else None,
            "grid_relative_spacing": spacing,
        }
        grids[panel] = {  # rows: lambda, columns: eta; "1" = divergent
            "optimizer": res["optimizer"], "hyper": res["hyper"], "etas": res["etas"], "lambdas": res["lambdas"],
            "divergent": ["".join(str(int(v)) for v in row) for row in div],
            "theory_divergent": ["".join(str(int(v)) for v in row) for row in pred]}
    data = files.write_json(report.data_dir(out) / "phase_diagrams.json", grids)

    fig, axes = style.figure(len(results), 1, width="page", height=2.5)
    cmap = ListedColormap([STABLE, DIVERGENT])
    for ax, panel, res in zip(axes[0], PANELS, results):
        etas, lams = np.asarray(res["etas"]), np.asarray(res["lambdas"])
        ax.pcolormesh(etas, lams, np.asarray(res["divergent"]), cmap=cmap, vmin=0, vmax=1, shading="nearest",
                      rasterized=True)
        ax.plot(etas, res["constant"] / etas, "k--", lw=1.0)
        style.logscale(ax, "x", decades_only=True)
        style.logscale(ax, "y", decades_only=True)
        ax.set_title(f"{panel}\n" + rf"$\lambda^* = {res['constant']:.4g}/\eta$", loc="left", fontsize=7)
        ax.set_xlabel(r"step size $\eta$")
        ax.grid(False)
    axes[0, 0].set_ylabel(r"curvature $\lambda$ (preconditioned; 1/x$^2$)")
    boundary = Line2D([], [], color="k", ls="--", label=r"exact boundary $\lambda^* = c/\eta$")
    regions = [Patch(color=STABLE, label="stable"), Patch(color=DIVERGENT, label="divergent")]
    style.legend(fig, handles=[*regions, boundary], ncols=3)
    style.save(fig, out, "phase_diagrams")

    caption = (
        "Each pixel is one simulated run (`sims.simulate_batch`, "
        f"{runs[0].config['steps']} steps from x0 = 1) on L = 1/2 lambda x^2: sky blue stable, orange "
        "divergent (overflow or |x_T| > |x_0|); Adam runs with the preconditioner frozen at P = 1. Dashed: "
        "the exact boundary lambda* = c/eta from `aeos_theory.stability_threshold`. Fraction of cells on "
        "the side theory predicts: " + "; ".join(f"{k}: {v['cells_agreeing_with_theory']['mean']:.4f}"
                                                 for k, v in numbers.items())
        + ". Largest gap between the empirical boundary of an eta column and theory: "
        + "; ".join(f"{k}: {v['max_boundary_relative_error']['mean']:.3g}" for k, v in numbers.items()
                    if v["max_boundary_relative_error"] is not None)
        + f" (grid spacing {numbers[next(iter(numbers))]['grid_relative_spacing']:.3g} relative).")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
