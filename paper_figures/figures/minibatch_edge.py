"""Figure 9: minibatch Adam at the edge, over batch sizes, with SGD and SGD with momentum as controls.

Each run draws a fresh random minibatch of b examples every step (``deep.run`` with ``batch_size``; the full
batch is b = n) and records, every ``measure_every`` steps (:data:`deep.training.runlog.BATCH_COLUMNS`):

* ``eta_S_P``: eta times the sharpness of the *full-batch* loss in the optimizer's metric, S_P =
  lambda_max(P^-1/2 H P^-1/2) (eta * S for SGD, P = I), against the full-batch threshold 38 (Adam at
  beta1 = 0.9), 2 (SGD) or 2 (1 + beta) (heavy ball);
* ``eta_BS_P``: eta times the *batch* sharpness in that metric, E_B[g_B^T P^-1 H_B P^-1 g_B] /
  E_B[g_B^T P^-1 g_B] over random batches of size b, against 38 and 2;
* ``batch_update_ratio``: E_B[d^T H_B d] / E_B[d^T g_B] along the optimizer's own next step d, against 2.

The late level of each curve is its median over the last 40% of the run; the summary panel plots it against
b with its mean and 95% t interval over seeds.  Whether a curve has settled is measured, not assumed: the
drift of ``eta_S_P`` is the median of the last 20% of the rows over that of the 20% before, minus 1.

**The theory's curve.**  The mean-square boundary of Adam with P frozen on one direction whose per-example
curvatures are h_i (:mod:`aeos_theory.mean_square`): a batch of b has the relative curvature variance
nu(b) = c(b, n) var(h)/mean(h)^2, and at the boundary eta mu* = kappa*(nu) = 2 (1 + beta1)/((1 - beta1) +
(1 + beta1) nu) (the full-batch curvature, to compare with eta S_P) and eta BS* = kappa*(nu) (1 + 3 nu + gamma)/
(1 + nu) (the batch sharpness, gamma the batch curvature's skewness; :func:`aeos_theory.mean_square.
edge_batch_sharpness`).  The h_i are measured at the end of each full-batch Adam run along the top
eigenvector u of P^-1/2 H P^-1/2 (h_i = w^T H_i w, w = P^-1/2 u, :func:`deep.measure.per_example.
per_example_curvatures`, mean S_P), one curve per seed; the curve assumes that spread holds at every b.
At b = n both are 38; the curve is the theory's prediction for this network, not a fit.

Seeds: 3 per condition at quick (5 at full); the seed draws the initialisation and the minibatches.
Quick shrinks the digits MLP to 256 examples, width 100, 1200 steps measured every 200 (batch measurements
sample up to 64 batches a row), with Adam at b = 8, 16, 32, 64 and 256 (full) and the controls at b = 32:
too short for b = 8 to settle (its drift says so).  Full: 1000 examples, width 200, b = 8 .. 1000, 10^5
steps at b <= 16, 4 10^4 at b <= 64, 2 10^4 above; controls at b = 32 and the full batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aeos_base import files
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import training
from paper_figures.figures.common import by_condition, rounded, threshold_constant
from paper_figures.registry import Context
from sims.summary import late_median

ETA = 1e-3
BETA1 = 0.9
ADAM = threshold_constant("adam", beta1=BETA1)  # 38
#: The controls: SGD and SGD with heavy-ball momentum (the digits MLP's GD step of deep_gd_vs_adam).
CONTROLS: dict[str, tuple[str, dict[str, float]]] = {"SGD": ("gd", {"eta": 0.1}),
                                                     "SGD momentum": ("heavy_ball", {"eta": 0.1, "beta": 0.5})}
BETA = CONTROLS["SGD momentum"][1]["beta"]
#: Each recorded curve: the metrics column, its axis label.
CURVES: dict[str, str] = {"eta_S_P": r"full-batch $\eta\,S_P$", "eta_BS_P": r"batch $\eta\,BS_P$",
                          "batch_update_ratio": "update ratio"}
FRACTION = 0.4  # the late window: the last 40% of the steps
#: The summary panels' colour, marker and theory line style per curve (greys: the trajectories use the palette).
SUMMARY_STYLE: dict[str, tuple[str, str, str]] = {"eta_S_P": ("black", "o", "-."), "eta_BS_P": ("0.45", "s", ":"),
                                                  "batch_update_ratio": ("0.7", "^", "-")}
#: The y range of the log-scaled eta S_P and eta BS_P panels (the first rows of an Adam run lie far below).
CLIP = (0.3, 80.0)

TITLE = f"Minibatch Adam: full-batch eta * S_P, batch eta * BS_P and the update ratio against {ADAM:.4g} and 2"


def network(ctx: Context) -> dict[str, Any]:
    return {**training.DIGITS_MLP, "n": ctx.pick(128, 256, 1000), "width": ctx.pick(50, 100, 200)}


def adam_sizes(ctx: Context) -> list[int]:
    n = network(ctx)["n"]
    return ctx.pick([16, n], [8, 16, 32, 64, n], [8, 16, 32, 64, 256, n])


def _steps(ctx: Context, b: int) -> tuple[int, int]:
    """(steps, measure_every) of a run at batch size b."""
    if ctx.scale != "full":
        return ctx.pick((200, 50), (1200, 200), None)
    return (100_000, 2000) if b <= 16 else (40_000, 1000) if b <= 64 else (20_000, 500)


def plan(ctx: Context) -> list[Run]:
    base = network(ctx)
    n = base["n"]
    runs = []
    for b in adam_sizes(ctx):
        steps, every = _steps(ctx, b)
        fields = {} if b >= n else {"batch_size": b}
        fn = "edge_train" if b >= n else "train"
        runs += [_run(fn, f"MLP adam batch={b}", "adam", {"eta": ETA}, steps, every, base, seed, fields)
                 for seed in ctx.seeds()]
    for name, (optimizer, hyper) in CONTROLS.items():
        for b in ctx.pick([32], [32], [32, n]):
            steps, every = _steps(ctx, b)
            fields = {} if b >= n else {"batch_size": b}
            runs += [_run("train", f"MLP {name} batch={b}", optimizer, hyper, steps, every, base, seed, fields)
                     for seed in ctx.seeds()]
    return runs


def _run(fn: str, label: str, optimizer: str, hyper: dict, steps: int, every: int, base: dict, seed: int,
         fields: dict) -> Run:
    run = training.train_run(label, optimizer=optimizer, hyper=hyper, steps=steps, measure_every=every, base=base,
                             seed=seed, **fields)
    if fn == "train":
        return run
    return Run(f"paper_figures.figures.minibatch_edge:{fn}", run.config, label=run.label, cost=run.cost * 1.05)


def edge_train(run_dir: Path, **config: Any) -> dict:
    """:func:`training.train` of a full-batch Adam run, and at its last checkpoint the per-example curvatures
    h_i = w^T H_i w along w = P^-1/2 u, u the top unit eigenvector of P^-1/2 H P^-1/2 (``curvatures``; their
    mean is S_P, 1/eta units)."""
    from deep import TrainConfig
    from deep.curvature.preconditioners import preconditioner_diagonal
    from deep.measure.per_example import per_example_curvatures
    from deep.measure.sharpness import top_eigenpairs
    from deep.training.run_folder import RunFolder
    from deep.training.runlog import CHECKPOINT, load_checkpoint
    from deep.training.train import Trainer

    result = training.train(run_dir, **config)
    folder = Path(run_dir) / "train"
    trainer = Trainer(TrainConfig.from_dict(config), RunFolder(folder))
    trainer.restore(load_checkpoint(folder / CHECKPOINT))
    top = top_eigenpairs(trainer.model, trainer.loss_fn, trainer.chunks, trainer.optimizer, seed=config["seed"])
    u = top.eigenvectors[:, 0]
    w = u / preconditioner_diagonal(trainer.optimizer, trainer.model).to(u).sqrt()
    h = per_example_curvatures(trainer.model, trainer.loss_fn, trainer.chunks, w)
    return {**result, "curvatures": h.tolist()}


def theory_levels(curvatures: Sequence[float], b: int) -> dict[str, float]:
    """The one-direction mean-square edge of Adam at batch size b for per-example curvatures h_i (module
    docstring): eta mu* (``eta_S_P``) and eta BS* (``eta_BS_P``), dimensionless; nu and gamma of the batch."""
    from aeos_theory.mean_square import batch_noise, batch_noise3, edge_batch_sharpness, mean_square_constant

    h = np.asarray(curvatures, dtype=float)
    n, mu = h.size, float(h.mean())
    nu = batch_noise(b, n) * float(h.var()) / mu**2
    gamma = batch_noise3(b, n) * float(np.mean((h - mu) ** 3)) / mu**3
    return {"eta_S_P": mean_square_constant("adam", nu, beta1=BETA1),
            "eta_BS_P": edge_batch_sharpness("adam", nu, gamma, beta1=BETA1), "nu": nu, "gamma": gamma}


def _late(result: Mapping[str, Any], name: str, fraction: float = FRACTION) -> float | None:
    return late_median(training.series(result, "step"), training.series(result, name), fraction)


def drift(result: Mapping[str, Any], name: str = "eta_S_P") -> float | None:
    """median over the last 20% of the steps / median over the 20% before - 1 (None without rows in both)."""
    steps, values = training.series(result, "step"), training.series(result, name)
    last = late_median(steps, values, 0.2)
    window = (steps >= steps.max() * 0.6) & (steps < steps.max() * 0.8) & np.isfinite(values)
    if last is None or not window.any():
        return None
    return last / float(np.median(values[window])) - 1


def condition_numbers(seeds: Sequence[int], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Late medians of the three curves and the drift of eta_S_P over seeds, and every seed's status."""
    out: dict[str, Any] = {f"late_median_{name}": intervals.over_seeds([rounded(_late(r, name)) for r in results],
                                                                         seeds) for name in CURVES}
    out["drift_eta_S_P"] = intervals.over_seeds([rounded(drift(r)) for r in results], seeds)
    out["status"] = [r.get("status") for r in results]
    return out


