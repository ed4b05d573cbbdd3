"""Figure 7: Adam at several beta1 on one network: the equilibrium level of eta * S_P against
(2 + 2 beta1) / (1 - beta1), the frozen-preconditioner threshold of ``aeos_theory``."""

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

TITLE = "Adam's equilibrium eta * S_P across beta1 tracks (2 + 2 beta1)/(1 - beta1)"

ETA = 1e-3


def betas(ctx: Context) -> list[float]:
    return ctx.pick([0.5, 0.9], [0.5, 0.8, 0.9, 0.95], [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97])


def plan(ctx: Context) -> list[Run]:
    base = deep_adam.networks(ctx)["MLP"]
    runs = []
    for b in betas(ctx):
        if b == 0.9:  # the very run of deep_adam (shared cache): default hyper, same steps
            n_steps, every = deep_adam.steps(ctx, "MLP")
            hyper = {"eta": ETA}
        else:
            n_steps, every = ctx.pick((300, 50), (2000, 200), (5000, 100))
            hyper = {"eta": ETA, "beta1": b}
        runs.append(training.train_run(f"MLP adam beta1={b:g}", optimizer="adam", hyper=hyper, steps=n_steps,
                                       measure_every=every, base=base))
    return runs


def _theory(b: float) -> float:
    return threshold_constant("adam", beta1=b)


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    numbers, rows = {}, []
    bs = [float(r.config["hyper"].get("beta1", 0.9)) for r in runs]
    medians, ranges = [], []
    for b, r, res in zip(bs, runs, results):
        nums = training.run_numbers(res, ETA)
        theory = _theory(b)
        nums["theory"] = theory
        nums["ratio_to_theory"] = (nums["late_median_eta_S_P"] / theory
                                   if nums["late_median_eta_S_P"] is not None else None)
        numbers[f"beta1={b:g}"] = nums
        medians.append(nums["late_median_eta_S_P"])
        ranges.append(nums["late_range_eta_S_P"])
        rows += training.rows_for_csv(r.label, res, beta1=b, eta=ETA)
    data = files.write_csv(report.data_dir(out) / "beta1_sweep.csv", rows)

    fig, axes = style.figure(2, 1, width="page", height=2.4)
    ax_traj, ax_eq = axes[0]
    for color, b, res in zip(style.colors(len(bs)), bs, results):
        training.plot_metric(ax_traj, res, "preconditioned_sharpness", scale=ETA, color=color, marker="o", ms=2.5)
        style.threshold_line(ax_traj, _theory(b), f"beta1 = {b:g}: {_theory(b):.4g}", color=color, where=0.55,
                             va="top", pad=3)
    style.logscale(ax_traj, "y")
    ax_traj.set_xlabel("step")
    ax_traj.set_ylabel(r"$\eta\,S_P$ (dimensionless)")
    ax_traj.set_title("trajectories; dashed: each beta1's threshold", loc="left")
    grid = np.linspace(0.0, max(bs) + 0.02, 200)
    ax_eq.plot(grid, [_theory(b) for b in grid], "k-", lw=1.0, label=r"theory $(2+2\beta_1)/(1-\beta_1)$")
    ok = [i for i, m in enumerate(medians) if m is not None]
    lo = [medians[i] - ranges[i][0] for i in ok]
    hi = [ranges[i][1] - medians[i] for i in ok]
    ax_eq.errorbar([bs[i] for i in ok], [medians[i] for i in ok], yerr=[lo, hi], fmt="o",
                   color=style.PALETTE[1], capsize=2, label="late median (bar: late range), digits MLP")
    style.logscale(ax_eq, "y")
    ax_eq.set_xlabel(r"$\beta_1$")
    ax_eq.set_ylabel(r"equilibrium $\eta\,S_P$ (dimensionless)")
    ax_eq.set_title("equilibrium level vs beta1", loc="left")
    style.legend(ax_eq, loc="upper left")
    style.save(fig, out, "beta1_sweep")

    caption = (
        f"Full-batch Adam (eta = {ETA:g}, beta2 = 0.999) on the digits MLP at beta1 in "
        f"{{{', '.join(f'{b:g}' for b in bs)}}}. Left: eta * S_P over training with each run's threshold "
        "(2+2 beta1)/(1-beta1) dashed. Right: the late-time median (last 40% of steps; bars: min-max) "
        "against the theory curve. Median / theory: "
        + "; ".join(f"beta1 = {b:g}: {numbers[f'beta1={b:g}']['late_median_eta_S_P']} / "
                    f"{numbers[f'beta1={b:g}']['theory']:.4g}" for b in bs) + ".")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
