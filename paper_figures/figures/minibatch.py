"""Figure 9: minibatch Adam; eta * S_P of the *full-batch* loss, approaching 38 as the batch grows.

Each run draws a fresh random minibatch every step (``deep.run`` with ``batch_size``); the sharpness is
always measured on the full training set, with P from the optimizer's state.  The full-batch run
(batch = n) is the one of ``deep_adam`` (shared cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from aeos_base import files
from paper_figures import report, style
from paper_figures.cache import Run
from paper_figures.figures import deep_adam, training
from paper_figures.figures.common import fmt, threshold_constant
from paper_figures.registry import Context

ETA = 1e-3
LEVEL = threshold_constant("adam", beta1=0.9)  # 38

TITLE = f"Minibatch Adam: full-batch eta * S_P rises toward {LEVEL:.4g} as the batch size grows"


def plan(ctx: Context) -> list[Run]:
    base = deep_adam.networks(ctx)["MLP"]
    sizes = ctx.pick([50], [32, 128, 512], [32, 128, 512, 2000])
    n_steps, every = ctx.pick((300, 50), (2000, 200), (6000, 100))
    runs = [training.train_run(f"MLP adam batch={b}", optimizer="adam", hyper={"eta": ETA}, steps=n_steps,
                               measure_every=every, base=base, batch_size=b) for b in sizes if b < base["n"]]
    full_steps, full_every = deep_adam.steps(ctx, "MLP")
    runs.append(training.train_run(f"MLP adam eta={ETA:g}", optimizer="adam", hyper={"eta": ETA},
                                   steps=full_steps, measure_every=full_every, base=base))
    return runs


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    numbers, rows, sizes = {}, [], []
    for r, res in zip(runs, results):
        b = r.config.get("batch_size") or r.config["n"]
        sizes.append(b)
        numbers[f"batch={b}"] = training.run_numbers(res, ETA)
        rows += training.rows_for_csv(r.label, res, batch_size=b, eta=ETA)
    data = files.write_csv(report.data_dir(out) / "minibatch.csv", rows)

    fig, axes = style.figure(2, 1, width="page", height=2.3)
    ax_traj, ax_level = axes[0]
    for color, b, res in zip(style.colors(len(sizes)), sizes, results):
        label = f"batch {b}" + (" (full)" if b == runs[-1].config["n"] else "")
        training.plot_metric(ax_traj, res, "preconditioned_sharpness", scale=ETA, color=color, marker="o", ms=2.5,
                             label=label)
    style.threshold_line(ax_traj, LEVEL, f"{LEVEL:.4g} (threshold)", va="top", where=0.6, pad=3)
    ax_traj.set_ylim(0, LEVEL * 1.5)
    ax_traj.set_xlabel("step")
    ax_traj.set_ylabel(r"$\eta\,S_P$ of the full-batch loss")
    style.legend(ax_traj, loc="upper left", ncol=2)
    med = [numbers[f"batch={b}"]["late_median_eta_S_P"] for b in sizes]
    rng = [numbers[f"batch={b}"]["late_range_eta_S_P"] for b in sizes]
    ok = [i for i, m in enumerate(med) if m is not None]
    ax_level.errorbar([sizes[i] for i in ok], [med[i] for i in ok],
                      yerr=[[med[i] - rng[i][0] for i in ok], [rng[i][1] - med[i] for i in ok]], fmt="o-",
                      color=style.PALETTE[0], capsize=2)
    style.threshold_line(ax_level, LEVEL, f"{LEVEL:.4g} (threshold)", va="bottom", where=0.05, pad=9)
    style.logscale(ax_level, "x")
    ax_level.set_ylim(0, LEVEL * 1.5)
    ax_level.set_xlabel("batch size (examples)")
    ax_level.set_ylabel(r"late median $\eta\,S_P$ (bar: range)")
    style.save(fig, out, "minibatch")

    caption = (
        f"Adam (eta = {ETA:g}, beta1 = 0.9) on the digits MLP with fresh random minibatches every step; "
        "eta * S_P is measured on the full-batch loss with the optimizer's own P. Late-time (last 40%) "
        "median by batch size: " + "; ".join(f"{b}: {fmt(m)}" for b, m in zip(sizes, med))
        + f" (threshold {LEVEL:.4g}).")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