def _key(run: Run) -> tuple[str, int]:
    return run.config["optimizer"], run.config.get("batch_size") or run.config["n"]


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    for res in results:
        if "eta_BS_P" not in res["metrics"]:
            raise ValueError("minibatch_edge needs the minibatch columns (eta_BS_P, batch_update_ratio) in every run")
    n = network(ctx)["n"]
    groups = by_condition(runs, results, _key)
    adam = {b: groups[("adam", b)] for b in adam_sizes(ctx)}
    controls = {(name, b): groups[(opt, b)] for name, (opt, _) in CONTROLS.items() for (o, b) in groups if o == opt}
    numbers: dict[str, Any] = {"adam": {f"batch={b}": condition_numbers(*adam[b]) for b in adam}}
    for (name, b), (seeds, found) in controls.items():
        numbers.setdefault(name, {})[f"batch={b}"] = condition_numbers(seeds, found)

    sizes = np.unique(np.round(np.geomspace(1, n, 40)).astype(int))
    curves = [[theory_levels(res["curvatures"], int(b)) for b in sizes] for res in adam[n][1]]
    theory = {"nu_at_b1": intervals.over_seeds([rounded(c[0]["nu"]) for c in curves], adam[n][0])}
    for b in adam:
        levels = [theory_levels(res["curvatures"], b) for res in adam[n][1]]
        theory[f"batch={b}"] = {name: intervals.over_seeds([rounded(v[name]) for v in levels], adam[n][0])
                                for name in ("eta_S_P", "eta_BS_P")}
    numbers["theory"] = theory

    rows = []
    for r, res in zip(runs, results):
        rows += training.rows_for_csv(r.label, res, optimizer=r.config["optimizer"], eta=r.config["hyper"]["eta"],
                                      batch_size=r.config.get("batch_size") or n, seed=r.config["seed"])
    data = [files.write_csv(report.data_dir(out) / "minibatch_edge.csv", rows)]
    theory_rows = [{"seed": s, "batch_size": int(b), **{k: rounded(v) for k, v in level.items()}}
                   for s, curve in zip(adam[n][0], curves) for b, level in zip(sizes, curve)]
    data.append(files.write_csv(report.data_dir(out) / "minibatch_edge_theory.csv", theory_rows))

    _draw(ctx, adam, controls, numbers, sizes, curves, out)
    return {"numbers": numbers, "caption": _caption(ctx, numbers, adam, controls),
            "data": [str(d.relative_to(out)) for d in data]}


