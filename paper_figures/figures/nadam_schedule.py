"""Figure 11: full-batch NAdam on digits tracks the threshold of each step, not the settled one.

torch's NAdam multiplies its momentum by the schedule mu_t = beta1 (1 - 0.5 * 0.96^(t psi)) (psi =
``momentum_decay`` = 0.004), so the frozen-P threshold of its t-th update climbs slowly, 1.94/eta at
t = 1, 3.93/eta at t = 1000, 12.2/eta at t = 20000, towards the settled (2 + 2 beta1)/((1 - beta1)(1 + 2
beta1) eta) = 13.57/eta (``aeos_theory.stability_threshold(..., step=t)``).  The run log's
``eta_threshold`` is that moving value, read from the live optimizer (``deep.measure_edge``); the
figure shows eta * S_P following it, far below the settled constant.

Seeds: 3 at quick (5 at full).  Quick runs 1000 steps (full: 20000).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from aeos_base import files
from aeos_theory import stability_threshold
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import deep_adam, training
from paper_figures.figures.common import fmt, rounded, threshold_constant
from paper_figures.registry import Context
from sims.summary import late_median

ETA = 1e-3
SETTLED = threshold_constant("nadam", beta1=0.9)  # 95/7 = 13.57

TITLE = f"Full-batch NAdam on digits: eta * S_P follows the threshold of each step, not the settled {SETTLED:.4g}"


def plan(ctx: Context) -> list[Run]:
    steps, every = ctx.pick((300, 50), (1000, 100), (20000, 250))
    return [training.train_run(f"MLP nadam eta={ETA:g}", optimizer="nadam", hyper={"eta": ETA}, steps=steps,
                               measure_every=every, base=deep_adam.networks(ctx)["MLP"], seed=seed)
            for seed in ctx.seeds()]


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    seeds = [r.config["seed"] for r in runs]
    numbers = training.seed_numbers(seeds, results, ETA, headline=("late_median_eta_S_P",))
    step = training.series(results[0], "step")
    eta_thr = training.series(results[0], "eta_threshold")  # the same schedule for every seed
    per_seed = {"late_median_edge_ratio": [], "late_median_eta_S_P_over_settled": []}
    for res in results:
        s = training.series(res, "step")
        per_seed["late_median_edge_ratio"].append(rounded(late_median(s, training.series(res, "edge_ratio"))))
        per_seed["late_median_eta_S_P_over_settled"].append(
            rounded(late_median(s, training.series(res, "eta_S_P") / SETTLED)))
    numbers.update({key: intervals.over_seeds(values, seeds) for key, values in per_seed.items()})
    numbers.update(eta_threshold_first=rounded(eta_thr[1] if len(eta_thr) > 1 else None),
                   eta_threshold_last=rounded(eta_thr[-1]), settled_constant=rounded(SETTLED))
    rows = []
    for r, res in zip(runs, results):
        rows += training.rows_for_csv(r.label, res, eta=ETA, seed=r.config["seed"])
    data = files.write_csv(report.data_dir(out) / "nadam_schedule.csv", rows)

    grid = np.unique(np.geomspace(1, max(step.max(), 1), 200).astype(int))
    theory = [ETA * stability_threshold("nadam", eta=ETA, beta1=0.9, step=int(t)) for t in grid]
    fig, axes = style.figure(2, 1, width="page", height=2.6)
    ax_level, ax_ratio = axes[0]
    ax_level.plot(grid, theory, color="black", lw=1.0, label="threshold of step t (theory)")
    training.plot_seeds(ax_level, results, "eta_S_P", color=style.PALETTE[1], marker="o",
                        label=r"$\eta\,S_P$ (measured; thin: seeds, bold: mean)")
    style.threshold_line(ax_level, SETTLED, f"settled\n{SETTLED:.4g}")
    ax_level.set_ylim(0, SETTLED * 1.15)
    ax_level.set_ylabel(r"$\eta\,S_P$ (dimensionless)")
    training.plot_seeds(ax_ratio, results, "edge_ratio", color=style.PALETTE[1], marker="o")
    style.threshold_line(ax_ratio, 1.0, "edge\n1")
    ax_ratio.set_ylim(0, 1.5)
    ax_ratio.set_ylabel(r"edge ratio $\eta S_P / c_t$")
    for ax in axes[0]:
        ax.set_xlabel("step")
    style.legend(fig, [ax_level])
    style.save(fig, out, "nadam_schedule")

    caption = (
        f"Full-batch NAdam (eta = {ETA:g}, beta1 = 0.9, torch's momentum_decay 0.004) on the digits MLP, "
        f"{len(seeds)} seeds. Left: eta * S_P measured every {runs[0].config['measure_every']} steps against the "
        f"threshold of each step (black; {fmt(numbers['eta_threshold_first'])} at the first record, "
        f"{fmt(numbers['eta_threshold_last'])} at the last) and the settled constant {SETTLED:.4g} (dashed). Right: "
        "the edge ratio eta * S_P / c_t read from the live optimizer. Over the last 40% of steps, means [95% "
        f"intervals] over seeds: median edge ratio {intervals.text(numbers['late_median_edge_ratio'])}, while "
        f"eta * S_P is {intervals.text(numbers['late_median_eta_S_P_over_settled'], 3)} of the settled constant: "
        "the moving threshold, not the settled one, is where NAdam trains.")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
