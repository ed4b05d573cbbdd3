"""Figure 14: central flows predict full-batch GD, RMSProp, Adam and AdamW at the edge of stability.

One row per panel of :data:`PANELS`: GD, RMSProp and Adam on the digits MLP at a constant step size, AdamW
(weight decay 0.1, a linear warmup over the first tenth of the steps, then a cosine decay to a tenth of the
peak lr) on the same MLP, and AdamW with the same schedule on the gallery's character-level Transformer.
For each, three trajectories from the same start (:mod:`deep.flows.experiments`): the discrete run, stepped
as the trainer steps it (the same data, model, optimizer, scheduler and gradient pass) with its loss and the
length of its period-2 oscillation |w_t - 2 w_(t-1) + w_(t-2)| / 4 measured at every step t; its stable flow
(the optimizer's ODE without oscillation); and its central flow (the ODE of the time-averaged trajectory,
with the oscillation's covariance Sigma solved so that eta S_P stays at the threshold;
:mod:`aeos_theory.central_flow`, on the network through :func:`deep.flows.flow_of_run`).
Left: the train loss (the run's time average, the mean of its per-step loss over the window of one record
spacing centred on each record, and each flow's prediction of it).  Middle: eta * S_P (eta * S for GD)
against the threshold (for AdamW the threshold of the peak lr: c_t rises by less than 0.05% as the lr
decays).  Right: the oscillation's length measured at every step against the central flow's
sqrt(tr Sigma).  Adam's flow carries its first moment but not the period-2 oscillation's own passage
through it (an approximation, documented in :mod:`aeos_theory.central_flow`): the numbers say how far it
is from the run.

Seeds: 3 per panel at quick (5 at full, 2 at tiny); each seed draws the network's start, shared by the run and
its two flows.  Quick runs GD and RMSProp 300 steps, Adam and AdamW 600 (full: 3000 each) on 300 images at
width 32, recording every 20 (GD, RMSProp) or 25 steps.  The Transformer (2 blocks, windows of 16 characters)
is shrunk to 32 windows at width 16 and 120 steps at quick (tiny: 16 windows, 60 steps; full: 128 windows at
width 32, the transformer figure's quick size, 1000 steps), recording every 20, its flows in float32; its
peak lr is 1e-2, not the transformer figure's 1e-3, because at 1e-3 (and 3e-3) the quick run stays below 6%
of its threshold for all its 120 steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from aeos_base import files
from aeos_theory import get_optimizer
from aeos_theory.flow_rules import edge_onset
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import training
from paper_figures.figures.common import fmt, threshold_constant
from paper_figures.registry import Context


class Panel(NamedTuple):
    """One row of the figure: its name in the numbers and the CSV, the network, the optimizer and its
    hyperparameters, the lr schedule, and the float type of its flows."""

    key: str
    model: str
    optimizer: str
    hyper: Mapping[str, float]
    schedule: str = "constant"
    dtype: str = "float64"


#: GD reaches 2/eta by progressive sharpening, RMSProp and Adam by the decay of nu (Adam's beta2 = 0.999 and
#: RMSProp's 0.99, torch's defaults); AdamW under a warmup and a cosine, on the MLP and on the Transformer.
PANELS: tuple[Panel, ...] = (
    Panel("gd", "mlp", "gd", {"eta": 0.2}),
    Panel("rmsprop", "mlp", "rmsprop", {"eta": 1e-3, "beta2": 0.99}),
    Panel("adam", "mlp", "adam", {"eta": 3e-3}),
    Panel("adamw", "mlp", "adamw", {"eta": 1e-2, "weight_decay": 0.1}, "warmup_cosine"),
    Panel("adamw_transformer", "transformer", "adamw", {"eta": 1e-2, "weight_decay": 0.1}, "warmup_cosine",
          "float32"),
)
WARMUP = 0.1  # the warmup's share of the steps under a warmup_cosine schedule
EDGE_FN = "deep.flows.experiments:discrete_every_step"
FLOW_FN = "deep.flows:flow_experiment"

TITLE = ("Central flows of GD, RMSProp, Adam and AdamW (MLP and Transformer): the time-averaged trajectory at "
         "the edge")


def network(ctx: Context, model: str) -> dict[str, Any]:
    """The digits MLP (64-32-32-10 tanh, square loss: a flow costs a few dozen products per step) or the
    character-level Transformer of the transformer figure, shrunk at quick."""
    if model == "transformer":
        return {"dataset": "text", "model": "transformer", "loss": "ce", "activation": "gelu",
                "n": ctx.pick(16, 32, 128), "context": 16, "width": ctx.pick(16, 16, 32), "depth": 2,
                "chunk_size": ctx.pick(16, 32, 128)}
    return {"dataset": "digits", "n": ctx.pick(100, 300, 1000), "model": "mlp", "width": ctx.pick(16, 32, 200),
            "depth": 2, "activation": "tanh", "loss": "mse"}


def steps(ctx: Context, panel: Panel) -> tuple[int, int]:
    """(steps, record every) of ``panel`` at this scale."""
    if panel.model == "transformer":
        return ctx.pick((60, 20), (120, 20), (1000, 50))
    if panel.optimizer in ("adam", "adamw"):
        return ctx.pick((200, 20), (600, 25), (3000, 50))
    return ctx.pick((160, 20), (300, 20), (3000, 50))


def run_config(ctx: Context, panel: Panel, seed: int) -> dict[str, Any]:
    """The :class:`deep.TrainConfig` fields of ``panel``'s discrete run at ``seed`` (full batch, one thread)."""
    n_steps, every = steps(ctx, panel)
    schedule = ({"schedule": panel.schedule, "warmup_steps": max(1, round(WARMUP * n_steps))}
                if panel.schedule != "constant" else {})
    return {"threads": 1, **network(ctx, panel.model), "optimizer": panel.optimizer,
            "hyper": {k: float(v) for k, v in panel.hyper.items()}, "steps": n_steps, "measure_every": every,
            "seed": seed, **schedule}


