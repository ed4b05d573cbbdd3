"""Figure 6: GD at the Edge of Stability beside Adam at the Adaptive Edge, on the same network.

GD (eta = 0.1) sharpens progressively until eta * S reaches 2 and is then held there (the classic
EoS: raw S blocked at 2/eta).  Adam (eta = 1e-3) holds eta * S_P at 38 instead, which does not block
the raw sharpness S: S keeps rising as the preconditioner P grows.

Seeds: 3 per optimizer at quick (5 at full).  GD runs 1500 steps at quick (8000 at full): at eta = 0.1
its sharpness reaches 2/eta = 20 within the first few hundred steps.  The Adam runs are deep_adam's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from aeos_base import files
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import deep_adam, training
from paper_figures.figures.common import by_condition, threshold_constant
from paper_figures.registry import Context
from sims.summary import first_passage

GD_ETA = 0.1
ADAM_ETA = 1e-3
GD_LEVEL = threshold_constant("gd")  # 2
ADAM_LEVEL = threshold_constant("adam", beta1=0.9)  # 38
ONSET = 0.95 * GD_LEVEL  # the record where GD is first counted at its edge: eta * S >= 1.9

TITLE = f"GD blocked at {GD_LEVEL:g}/eta vs Adam's raw sharpness advancing, on the digits MLP"


def plan(ctx: Context) -> list[Run]:
    base = deep_adam.networks(ctx)["MLP"]
    gd_steps, gd_every = ctx.pick((400, 50), (1500, 100), (8000, 100))
    adam_steps, adam_every = deep_adam.steps(ctx, "MLP")  # the same runs as deep_adam's (shared cache)
    runs = [training.train_run(f"MLP gd eta={GD_ETA:g}", optimizer="gd", hyper={"eta": GD_ETA},
                               steps=gd_steps, measure_every=gd_every, base=base, seed=seed) for seed in ctx.seeds()]
    runs += [training.train_run(f"MLP adam eta={ADAM_ETA:g}", optimizer="adam", hyper={"eta": ADAM_ETA},
                                steps=adam_steps, measure_every=adam_every, base=base, seed=seed)
             for seed in ctx.seeds()]
    return runs


def _late_loss_increases(result: dict) -> int:
    """How many times the train loss went up between consecutive records of the last 40% of steps."""
    steps, loss = training.series(result, "step"), training.series(result, "train_loss")
    late = steps >= 0.6 * np.nanmax(steps)
    return int(np.sum(np.diff(loss[late]) > 0))


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    groups = by_condition(runs, results, lambda r: r.config["optimizer"])
    gd_seeds, gd = groups["gd"]
    adam_seeds, adam = groups["adam"]
    gd_numbers = training.seed_numbers(gd_seeds, gd, GD_ETA, headline=("late_median_eta_S", "sharpness_last"))
    gd_numbers[f"first_step_eta_S_at_{ONSET:g}"] = intervals.over_seeds(
        [first_passage(training.series(r, "step"), GD_ETA * training.series(r, "sharpness"), ONSET) for r in gd],
        gd_seeds)
    gd_numbers["loss_increases_in_late_records"] = [_late_loss_increases(r) for r in gd]
    gd_numbers["sharpness_cap_2_over_eta"] = GD_LEVEL / GD_ETA
    adam_numbers = training.seed_numbers(adam_seeds, adam, ADAM_ETA)
    numbers = {"gd": gd_numbers, "adam": adam_numbers}
    rows = []
    for r, res in zip(runs, results):
        rows += training.rows_for_csv(r.label, res, optimizer=r.config["optimizer"], eta=r.config["hyper"]["eta"],
                                      seed=r.config["seed"])
    data = files.write_csv(report.data_dir(out) / "deep_gd_vs_adam.csv", rows)

    c_gd, c_adam = style.colors(2)
    fig, axes = style.figure(3, 1, width="page", height=2.5)
    ax_raw, ax_gd, ax_adam = axes[0]
    training.plot_seeds(ax_raw, gd, "sharpness", color=c_gd, marker="o", label=f"GD, eta = {GD_ETA:g}")
    training.plot_seeds(ax_raw, adam, "sharpness", color=c_adam, marker="s", label=f"Adam, eta = {ADAM_ETA:g}")
    style.threshold_line(ax_raw, GD_LEVEL / GD_ETA, f"2/eta (GD)\n= {GD_LEVEL / GD_ETA:g}", color=c_gd)
    ax_raw.set_ylabel(r"raw sharpness $S$ (loss/param$^2$)")
    ax_raw.set_title("raw sharpness", loc="left")
    training.plot_seeds(ax_gd, gd, "sharpness", scale=GD_ETA, color=c_gd, marker="o")
    style.threshold_line(ax_gd, GD_LEVEL, f"threshold\n{GD_LEVEL:g}")
    ax_gd.set_ylim(0, 1.5 * GD_LEVEL)
    ax_gd.set_ylabel(r"$\eta\,S$ (dimensionless)")
    ax_gd.set_title("GD", loc="left")
    training.plot_seeds(ax_adam, adam, "preconditioned_sharpness", scale=ADAM_ETA, color=c_adam, marker="s")
    style.threshold_line(ax_adam, ADAM_LEVEL, f"threshold\n{ADAM_LEVEL:.4g}")
    ax_adam.set_ylim(0, ADAM_LEVEL * 1.5)
    ax_adam.set_ylabel(r"$\eta\,S_P$ (dimensionless)")
    ax_adam.set_title("Adam", loc="left")
    for ax in axes[0]:
        ax.set_xlabel("step")
    style.legend(fig, [ax_raw])
    style.save(fig, out, "deep_gd_vs_adam")

    g, a = gd_numbers, adam_numbers
    caption = (
        f"Digits MLP, full batch, MSE, {len(gd_seeds)} seeds per optimizer (thin: every seed; bold: their mean); "
        f"numbers are means [95% intervals] over seeds. GD (eta = {GD_ETA:g}) sharpens until eta * S reaches "
        f"{GD_LEVEL:g} (first record with eta * S >= {ONSET:g} at step "
        f"{intervals.text(g[f'first_step_eta_S_at_{ONSET:g}'], 3)}); over the last 40% of its steps the median "
        f"of eta * S is {intervals.text(g['late_median_eta_S'])} and raw S stays near {GD_LEVEL:g}/eta = "
        f"{GD_LEVEL / GD_ETA:g} (last record: {intervals.text(g['sharpness_last'])}), while the loss is "
        f"non-monotone (increases between late records, per seed: {g['loss_increases_in_late_records']}). Adam "
        f"(eta = {ADAM_ETA:g}) holds eta * S_P at {intervals.text(a['late_median_eta_S_P'])} (median, last 40%; "
        f"threshold {ADAM_LEVEL:.4g}) while its raw S reaches {intervals.text(a['sharpness_last'])}: the "
        "preconditioned sharpness is held at the edge, the raw one is not.")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
