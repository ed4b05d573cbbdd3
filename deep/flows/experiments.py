"""A discrete run beside its stable and central flows, measured at every step: the data of a flow figure.

:func:`flow_comparison` takes the configuration of a full-batch ``aeos train`` run (a dict of
:class:`deep.TrainConfig` fields, a learning-rate schedule included) and returns, JSON-ready:

* ``discrete``: the run stepped here exactly as the trainer steps it (the same data, initial model,
  optimizer, scheduler and gradient pass, :func:`deep.training.train.full_batch_pass`), with at every
  step t the loss at w_t, the lr of update t and the period-2 amplitude |w_t - 2 w_(t-1) + w_(t-2)| / 4
  (:func:`deep.measure.oscillation.period_two_amplitude`), so the oscillation is measured at every step,
  not sampled on a grid;
* ``edge``: on the run's grid (every ``measure_every`` steps) the edge of the update just taken
  (:func:`deep.measure.edge.measure_edge`: eta S_P, its threshold c_t, their ratio) and the oscillation
  along the top eigenvector of P^-1 H;
* ``stable`` and ``central``: the two flows of the same run on the same grid
  (:func:`deep.flows.network.flow_of_run`), as :func:`deep.flows.network.flow_experiment` returns them;
* ``numbers``: :func:`comparison_numbers`.

The time-averaged loss of the run at a grid step s is the mean of its loss over the ``measure_every``
steps centred on s (the run oscillates with period 2 and drifts slowly: the window averages the one and
follows the other).  The run is *at the edge* from its first grid step with eta S_P >= 0.95 c_t.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import numpy as np
import torch

from aeos_base.threads import torch_threads
from aeos_theory import get_optimizer
from aeos_theory.flow_rules import edge_onset, rms

from ..measure.edge import measure_edge
from ..measure.oscillation import flat_parameters, period_two_amplitude, top_direction
from .network import flow_experiment

#: The run is at the edge from its first grid step with eta S_P >= EDGE c_t.
EDGE = 0.95


def discrete_every_step(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``discrete`` and ``edge`` parts of :func:`flow_comparison` (module docstring), and the run's wall
    time in seconds (the edge measurements included, as in a training run)."""
    from ..training.config import TrainConfig
    from ..training.optim import make_optimizer
    from ..training.schedules import build_scheduler
    from ..training.train import full_batch_pass, materials

    config = TrainConfig.from_dict(dict(config)).validate()
    if config.batch_size is not None:
        raise ValueError(f"a flow follows a full-batch run: batch_size must be None; got {config.batch_size!r}")
    with torch_threads(config.threads):
        clock = time.perf_counter()
        data, model, loss_fn = materials(config, config.torch_device(), config.torch_dtype())
        chunks = data.chunks(config.chunk_size)
        optimizer = make_optimizer(config.optimizer, model.parameters(), config.resolved_hyper())
        scheduler = build_scheduler(config.schedule, optimizer, total=config.steps, warmup=config.warmup_steps,
                                    final_ratio=config.final_lr_ratio)
        adaptive = get_optimizer(config.optimizer).adaptive
        discrete: dict[str, list[float]] = {"step": [], "train_loss": [], "lr": [], "oscillation_total": []}
        edge: dict[str, list[float]] = {"step": [], "eta_S_P": [], "eta_threshold": [], "edge_ratio": [],
                                        "oscillation": []}
        recent: list[torch.Tensor] = []  # w_(t-2), w_(t-1), w_t
        warm, used = None, float(optimizer.param_groups[0]["lr"])  # used: the lr of update max(t, 1)
        for step in range(config.steps + 1):
            optimizer.zero_grad(set_to_none=True)
            loss, _ = full_batch_pass(model, loss_fn, chunks, data, backward=step < config.steps)
            recent = (recent + [flat_parameters(model)])[-3:]
            amplitude = period_two_amplitude(*recent[::-1]) if len(recent) == 3 else math.nan
            for name, value in (("step", step), ("train_loss", loss), ("lr", used), ("oscillation_total", amplitude)):
                discrete[name].append(value)
            if step % config.measure_every == 0 or step == config.steps:
                warm = _measure_edge(edge, step, model, loss_fn, chunks, optimizer, config, adaptive, warm, recent)
            if step == config.steps or not math.isfinite(loss):
                break
            used = float(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        return {"discrete": discrete, "edge": edge, "wall_time": time.perf_counter() - clock}


def _measure_edge(edge: dict, step: int, model, loss_fn, chunks, optimizer, config, adaptive: bool, warm,
                  recent: list) -> Any:
    """Append the edge of the update just taken at ``step`` (NaN for an adaptive optimizer at step 0, which
    has no P yet) and the oscillation along its top direction; return the eigenvector (a warm start)."""
    result = None
    if step > 0 or not adaptive:
        result = measure_edge(model, loss_fn, chunks, optimizer, step=max(step, 1), tol=config.tol,
                              max_iter=config.max_hvps, init=warm, seed=config.seed)
    along = math.nan
    if result is not None and result.eigenvector is not None and len(recent) == 3:
        along = period_two_amplitude(*recent[::-1], top_direction(optimizer, model, result.eigenvector))
    edge["step"].append(step)
    for name, value in (("eta_S_P", "eta_S_P"), ("eta_threshold", "constant"), ("edge_ratio", "ratio")):
        edge[name].append(getattr(result, value) if result is not None else math.nan)
    edge["oscillation"].append(along)
    return result.eigenvector if result is not None else None


def window_mean(values: np.ndarray, steps: np.ndarray, width: int) -> np.ndarray:
    """The mean of per-step ``values`` over the ``width`` steps centred on each of ``steps`` (what exists of
    them at the ends)."""
    half = width // 2
    return np.array([np.nanmean(values[max(0, int(s) - half): int(s) - half + width]) for s in steps])


def comparison_numbers(result: Mapping[str, Any], every: int) -> dict[str, Any]:
    """The summary of a comparison: where the run reaches the edge (``edge_step``); from there, the median
    relative distance of each flow's loss from the run's time-averaged loss (a stable flow that stopped
    counts as infinitely far from then on) and their ratio; the central flow's distance of eta S_P from the
    threshold where it oscillates (median and largest) and the run's median edge ratio; the rms of the
    oscillation's length measured at every step against the central flow's prediction; the wall times."""
    discrete, edge = result["discrete"], result["edge"]
    loss, per_step = np.asarray(discrete["train_loss"], float), np.asarray(discrete["oscillation_total"], float)
    grid, ratio = np.asarray(edge["step"], float), np.asarray(edge["edge_ratio"], float)
    onset = edge_onset(grid, ratio, EDGE)
    averaged = window_mean(loss, grid, every)
    numbers: dict[str, Any] = {"edge_step": onset}
    errors = {}
    for kind in ("central", "stable"):
        records = result[kind]["records"]
        at = {float(s): v for s, v in zip(records["step"], records["train_loss"])}
        distances = [abs(at.get(float(s), math.inf) - a) / abs(a) for s, a in zip(grid, averaged)
                     if onset is not None and s >= onset and np.isfinite(a) and a != 0]
        errors[kind] = float(np.median(distances)) if distances else math.nan
        numbers[f"{kind}_median_relative_error"] = errors[kind]
        numbers[f"{kind}_flow_status"] = result[kind]["status"]
    numbers["stable_over_central_error"] = (errors["stable"] / errors["central"]
                                            if errors["central"] and np.isfinite(errors["central"]) else math.nan)
    central = result["central"]["records"]
    c_step = np.asarray(central["step"], float)
    after = c_step >= (onset if onset is not None else math.inf)
    oscillating = after & (np.asarray(central["directions"], float) > 0)
    deviation = np.abs(np.asarray(central["edge_ratio"], float)[oscillating] - 1)
    numbers["central_oscillating_records"] = int(oscillating.sum())
    numbers["central_median_edge_deviation"] = float(np.median(deviation)) if deviation.size else math.nan
    numbers["central_max_edge_deviation"] = float(np.max(deviation)) if deviation.size else math.nan
    at_edge = grid >= (onset if onset is not None else math.inf)
    numbers["discrete_median_edge_ratio"] = float(np.nanmedian(ratio[at_edge])) if at_edge.any() else math.nan
    start = int(onset) if onset is not None else len(per_step)
    measured = rms(per_step[start:])
    predicted = rms(np.asarray(central["oscillation_total"], float)[after])
    numbers["oscillation_measured_rms"] = measured
    numbers["oscillation_predicted_rms"] = predicted
    numbers["oscillation_predicted_over_measured"] = predicted / measured if measured else math.nan
    numbers["wall_time_discrete_s"] = result["wall_time"]
    for kind in ("stable", "central"):
        numbers[f"wall_time_{kind}_s"] = float(result[kind]["records"]["wall_time"][-1])
    return numbers


def flow_comparison(run: Mapping[str, Any], dtype: str = "float64") -> dict[str, Any]:
    """The run ``run`` (TrainConfig fields, full batch) stepped and measured at every step, its stable and
    central flows in ``dtype`` on its grid, and :func:`comparison_numbers` (module docstring)."""
    result = discrete_every_step(run)
    for central in (False, True):
        result["central" if central else "stable"] = flow_experiment(dict(run), central=central, dtype=dtype)
    result["numbers"] = comparison_numbers(result, int(run.get("measure_every", 100)))
    result["config"] = dict(run)
    return result


def comparison_rows(result: Mapping[str, Any], optimizer: str) -> list[dict[str, Any]]:
    """Rows of a figure's CSV (``central_flows.csv``): one per grid step of the run, with the ``optimizer``
    and ``schedule`` named, the run's time-averaged loss, each flow's loss and eta S_P, the threshold, and
    the oscillation's rms length measured over the window against the central flow's prediction."""
    config, discrete, edge = result["config"], result["discrete"], result["edge"]
    every = int(config.get("measure_every", 100))
    loss, per_step = np.asarray(discrete["train_loss"], float), np.asarray(discrete["oscillation_total"], float)
    grid = np.asarray(edge["step"], float)
    averaged = window_mean(loss, grid, every)
    flows = {kind: {float(s): i for i, s in enumerate(result[kind]["records"]["step"])}
             for kind in ("stable", "central")}

    def flow_value(kind: str, column: str, step: float) -> float | None:
        i = flows[kind].get(step)
        return None if i is None else result[kind]["records"][column][i]

    rows = []
    for j, s in enumerate(grid):
        window = per_step[max(0, int(s) - every // 2): int(s) - every // 2 + every]
        rows.append({"optimizer": optimizer, "schedule": config.get("schedule", "constant"), "step": int(s),
                     "discrete_loss": loss[int(s)], "discrete_loss_averaged": averaged[j],
                     "stable_flow_loss": flow_value("stable", "train_loss", s),
                     "central_flow_loss": flow_value("central", "train_loss", s),
                     "discrete_eta_S_P": edge["eta_S_P"][j], "stable_flow_eta_S_P": flow_value("stable", "eta_S_P", s),
                     "central_flow_eta_S_P": flow_value("central", "eta_S_P", s),
                     "eta_threshold": edge["eta_threshold"][j],
                     "discrete_oscillation": rms(window), "central_flow_oscillation":
                         flow_value("central", "oscillation_total", s)})
    return rows