def _draw(ctx: Context, adam: dict, controls: dict, numbers: dict, sizes: np.ndarray, curves: list, out: Path) -> None:
    n = network(ctx)["n"]
    fig, axes = style.figure(4, 2, width="page", height=4.6)
    colors = style.colors(len(adam) + len(controls))
    for color, (b, (_, found)) in zip(colors, adam.items()):
        for ax, name in zip(axes[0, :3], CURVES):
            training.plot_seeds(ax, found, name, color=color, marker="o",
                                label=f"Adam, batch {b}" + (" (full)" if b == n else ""))
    for color, ((name, b), (_, found)) in zip(colors[len(adam):], controls.items()):
        for ax, curve in zip(axes[1, :3], CURVES):
            training.plot_seeds(ax, found, curve, color=color, marker="o",
                                label=f"{name}, batch {b}" + (" (full)" if b == n else ""))
    for ax, name in zip(axes[0, :3], CURVES):
        ax.set_ylabel(f"Adam: {CURVES[name]}")
        style.threshold_line(ax, 2.0, "2")
        if name != "batch_update_ratio":
            style.threshold_line(ax, ADAM, f"{ADAM:.4g}")
            ax.set_ylim(*CLIP)
            style.logscale(ax, "y")
        else:
            ax.set_ylim(0, 3)
    controls_lines = {2.0: "2", 2 * (1 + BETA): f"2(1+β)\n{2 * (1 + BETA):g}",
                      2 * (1 - BETA): f"2(1−β)\n{2 * (1 - BETA):g}"}
    for ax, name in zip(axes[1, :3], CURVES):
        ax.set_ylabel(f"SGD: {CURVES[name]}".replace("S_P", "S").replace("BS_P", "BS"))
        for value, label in (controls_lines.items() if name != "batch_update_ratio" else [(2.0, "2")]):
            style.threshold_line(ax, value, label)
    for ax in axes[:, :3].flat:
        ax.set_xlabel("step")

    ax = axes[0, 3]
    for name in CURVES:
        level = [numbers["adam"][f"batch={b}"][f"late_median_{name}"] for b in adam]
        _level_points(ax, list(adam), level, name, f"late median: {CURVES[name]}")
    for name in ("eta_S_P", "eta_BS_P"):
        for curve in curves:
            ax.plot(sizes, [c[name] for c in curve], SUMMARY_STYLE[name][2], color=SUMMARY_STYLE[name][0], lw=0.8,
                    label=f"theory: {CURVES[name]}" if curve is curves[0] else None)
    style.threshold_line(ax, ADAM, f"{ADAM:.4g}")
    style.threshold_line(ax, 2.0, "2")
    style.logscale(ax, "x", decades_only=True)
    style.logscale(ax, "y")
    ax.set_xlabel("batch size")
    ax.set_ylabel("Adam: late median")

    ax = axes[1, 3]
    for name in CURVES:
        level = [numbers[c][f"batch={b}"][f"late_median_{name}"] for c, b in controls]
        _level_points(ax, list(range(len(controls))), level, name, None)
    ax.set_xticks(range(len(controls)), [f"{c.replace('SGD momentum', 'mom.')}\n{b}" for c, b in controls])
    ax.set_xlim(-0.5, len(controls) - 0.5)
    for value, label in controls_lines.items():
        style.threshold_line(ax, value, label)
    ax.set_xlabel("control, batch size")
    ax.set_ylabel("SGD: late median")
    style.legend(fig, list(axes[0, :]) + list(axes[1, :3]), ncols=4)
    style.save(fig, out, "minibatch_edge")


