"""Figure 3: Adam on a dense quadratic, the Adaptive Edge of Stability in its simplest form.

L(x) = 1/2 x^T H x with H a random rotation of the spectrum logspace(0, 2, d) and x0 ~ N(0, I)
(``sims.experiments.dense_quadratic_run``), Adam (beta1 = 0.9, beta2 = 0.999, eps = 1e-8) at three step sizes, run by
``sims.simulate``.  The raw sharpness S = 100 is fixed, but S_P = lambda_max(P^-1/2 H P^-1/2) climbs
as v (hence P) decays with the gradient, until eta * S_P reaches 38 = (2 + 2 beta1)/(1 - beta1); there
the iterate oscillates, the gradient and v grow, P grows and S_P falls back: eta * S_P hovers at 38.

Seeds: 3 per step size at quick, 10 at full (the seed draws the rotation of H and x0); quick and full
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
from sims.summary import first_passage, late_median

HYPER = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
#: Where eta * S_P must settle: (2 + 2 beta1) / (1 - beta1) = 38 at beta1 = 0.9.
LEVEL = threshold_constant("adam", beta1=HYPER["beta1"])
#: The level whose first passage the paper reports as the onset: 36/38 of LEVEL (36 at beta1 = 0.9).
ONSET = LEVEL * 18 / 19
ONSET_KEY = f"first_step_above_{ONSET:.4g}"

TITLE = f"Adam on a dense quadratic: eta * S_P climbs to {LEVEL:.4g} and hovers there"


def plan(ctx: Context) -> list[Run]:
    etas = ctx.pick([1e-2], [1e-3, 3e-3, 1e-2], [1e-3, 3e-3, 1e-2])
    runs = []
    for eta in etas:
        steps = ctx.pick(12_000, 40_000 if eta < 2e-3 else 20_000, 80_000 if eta < 2e-3 else 40_000)
        runs += [Run("sims.experiments:dense_quadratic_run",
                     {"optimizer": "adam", "eta": eta, "steps": steps, "record_every": 100, "seed": seed,
                      "d": 50, "log_lo": 0.0, "log_hi": 2.0, "hyper": HYPER},
                     label=f"quadratic adam eta={eta:g} seed {seed}", cost=steps * 2e-5)
                 for seed in ctx.seeds(full=10)]
    return runs


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    groups = by_condition(runs, results, lambda r: r.config["eta"])
    numbers, rows = {}, []
    for eta, (seeds, found) in groups.items():
        onsets, medians = [], []
        for res in found:
            steps, level = column(res, "step"), eta * column(res, "preconditioned_sharpness")
            onsets.append(first_passage(steps, level, ONSET))
            medians.append(rounded(late_median(steps, level)))
        numbers[f"eta={eta:g}"] = {"steps": next(r.config["steps"] for r in runs if r.config["eta"] == eta),
                                   ONSET_KEY: intervals.over_seeds(onsets, seeds),
                                   "late_median_eta_S_P": intervals.over_seeds(medians, seeds),
                                   "sharpness": rounded(float(found[0]["sharpness"][0])),
                                   "diverged_at": [res["diverged_at"] for res in found]}
    for r, res in zip(runs, results):
        eta = r.config["eta"]
        level = eta * column(res, "preconditioned_sharpness")
        rows += [{"eta": eta, "seed": r.config["seed"], "step": int(s), "loss": l, "sharpness": sh, "eta_S_P": lv}
                 for s, l, sh, lv in zip(res["step"], res["loss"], res["sharpness"], level)]
    data = files.write_csv(report.data_dir(out) / "quadratic_aeos.csv", rows)

    fig, axes = style.figure(2, 1, width="page", height=2.6)
    ax_loss, ax_level = axes[0]
    for color, (eta, (_, found)) in zip(style.colors(len(groups)), groups.items()):
        steps = [column(res, "step") for res in found]
        style.seeds_and_mean(ax_loss, steps, [column(res, "loss") for res in found], color=color,
                             label=f"eta = {eta:g}")
        style.seeds_and_mean(ax_level, steps, [eta * column(res, "preconditioned_sharpness") for res in found],
                             color=color)
    style.logscale(ax_loss, "y")
    ax_loss.set_ylabel(r"loss $\frac{1}{2}x^\top H x$")
    style.threshold_line(ax_level, LEVEL, f"threshold\n{LEVEL:.4g}")
    ax_level.set_ylim(0, LEVEL * 1.4)
    ax_level.set_ylabel(r"$\eta\,S_P$ (dimensionless)")
    for ax in axes[0]:
        ax.set_xlabel("step")
    style.legend(fig, [ax_loss])
    style.save(fig, out, "quadratic_aeos")

    d = runs[0].config["d"]
    n_seeds = len(next(iter(groups.values()))[0])
    caption = (
        f"Adam (beta1 = 0.9, beta2 = 0.999, eps = 1e-8) on L = 1/2 x^T H x, H a random rotation of "
        f"logspace(0, 2, {d}) (raw sharpness S = 100 throughout), x0 ~ N(0, I), {n_seeds} seeds (each draws H's "
        "rotation and x0; thin: every seed, bold: their mean), simulated with `sims.simulate` and recorded every "
        f"100 steps. eta * S_P climbs as the second moment v decays, then hovers at the threshold {LEVEL:.4g}. "
        "Means [95% intervals] over seeds: "
        + "; ".join(f"{k}: first above {ONSET:.4g} at step {intervals.text(v[ONSET_KEY], 3)}, late median (last "
                    f"40%) {intervals.text(v['late_median_eta_S_P'])}" for k, v in numbers.items()) + ".")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
