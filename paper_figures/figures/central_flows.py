"""Figure 14: central flows predict full-batch GD, RMSProp and Adam at the edge of stability.

For each optimizer on the same digits MLP, three trajectories from the same start: the discrete run
(``deep.run``), its stable flow (the optimizer's ODE without oscillation) and its central flow (the
ODE of the time-averaged trajectory, with the oscillation's covariance solved so that eta S_P stays at
the threshold; :mod:`aeos_theory.central_flow`, on the network through :func:`deep.flows.flow_of_run`).
Left: the train loss (the discrete run's, its 3-record moving average, and each flow's prediction of
the time-averaged loss).  Middle: eta * S_P (eta * S for GD) against the threshold.  Right: the
length of the period-2 oscillation, |w_t - 2 w_(t-1) + w_(t-2)| / 4 measured from the discrete iterates
(:mod:`deep.measure.oscillation`) against the central flow's sqrt(tr Sigma).  Adam's flow carries its first
moment but not the period-2 oscillation's own passage through it (an approximation, documented in
:mod:`aeos_theory.central_flow`): the numbers say how far it is from the run.

Seeds: 3 per optimizer at quick (5 at full); each seed draws the network's start, shared by the run and its
two flows.  Quick runs GD and RMSProp 300 steps and Adam 600 (full: 3000 each) on 300 images at width 32;
the runs reach their edge by step ~120 (GD), ~20 (RMSProp) and 125-375 (Adam).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aeos_base import files
from aeos_theory import get_optimizer
from aeos_theory.flow_rules import edge_onset, moving_average, rms, tracking_error
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import training
from paper_figures.figures.common import by_condition, column, fmt, rounded, threshold_constant
from paper_figures.registry import Context

#: (optimizer, hyperparameters): GD reaches 2/eta by progressive sharpening, RMSProp and Adam by the
#: decay of nu (Adam's beta2 = 0.999 and RMSProp's 0.99, torch's defaults).
OPTIMIZERS: tuple[tuple[str, dict[str, float]], ...] = (
    ("gd", {"eta": 0.2}), ("rmsprop", {"eta": 1e-3, "beta2": 0.99}), ("adam", {"eta": 3e-3}))
EDGE = 0.95  # the discrete run is at the edge from its first record with eta S_P >= 0.95 c_t

TITLE = "Central flows of GD, RMSProp and Adam on the digits MLP: the time-averaged trajectory at the edge"


def network(ctx: Context) -> dict[str, Any]:
    """A small digits MLP (64-32-32-10 tanh, square loss): a flow costs a few dozen products per step."""
    return {"dataset": "digits", "n": ctx.pick(100, 300, 1000), "model": "mlp", "width": ctx.pick(16, 32, 200),
            "depth": 2, "activation": "tanh", "loss": "mse"}


def steps(ctx: Context, optimizer: str) -> tuple[int, int]:
    """(steps, record every) per optimizer at this scale."""
    if optimizer == "adam":
        return ctx.pick((200, 20), (600, 25), (3000, 50))
    return ctx.pick((160, 20), (300, 20), (3000, 50))


def plan(ctx: Context) -> list[Run]:
    """Per optimizer and seed: the discrete run, its stable flow and its central flow (in that order)."""
    runs = []
    for name, hyper in OPTIMIZERS:
        n_steps, every = steps(ctx, name)
        for seed in ctx.seeds():
            discrete = training.train_run(f"{name} discrete", optimizer=name, hyper=hyper, steps=n_steps,
                                          measure_every=every, base=network(ctx), seed=seed)
            runs.append(discrete)
            for central in (False, True):
                runs.append(Run("deep.flows:flow_experiment", {"run": dict(discrete.config), "central": central},
                                label=f"{name} {'central' if central else 'stable'} flow seed {seed}",
                                cost=discrete.cost * (20 if central else 5)))
    return runs


def flow_series(flow: dict, name: str) -> np.ndarray:
    """A flow's record column as floats (NaN where the cache holds null)."""
    return column(flow["records"], name)


