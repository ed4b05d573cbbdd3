"""Figure 12: Adam under linear warmup then cosine decay: the edge ratio while the learning rate moves.

The threshold bounds eta_t * S_P with eta_t the rate of the current step, so under a schedule the
edge moves with the lr: ``deep.measure_edge`` (through the trainer's ``edge_ratio`` column) reads each
step's lr from the optimizer and compares eta_t * S_P with the bias-corrected constant
(2 + 2 beta1)(1 - beta1^t)/(1 - beta1).  The figure shows the lr, eta_t * S_P against the threshold
and their ratio, for warmup and decay.

What it shows (the caption gives the numbers): the run starts below the edge, eta_t being near 0 at the
start of the warmup, and the ratio climbs through the warmup; over the decay eta_t * S_P stays at c_t
only if S_P grows as fast as the lr falls, and P adapts on the time scale 1/(1 - beta2) of its second
moment.  At the quick scale (2000 steps, 200 of warmup) the median ratio over the warmup is 0.23 at
beta2 = 0.999 and 0.29 at 0.99; over the second half of the decay 0.58 at 0.999 (falling to 0.35) and
0.98 at 0.99.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from aeos_base import files
from paper_figures import report, style
from paper_figures.cache import Run
from paper_figures.figures import deep_adam, training
from paper_figures.figures.common import fmt, rounded, threshold_constant
from paper_figures.registry import Context
from sims.summary import first_passage

PEAK = 1e-3
BETA2 = (0.999, 0.99)  # torch's default, and a preconditioner that adapts 10x faster
LEVEL = threshold_constant("adam", beta1=0.9)  # 38
AT_EDGE = 0.9  # an edge ratio this close to 1 counts as at the edge

TITLE = ("Adam under warmup and cosine decay: the edge ratio climbs towards 1 in the warmup and stays there "
         "over the decay only if P keeps up with the lr")


def plan(ctx: Context) -> list[Run]:
    steps, every, warmup = ctx.pick((300, 25, 50), (2000, 50, 200), (10000, 100, 1000))
    return [training.train_run(f"MLP adam warmup-cosine beta2={b2:g}", optimizer="adam",
                               hyper={"eta": PEAK, "beta2": b2}, steps=steps, measure_every=every,
                               base=deep_adam.networks(ctx)["MLP"], schedule="warmup_cosine", warmup_steps=warmup,
                               final_lr_ratio=0.1)
            for b2 in BETA2]


def _phase(ratio: np.ndarray, mask: np.ndarray) -> dict:
    v = ratio[mask & np.isfinite(ratio)]
    return {"median_edge_ratio": rounded(float(np.median(v))) if v.size else None,
            "range_edge_ratio": [rounded(float(v.min())), rounded(float(v.max()))] if v.size else []}


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    warmup, total = runs[0].config["warmup_steps"], runs[0].config["steps"]
    middle = warmup + (total - warmup) // 2
    numbers, rows = {"warmup_steps": warmup, "steps": total}, []
    fig, axes = style.figure(3, 1, width="page", height=2.3)
    ax_lr, ax_level, ax_ratio = axes[0]
    training.plot_metric(ax_lr, results[0], "lr", color="black")
    for color, run, res in zip(style.colors(len(runs)), runs, results):
        b2 = run.config["hyper"]["beta2"]
        step, ratio = training.series(res, "step"), training.series(res, "edge_ratio")
        numbers[f"beta2={b2:g}"] = {
            "warmup": _phase(ratio, (step > 0) & (step <= warmup)),
            "first_half_of_decay": _phase(ratio, (step > warmup) & (step <= middle)),
            "second_half_of_decay": _phase(ratio, step > middle),
            "first_step_at_edge": first_passage(step, ratio, AT_EDGE),
            "final_loss": training.run_numbers(res, PEAK)["final_loss"], "status": res.get("status")}
        rows += training.rows_for_csv(run.label, res, beta2=b2)
        training.plot_metric(ax_level, res, "eta_S_P", color=color, marker="o", ms=2, label=f"beta2 = {b2:g}")
        training.plot_metric(ax_ratio, res, "edge_ratio", color=color, marker="o", ms=2, label=f"beta2 = {b2:g}")
    numbers["lr_peak"] = rounded(float(np.nanmax(training.series(results[0], "lr"))))
    numbers["lr_last"] = rounded(float(training.series(results[0], "lr")[-1]))
    data = files.write_csv(report.data_dir(out) / "lr_schedule.csv", rows)

    ax_lr.set_ylabel("learning rate of the step")
    training.plot_metric(ax_level, results[0], "eta_threshold", color="black", lw=1.0, label="threshold c_t")
    ax_level.set_ylim(0, LEVEL * 1.5)
    ax_level.set_ylabel(r"$\eta_t\,S_P$ (dimensionless)")
    style.legend(ax_level, loc="lower right")
    style.threshold_line(ax_ratio, 1.0, "edge: 1", va="bottom", where=0.05, pad=2)
    ax_ratio.set_ylim(0, 1.5)
    ax_ratio.set_ylabel(r"edge ratio $\eta_t S_P / c_t$")
    for ax in axes[0]:
        ax.axvline(warmup, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("step")
    style.save(fig, out, "lr_schedule")

    runs_numbers = [(b2, numbers[f"beta2={b2:g}"]) for b2 in BETA2]
    reached = " and ".join(f"step {n['first_step_at_edge']} (beta2 = {b2:g})" if n["first_step_at_edge"] is not None
                           else f"never (beta2 = {b2:g})" for b2, n in runs_numbers)
    medians = "; ".join(f"beta2 = {b2:g}: " + ", ".join(fmt(n[phase]["median_edge_ratio"]) for phase in
                                                        ("warmup", "first_half_of_decay", "second_half_of_decay"))
                        + f" (range over the second half {n['second_half_of_decay']['range_edge_ratio']})"
                        for b2, n in runs_numbers)
    caption = (
        f"Full-batch Adam (beta1 = 0.9) on the digits MLP, lr warmed up linearly over {warmup} steps to {PEAK:g}, "
        f"then decayed by a cosine to {fmt(numbers['lr_last'])} at step {total}. Left: the lr of each step, read "
        "from the optimizer; middle: eta_t * S_P against the bias-corrected threshold c_t; right: the edge ratio "
        "eta_t * S_P / c_t (deep.measure_edge). The run starts below the edge (eta_t is near 0 at the start of "
        f"the warmup) and the ratio climbs with the lr through the warmup, first at {AT_EDGE:g} or above at "
        f"{reached}. Over the decay, staying at the edge needs S_P to grow as fast as the lr falls, and P adapts "
        "only on the time scale 1/(1 - beta2) of its second moment. Median edge ratio over the warmup, the "
        f"first half of the decay and its second half: {medians}.")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
