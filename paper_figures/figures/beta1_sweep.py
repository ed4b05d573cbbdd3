"""Figure 7: Adam at several beta1 on one network: the equilibrium level of eta * S_P against
(2 + 2 beta1) / (1 - beta1), the frozen-preconditioner threshold of ``aeos_theory``.

Seeds: 3 per beta1 at quick (5 at full).  Quick runs 1000 steps (full: 5000); the beta1 = 0.9 runs are
deep_adam's.
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

TITLE = "Adam's equilibrium eta * S_P across beta1 tracks (2 + 2 beta1)/(1 - beta1)"

ETA = 1e-3


def betas(ctx: Context) -> list[float]:
    return ctx.pick([0.5, 0.9], [0.5, 0.8, 0.9, 0.95], [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97])


def plan(ctx: Context) -> list[Run]:
    base = deep_adam.networks(ctx)["MLP"]
    runs = []
    for b in betas(ctx):
        if b == 0.9:  # the very runs of deep_adam (shared cache): default hyper, same steps
            n_steps, every = deep_adam.steps(ctx, "MLP")
            hyper = {"eta": ETA}
        else:
            n_steps, every = ctx.pick((300, 50), (1000, 100), (5000, 100))
            hyper = {"eta": ETA, "beta1": b}
        runs += [training.train_run(f"MLP adam beta1={b:g}", optimizer="adam", hyper=hyper, steps=n_steps,
                                    measure_every=every, base=base, seed=seed) for seed in ctx.seeds()]
    return runs


def _theory(b: float) -> float:
    return threshold_constant("adam", beta1=b)


def _beta1(run: Run) -> float:
    return float(run.config["hyper"].get("beta1", 0.9))


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    groups = by_condition(runs, results, _beta1)
    numbers, rows = {}, []
    for b, (seeds, found) in groups.items():
        nums = training.seed_numbers(seeds, found, ETA, headline=("late_median_eta_S_P",))
        nums["theory"] = _theory(b)
        nums["ratio_to_theory"] = intervals.over_seeds(
            [v / _theory(b) if v is not None else None for v in nums["late_median_eta_S_P"]["values"]], seeds)
        numbers[f"beta1={b:g}"] = nums
    for r, res in zip(runs, results):
        rows += training.rows_for_csv(r.label, res, beta1=_beta1(r), eta=ETA, seed=r.config["seed"])
    data = files.write_csv(report.data_dir(out) / "beta1_sweep.csv", rows)

    fig, axes = style.figure(2, 1, width="page", height=2.6)
    ax_traj, ax_eq = axes[0]
    for color, (b, (_, found)) in zip(style.colors(len(groups)), groups.items()):
        training.plot_seeds(ax_traj, found, "preconditioned_sharpness", scale=ETA, color=color, marker="o",
                            label=f"beta1 = {b:g}")
        style.threshold_line(ax_traj, _theory(b), f"{_theory(b):.4g}", color=color)
    style.logscale(ax_traj, "y")
    ax_traj.set_xlabel("step")
    ax_traj.set_ylabel(r"$\eta\,S_P$ (dimensionless)")
    ax_traj.set_title("trajectories; dashed: each beta1's threshold", loc="left")
    bs = list(groups)
    grid = np.linspace(0.0, max(bs) + 0.02, 200)
    ax_eq.plot(grid, [_theory(b) for b in grid], "k-", lw=1.0, label=r"theory $(2+2\beta_1)/(1-\beta_1)$")
    level = [numbers[f"beta1={b:g}"]["late_median_eta_S_P"] for b in bs]
    ok = [i for i, h in enumerate(level) if h["interval"] is not None]
    for i, b in enumerate(bs):  # every seed's level, small
        values = [v for v in level[i]["values"] if v is not None]
        ax_eq.plot([b] * len(values), values, ".", color=style.PALETTE[1], ms=3, alpha=0.5)
    ax_eq.errorbar([bs[i] for i in ok], [level[i]["mean"] for i in ok],
                   yerr=[[level[i]["mean"] - level[i]["interval"][0] for i in ok],
                         [level[i]["interval"][1] - level[i]["mean"] for i in ok]], fmt="o",
                   color=style.PALETTE[1], capsize=2, label="late median: mean over seeds, 95% interval (dots: seeds)")
    style.logscale(ax_eq, "y")
    ax_eq.set_xlabel(r"$\beta_1$")
    ax_eq.set_ylabel(r"equilibrium $\eta\,S_P$ (dimensionless)")
    ax_eq.set_title("equilibrium level vs beta1", loc="left")
    style.legend(fig, ncols=3)
    style.save(fig, out, "beta1_sweep")

    n_seeds = len(next(iter(groups.values()))[0])
    caption = (
        f"Full-batch Adam (eta = {ETA:g}, beta2 = 0.999) on the digits MLP at beta1 in "
        f"{{{', '.join(f'{b:g}' for b in bs)}}}, {n_seeds} seeds each. Left: eta * S_P over training (thin: every "
        "seed; bold: their mean) with each beta1's threshold (2+2 beta1)/(1-beta1) dashed, its value in the "
        "margin. Right: the late-time median (last 40% of steps), mean over seeds with its 95% interval, "
        "against the theory curve. Late median / theory: "
        + "; ".join(f"beta1 = {b:g}: {intervals.text(numbers[f'beta1={b:g}']['late_median_eta_S_P'])} / "
                    f"{_theory(b):.4g}" for b in bs) + ".")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
