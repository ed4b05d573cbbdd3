"""Figure 11: the spectra of H and of P^-1/2 H P^-1/2 for full-batch Adam at the Adaptive Edge of Stability.

The digits MLP is trained with Adam (``deep.run``, the package's trainer) until eta * S_P has reached
the threshold (2 + 2 beta1)/(1 - beta1) = 38; then the spectral densities of the raw Hessian H and
of the preconditioned Hessian P^-1/2 H P^-1/2 (P = diag(sqrt(v_hat) + eps) of the last step) are
estimated by stochastic Lanczos quadrature (``deep.spectral_density``).  The preconditioned spectrum's
top edge sits at the threshold (eta * lambda_max = 38), with a few outliers separated from a bulk near
zero; the raw spectrum has no such edge.

Seeds: 3 at quick (5 at full); the seed draws the network's initialisation and the SLQ probes.  Quick
trains 500 images for 400 steps and runs 2 probes of 60 Lanczos steps (full: 1000 images, 3000 steps,
10 probes of 100).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aeos_base import files
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import training
from paper_figures.figures.common import rounded, seed_of, threshold_constant
from paper_figures.registry import Context

LEVEL = threshold_constant("adam", beta1=0.9)  # (2 + 2 beta1) / (1 - beta1) = 38
ETA = 1e-3
OPERATORS = {"H": "raw Hessian H", "P": "preconditioned P^-1/2 H P^-1/2"}

TITLE = f"Spectra of H and of P^-1/2 H P^-1/2 under Adam: the preconditioned edge at eta * lambda = {LEVEL:.4g}"


def plan(ctx: Context) -> list[Run]:
    n_steps, every = ctx.pick((150, 50), (400, 200), (3000, 250))  # eta * S_P reaches 38 by step ~250
    runs = []
    for seed in ctx.seeds():
        train = {**training.DIGITS_MLP, "n": ctx.pick(300, 500, 1000), "optimizer": "adam", "hyper": {"eta": ETA},
                 "steps": n_steps, "measure_every": every, "seed": seed, "threads": 1}
        config = {"train": train, "lanczos_steps": ctx.pick(30, 60, 100), "probes": ctx.pick(2, 2, 10)}
        slq = 2 * config["probes"] * config["lanczos_steps"] * train["n"]  # gradient-equivalents of the two SLQs
        runs.append(Run("paper_figures.figures.spectral_density:density_run", config, label=f"adam spectra seed {seed}",
                        cost=training.cost_of(train) * (1 + slq / (3 * n_steps * train["n"]))))
    return runs


def density_run(run_dir: Path, *, train: dict[str, Any], lanczos_steps: int, probes: int) -> dict:
    """Train (or resume) ``deep.run`` into ``run_dir/train``, restore its last checkpoint, and return the
    SLQ densities of H and of P^-1/2 H P^-1/2 there (grid, density, nodes, weights for each), the probes
    drawn from the training run's seed."""
    from deep import TrainConfig, run, spectral_density
    from deep.training.run_folder import RunFolder
    from deep.training.runlog import CHECKPOINT, load_checkpoint, read_metrics
    from deep.training.train import Trainer

    config = TrainConfig.from_dict(train)
    folder = Path(run_dir) / "train"
    metrics = read_metrics(run(config, folder, progress=False))  # proves the folder, then the last checkpoint
    trainer = Trainer(config, RunFolder(folder))
    step = trainer.restore(load_checkpoint(folder / CHECKPOINT))
    out: dict[str, Any] = {"step": step, "eta": config.resolved_hyper()["eta"],
                           "trainer_eta_S_P": metrics[-1].get("eta_S_P")}
    for key, optimizer in (("H", None), ("P", trainer.optimizer)):
        d = spectral_density(trainer.model, trainer.loss_fn, trainer.chunks, optimizer, steps=lanczos_steps,
                             probes=probes, grid_points=400, seed=config.seed)
        out[key] = {"grid": d.grid, "density": d.density, "nodes": d.nodes, "weights": d.weights, "sigma": d.sigma}
    return out


def spectrum_numbers(result: dict) -> dict[str, Any]:
    """S, eta * S_P (the top Ritz values), and each spectrum's share of mass above half its top."""
    eta = result["eta"]
    out: dict[str, Any] = {"step": result["step"]}
    for key in OPERATORS:
        nodes, weights = np.asarray(result[key]["nodes"]), np.asarray(result[key]["weights"])
        top = float(nodes.max())
        out[f"mass_above_half_top_{key}"] = rounded(float(np.mean(np.sum(weights * (nodes > top / 2), axis=1))))
        out["S" if key == "H" else "eta_S_P"] = rounded(top if key == "H" else eta * top)
    out["eta_S"] = rounded(eta * float(np.max(result["H"]["nodes"])))
    out["threshold"] = rounded(LEVEL)
    return out


