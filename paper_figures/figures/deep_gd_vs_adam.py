"""Figure 6: GD at the Edge of Stability beside Adam at the Adaptive Edge, on the same network.

GD (eta = 0.05) sharpens progressively until eta * S reaches 2 and is then held there (the classic
EoS: raw S blocked at 2/eta).  Adam (eta = 1e-3) holds eta * S_P at 38 instead, which does not block
the raw sharpness S: S keeps rising as the preconditioner P grows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from aeos_base import files
from paper_figures import report, style
from paper_figures.cache import Run
from paper_figures.figures import deep_adam, training
from paper_figures.figures.common import threshold_constant
from paper_figures.registry import Context
from sims.summary import first_passage

GD_ETA = 0.05
ADAM_ETA = 1e-3
GD_LEVEL = threshold_constant("gd")  # 2
ADAM_LEVEL = threshold_constant("adam", beta1=0.9)  # 38

TITLE = f"GD blocked at {GD_LEVEL:g}/eta vs Adam's raw sharpness advancing, on the digits MLP"


def plan(ctx: Context) -> list[Run]:
    base = deep_adam.networks(ctx)["MLP"]
    gd_steps, gd_every = ctx.pick((400, 50), (4000, 200), (8000, 100))
    adam_steps, adam_every = deep_adam.steps(ctx, "MLP")  # the same run as deep_adam's (shared cache)
    return [training.train_run(f"MLP gd eta={GD_ETA:g}", optimizer="gd", hyper={"eta": GD_ETA},
                               steps=gd_steps, measure_every=gd_every, base=base),
            training.train_run(f"MLP adam eta={ADAM_ETA:g}", optimizer="adam", hyper={"eta": ADAM_ETA},
                               steps=adam_steps, measure_every=adam_every, base=base)]


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    gd, adam = results
    gd_numbers = training.run_numbers(gd, GD_ETA)
    adam_numbers = training.run_numbers(adam, ADAM_ETA)
    steps = training.series(gd, "step")
    gd_numbers["first_step_eta_S_at_1.9"] = first_passage(steps, GD_ETA * training.series(gd, "sharpness"),
                                                          0.95 * GD_LEVEL)
    gd_numbers["sharpness_cap_2_over_eta"] = GD_LEVEL / GD_ETA
    numbers = {"gd": gd_numbers, "adam": adam_numbers}
    rows = training.rows_for_csv(runs[0].label, gd, optimizer="gd", eta=GD_ETA)
    rows += training.rows_for_csv(runs[1].label, adam, optimizer="adam", eta=ADAM_ETA)
    data = files.write_csv(report.data_dir(out) / "deep_gd_vs_adam.csv", rows)

    c_gd, c_adam = style.colors(2)
    fig, axes = style.figure(3, 1, width="page", height=2.3)
    ax_raw, ax_gd, ax_adam = axes[0]
    training.plot_metric(ax_raw, gd, "sharpness", color=c_gd, marker="o", ms=2.5, label=f"GD, eta = {GD_ETA:g}")
    training.plot_metric(ax_raw, adam, "sharpness", color=c_adam, marker="s", ms=2.5,
                         label=f"Adam, eta = {ADAM_ETA:g}")
    style.threshold_line(ax_raw, GD_LEVEL / GD_ETA, f"{GD_LEVEL:g}/eta = {GD_LEVEL / GD_ETA:g} (GD)", color=c_gd,
                         va="bottom", where=0.25, pad=2)
    ax_raw.set_ylabel(r"sharpness $S=\lambda_{max}(H)$ (loss/param$^2$)")
    ax_raw.set_title("raw sharpness, both optimizers", loc="left")
    style.legend(ax_raw, loc="lower right")
    training.plot_metric(ax_gd, gd, "sharpness", scale=GD_ETA, color=c_gd, marker="o", ms=2.5)
    style.threshold_line(ax_gd, GD_LEVEL, f"{GD_LEVEL:g} (GD threshold)", va="bottom", where=0.3, pad=9)
    ax_gd.set_ylim(0, 1.5 * GD_LEVEL)
    ax_gd.set_ylabel(r"$\eta\,S$ (dimensionless)")
    ax_gd.set_title("GD: normalised sharpness", loc="left")
    training.plot_metric(ax_adam, adam, "preconditioned_sharpness", scale=ADAM_ETA, color=c_adam, marker="s",
                         ms=2.5)
    style.threshold_line(ax_adam, ADAM_LEVEL, f"{ADAM_LEVEL:.4g} (Adam threshold)", va="bottom", where=0.3, pad=9)
    ax_adam.set_ylim(0, ADAM_LEVEL * 1.5)
    ax_adam.set_ylabel(r"$\eta\,S_P$ (dimensionless)")
    ax_adam.set_title("Adam: normalised preconditioned sharpness", loc="left")
    for ax in axes[0]:
        ax.set_xlabel("step")
    style.save(fig, out, "deep_gd_vs_adam")

    gd_loss = training.series(gd, "train_loss")
    late = steps >= 0.6 * np.nanmax(steps)
    rises = int(np.sum(np.diff(gd_loss[late]) > 0))
    numbers["gd"]["loss_increases_in_late_records"] = rises
    caption = (
        f"Digits MLP, full batch, MSE. GD (eta = {GD_ETA:g}) sharpens until eta * S reaches {GD_LEVEL:g} "
        f"(first record with eta * S >= {0.95 * GD_LEVEL:g} at step {gd_numbers['first_step_eta_S_at_1.9']}); over the "
        f"last 40% of its steps the median of eta * S is {gd_numbers['late_median_eta_S']} and raw S stays "
        f"near {GD_LEVEL:g}/eta = {GD_LEVEL / GD_ETA:g} (last: {gd_numbers['sharpness_last']}), while the loss is non-monotone "
        f"({rises} increases between late records). Adam (eta = {ADAM_ETA:g}) holds eta * S_P at "
        f"{adam_numbers['late_median_eta_S_P']} (median, last 40%; threshold {ADAM_LEVEL:.4g}) while its raw S goes "
        f"from {adam_numbers['sharpness_first']} to {adam_numbers['sharpness_last']}: the preconditioned "
        f"sharpness is held at the edge, the raw one is not.")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
