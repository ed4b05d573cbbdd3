"""Figure 5: full-batch Adam on real data (digits; CIFAR-10 at --full with --cifar-dir) for three eta.

For an MLP and a CNN: the train loss, the normalised preconditioned sharpness eta * S_P (S_P =
lambda_max(P^-1/2 H P^-1/2), P = diag(sqrt(v_hat) + eps) of the step just taken) against the
threshold (2 + 2 beta1)/(1 - beta1) = 38, and the raw sharpness S = lambda_max(H), which keeps
rising while eta * S_P hovers at 38.  All measurements come from ``deep.run``.

Seeds: 3 per step size at quick (5 at full).  Quick shrinks the data to the first 500 digits (full:
1000), the MLP's run to 1000 steps (full: 5000) and the CNN to width 16 (full: 32) and 800 steps.  The
other digits-MLP figures (deep_gd_vs_adam, beta1_sweep, rmsprop_and_momentum, nadam_schedule,
lr_schedule) train this same network, :func:`networks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from aeos_base import files
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import training
from paper_figures.figures.common import by_condition, threshold_constant
from paper_figures.registry import Context

ETAS = (5e-4, 1e-3, 2e-3)
LEVEL = threshold_constant("adam", beta1=0.9)  # (2 + 2 beta1) / (1 - beta1) = 38

TITLE = f"Full-batch Adam on digits (MLP, CNN): eta * S_P at {LEVEL:.4g} while raw sharpness rises"


def networks(ctx: Context) -> dict[str, dict]:
    """name -> base config of the two networks (digits, or CIFAR-10 at --full with --cifar-dir)."""
    if ctx.scale == "full" and ctx.cifar_dir:
        data = {"dataset": "cifar10", "n": 5000, "data_dir": ctx.cifar_dir, "chunk_size": 1000}
        return {"MLP": {**data, "model": "mlp", "width": 200, "depth": 2, "activation": "tanh", "loss": "mse"},
                "CNN": {**data, "model": "cnn", "width": 32, "depth": 2, "activation": "relu", "loss": "mse"}}
    n = ctx.pick(300, 500, 1000)
    return {"MLP": {**training.DIGITS_MLP, "n": n},
            "CNN": {"dataset": "digits", "n": n, "model": "cnn", "width": ctx.pick(8, 16, 32), "depth": 2,
                    "activation": "relu", "loss": "mse"}}


def steps(ctx: Context, net: str) -> tuple[int, int]:
    """(steps, measure_every) per network at this scale."""
    if net == "MLP":
        return ctx.pick((300, 50), (1000, 100), (5000, 100))
    return ctx.pick((200, 50), (800, 100), (5000, 100))


def plan(ctx: Context) -> list[Run]:
    runs = []
    for net, base in networks(ctx).items():
        n_steps, every = steps(ctx, net)
        for eta in ETAS:
            runs += [training.train_run(f"{net} adam eta={eta:g}", optimizer="adam", hyper={"eta": eta},
                                        steps=n_steps, measure_every=every, base=base, seed=seed)
                     for seed in ctx.seeds()]
    return runs


def _condition(run: Run) -> tuple[str, float]:
    return ("MLP" if run.config["model"] == "mlp" else "CNN", run.config["hyper"]["eta"])


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    groups = by_condition(runs, results, _condition)
    numbers: dict = {}
    rows = []
    for (net, eta), (seeds, found) in groups.items():
        numbers[f"{net} eta={eta:g}"] = training.seed_numbers(seeds, found, eta)
    for r, res in zip(runs, results):
        net, eta = _condition(r)
        rows += training.rows_for_csv(r.label, res, network=net, eta=eta, seed=r.config["seed"])
    data = files.write_csv(report.data_dir(out) / "deep_adam.csv", rows)

    fig, axes = style.figure(3, 2, width="page", height=4.6)
    for i, net in enumerate(("MLP", "CNN")):
        picked = [(eta, found) for (name, eta), (_, found) in groups.items() if name == net]
        training.draw_triptych(axes[i], [found for _, found in picked], [eta for eta, _ in picked],
                               [f"eta = {eta:g}" for eta, _ in picked], LEVEL, f"threshold\n{LEVEL:.4g}")
        dataset = next(r.config["dataset"] for r in runs if _condition(r)[0] == net)
        axes[i, 0].set_title(f"{net}, {dataset}, Adam b1 = 0.9", loc="left")
    style.legend(fig, [axes[0, 0]])
    style.save(fig, out, "deep_adam")

    n_seeds = len(next(iter(groups.values()))[0])
    caption = (
        "Full-batch Adam (beta1 = 0.9, beta2 = 0.999, eps = 1e-8), MSE loss, at three step sizes, "
        f"{n_seeds} seeds each (thin: every seed; bold: their mean). "
        "Left: train loss. Middle: eta * S_P, the preconditioned sharpness lambda_max(P^-1/2 H P^-1/2) "
        f"(P = diag(sqrt(v_hat) + eps) of the step just taken) times eta; dashed: the threshold {LEVEL:.4g}. "
        "Right: raw sharpness lambda_max(H). Late-time (last 40% of steps) median eta * S_P, mean [95% interval] "
        "over seeds: " + "; ".join(f"{k}: {intervals.text(v['late_median_eta_S_P'])}" for k, v in numbers.items())
        + ". Raw sharpness at the last record: "
        + "; ".join(f"{k}: {intervals.text(v['sharpness_last'], 3)}" for k, v in numbers.items()) + ".")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