def compare(result: dict, stable: dict, central: dict, optimizer: str) -> dict[str, Any]:
    """The numbers of one optimizer: where the run reaches the edge, each flow's median relative error
    against the run's 3-record moving average from there on, the central flow's largest distance of
    eta S_P from c_t there, and the rms oscillation measured and predicted."""
    step = training.series(result, "step")
    loss = training.series(result, "train_loss")
    onset = edge_onset(step, training.series(result, "edge_ratio"), EDGE)
    errors = {kind: tracking_error(step, loss, flow_series(flow, "step"), flow_series(flow, "train_loss"), onset)
              for kind, flow in (("central", central), ("stable", stable))}
    after = lambda steps: np.asarray(steps, dtype=float) >= (onset if onset is not None else np.inf)  # noqa: E731
    cf_step = flow_series(central, "step")
    cf_ratio = flow_series(central, "edge_ratio")[after(cf_step)]
    measured = {kind: training.series(result, kind)[after(step)] for kind in ("oscillation", "oscillation_total")}
    predicted = {kind: flow_series(central, kind)[after(cf_step)] for kind in measured}
    ratio = {kind: rms(predicted[kind]) / rms(measured[kind]) if rms(measured[kind]) else None for kind in measured}
    return {
        "edge_step": onset,
        "central_median_relative_error": rounded(errors["central"]),
        "stable_median_relative_error": rounded(errors["stable"]) if not np.isinf(errors["stable"]) else "inf",
        "stable_over_central_error": ("inf" if np.isinf(errors["stable"]) else
                                      rounded(errors["stable"] / errors["central"]) if errors["central"] else None),
        "central_max_edge_deviation": rounded(float(np.max(np.abs(cf_ratio - 1)))) if cf_ratio.size else None,
        "discrete_late_median_edge_ratio": (rounded(float(np.nanmedian(training.series(result, "edge_ratio")[after(step)])))
                                            if onset is not None else None),
        "oscillation_total_measured_rms": rounded(rms(measured["oscillation_total"])),
        "oscillation_total_predicted_rms": rounded(rms(predicted["oscillation_total"])),
        "oscillation_total_predicted_over_measured": rounded(ratio["oscillation_total"]),
        "oscillation_measured_rms": rounded(rms(measured["oscillation"])),
        "oscillation_predicted_rms": rounded(rms(predicted["oscillation"])),
        "oscillation_predicted_over_measured": rounded(ratio["oscillation"]),
        "stable_flow_status": stable["status"], "stable_flow_end": rounded(stable["step"]),
        "central_flow_status": central["status"],
        "wall_time_discrete_s": rounded(float(training.series(result, "wall_time")[-1]), 3),
        "wall_time_stable_s": rounded(float(flow_series(stable, "wall_time")[-1]), 3),
        "wall_time_central_s": rounded(float(flow_series(central, "wall_time")[-1]), 3),
    }


#: The numbers of :func:`compare` reported over seeds (the others are listed per seed).
HEADLINE = ("central_median_relative_error", "stable_median_relative_error", "central_max_edge_deviation",
            "discrete_late_median_edge_ratio", "oscillation_total_predicted_over_measured")


