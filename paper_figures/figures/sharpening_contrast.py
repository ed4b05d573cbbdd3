"""Figure 4: the progressive-sharpening model of ``sims.sharpening``: GD blocked at 2/eta, Adam not.

Both optimizers run at the same eta on :class:`sims.sharpening.SharpeningModel` (a two-layer linear
model whose descent direction raises the curvature; see its docstring for why it sharpens).  GD's
raw sharpness S rises until eta * S = 2 and is held there.  Adam's eta * S_P is held at 38 instead,
which lets its raw S keep rising far past 2/eta.

Seeds: 3 per optimizer at quick, 10 at full (the seed draws the model's data and start); quick and full
differ only in steps and seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from aeos_base import files
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures.common import by_condition, column, rounded, threshold_constant
from paper_figures.registry import Context
from sims.summary import late_median

ETA = 0.01
OPTIMIZERS = ("gd", "adam")
GD_LEVEL = threshold_constant("gd")  # eta * S where GD is held: 2
ADAM_LEVEL = threshold_constant("adam", beta1=0.9)  # eta * S_P where Adam is held: 38

TITLE = (f"Progressive-sharpening model: GD's S blocked at {GD_LEVEL:g}/eta, Adam's S rising while "
         f"eta * S_P = {ADAM_LEVEL:.4g}")


def plan(ctx: Context) -> list[Run]:
    steps = ctx.pick(8000, 10_000, 40_000)
    return [Run("sims.experiments:sharpening_run",
                {"optimizer": opt, "eta": ETA, "steps": steps, "record_every": 50, "seed": seed},
                label=f"sharpening {opt} seed {seed}", cost=steps * 2e-5)
            for opt in OPTIMIZERS for seed in ctx.seeds(full=10)]


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    groups = by_condition(runs, results, lambda r: r.config["optimizer"])
    numbers, rows = {}, []
    for opt, (seeds, found) in groups.items():
        per_seed = {"late_median_eta_S": [], "late_median_eta_S_P": [], "sharpness_first": [], "sharpness_last": []}
        for r in found:
            steps, s, sp = column(r, "step"), column(r, "sharpness"), column(r, "preconditioned_sharpness")
            per_seed["late_median_eta_S"].append(rounded(late_median(steps, ETA * s)))
            per_seed["late_median_eta_S_P"].append(rounded(late_median(steps, ETA * sp)))
            per_seed["sharpness_first"].append(rounded(s[0]))
            per_seed["sharpness_last"].append(rounded(s[-1]))
        numbers[opt] = {key: intervals.over_seeds(values, seeds) for key, values in per_seed.items()}
        numbers[opt]["diverged_at"] = [r["diverged_at"] for r in found]
    for run, r in zip(runs, results):
        steps, s, sp = column(r, "step"), column(r, "sharpness"), column(r, "preconditioned_sharpness")
        rows += [{"optimizer": run.config["optimizer"], "seed": run.config["seed"], "step": int(t), "loss": l,
                  "sharpness": a, "preconditioned_sharpness": b} for t, l, a, b in zip(steps, r["loss"], s, sp)]
    data = files.write_csv(report.data_dir(out) / "sharpening_contrast.csv", rows)

    c_gd, c_adam = style.colors(2)
    fig, axes = style.figure(3, 1, width="page", height=2.5)
    ax_raw, ax_gd, ax_adam = axes[0]
    gd, adam = groups["gd"][1], groups["adam"][1]
    for found, color, label in ((gd, c_gd, "GD"), (adam, c_adam, "Adam")):
        style.seeds_and_mean(ax_raw, [column(r, "step") for r in found], [column(r, "sharpness") for r in found],
                             color=color, label=label)
    style.logscale(ax_raw, "y")
    style.threshold_line(ax_raw, GD_LEVEL / ETA, f"2/eta\n= {GD_LEVEL / ETA:g}")
    ax_raw.set_ylabel(r"raw sharpness $S=\lambda_{max}(H)$ (1/x$^2$)")
    ax_raw.set_title(f"both at eta = {ETA:g}", loc="left")
    style.seeds_and_mean(ax_gd, [column(r, "step") for r in gd], [ETA * column(r, "sharpness") for r in gd],
                         color=c_gd)
    style.threshold_line(ax_gd, GD_LEVEL, f"threshold\n{GD_LEVEL:g}")
    ax_gd.set_ylim(0, 3.0)
    ax_gd.set_ylabel(r"GD: $\eta\,S$ (dimensionless)")
    style.seeds_and_mean(ax_adam, [column(r, "step") for r in adam],
                         [ETA * column(r, "preconditioned_sharpness") for r in adam], color=c_adam)
    style.threshold_line(ax_adam, ADAM_LEVEL, f"threshold\n{ADAM_LEVEL:.4g}")
    ax_adam.set_ylim(0, ADAM_LEVEL * 1.5)
    ax_adam.set_ylabel(r"Adam: $\eta\,S_P$ (dimensionless)")
    for ax in axes[0]:
        ax.set_xlabel("step")
    style.legend(fig, [ax_raw])
    style.save(fig, out, "sharpening_contrast")

    g, a = numbers["gd"], numbers["adam"]
    caption = (
        f"GD and Adam (beta1 = 0.9) at eta = {ETA:g} on the progressive-sharpening model of "
        "`sims.sharpening` (a two-layer linear model whose descent direction raises the curvature), "
        f"{len(groups['gd'][0])} seeds each (thin: every seed; bold: their mean); numbers are means [95% intervals] "
        f"over seeds. GD: raw S goes from {intervals.text(g['sharpness_first'])} to "
        f"{intervals.text(g['sharpness_last'])} and over the last 40% of steps eta * S has median "
        f"{intervals.text(g['late_median_eta_S'])}: blocked at {GD_LEVEL:g}/eta. Adam: raw S goes from "
        f"{intervals.text(a['sharpness_first'])} to {intervals.text(a['sharpness_last'])} while eta * S_P has late "
        f"median {intervals.text(a['late_median_eta_S_P'])}, at the threshold {ADAM_LEVEL:.4g}.")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