def _level_points(ax, xs: list, level: list[dict], curve: str, label: str | None) -> None:
    """Every seed's late median (dots) and the mean over seeds with its 95% interval (error bar), in the
    colour and marker of ``curve`` (:data:`SUMMARY_STYLE`)."""
    color, marker, _ = SUMMARY_STYLE[curve]
    for x, h in zip(xs, level):
        values = [v for v in h["values"] if v is not None]
        ax.plot([x] * len(values), values, ".", color=color, ms=3, alpha=0.5)
    ok = [i for i, h in enumerate(level) if h["interval"] is not None]
    ax.errorbar([xs[i] for i in ok], [level[i]["mean"] for i in ok],
                yerr=[[max(level[i]["mean"] - level[i]["interval"][0], 0) for i in ok],
                      [max(level[i]["interval"][1] - level[i]["mean"], 0) for i in ok]],
                fmt=f"{marker}-", color=color, capsize=2, ms=3, label=label)


def _settled(h: Mapping[str, Any]) -> str:
    if h["mean"] is None:
        return "no value"
    return "settled" if abs(h["mean"]) < 0.1 else f"still drifting ({h['mean']:+.0%} over the last fifth)"


def _caption(ctx: Context, numbers: dict, adam: dict, controls: dict) -> str:
    n = network(ctx)["n"]
    parts = []
    for b in adam:
        h = numbers["adam"][f"batch={b}"]
        t = numbers["theory"][f"batch={b}"]
        parts.append(f"b = {b}: eta S_P {intervals.text(h['late_median_eta_S_P'])} (theory "
                     f"{intervals.text(t['eta_S_P'])}), eta BS_P {intervals.text(h['late_median_eta_BS_P'])} "
                     f"(theory {intervals.text(t['eta_BS_P'])}), update ratio "
                     f"{intervals.text(h['late_median_batch_update_ratio'])}; eta S_P {_settled(h['drift_eta_S_P'])}")
    control_parts = []
    for name, b in controls:
        h = numbers[name][f"batch={b}"]
        control_parts.append(f"{name} b = {b}: eta S {intervals.text(h['late_median_eta_S_P'])}, eta BS "
                             f"{intervals.text(h['late_median_eta_BS_P'])}, update ratio "
                             f"{intervals.text(h['late_median_batch_update_ratio'])}; eta S {_settled(h['drift_eta_S_P'])}")
    return (f"Adam (eta = {ETA:g}, beta1 = {BETA1}) on {n} digits (MLP, width {network(ctx)['width']}, square loss) "
            "with a fresh random minibatch of b examples every step; top row: full-batch eta S_P, batch eta BS_P and "
            "the update ratio along the optimizer's own step, every seed thin, their mean bold; bottom row: SGD "
            f"(eta = {CONTROLS['SGD'][1]['eta']:g}) and SGD with momentum (beta = {BETA:g}), with 2, 2(1+beta) and "
            "2(1-beta); the log axes show 0.3 to 80 (the first rows of a run lie below). Right: late medians (last "
            "40% of the steps; circles eta S_P, squares eta BS_P, triangles the update ratio), mean [95% interval] "
            "over seeds (dots: seeds); dashed (eta S_P) and dotted (eta BS_P): the one-direction mean-square theory with P frozen, fed the per-example curvatures measured "
            "along the top eigenvector of P^-1/2 H P^-1/2 at the end of each full-batch run (nu at b = 1: "
            f"{intervals.text(numbers['theory']['nu_at_b1'])}). " + "; ".join(parts) + ". Controls: "
            + "; ".join(control_parts) + ".")