def plan(ctx: Context) -> list[Run]:
    """Per panel and seed: the discrete run, its stable flow and its central flow (in that order)."""
    runs = []
    for panel in PANELS:
        for seed in ctx.seeds():
            config = run_config(ctx, panel, seed)
            cost = training.cost_of(config)
            runs.append(Run(EDGE_FN, {"config": config}, label=f"{panel.key} discrete seed {seed}", cost=cost))
            dtype = {} if panel.dtype == "float64" else {"dtype": panel.dtype}
            for central in (False, True):
                runs.append(Run(FLOW_FN, {"run": config, "central": central, **dtype},
                                label=f"{panel.key} {'central' if central else 'stable'} flow seed {seed}",
                                cost=cost * (20 if central else 5)))
    return runs


def panel_of(run: Run) -> str:
    """The :data:`PANELS` key of a planned run (its discrete run's optimizer and model)."""
    config = run.config.get("run") or run.config["config"]
    return next(p.key for p in PANELS if p.optimizer == config["optimizer"] and p.model == config["model"])


#: The numbers of :func:`deep.flows.experiments.comparison_numbers` reported over seeds (the others are listed
#: per seed).
HEADLINE = ("central_median_relative_error", "stable_median_relative_error", "stable_over_central_error",
            "central_median_edge_deviation", "central_max_edge_deviation", "discrete_median_edge_ratio",
            "discrete_share_at_edge", "oscillation_predicted_over_measured")


