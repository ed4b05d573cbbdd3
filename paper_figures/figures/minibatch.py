"""Figure 9: minibatch Adam; eta * S_P of the *full-batch* loss, approaching 38 as the batch grows.

Each run draws a fresh random minibatch every step (``deep.run`` with ``batch_size``); the sharpness is
always measured on the full training set, with P from the optimizer's state.  The full-batch runs
(batch = n) are deep_adam's (shared cache).

Seeds: 3 per batch size at quick (5 at full); the seed draws the initialisation and the minibatches.
Quick runs batches of 32, 128 and 256 of deep_adam's 500 digits for 1000 steps (full: up to 2000 of
1000 images, 6000 steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from aeos_base import files
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import deep_adam, training
from paper_figures.figures.common import by_condition, threshold_constant
from paper_figures.registry import Context

ETA = 1e-3
LEVEL = threshold_constant("adam", beta1=0.9)  # 38

TITLE = f"Minibatch Adam: full-batch eta * S_P rises toward {LEVEL:.4g} as the batch size grows"


def plan(ctx: Context) -> list[Run]:
    base = deep_adam.networks(ctx)["MLP"]
    sizes = ctx.pick([50], [32, 128, 256], [32, 128, 512, 2000])
    n_steps, every = ctx.pick((300, 50), (1000, 100), (6000, 100))
    runs = [training.train_run(f"MLP adam batch={b}", optimizer="adam", hyper={"eta": ETA}, steps=n_steps,
                               measure_every=every, base=base, batch_size=b, seed=seed)
            for b in sizes if b < base["n"] for seed in ctx.seeds()]
    full_steps, full_every = deep_adam.steps(ctx, "MLP")
    runs += [training.train_run(f"MLP adam eta={ETA:g}", optimizer="adam", hyper={"eta": ETA}, steps=full_steps,
                                measure_every=full_every, base=base, seed=seed) for seed in ctx.seeds()]
    return runs


def _batch(run: Run) -> int:
    return run.config.get("batch_size") or run.config["n"]


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    groups = by_condition(runs, results, _batch)
    numbers, rows = {}, []
    for b, (seeds, found) in groups.items():
        numbers[f"batch={b}"] = training.seed_numbers(seeds, found, ETA, headline=("late_median_eta_S_P",))
    for r, res in zip(runs, results):
        rows += training.rows_for_csv(r.label, res, batch_size=_batch(r), eta=ETA, seed=r.config["seed"])
    data = files.write_csv(report.data_dir(out) / "minibatch.csv", rows)

    sizes = list(groups)
    full = runs[-1].config["n"]
    fig, axes = style.figure(2, 1, width="page", height=2.5)
    ax_traj, ax_level = axes[0]
    for color, b in zip(style.colors(len(sizes)), sizes):
        training.plot_seeds(ax_traj, groups[b][1], "preconditioned_sharpness", scale=ETA, color=color, marker="o",
                            label=f"batch {b}" + (" (full)" if b == full else ""))
    style.threshold_line(ax_traj, LEVEL, f"threshold\n{LEVEL:.4g}")
    ax_traj.set_ylim(0, LEVEL * 1.5)
    ax_traj.set_xlabel("step")
    ax_traj.set_ylabel(r"$\eta\,S_P$ of the full-batch loss")
    level = [numbers[f"batch={b}"]["late_median_eta_S_P"] for b in sizes]
    ok = [i for i, h in enumerate(level) if h["interval"] is not None]
    for b, h in zip(sizes, level):
        values = [v for v in h["values"] if v is not None]
        ax_level.plot([b] * len(values), values, ".", color=style.PALETTE[0], ms=3, alpha=0.5)
    ax_level.errorbar([sizes[i] for i in ok], [level[i]["mean"] for i in ok],
                      yerr=[[level[i]["mean"] - level[i]["interval"][0] for i in ok],
                            [level[i]["interval"][1] - level[i]["mean"] for i in ok]], fmt="o-",
                      color=style.PALETTE[0], capsize=2)
    style.threshold_line(ax_level, LEVEL, f"threshold\n{LEVEL:.4g}")
    style.logscale(ax_level, "x")
    ax_level.set_ylim(0, LEVEL * 1.5)
    ax_level.set_xlabel("batch size (examples)")
    ax_level.set_ylabel(r"late median $\eta\,S_P$")
    ax_level.set_title("mean over seeds, 95% interval (dots: seeds)", loc="left")
    style.legend(fig, [ax_traj])
    style.save(fig, out, "minibatch")

    caption = (
        f"Adam (eta = {ETA:g}, beta1 = 0.9) on the digits MLP with fresh random minibatches every step; "
        "eta * S_P is measured on the full-batch loss with the optimizer's own P. Left: every seed thin, "
        "their mean bold. Late-time (last 40%) median by batch size, mean [95% interval] over seeds: "
        + "; ".join(f"{b}: {intervals.text(h)}" for b, h in zip(sizes, level))
        + f" (threshold {LEVEL:.4g}).")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