#: The numbers of :func:`spectrum_numbers` reported over seeds.
HEADLINE = ("S", "eta_S_P", "mass_above_half_top_H", "mass_above_half_top_P")


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    seeds = [seed_of(r.config) for r in runs]
    eta = results[0]["eta"]
    per_seed = [spectrum_numbers(res) for res in results]
    numbers: dict[str, Any] = {key: intervals.over_seeds([p[key] for p in per_seed], seeds) for key in HEADLINE}
    numbers.update(step=per_seed[0]["step"], eta_S=intervals.over_seeds([p["eta_S"] for p in per_seed], seeds),
                   threshold=rounded(LEVEL))
    rows = [{"seed": seed, "operator": key, "lambda": g, "density": d} for seed, result in zip(seeds, results)
            for key in OPERATORS for g, d in zip(result[key]["grid"], result[key]["density"])]
    nodes = [{"seed": seed, "operator": key, "probe": i, "lambda": x, "weight": w}
             for seed, result in zip(seeds, results) for key in OPERATORS
             for i, (xs, ws) in enumerate(zip(result[key]["nodes"], result[key]["weights"])) for x, w in zip(xs, ws)]
    data = [files.write_csv(report.data_dir(out) / "spectral_density.csv", rows),
            files.write_csv(report.data_dir(out) / "spectral_density_nodes.csv", nodes)]

    fig, axes = style.figure(2, 1, width="page", height=2.8)
    scales = {"H": 1.0, "P": eta}  # H in its own units; P^-1/2 H P^-1/2 on the eta-normalised axis
    labels = {"H": r"eigenvalue $\lambda$ of $H$ (loss / param$^2$)",
              "P": r"$\eta\,\lambda$ of $P^{-1/2} H P^{-1/2}$ (dimensionless)"}
    for ax, key, color in zip(axes[0], OPERATORS, style.colors(2)):
        scale = scales[key]
        low = min(scale * float(np.min(res[key]["grid"])) for res in results)
        high = max(scale * float(np.max(res[key]["grid"])) for res in results)
        grid = np.linspace(low, high, 400)  # every seed's density on one grid (zero outside its own)
        densities = [np.interp(grid, scale * np.asarray(res[key]["grid"]), np.asarray(res[key]["density"]) / scale,
                               left=0.0, right=0.0) for res in results]
        mean = style.seeds_and_mean(ax, [grid] * len(results), [np.maximum(d, 1e-12) for d in densities],
                                    color=color, label="SLQ density: seeds (thin), mean (bold)")
        tops = [scale * float(np.max(res[key]["nodes"])) for res in results]
        ax.plot(tops, np.interp(tops, grid, mean), "v", color=color, ms=4, label="top Ritz value of each seed")
        ax.set_yscale("log")
        ax.set_ylim(max(1e-8, float(np.max(mean)) * 1e-9), float(np.max(mean)) * 3)
        ax.set_xlabel(labels[key])
        ax.set_ylabel("density (per unit of the x axis)")
        ax.set_title(f"{OPERATORS[key]}", loc="left")
    style.threshold_line(axes[0, 1], LEVEL, f"threshold {LEVEL:.4g}", vertical=True)
    style.legend(fig, [axes[0, 0]])
    style.save(fig, out, "spectral_density")

    caption = (
        f"Digits MLP 64-200-200-10 tanh ({runs[0].config['train']['n']} images) after {numbers['step']} steps of "
        f"full-batch Adam (eta = {eta:g}, beta1 = 0.9), {len(seeds)} seeds (each draws the initialisation and the "
        "probes): spectral densities by stochastic Lanczos quadrature (log scale; thin: every seed, bold: their "
        "mean), numbers are means [95% intervals] over seeds. "
        f"Left: the raw Hessian H, S = {intervals.text(numbers['S'])}. Right, on the eta-normalised axis: "
        "P^-1/2 H P^-1/2 with P = diag(sqrt(v_hat) + eps); its top edge eta * S_P = "
        f"{intervals.text(numbers['eta_S_P'])} sits at the threshold {LEVEL:.4g} (dashed). Share of spectral mass "
        f"above half the top eigenvalue: {intervals.text(numbers['mass_above_half_top_H'], 2)} (H), "
        f"{intervals.text(numbers['mass_above_half_top_P'], 2)} (P).")
    return {"numbers": numbers, "caption": caption, "data": [str(p.relative_to(out)) for p in data]}
