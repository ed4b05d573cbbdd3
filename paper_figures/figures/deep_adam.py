"""Figure 5: full-batch Adam on real data (digits; CIFAR-10 at --full with --cifar-dir) for three eta.

For an MLP and a CNN: the train loss, the normalised preconditioned sharpness eta * S_P (S_P =
lambda_max(P^-1/2 H P^-1/2), P = diag(sqrt(v_hat) + eps) of the step just taken) against the
threshold (2 + 2 beta1)/(1 - beta1) = 38, and the raw sharpness S = lambda_max(H), which keeps
rising while eta * S_P hovers at 38.  All measurements come from ``deep.run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from aeos_base import files
from paper_figures import report, style
from paper_figures.cache import Run
from paper_figures.figures import training
from paper_figures.figures.common import threshold_constant
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
    n = ctx.pick(300, 1000, 1000)
    return {"MLP": {**training.DIGITS_MLP, "n": n},
            "CNN": {"dataset": "digits", "n": n, "model": "cnn", "width": ctx.pick(8, 16, 32), "depth": 2,
                    "activation": "relu", "loss": "mse"}}


def steps(ctx: Context, net: str) -> tuple[int, int]:
    """(steps, measure_every) per network at this scale."""
    if net == "MLP":
        return ctx.pick((300, 50), (2000, 125), (5000, 100))
    return ctx.pick((200, 50), (800, 100), (5000, 100))


def plan(ctx: Context) -> list[Run]:
    runs = []
    for net, base in networks(ctx).items():
        n_steps, every = steps(ctx, net)
        for eta in ETAS:
            runs.append(training.train_run(f"{net} adam eta={eta:g}", optimizer="adam", hyper={"eta": eta},
                                           steps=n_steps, measure_every=every, base=base))
    return runs


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    nets = list(networks(ctx))
    numbers: dict = {}
    rows = []
    for r, res in zip(runs, results):
        eta = r.config["hyper"]["eta"]
        net = nets[0] if r.config["model"] == "mlp" else nets[1]
        numbers[f"{net} eta={eta:g}"] = training.run_numbers(res, eta)
        rows += training.rows_for_csv(r.label, res, network=net, eta=eta)
    data = files.write_csv(report.data_dir(out) / "deep_adam.csv", rows)

    fig, axes = style.figure(3, 2, width="page", height=4.4)
    for i, net in enumerate(nets):
        pick = [(r, res) for r, res in zip(runs, results) if (r.config["model"] == "mlp") == (i == 0)]
        etas = [r.config["hyper"]["eta"] for r, _ in pick]
        training.draw_triptych(axes[i], [res for _, res in pick], etas, [f"eta = {e:g}" for e in etas],
                               LEVEL, f"{LEVEL:.4g} = (2+2 b1)/(1-b1)")
        axes[i, 0].set_title(f"{net}, {pick[0][0].config['dataset']}, Adam b1 = 0.9", loc="left")
    style.legend(axes[0, 0], loc="lower left")
    style.save(fig, out, "deep_adam")

    medians = {k: v["late_median_eta_S_P"] for k, v in numbers.items()}
    rise = {k: f"{v['sharpness_first']:.3g} -> {v['sharpness_last']:.3g}" for k, v in numbers.items()
            if v["sharpness_first"] is not None and v["sharpness_last"] is not None}
    caption = (
        "Full-batch Adam (beta1 = 0.9, beta2 = 0.999, eps = 1e-8), MSE loss, at three step sizes. "
        "Left: train loss. Middle: eta * S_P, the preconditioned sharpness lambda_max(P^-1/2 H P^-1/2) "
        f"(P = diag(sqrt(v_hat) + eps) of the step just taken) times eta; dashed: the threshold {LEVEL:.4g}. "
        "Right: raw sharpness lambda_max(H). Late-time (last 40% of steps) median eta * S_P: "
        + "; ".join(f"{k}: {v}" for k, v in medians.items())
        + ". Raw sharpness, first measurement -> last: " + "; ".join(f"{k}: {v}" for k, v in rise.items())
        + ".")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
