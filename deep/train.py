"""Training runs that record raw and preconditioned sharpness as they go, resumable after a kill.

``run(config, out_dir)`` trains ``config.model`` on ``config.dataset`` with the package optimizer
``config.optimizer`` (torch.optim underneath) for ``config.steps`` updates, full batch (gradient
accumulated over chunks: g = sum_i (n_i / N) g_i, exactly the full-batch gradient) or minibatch (a
fresh random subset of ``batch_size`` examples each step, drawn from a generator seeded with the
seed; ``batch_size >= n`` is full batch).
Every ``measure_every`` updates (and at the last one) it appends a row to ``metrics.csv``:

    step, train_loss, train_accuracy  (full batch, at theta_step)
    sharpness S = lambda_max(H), preconditioned_sharpness S_P = lambda_max(P^-1/2 H P^-1/2)
        (P from the optimizer's state, the denominator of the step just taken; S_P = S for SGD;
        NaN for an adaptive optimizer at step 0, which has no P yet)
    threshold on S_P from aeos_theory (Adam: threshold_at_step with bias correction), eta * S_P,
    eta * threshold (38 for Adam at beta1 = 0.9, 2 for gd), hvps, converged, wall_time (s)

then saves ``checkpoint.pt`` (model, optimizer, RNG states, Lanczos warm start, step) atomically.
A loss that is NaN/inf stops the run with ``summary.json`` status "diverged" and its step (a row
with that loss is written); reaching ``target_loss`` stops it with status "target_reached".
Starting again with the same folder and config resumes from the checkpoint: rows after the
checkpoint step are dropped and recomputed, so none is lost or duplicated, and on CPU the rows
equal those of an uninterrupted run (wall time aside).  Runs are deterministic on CPU given the
seed (the model's initialisation, the batches and Lanczos' random start all derive from it) and the
same torch thread count (a different count changes float round-off, which the chaotic dynamics at
the edge of stability then amplify: measured here, Adam's late median eta * S_P 36.82 with 2 threads
vs 37.21 with 1); on CUDA, kernels may add nondeterminism.
"""

from __future__ import annotations

import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import runlog
from .config import DTYPES, TrainConfig
from .data import Dataset, load
from .losses import correct, count, get_loss
from .models import build_model
from .optim import is_adaptive, make_optimizer, threshold
from .sharpness import SharpnessTracker


def _pass(model: torch.nn.Module, loss_fn, chunks: list, data: Dataset, backward: bool) -> tuple[float, float]:
    """Full-batch loss L = sum_i (n_i/N) L_i and accuracy; with ``backward`` also accumulate grad L."""
    n_total = len(data)
    loss_sum, hits = 0.0, 0
    with torch.set_grad_enabled(backward):
        for X, y in chunks:
            out = model(X)
            loss = loss_fn(out, y)
            weight = X.shape[0] / n_total
            if backward:
                (loss * weight).backward()
            loss_sum += float(loss.detach()) * weight
            if data.task != "regression":
                hits += correct(out.detach(), y)
    accuracy = hits / count(data.y) if data.task != "regression" else math.nan
    return loss_sum, accuracy


def _checkpoint_state(step: int, model, optimizer, tracker, batch_gen, elapsed: float) -> dict[str, Any]:
    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "tracker": tracker.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batch_rng": batch_gen.get_state(),
        "elapsed": elapsed,
    }


def _saved_config(config: TrainConfig, out: Path) -> dict[str, Any] | None:
    """The folder's ``config.json`` (None if new); ValueError if it holds another config."""
    cfg_path = out / runlog.CONFIG
    if not cfg_path.exists():
        return None
    saved = runlog.read_json(cfg_path)
    old = {k: v for k, v in saved.get("config", {}).items() if k != "device"}
    new = {k: v for k, v in config.to_dict().items() if k != "device"}
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(f"out_dir {str(out)!r} holds a run with a different config (differs in: "
                         f"{', '.join(diff)}); use a new folder or the same config to resume")
    return saved


