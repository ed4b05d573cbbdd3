"""Figure 12: Adam under linear warmup then cosine decay: the edge ratio while the learning rate moves.

The threshold bounds eta_t * S_P with eta_t the rate of the current step, so under a schedule the
edge moves with the lr: ``deep.measure_edge`` (through the trainer's ``edge_ratio`` column) reads each
step's lr from the optimizer and compares eta_t * S_P with the bias-corrected constant
(2 + 2 beta1)(1 - beta1^t)/(1 - beta1).  The figure shows the lr, eta_t * S_P against the threshold
and their ratio, for warmup and decay.

What it shows (the caption gives the numbers): the run starts below the edge, eta_t being near 0 at the
start of the warmup, and the ratio climbs through the warmup; over the decay eta_t * S_P stays at c_t
only if S_P grows as fast as the lr falls, and P adapts on the time scale 1/(1 - beta2) of its second
moment (1000 steps at beta2 = 0.999, 100 at 0.99).

Seeds: 3 per beta2 at quick (5 at full).  Quick runs 1000 steps with 100 of warmup (full: 10000 and
1000).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from aeos_base import files
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import deep_adam, training
from paper_figures.figures.common import by_condition, fmt, rounded, threshold_constant
from paper_figures.registry import Context
from sims.summary import first_passage

PEAK = 1e-3
BETA2 = (0.999, 0.99)  # torch's default, and a preconditioner that adapts 10x faster
LEVEL = threshold_constant("adam", beta1=0.9)  # 38
AT_EDGE = 0.9  # an edge ratio this close to 1 counts as at the edge
PHASES = ("warmup", "first_half_of_decay", "second_half_of_decay")

TITLE = ("Adam under warmup and cosine decay: the edge ratio climbs towards 1 in the warmup and stays there "
         "over the decay only if P keeps up with the lr")


def plan(ctx: Context) -> list[Run]:
    steps, every, warmup = ctx.pick((300, 25, 50), (1000, 50, 100), (10000, 100, 1000))
    return [training.train_run(f"MLP adam warmup-cosine beta2={b2:g}", optimizer="adam",
                               hyper={"eta": PEAK, "beta2": b2}, steps=steps, measure_every=every,
                               base=deep_adam.networks(ctx)["MLP"], schedule="warmup_cosine", warmup_steps=warmup,
                               final_lr_ratio=0.1, seed=seed)
            for b2 in BETA2 for seed in ctx.seeds()]


def _phase_median(step: np.ndarray, ratio: np.ndarray, mask: np.ndarray) -> float | None:
    v = ratio[mask & np.isfinite(ratio)]
    return rounded(float(np.median(v))) if v.size else None


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    warmup, total = runs[0].config["warmup_steps"], runs[0].config["steps"]
    middle = warmup + (total - warmup) // 2
    groups = by_condition(runs, results, lambda r: r.config["hyper"]["beta2"])
    numbers, rows = {"warmup_steps": warmup, "steps": total}, []
    for b2, (seeds, found) in groups.items():
        per_phase = {phase: [] for phase in PHASES}
        for res in found:
            step, ratio = training.series(res, "step"), training.series(res, "edge_ratio")
            masks = {"warmup": (step > 0) & (step <= warmup), "first_half_of_decay": (step > warmup) & (step <= middle),
                     "second_half_of_decay": step > middle}
            for phase in PHASES:
                per_phase[phase].append(_phase_median(step, ratio, masks[phase]))
        numbers[f"beta2={b2:g}"] = {
            **{f"{phase}_median_edge_ratio": intervals.over_seeds(per_phase[phase], seeds) for phase in PHASES},
            "first_step_at_edge": [first_passage(training.series(r, "step"), training.series(r, "edge_ratio"), AT_EDGE)
                                   for r in found],
            "final_loss": intervals.over_seeds([training.run_numbers(r, PEAK)["final_loss"] for r in found], seeds),
            "status": [r.get("status") for r in found]}
    for r, res in zip(runs, results):
        rows += training.rows_for_csv(r.label, res, beta2=r.config["hyper"]["beta2"], seed=r.config["seed"])
    lr = training.series(results[0], "lr")
    numbers["lr_peak"] = rounded(float(np.nanmax(lr)))
    numbers["lr_last"] = rounded(float(lr[-1]))
    data = files.write_csv(report.data_dir(out) / "lr_schedule.csv", rows)

    fig, axes = style.figure(3, 1, width="page", height=2.5)
    ax_lr, ax_level, ax_ratio = axes[0]
    training.plot_metric(ax_lr, results[0], "lr", color="black")
    ax_lr.set_ylabel("learning rate of the step")
    training.plot_metric(ax_level, results[0], "eta_threshold", color="black", lw=1.0, label="threshold c_t")
    for color, (b2, (_, found)) in zip(style.colors(len(groups)), groups.items()):
        training.plot_seeds(ax_level, found, "eta_S_P", color=color, marker="o", label=f"beta2 = {b2:g}")
        training.plot_seeds(ax_ratio, found, "edge_ratio", color=color, marker="o")
    ax_level.set_ylim(0, LEVEL * 1.5)
    ax_level.set_ylabel(r"$\eta_t\,S_P$ (dimensionless)")
    style.threshold_line(ax_ratio, 1.0, "edge\n1")
    ax_ratio.set_ylim(0, 1.5)
    ax_ratio.set_ylabel(r"edge ratio $\eta_t S_P / c_t$")
    for ax in axes[0]:
        ax.axvline(warmup, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("step")
    style.legend(fig, [ax_level], ncols=3)
    style.save(fig, out, "lr_schedule")

    n_seeds = len(next(iter(groups.values()))[0])
    medians = "; ".join(f"beta2 = {b2:g}: " + ", ".join(intervals.text(n[f"{p}_median_edge_ratio"]) for p in PHASES)
                        for b2, n in ((b2, numbers[f"beta2={b2:g}"]) for b2 in groups))
    reached = "; ".join(f"beta2 = {b2:g}: {numbers[f'beta2={b2:g}']['first_step_at_edge']}" for b2 in groups)
    caption = (
        f"Full-batch Adam (beta1 = 0.9) on the digits MLP, lr warmed up linearly over {warmup} steps to {PEAK:g}, "
        f"then decayed by a cosine to {fmt(numbers['lr_last'])} at step {total}; {n_seeds} seeds per beta2 (thin: "
        "every seed; bold: their mean). Left: the lr of each step, read from the optimizer; middle: eta_t * S_P "
        "against the bias-corrected threshold c_t; right: the edge ratio eta_t * S_P / c_t (deep.measure_edge). "
        "The run starts below the edge (eta_t is near 0 at the start of the warmup) and the ratio climbs with the "
        f"lr through the warmup; first record at {AT_EDGE:g} or above, per seed: {reached}. Over the decay, "
        "staying at the edge needs S_P to grow as fast as the lr falls, and P adapts only on the time scale "
        "1/(1 - beta2) of its second moment. Median edge ratio over the warmup, the first half of the decay and "
        f"its second half, means [95% intervals] over seeds: {medians}.")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