def over_seeds(seeds: Sequence[int], per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The numbers of one panel over seeds: each :data:`HEADLINE` key as
    :func:`paper_figures.intervals.over_seeds` (a non-finite value, such as the error of a stable flow that
    stopped before the edge, counts as no value), every other key as its list of per-seed values, and how
    many seeds' stable flows stopped (``stable_flow_stopped``)."""
    out: dict[str, Any] = {}
    for key in per_seed[0]:
        values = [p[key] for p in per_seed]
        out[key] = (intervals.over_seeds([_finite(v) for v in values], seeds) if key in HEADLINE
                    else [_finite(v) if isinstance(v, float) else v for v in values])
    out["stable_flow_stopped"] = sum(p["stable_flow_status"] != "completed" for p in per_seed)
    return out


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def share_at_edge(result: Mapping[str, Any]) -> float | None:
    """The share of the run's records from its edge onset on at which it is still at the edge (eta S_P >=
    0.95 c_t); None when it never gets there.  Under a decaying lr the run can leave the edge, and from
    there both flows follow it without an oscillation to average."""
    from deep.flows.experiments import EDGE

    grid, ratio = _column(result["edge"]["step"]), _column(result["edge"]["edge_ratio"])
    onset = edge_onset(grid, ratio, EDGE)
    if onset is None:
        return None
    after = ratio[grid >= onset]
    return float(np.mean(np.nan_to_num(after) >= EDGE))


def comparison(discrete: Mapping[str, Any], stable: dict, central: dict, config: dict) -> dict[str, Any]:
    """The result of :func:`deep.flows.experiments.flow_comparison` assembled from its three cached parts."""
    return {**discrete, "stable": stable, "central": central, "config": config}


def _column(values: Sequence) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _draw(axes, panel: Panel, results: Sequence[Mapping[str, Any]], numbers: dict) -> None:
    """One row of panels: every seed thin, the mean over seeds bold; ``results`` holds each seed's
    :func:`comparison`."""
    from deep.flows.experiments import window_mean

    ax_loss, ax_edge, ax_osc = axes
    c_run, c_stable, c_central = style.PALETTE[7], style.PALETTE[1], style.PALETTE[0]
    grids = [_column(r["edge"]["step"]) for r in results]
    every = int(results[0]["config"]["measure_every"])
    averaged = [window_mean(_column(r["discrete"]["train_loss"]), g, every) for r, g in zip(results, grids)]
    flows = {kind: [r[kind]["records"] for r in results] for kind in ("stable", "central")}
    steps_of = {kind: [_column(f["step"]) for f in flows[kind]] for kind in flows}
    style.seeds_and_mean(ax_loss, grids, averaged, color=c_run, label="run, time-averaged")
    style.seeds_and_mean(ax_loss, steps_of["stable"], [_column(f["train_loss"]) for f in flows["stable"]],
                         color=c_stable, ls="--", label="stable flow")
    style.seeds_and_mean(ax_loss, steps_of["central"], [_column(f["train_loss"]) for f in flows["central"]],
                         color=c_central, label="central flow")
    style.logscale(ax_loss)
    loss = "cross-entropy" if results[0]["config"]["loss"] == "ce" else "MSE"
    ax_loss.set_ylabel(f"{_label(panel)}\ntrain loss ({loss})")
    level = threshold_constant(panel.optimizer, **panel.hyper)
    style.seeds_and_mean(ax_edge, grids, [_column(r["edge"]["eta_S_P"]) for r in results], color=c_run,
                         marker="o", ms=2)
    style.seeds_and_mean(ax_edge, steps_of["stable"], [_column(f["eta_S_P"]) for f in flows["stable"]],
                         color=c_stable, ls="--")
    style.seeds_and_mean(ax_edge, steps_of["central"], [_column(f["eta_S_P"]) for f in flows["central"]],
                         color=c_central)
    style.threshold_line(ax_edge, level, f"threshold\n{level:.4g}")
    ax_edge.set_ylim(0, 1.6 * level)
    ax_edge.set_ylabel(r"$\eta\,S_P$" + (r" ($=\eta S$)" if panel.optimizer == "gd" else ""))
    for onset in numbers["edge_step"]:
        if onset is not None:
            for ax in axes:
                ax.axvline(onset, color="0.6", lw=0.6, ls=":")
    per_step = [_column(r["discrete"]["oscillation_total"]) for r in results]
    predicted = [_column(f["oscillation_total"]) for f in flows["central"]]
    style.seeds_and_mean(ax_osc, [_column(r["discrete"]["step"]) for r in results], per_step, color=c_run,
                         label="oscillation measured at every step (iterates)")
    style.seeds_and_mean(ax_osc, steps_of["central"], predicted, color=c_central,
                         label="oscillation predicted (central flow)")
    values = np.concatenate([*per_step, *predicted])
    top = float(np.nanpercentile(values, 99.5)) if np.isfinite(values).any() else 0.0
    ax_osc.set_ylim(0, 1.3 * top if top > 0 else 1.0)
    ax_osc.set_ylabel("oscillation length (param.)")
    for ax in axes:
        ax.set_xlabel("step")


def _label(panel: Panel) -> str:
    name = get_optimizer(panel.optimizer).label
    return f"{name}, Transformer" if panel.model == "transformer" else name


def _percent(headline: dict) -> str:
    return intervals.text(headline, 3, scale=100, unit="%")


def _caption_part(panel: Panel, n: dict, config: Mapping[str, Any]) -> str:
    label = _label(panel) + (f" (warmup {config['warmup_steps']} steps, cosine to {config.get('final_lr_ratio', 0.1):g}"
                             " x the peak lr)" if panel.schedule != "constant" else "")
    seeds = len(n["edge_step"])
    if not any(s is not None for s in n["edge_step"]):
        return f"{label}: no seed's run reached 95% of its threshold in these steps (no comparison at the edge)."
    stopped = n["stable_flow_stopped"]
    stable = f"the stable flow's {_percent(n['stable_median_relative_error'])}"
    if stopped:
        ends = [fmt(e) for e, st in zip(n["stable_flow_end"], n["stable_flow_status"]) if st != "completed"]
        stable += (f" (it ran off the edge in {stopped} of {seeds} seeds, eta * S_P rose past 10 times the threshold at "
                   f"step {', '.join(ends)}; from there it counts as infinitely far)")
    onsets = ", ".join(fmt(s) if s is not None else "never" for s in n["edge_step"])
    held = (f"its eta * S_P within {_percent(n['central_median_edge_deviation'])} of the threshold (median; largest "
            f"{_percent(n['central_max_edge_deviation'])}) while it oscillates"
            if any(n["central_oscillating_records"]) else
            "no direction oscillates at any of its records (it may touch the threshold between them; no oscillation "
            "predicted, no distance from the threshold to report)")
    return (f"{label}: at the edge from step {onsets} (per seed); from there the "
            f"central flow's loss is {_percent(n['central_median_relative_error'])} from the run's time average "
            f"(median), {stable}, a ratio of {intervals.text(n['stable_over_central_error'], 3)}; {held}; the run's median edge ratio "
            f"{intervals.text(n['discrete_median_edge_ratio'], 3)}, at the edge in "
            f"{_percent(n['discrete_share_at_edge'])} of those records; predicted over measured rms length of the "
            f"oscillation (measured at every step) {intervals.text(n['oscillation_predicted_over_measured'], 3)}.")


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    from deep.flows.experiments import comparison_numbers, comparison_rows

    compared: dict[str, list[tuple[int, dict]]] = {p.key: [] for p in PANELS}
    for i in range(0, len(runs), 3):  # the plan's order: discrete run, stable flow, central flow
        config = runs[i].config["config"]
        compared[panel_of(runs[i])].append((config["seed"], comparison(*results[i:i + 3], config)))
    numbers: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    fig, axes = style.figure(3, len(PANELS), width="page", height=2.0 * len(PANELS) + 0.3)
    for row, panel in enumerate(PANELS):
        seeds = [seed for seed, _ in compared[panel.key]]
        per_seed = []
        for seed, result in compared[panel.key]:
            every = int(result["config"]["measure_every"])
            per_seed.append({**comparison_numbers(result, every), "discrete_share_at_edge": share_at_edge(result),
                             "stable_flow_end": result["stable"]["step"]})
            rows += [{"panel": panel.key, "model": panel.model, "seed": seed, **r}
                     for r in comparison_rows(result, panel.optimizer)]
        numbers[panel.key] = over_seeds(seeds, per_seed)
        _draw(axes[row], panel, [result for _, result in compared[panel.key]], numbers[panel.key])
    style.legend(fig, [axes[0][0], axes[0][2]], ncols=3)
    data = files.write_csv(report.data_dir(out) / "central_flows.csv", rows)
    style.save(fig, out, "central_flows")
    configs = {key: found[0][1]["config"] for key, found in compared.items()}
    transformer = configs["adamw_transformer"]
    caption = (f"Rows 1-4: digits MLP, full batch; row 5: character-level Transformer ({transformer['n']} windows "
               f"of {transformer['context']} characters, width {transformer['width']}), full batch. "
               f"{len(compared[PANELS[0].key])} seeds per row, each the start of a discrete run (grey: its loss "
               "averaged over the window of one record spacing), its stable flow (dashed) and its central flow "
               "(blue); thin: every seed, bold: their mean; the dotted lines mark each run's first record at 95% "
               "of its threshold. Numbers are means [95% intervals] over seeds. "
               + " ".join(_caption_part(p, numbers[p.key], configs[p.key]) for p in PANELS))
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