def _write_config(config: TrainConfig, out: Path, saved: dict[str, Any] | None, command: str | None) -> None:
    """Write ``config.json`` (config, resolved hyperparameters, git hash, command), or log a resume in it."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if saved is not None:
        saved.setdefault("resumed", []).append({"time": now, "command": command})
        runlog.write_json(out / runlog.CONFIG, saved)
        return
    out.mkdir(parents=True, exist_ok=True)
    runlog.write_json(out / runlog.CONFIG, {
        "config": config.to_dict(), "hyper": config.resolved_hyper(), "git_hash": runlog.git_hash(),
        "command": command, "created": now, "torch": torch.__version__, "python": sys.version.split()[0],
        "device": str(config.torch_device()), "columns": list(runlog.COLUMNS),
    })


def run(config: TrainConfig, out_dir: str | os.PathLike, *, progress: bool = True,
        command: str | None = None) -> Path:
    """Train as ``config`` says, writing the run folder ``out_dir``; return the path of ``metrics.csv``.

    Resumes from ``out_dir/checkpoint.pt`` when present (same config required, ValueError otherwise);
    returns at once when the folder holds a finished run.  ``progress`` shows a tqdm bar with the
    live eta * S_P; ``command`` is recorded in ``config.json`` (the CLI passes its command line).
    See the module docstring for the columns and :func:`deep.runlog.read_metrics` to read them.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a deep.TrainConfig; got {type(config).__name__}")
    config.validate()
    out = Path(out_dir)
    metrics_path = out / runlog.METRICS
    saved = _saved_config(config, out)
    if saved is not None and (out / runlog.SUMMARY).exists():
        return metrics_path  # a finished run

    device, dtype = config.torch_device(), DTYPES[config.dtype]
    hyper = config.resolved_hyper()
    eta = hyper["eta"]
    data = load(config.dataset, config.n, data_dir=config.data_dir, context=config.context,
                seed=config.seed).to(device, dtype)
    chunks = data.chunks(config.chunk_size)
    loss_fn = get_loss(config.loss)
    model = build_model(config.model, data.input_shape, data.num_classes, width=config.width,
                        depth=config.depth, act=config.activation, seed=config.seed).to(device=device, dtype=dtype)
    optimizer = make_optimizer(config.optimizer, model.parameters(), hyper)
    _write_config(config, out, saved, command)  # only once data and model exist (bad input raised above)
    tracker = SharpnessTracker(tol=config.tol, max_iter=config.max_hvps, seed=config.seed)
    batch_gen = torch.Generator().manual_seed(config.seed)
    adaptive = is_adaptive(config.optimizer)
    full_batch = config.batch_size is None or config.batch_size >= len(data)

    start, elapsed = 0, 0.0
    ckpt_path = out / runlog.CHECKPOINT
    resumed = ckpt_path.exists()
    if resumed:
        state = runlog.load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        tracker.load_state_dict(state["tracker"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        batch_gen.set_state(state["batch_rng"])
        start, elapsed = int(state["step"]), float(state["elapsed"])
    writer = runlog.MetricsWriter(metrics_path, keep_through_step=start if resumed else None)

    threshold(config.optimizer, hyper, start)  # the first call derives the formula with sympy (~1 s)
    bar = tqdm(total=config.steps, initial=start, disable=not progress, dynamic_ncols=True,
               desc=f"{config.optimizer} eta={eta:g}", file=sys.stderr)
    clock = time.perf_counter()
    status, step = "completed", start
    last_row = start if resumed else -1

    def record(step: int, loss: float, accuracy: float, measure: bool) -> None:
        nonlocal last_row
        last_row = step
        row: dict[str, Any] = {"step": step, "train_loss": loss, "train_accuracy": accuracy,
                               "threshold": threshold(config.optimizer, hyper, step)}
        if measure:
            m = tracker.measure(model, loss_fn, chunks, optimizer if (step > 0 or not adaptive) else None)
            row.update(sharpness=m["sharpness"], preconditioned_sharpness=m["preconditioned_sharpness"],
                       hvps=m["hvps"], converged=m["converged"])
            row["eta_S_P"] = eta * row["preconditioned_sharpness"]
            if not (math.isfinite(m["sharpness"]) and (step == 0 or math.isfinite(row["eta_S_P"]))):
                tracker.reset()  # an overflowing HVP leaves no usable warm start
        row["eta_threshold"] = eta * row["threshold"]
        row["wall_time"] = elapsed + time.perf_counter() - clock
        writer.write(row)
        if measure:
            runlog.save_checkpoint(ckpt_path, _checkpoint_state(step, model, optimizer, tracker, batch_gen,
                                                                row["wall_time"]))
            bar.set_postfix_str(f"eta*S_P={row['eta_S_P']:.4g} (thr {row['eta_threshold']:.4g}) loss={loss:.3g}")

    try:
        while True:
            fresh = not (resumed and step == start)  # the row at the checkpoint step is already written
            on_grid = step % config.measure_every == 0 or step == config.steps
            loss, accuracy = math.nan, math.nan
            # minibatch: the full-batch loss is evaluated for a row, and at a resumed start when a
            # target is set (the run may have been killed after reaching it, before summary.json)
            evaluate = not full_batch and ((on_grid and fresh) or (not fresh and config.target_loss is not None))
            if full_batch:
                optimizer.zero_grad(set_to_none=True)
                loss, accuracy = _pass(model, loss_fn, chunks, data, backward=step < config.steps)
            elif evaluate:
                loss, accuracy = _pass(model, loss_fn, chunks, data, backward=False)
            known = full_batch or evaluate
            if known and not math.isfinite(loss):
                record(step, loss, math.nan, measure=False)
                status = "diverged"
                break
            reached = known and config.target_loss is not None and loss <= config.target_loss
            if fresh and (on_grid or reached):
                record(step, loss, accuracy, measure=True)
            if reached:
                status = "target_reached"
                break
            if step >= config.steps:
                break
            if not full_batch:
                idx = torch.randperm(len(data), generator=batch_gen)[: config.batch_size].to(device)
                optimizer.zero_grad(set_to_none=True)
                batch_loss = loss_fn(model(data.X[idx]), data.y[idx])
                if not math.isfinite(float(batch_loss.detach())):
                    if last_row != step:  # else this step's row is written already
                        record(step, float(batch_loss.detach()), math.nan, measure=False)
                    status = "diverged"
                    break
                batch_loss.backward()
            optimizer.step()
            step += 1
            bar.update(1)
    finally:
        bar.close()
        writer.close()
    runlog.write_json(out / runlog.SUMMARY, {
        "status": status, "step": step, "rows": writer.rows,
        "wall_time": elapsed + time.perf_counter() - clock,
    })
    return metrics_path
