"""Deep-net training runs for the figures, through ``deep.run`` (the package's resumable trainer).

A run is a :class:`deep.TrainConfig` as a dict; its folder ``<run_dir>/train`` holds deep's own
``config.json``, ``metrics.csv`` and ``checkpoint.pt``, so an interrupted figure run resumes where
deep checkpointed.  The cached result is the metrics table as columns.  Every condition runs at the
seeds of :meth:`paper_figures.registry.Context.seeds`; :func:`seed_numbers` turns the runs of one
condition into headline numbers over seeds and :func:`plot_seeds` draws them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aeos_base import files
from paper_figures import intervals, style
from paper_figures.cache import Run
from paper_figures.figures.common import column, rounded
from sims.summary import late_median, late_range

#: The paper's digits network: the first 1000 images / 16, MLP 64-200-200-10 tanh, square loss.
DIGITS_MLP: dict[str, Any] = {"dataset": "digits", "n": 1000, "model": "mlp", "width": 200, "depth": 2,
                              "activation": "tanh", "loss": "mse"}

#: Seconds per unit of :func:`cost_of` on one CPU core (fitted to the quick MLP runs; for scheduling the
#: longest runs first and for the --dry-run estimate, which rescales it by each figure's measured cost).
_SECONDS_PER_FLOP = 8e-11
#: Seconds of per-step overhead (Python, optimizer, logging) whatever the model's size.
_SECONDS_PER_STEP = 2e-3
#: Gradient-equivalents of one sharpness record over the full batch (Lanczos on H and on P^-1/2 H P^-1/2:
#: about 16 Hessian-vector products of ~2.5 gradients each, measured on the quick MLP runs).
_RECORD_GRADIENTS = 40


#: CPU seconds per multiply of each model relative to the MLP's (small convolutions and attention run less
#: efficiently; fitted to the quick runs).
_EFFICIENCY = {"mlp": 1.0, "cnn": 2.0, "resnet": 2.0, "transformer": 2.4}


def _flops_per_example(config: Mapping[str, Any]) -> float:
    """A rough multiply count of one example's forward pass (input 64 for digits, 3072 for CIFAR-10), times
    the model's :data:`_EFFICIENCY`."""
    width, depth = config.get("width", 200), config.get("depth", 2)
    model, dataset = config.get("model", "mlp"), config.get("dataset", "digits")
    pixels, channels = {"digits": (64, 1), "cifar10": (1024, 3)}.get(dataset, (64, 1))
    if model == "transformer":
        context = config.get("context", 64)
        flops = context * (depth * 12 * width ** 2 + 100 * width) + depth * context ** 2 * width
    elif model in ("cnn", "resnet"):
        layers = depth if model == "cnn" else 2 * depth + 1
        flops = pixels * 9 * (channels * width + (layers - 1) * width ** 2) / (2 if model == "cnn" else 1)
    else:
        flops = pixels * channels * width + (depth - 1) * width ** 2 + 10 * width
    return flops * _EFFICIENCY.get(model, 1.0)


def cost_of(config: Mapping[str, Any]) -> float:
    """Estimated CPU seconds of a training run: forward-backward passes over the batch each step, plus
    :data:`_RECORD_GRADIENTS` full-batch gradients per sharpness record, plus a fixed overhead per step."""
    n = config.get("n") or 1000
    batch = config.get("batch_size") or n
    records = config["steps"] // max(config["measure_every"], 1) + 1
    passes = 3 * config["steps"] * batch + records * _RECORD_GRADIENTS * n
    return _SECONDS_PER_FLOP * _flops_per_example(config) * passes + _SECONDS_PER_STEP * config["steps"]


def train_run(label: str, *, optimizer: str, hyper: Mapping[str, float], steps: int, measure_every: int,
              base: Mapping[str, Any] = DIGITS_MLP, seed: int = 0, **fields: Any) -> Run:
    """The :class:`Run` of one deep training run (``base`` network + these fields) at ``seed``; its label
    ends with the seed."""
    config = {"threads": 1, **dict(base), **fields, "optimizer": optimizer,
              "hyper": {k: float(v) for k, v in hyper.items()}, "steps": int(steps),
              "measure_every": int(measure_every), "seed": int(seed)}
    return Run("paper_figures.figures.training:train", config, label=f"{label} seed {seed}", cost=cost_of(config))


def train(run_dir: Path, **config: Any) -> dict:
    """Run (or resume) ``deep.run`` for the :class:`deep.TrainConfig` fields ``config`` in ``run_dir/train``;
    return its status and its metrics as columns.  A train folder whose records cannot be trusted (it is
    a cache) is removed, said so on stderr, and the run computed again from step 0."""
    from deep import read_metrics
    from deep.training.runlog import COLUMNS, SUMMARY

    folder = Path(run_dir) / "train"
    if config.get("nproc", 1) > 1:  # ranks in their own processes, through torch's elastic launcher
        from deep.training.distributed import launch

        status = launch(["-m", "deep.training.rank", json.dumps(config), str(folder)], config["nproc"])
        if status not in (0, 3):
            raise RuntimeError(f"the {config['nproc']}-process run in {folder} failed with exit status {status}")
        path = folder / "metrics.csv"
    else:
        path = _run_here(config, folder)
    rows = read_metrics(path)
    status = files.read_json(path.parent / SUMMARY)
    return {"status": status.get("status"), "last_step": status.get("step"), "rows": len(rows),
            "metrics": {c: [row.get(c) for row in rows] for c in COLUMNS}}


