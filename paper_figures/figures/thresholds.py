"""Figure 1: the stability threshold constant eta * lambda* against the momentum coefficient.

Theory curves are ``aeos_theory.stability_threshold`` (exact, sympy-derived, frozen preconditioner):
Adam/EMA (2 + 2 beta1)/(1 - beta1), NAdam (2 + 2 beta1)/((1 - beta1)(1 + 2 beta1)), heavy ball
2 + 2 beta, Nesterov (2 + 2 beta)/(1 + 2 beta), GD 2.  Markers are ``sims.empirical_threshold``: the
smallest lambda whose iterates diverge on the 1-D quadratic, found by bisection, times eta.

No seeds: nothing here is sampled.  Its headline numbers are deterministic, with the bisection's relative
width 1e-7 as the tolerance another machine's value may differ by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from aeos_base import files
from aeos_theory.optimizers import get_optimizer
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures.common import threshold_constant
from paper_figures.registry import Context

TITLE = "Stability threshold constant eta * lambda* vs momentum: theory curves, bisection markers"

#: The optimizers drawn, in drawing order (each has a momentum hyperparameter in the registry).
OPTIMIZERS = ("adam", "nadam", "heavy_ball", "nesterov")
ETA = 0.01
#: The relative width at which ``sims.empirical_threshold`` stops bisecting.
BISECTION_RTOL = 1e-7


def plan(ctx: Context) -> list[Run]:
    betas = ctx.pick([0.0, 0.5, 0.9, 0.99],
                     [0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99],
                     [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995])
    return [Run("sims.experiments:threshold_sweep", {"optimizer": opt, "eta": ETA, "betas": betas},
                label=f"thresholds {opt}", cost=0.1 * len(betas))
            for opt in OPTIMIZERS]


def _curve(opt: str, grid: np.ndarray) -> np.ndarray:
    momentum = get_optimizer(opt).momentum
    return np.array([threshold_constant(opt, **{momentum: float(b)}) for b in grid])


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    rows, numbers = [], {}
    worst = 0.0
    for res in results:
        eta = res["eta"]
        rel = [abs(e - t) / t for e, t in zip(res["empirical"], res["theory"])]
        worst = max(worst, max(rel))
        for b, e, t, r in zip(res["betas"], res["empirical"], res["theory"], rel):
            rows.append({"optimizer": res["optimizer"], "momentum": b, "eta": eta,
                         "empirical_constant": e * eta, "theory_constant": t * eta, "relative_error": r})
        at = dict(zip(res["betas"], res["empirical"]))
        numbers[res["optimizer"]] = {
            "max_relative_error": max(rel),
            "empirical_constant_at_0.9": (intervals.exact(at[0.9] * eta, BISECTION_RTOL * at[0.9] * eta)
                                          if 0.9 in at else None)}
    numbers["max_relative_error"] = intervals.exact(worst, BISECTION_RTOL)
    data = files.write_csv(report.data_dir(out) / "thresholds.csv", rows)

    grid = np.linspace(0.0, 0.995, 300)
    fig, axes = style.figure(1, 1, width="column", height=2.6)
    ax = axes[0, 0]
    for color, res in zip(style.colors(len(results)), results):
        opt = res["optimizer"]
        ax.plot(grid, _curve(opt, grid), color=color, label=get_optimizer(opt).label)
        ax.plot(res["betas"], np.array(res["empirical"]) * res["eta"], "o", color=color, mfc="none",
                mew=1.0)
    gd = threshold_constant("gd")
    style.threshold_line(ax, gd, f"GD\n{gd:g}")
    ax.plot([], [], "o", color="grey", mfc="none", label="bisection (sims)")
    style.logscale(ax, "y")
    ax.set_xlabel(r"momentum $\beta_1$ (Adam, NAdam) or $\beta$ (heavy ball, Nesterov)")
    ax.set_ylabel(r"threshold constant $\eta\,\lambda^*$ (dimensionless)")
    style.legend(fig, ncols=3)
    style.save(fig, out, "thresholds")

    adam = next((r for r in results if r["optimizer"] == "adam"), None)
    caption = (
        "Largest stable (preconditioned) curvature lambda* times eta, with the preconditioner frozen, "
        "against the momentum coefficient. Lines: exact thresholds from `aeos_theory.stability_threshold`"
        " (Adam (2+2b1)/(1-b1), NAdam, heavy ball 2+2b, Nesterov (2+2b)/(1+2b); GD 2 dashed). Circles: "
        f"bisection for the smallest diverging lambda on the 1-D quadratic (`sims.empirical_threshold`, "
        f"eta = {ETA}). Largest relative gap between bisection and theory over all "
        f"{len(rows)} points: {worst:.2e}.")
    if adam is not None and 0.9 in adam["betas"]:
        caption += (f" Adam at beta1 = 0.9: {numbers['adam']['empirical_constant_at_0.9']['mean']:.6g} "
                    f"(theory {threshold_constant('adam', beta1=0.9):.6g}).")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
