"""Deep-net training runs for the figures, through ``deep.run`` (the package's resumable trainer).

A run is a :class:`deep.TrainConfig` as a dict; its folder ``<run_dir>/train`` holds deep's own
``config.json``, ``metrics.csv`` and ``checkpoint.pt``, so an interrupted figure run resumes where
deep checkpointed.  The cached result is the metrics table as columns.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aeos_base import files
from paper_figures import style
from paper_figures.cache import Run
from paper_figures.figures.common import column, rounded
from sims.summary import late_median, late_range

#: The paper's digits network: the first 1000 images / 16, MLP 64-200-200-10 tanh, square loss.
DIGITS_MLP: dict[str, Any] = {"dataset": "digits", "n": 1000, "model": "mlp", "width": 200, "depth": 2,
                              "activation": "tanh", "loss": "mse"}

#: Rough seconds per step on one CPU core (for scheduling the longest runs first, not for results).
_COST_PER_STEP = {"mlp": 0.008, "cnn": 0.03, "transformer": 0.05, "resnet": 0.05}


def train_run(label: str, *, optimizer: str, hyper: Mapping[str, float], steps: int, measure_every: int,
              base: Mapping[str, Any] = DIGITS_MLP, seed: int = 0, **fields: Any) -> Run:
    """The :class:`Run` of one deep training run (``base`` network + these fields)."""
    config = {"threads": 1, **dict(base), **fields, "optimizer": optimizer,
              "hyper": {k: float(v) for k, v in hyper.items()}, "steps": int(steps),
              "measure_every": int(measure_every), "seed": int(seed)}
    cost = steps * _COST_PER_STEP.get(config.get("model", "mlp"), 0.01)
    return Run("paper_figures.figures.training:train", config, label=label, cost=cost)


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


def draw_triptych(axes: Sequence, results: Sequence[Mapping], etas: Sequence[float], labels: Sequence[str],
                  level: float, level_label: str, adaptive: bool = True) -> None:
    """Three panels: train loss (log), eta * S_P (or eta * S) with the threshold line, raw S (log if wide)."""
    ax_loss, ax_level, ax_raw = axes
    colors = style.colors(len(results))
    raw: list[float] = []
    losses: list[float] = []
    for color, res, eta, label in zip(colors, results, etas, labels):
        losses += list(series(res, "train_loss"))
        plot_metric(ax_loss, res, "train_loss", color=color, label=label)
        plot_metric(ax_level, res, "preconditioned_sharpness" if adaptive else "sharpness", scale=eta,
                    color=color, marker="o", ms=2.5, label=label)
        plot_metric(ax_raw, res, "sharpness", color=color, marker="o", ms=2.5, label=label)
        raw += list(series(res, "sharpness"))
    style.auto_log(ax_loss, losses, decades=1.0)
    ax_loss.set_ylabel("train loss (MSE)")
    style.threshold_line(ax_level, level, level_label, va="bottom", where=0.3, pad=9)
    ax_level.set_ylabel(r"$\eta\,S_P$ (dimensionless)" if adaptive else r"$\eta\,S$ (dimensionless)")
    ax_level.set_ylim(0, level * 1.5)
    ax_raw.set_ylabel(r"sharpness $S=\lambda_{max}(H)$ (loss/param$^2$)")
    style.auto_log(ax_raw, raw)
    for ax in axes:
        ax.set_xlabel("step")