def over_seeds(seeds: Sequence[int], per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The numbers of one optimizer over seeds: each :data:`HEADLINE` key as
    :func:`paper_figures.intervals.over_seeds` (a stable flow that stopped, "inf", counts as no value), and
    every other key of :func:`compare` as its list of per-seed values."""
    out: dict[str, Any] = {}
    for key in per_seed[0]:
        values = [p[key] for p in per_seed]
        out[key] = (intervals.over_seeds([None if v == "inf" else v for v in values], seeds) if key in HEADLINE
                    else values)
    out["stable_flow_stopped"] = sum(p["stable_median_relative_error"] == "inf" for p in per_seed)
    return out


def rows_for_csv(optimizer: str, result: dict, stable: dict, central: dict, seed: int = 0) -> list[dict[str, Any]]:
    """data/central_flows.csv: one row per record step of the run, the flows' values at the same step."""
    sf = {s: i for i, s in enumerate(stable["records"]["step"])}
    cf = {s: i for i, s in enumerate(central["records"]["step"])}
    rows = []
    for i, s in enumerate(training.series(result, "step")):
        j, k = sf.get(s), cf.get(s)
        rows.append({"optimizer": optimizer, "seed": seed, "step": int(s),
                     "discrete_loss": result["metrics"]["train_loss"][i],
                     "stable_flow_loss": stable["records"]["train_loss"][j] if j is not None else None,
                     "central_flow_loss": central["records"]["train_loss"][k] if k is not None else None,
                     "discrete_eta_S_P": result["metrics"]["eta_S_P"][i],
                     "stable_flow_eta_S_P": stable["records"]["eta_S_P"][j] if j is not None else None,
                     "central_flow_eta_S_P": central["records"]["eta_S_P"][k] if k is not None else None,
                     "eta_threshold": result["metrics"]["eta_threshold"][i],
                     "discrete_oscillation": result["metrics"]["oscillation_total"][i],
                     "central_flow_oscillation": central["records"]["oscillation_total"][k] if k is not None else None})
    return rows


def _draw(axes, optimizer: str, triples: Sequence[tuple[dict, dict, dict]], numbers: dict) -> None:
    """One row of panels for ``optimizer``: every seed thin, the mean over seeds bold; ``triples`` holds each
    seed's (discrete run, stable flow, central flow)."""
    ax_loss, ax_edge, ax_osc = axes
    c_run, c_stable, c_central = style.PALETTE[7], style.PALETTE[1], style.PALETTE[0]
    runs, stables, centrals = zip(*triples)
    steps = [training.series(r, "step") for r in runs]
    s_steps, c_steps = [flow_series(f, "step") for f in stables], [flow_series(f, "step") for f in centrals]
    style.seeds_and_mean(ax_loss, steps, [moving_average(training.series(r, "train_loss")) for r in runs], color=c_run,
                         label="run, 3-record average")
    style.seeds_and_mean(ax_loss, s_steps, [flow_series(f, "train_loss") for f in stables], color=c_stable, ls="--",
                         label="stable flow")
    style.seeds_and_mean(ax_loss, c_steps, [flow_series(f, "train_loss") for f in centrals], color=c_central,
                         label="central flow")
    style.logscale(ax_loss)
    ax_loss.set_ylabel(f"{get_optimizer(optimizer).label}: train loss (MSE)")
    level = threshold_constant(optimizer, **dict(OPTIMIZERS)[optimizer])
    style.seeds_and_mean(ax_edge, steps, [training.series(r, "eta_S_P") for r in runs], color=c_run, marker="o", ms=2)
    style.seeds_and_mean(ax_edge, s_steps, [flow_series(f, "eta_S_P") for f in stables], color=c_stable, ls="--")
    style.seeds_and_mean(ax_edge, c_steps, [flow_series(f, "eta_S_P") for f in centrals], color=c_central)
    style.threshold_line(ax_edge, level, f"threshold\n{level:.4g}")
    ax_edge.set_ylim(0, 1.6 * level)
    ax_edge.set_ylabel(r"$\eta\,S_P$" + (r" ($=\eta S$)" if optimizer == "gd" else ""))
    for onset in numbers["edge_step"]:
        if onset is not None:
            for ax in axes:
                ax.axvline(onset, color="0.6", lw=0.6, ls=":")
    osc = [training.series(r, "oscillation_total") for r in runs]
    predicted = [flow_series(f, "oscillation_total") for f in centrals]
    style.seeds_and_mean(ax_osc, steps, osc, color=c_run, marker="o", ms=2, label="oscillation measured (iterates)")
    style.seeds_and_mean(ax_osc, c_steps, predicted, color=c_central, label="oscillation predicted (central flow)")
    top = float(np.nanmax(np.concatenate([*osc, *predicted])))
    ax_osc.set_ylim(0, 1.3 * top if top > 0 else 1.0)
    ax_osc.set_ylabel("oscillation length (param.)")
    for ax in axes:
        ax.set_xlabel("step")


def _percent(headline: dict) -> str:
    return intervals.text(headline, 3, scale=100, unit="%")


def _caption_part(name: str, n: dict) -> str:
    label = get_optimizer(name).label
    seeds = len(n["edge_step"])
    reached = [s for s in n["edge_step"] if s is not None]
    if not reached:
        return f"{label}: no seed's run reached 95% of its threshold in these steps (no comparison at the edge)."
    stopped = n["stable_flow_stopped"]
    stable = (f"the stable flow's {_percent(n['stable_median_relative_error'])}" if stopped < seeds else "")
    if stopped:
        ends = [fmt(e) for e, st in zip(n["stable_flow_end"], n["stable_flow_status"]) if st != "completed"]
        stable += ((" (" if stable else "") + f"the stable flow ran off the edge in {stopped} of {seeds} seeds, "
                   f"eta * S_P above 10 times the threshold at step {', '.join(ends)}" + (")" if stable else ""))
    return (f"{label}: at the edge from step {', '.join(fmt(s) for s in n['edge_step'])} (per seed); from there the "
            f"central flow's loss is {_percent(n['central_median_relative_error'])} from the run's average "
            f"(median), {stable}; its eta * S_P within {_percent(n['central_max_edge_deviation'])} of the threshold "
            f"(the run's median edge ratio {intervals.text(n['discrete_late_median_edge_ratio'], 3)}); predicted "
            "over measured rms oscillation length "
            f"{intervals.text(n['oscillation_total_predicted_over_measured'], 3)}.")


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    numbers: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    fig, axes = style.figure(3, len(OPTIMIZERS), width="page", height=2.0 * len(OPTIMIZERS) + 0.3)
    groups = by_condition(runs, results, lambda r: (r.config.get("run") or r.config)["optimizer"])
    for row, (name, _) in enumerate(OPTIMIZERS):
        seeds_all, found = groups[name]
        triples = [tuple(found[i:i + 3]) for i in range(0, len(found), 3)]
        seeds = seeds_all[::3]
        numbers[name] = over_seeds(seeds, [compare(*triple, name) for triple in triples])
        for seed, triple in zip(seeds, triples):
            rows += rows_for_csv(name, *triple, seed=seed)
        _draw(axes[row], name, triples, numbers[name])
    style.legend(fig, [axes[0][0], axes[0][2]], ncols=3)
    data = files.write_csv(report.data_dir(out) / "central_flows.csv", rows)
    style.save(fig, out, "central_flows")
    n_seeds = len(groups[OPTIMIZERS[0][0]][0]) // 3
    caption = (f"Digits MLP, full batch, {n_seeds} seeds per optimizer, each the start of a discrete run (grey: "
               "its 3-record moving average), its stable flow (dashed) and its central flow (blue); thin: every "
               "seed, bold: their mean; the dotted lines mark each run's first record at 95% of its threshold. "
               "Numbers are means [95% intervals] over seeds. "
               + " ".join(_caption_part(name, numbers[name]) for name, _ in OPTIMIZERS))
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
