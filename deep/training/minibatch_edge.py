"""The minibatch edge experiment as data: one optimizer over batch sizes and seeds, which level each curve holds.

Each run is an ordinary training run (:func:`deep.run` with ``batch_size``), so its ``metrics.csv`` holds, every
``measure_every`` steps, the full-batch ``eta_S_P`` beside the minibatch ``eta_BS_P`` and ``batch_update_ratio``
(:data:`deep.training.runlog.BATCH_COLUMNS`).  :func:`minibatch_edge_configs` builds the runs (the full batch
included as the largest size), :func:`minibatch_edge` runs them (each in its own resumable folder) and returns
one record per run with the late-training level of each curve (:func:`late_levels`): the median over the last
``fraction`` of the rows and its spread (the 10th and 90th percentiles of those rows, which show whether the
curve has settled), the number the summary panel of a figure plots against the batch size.

The quantities compared with each optimizer's levels (for SGD ``eta_S_P`` and ``eta_BS_P`` are eta * S and
eta * BS): ``eta_S_P`` against the full-batch threshold c_t (``eta_threshold``: 38 for Adam at beta1 = 0.9, 2 for
GD, 2 + 2 beta for heavy ball), ``eta_BS_P`` against c_t and against 2, ``batch_update_ratio`` against 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from aeos_base import checks

from .config import TrainConfig
from .runlog import read_metrics
from .train import run

#: The figures' digits network: the first 1000 images / 16, MLP 64-200-200-10 tanh, square loss.
DIGITS_MLP: dict[str, Any] = {"dataset": "digits", "n": 1000, "model": "mlp", "width": 200, "depth": 2,
                              "activation": "tanh", "loss": "mse"}
#: The curves whose late levels are summarised.
CURVES = ("eta_S_P", "eta_BS_P", "batch_update_ratio")


def minibatch_edge_configs(batch_sizes: Iterable[int], *, optimizer: str = "adam",
                           hyper: Mapping[str, float] | None = None, seeds: Iterable[int] = (0, 1, 2),
                           steps: int | Mapping[int, int] = 5000, measure_every: int | Mapping[int, int] = 250,
                           base: Mapping[str, Any] = DIGITS_MLP) -> list[TrainConfig]:
    """One :class:`TrainConfig` per (batch size, seed), in that order; a batch size >= n is the full batch.

    ``steps`` and ``measure_every`` may be one number or a mapping batch size -> number (small batches need
    longer runs to settle).  ``hyper`` defaults to Adam's eta = 1e-3.
    """
    hyper = dict(hyper or {"eta": 1e-3})
    n = base.get("n")
    configs = []
    for b in batch_sizes:
        b = checks.integer("batch size", b, low=1)
        for seed in seeds:
            configs.append(TrainConfig(**{**dict(base), "optimizer": optimizer, "hyper": hyper,
                                          "steps": _per_size(steps, b), "measure_every": _per_size(measure_every, b),
                                          "seed": int(seed), "batch_size": None if n is not None and b >= n else b}
                                       ).validate())
    return configs


def _per_size(value: int | Mapping[int, int], batch_size: int) -> int:
    return int(value[batch_size]) if isinstance(value, Mapping) else int(value)


def late_levels(rows: Sequence[Mapping[str, float]], fraction: float = 0.4) -> dict[str, dict[str, float]]:
    """{curve: {"median", "p10", "p90", "rows"}} over the rows of the last ``fraction`` of the run's steps
    (NaN rows skipped), for each of :data:`CURVES`, plus ``eta_threshold`` (its median)."""
    fraction = checks.real("fraction", fraction, low=0.0, high=1.0, low_inclusive=False)
    steps = np.array([r["step"] for r in rows], dtype=float)
    late = steps >= steps.max() * (1 - fraction) if len(steps) else np.array([], dtype=bool)
    out: dict[str, dict[str, float]] = {}
    for name in (*CURVES, "eta_threshold"):
        values = np.array([r.get(name, np.nan) for r in rows], dtype=float)[late]
        values = values[np.isfinite(values)]
        out[name] = ({"median": float(np.median(values)), "p10": float(np.percentile(values, 10)),
                      "p90": float(np.percentile(values, 90)), "rows": int(values.size)} if values.size else
                     {"median": np.nan, "p10": np.nan, "p90": np.nan, "rows": 0})
    return out


def minibatch_edge(out_dir: str | os.PathLike, configs: Sequence[TrainConfig], *, fraction: float = 0.4,
                   progress: bool = False) -> list[dict[str, Any]]:
    """Run (or resume) every config in ``out_dir/<optimizer>-b<batch>-s<seed>`` and return one record per run:
    its ``optimizer``, ``batch_size`` (n for the full batch), ``seed``, ``eta``, ``status`` ("completed" or
    "diverged"), the late ``levels`` (:func:`late_levels`) and its ``rows`` (the metrics, for the curves)."""
    records = []
    for config in configs:
        size = config.batch_size or config.n
        folder = Path(out_dir) / f"{config.optimizer}-b{size}-s{config.seed}"
        rows = read_metrics(run(config, folder, progress=progress))
        status = "diverged" if rows and not np.isfinite(rows[-1]["train_accuracy"]) else "completed"
        records.append({"optimizer": config.optimizer, "batch_size": size, "seed": config.seed,
                        "eta": config.hyper["eta"], "status": status, "levels": late_levels(rows, fraction),
                        "rows": rows})
    return records