def _run_here(config: dict, folder: Path) -> Path:
    """``deep.run`` in this process; a folder that cannot prove its records is removed and run again."""
    from aeos_base.command import RecordError
    from deep import TrainConfig, run

    try:
        return run(TrainConfig.from_dict(config), folder, progress=False)
    except RecordError as err:
        print(f"recomputing {folder} from step 0: {err}", file=sys.stderr)
        shutil.rmtree(folder)
        return run(TrainConfig.from_dict(config), folder, progress=False)


def series(result: Mapping[str, Any], name: str) -> np.ndarray:
    return column(result["metrics"], name)


def run_numbers(result: Mapping[str, Any], eta: float, fraction: float = 0.4) -> dict[str, Any]:
    """Key numbers of one run: late median / range of eta * S_P and of eta * S, raw S at the start and
    the end, the final loss, and the run's status (completed / diverged and where)."""
    steps = series(result, "step")
    s = series(result, "sharpness")
    sp = series(result, "preconditioned_sharpness")
    loss = series(result, "train_loss")
    measured = np.isfinite(s)
    first = float(s[measured][1]) if measured.sum() > 1 else None  # first measurement after step 0
    out = {
        "late_median_eta_S_P": rounded(late_median(steps, eta * sp, fraction)),
        "late_range_eta_S_P": [rounded(v) for v in late_range(steps, eta * sp, fraction) or []],
        "late_median_eta_S": rounded(late_median(steps, eta * s, fraction)),
        "sharpness_first": rounded(first),
        "sharpness_last": rounded(float(s[measured][-1]) if measured.any() else None),
        "final_loss": rounded(float(loss[np.isfinite(loss)][-1]) if np.isfinite(loss).any() else None),
        "status": result.get("status"),
    }
    if result.get("status") == "diverged":
        out["diverged_at"] = result.get("last_step")
    return out


#: The numbers of :func:`run_numbers` that :func:`seed_numbers` reports over seeds by default.
HEADLINE = ("late_median_eta_S_P", "sharpness_last")


def seed_numbers(seeds: Sequence[int], results: Sequence[Mapping[str, Any]], eta: float,
                 headline: Sequence[str] = HEADLINE, fraction: float = 0.4) -> dict[str, Any]:
    """The numbers of one condition run at ``seeds``: each key of ``headline`` (keys of :func:`run_numbers`)
    as :func:`paper_figures.intervals.over_seeds`, and every seed's status (with where it diverged)."""
    per_seed = [run_numbers(r, eta, fraction) for r in results]
    out: dict[str, Any] = {key: intervals.over_seeds([p[key] for p in per_seed], seeds) for key in headline}
    out["status"] = [p["status"] if p["status"] != "diverged" else f"diverged at {p['diverged_at']}" for p in per_seed]
    return out


def plot_seeds(ax, results: Sequence[Mapping[str, Any]], name: str, *, scale: float = 1.0, color: str,
               label: str | None = None, marker: str | None = None) -> np.ndarray:
    """``scale * name`` against step for every seed's run (thin) and their mean (bold); returns the mean."""
    return style.seeds_and_mean(ax, [series(r, "step") for r in results], [scale * series(r, name) for r in results],
                                color=color, label=label, marker=marker)


def rows_for_csv(label: str, result: Mapping[str, Any], **extra: Any) -> list[dict[str, Any]]:
    """The run's metrics as CSV rows, tagged with ``label`` and ``extra`` columns."""
    metrics = result["metrics"]
    n = len(metrics["step"])
    return [{"run": label, **extra, **{c: values[i] for c, values in metrics.items()}} for i in range(n)]


def plot_metric(ax, result: Mapping[str, Any], name: str, *, scale: float = 1.0, **kw) -> None:
    """Plot ``scale * name`` against step, skipping unmeasured (NaN) rows."""
    steps = series(result, "step")
    v = scale * series(result, name)
    ok = np.isfinite(v)
    ax.plot(steps[ok], v[ok], **kw)


def draw_triptych(axes: Sequence, groups: Sequence[Sequence[Mapping]], etas: Sequence[float], labels: Sequence[str],
                  level: float, level_label: str, adaptive: bool = True) -> None:
    """Three panels, each condition's seeds thin and their mean bold: train loss (log), eta * S_P (or
    eta * S) with the threshold line, raw S (log if wide).  ``groups``: one list of seed runs per condition."""
    ax_loss, ax_level, ax_raw = axes
    colors = style.colors(len(groups))
    raw: list[float] = []
    losses: list[float] = []
    for color, results, eta, label in zip(colors, groups, etas, labels):
        losses += [v for res in results for v in series(res, "train_loss")]
        raw += [v for res in results for v in series(res, "sharpness")]
        plot_seeds(ax_loss, results, "train_loss", color=color, label=label)
        plot_seeds(ax_level, results, "preconditioned_sharpness" if adaptive else "sharpness", scale=eta,
                   color=color, marker="o")
        plot_seeds(ax_raw, results, "sharpness", color=color, marker="o")
    style.auto_log(ax_loss, losses, decades=1.0)
    ax_loss.set_ylabel("train loss (MSE)")
    style.threshold_line(ax_level, level, level_label)
    ax_level.set_ylabel(r"$\eta\,S_P$ (dimensionless)" if adaptive else r"$\eta\,S$ (dimensionless)")
    ax_level.set_ylim(0, level * 1.5)
    ax_raw.set_ylabel(r"raw sharpness $S$ (loss/param$^2$)")
    style.auto_log(ax_raw, raw)
    for ax in axes:
        ax.set_xlabel("step")
