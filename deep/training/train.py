"""Training runs that record raw and preconditioned sharpness as they go, resumable after a kill.

``run(config, out_dir)`` trains ``config.model`` on ``config.dataset`` with the package optimizer
``config.optimizer`` (torch.optim underneath) for ``config.steps`` updates, full batch (gradient
accumulated over chunks: g = sum_i (n_i / N) g_i, exactly the full-batch gradient) or minibatch (a
fresh random subset of ``batch_size`` examples each step, drawn from a generator seeded with the seed;
``batch_size >= n`` is full batch).  Every ``measure_every`` updates (and at the last one) it appends a
row to ``metrics.csv`` (columns in :data:`deep.training.runlog.COLUMNS`):

    step, train_loss, train_accuracy  (full batch, at theta_step), lr (the rate of update step, just taken)
    sharpness S = lambda_max(H), preconditioned_sharpness S_P = lambda_max(P^-1/2 (H + W) P^-1/2)
        (P from the optimizer's state, the denominator of the step just taken; W the coupled weight
        decay; S_P = S + wd for SGD; NaN for an adaptive optimizer at step 0, which has no P yet)
    threshold on S_P of that step's update, eta_S_P = lr S_P and eta_threshold, the threshold constant
    of the step read from the live optimizer (:mod:`deep.measure.edge`: Adam's bias correction, NAdam's
    momentum schedule, ...), edge_ratio = eta_S_P / eta_threshold, hvps, converged, wall_time (s),
    oscillation, oscillation_total (the rms period-2 amplitude over every step since the previous row,
    along the top eigenvector of P^-1 (H + W) and whole, :mod:`deep.measure.oscillation`; the running
    sums and the last two iterates are kept, checkpoints included)
    the minibatch quantities at the run's batch size (:data:`deep.training.runlog.BATCH_COLUMNS`): the batch
        sharpness BS, eta * BS_P and the ratio along the optimizer's next step, each with its standard error,
        from random batches drawn from their own seed (:func:`deep.measure.batch.batch_seed` of the run's seed
        and the step), until a relative standard error of :data:`BATCH_TOL` or :data:`BATCH_SAMPLES` batches;
        in a full-batch run the batch is the whole data set, where they are exact (one sample)

then saves ``checkpoint.pt`` (model, optimizer, scheduler, RNG states, Lanczos warm start, step) atomically.
A loss that is not finite, or above ``DIVERGENCE_FACTOR`` = 10^4 times the loss at step 0, stops the
run with ``summary.json`` status "diverged" and its step (a row with that loss is written); reaching
``target_loss`` stops it with status "target_reached".  Starting again with the same folder and config
resumes from the checkpoint after :class:`deep.training.run_folder.RunFolder` has proven it (config, versions,
the hash of every row it covers; one writer at a time): rows after the checkpoint are dropped and
recomputed, so none is lost or duplicated, and on CPU the rows equal those of an uninterrupted run
(wall time aside).  Runs are deterministic on CPU given the seed (the model's initialisation, the
batches and Lanczos' random start all derive from it) and the torch thread count, which every run sets
itself (``config.threads``: a different count changes float round-off, which the chaotic dynamics at
the edge of stability then amplify); on CUDA, kernels may add nondeterminism.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aeos_base.command import RecordError
from aeos_base.progress import progress as progress_reporter
from aeos_base.threads import torch_threads
from aeos_theory import threshold_constant
from aeos_theory.optimizers import get_optimizer

from ..curvature.inputs import Shard
from ..curvature.reductions import reduce_sum
from ..measure.batch import batch_seed, batch_sharpness_forms
from ..measure.edge import identify_group
from ..measure.oscillation import OscillationMeter, flat_parameters, top_direction
from ..measure.tracker import SharpnessTracker
from . import runlog
from .config import DIVERGENCE_FACTOR, TrainConfig
from .data import Dataset, chunks, load
from .distributed import Ranks, broadcast, join, session, shard_slice
from .losses import correct, count, get_loss
from .models import build_model
from .optim import make_optimizer
from .run_folder import RunFolder
from .schedules import build_scheduler


def run(config: TrainConfig, out_dir: str | os.PathLike, *, progress: bool = True,
        command: str | None = None) -> Path:
    """Train as ``config`` says, writing the run folder ``out_dir``; return the path of ``metrics.csv``.

    Resumes from ``out_dir/checkpoint.pt`` when present (same config required, ValueError otherwise);
    returns at once when the folder holds a finished run.  ``progress`` shows a tqdm bar with the
    live eta * S_P on a terminal, and a line every tenth of the run when stderr is a file
    (:mod:`aeos_base.progress`); ``command`` is recorded in ``config.json`` (the CLI passes its command line).
    See the module docstring for the columns and :func:`deep.training.runlog.read_metrics` to read them.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a deep.TrainConfig; got {type(config).__name__}")
    config.validate()
    folder = RunFolder(out_dir)
    with session(config.nproc, config.device) as ranks:  # one process, or this rank of config.nproc
        trainer = Trainer(config, folder, ranks)  # builds data and model first: bad input raises before any file
        with folder.locked() if ranks.is_writer else contextlib.nullcontext():  # rank 0 alone touches the folder
            opened = broadcast_outcome(lambda: folder.check(config.to_dict()) if ranks.is_writer else None, ranks)
            if not opened.finished:
                if ranks.is_writer:
                    folder.write_config(opened.saved, {"config": config.to_dict(), "hyper": trainer.hyper,
                                                       "device": str(trainer.device)}, command)
                status, step, rows, wall = trainer.train(progress and ranks.is_writer, opened.checkpoint)
                if ranks.is_writer:
                    folder.write_summary({"status": status, "step": step, "wall_time": wall}, rows)
    return folder.metrics


def broadcast_outcome(work, ranks: Ranks):
    """Rank 0's result of ``work()`` on every rank, or the exception it raised, raised on every rank."""
    try:
        outcome = ("ok", work())
    except (ValueError, RecordError) as err:
        outcome = ("error", err)
    outcome = broadcast(outcome, ranks)
    if outcome[0] == "error":
        raise outcome[1]
    return outcome[1]


def materials(config: TrainConfig, device: torch.device, dtype: torch.dtype) -> tuple[Dataset, torch.nn.Module, Any]:
    """The data set, the initial model (from ``config.seed``) and the loss of a run, on ``device`` in ``dtype``:
    what a training run starts from, and what a flow of the same run starts from (:mod:`deep.flows`)."""
    data = load(config.dataset, config.n, data_dir=config.data_dir, context=config.context,
                seed=config.seed).to(device, dtype)
    model = build_model(config.model, data.input_shape, data.num_classes, width=config.width, depth=config.depth,
                        act=config.activation, seed=config.seed).to(device=device, dtype=dtype)
    return data, model, get_loss(config.loss)


class Trainer:
    """One run: data, model, optimizer, warm-started sharpness tracker, batch generator, run folder.

    :meth:`train` is the loop: restore, then at every step observe the loss, record (and checkpoint)
    on the measurement grid, and descend.
    """

    def __init__(self, config: TrainConfig, folder: RunFolder, ranks: Ranks | None = None) -> None:
        self.config, self.folder = config, folder
        self.ranks = ranks if ranks is not None else join(config.nproc, config.device)
        self.device, dtype = (config.torch_device() if config.nproc == 1 else self.ranks.device), config.torch_dtype()
        self.hyper = config.resolved_hyper()
        self.eta = self.hyper["eta"]
        self.data, self.model, self.loss_fn = materials(config, self.device, dtype)
        mine = shard_slice(len(self.data), self.ranks.rank, self.ranks.world)  # this rank's examples
        self.chunks = chunks(self.data.X[mine], self.data.y[mine], config.chunk_size)
        self.measured = Shard(self.chunks, self.ranks.group) if self.ranks.group is not None else self.chunks
        self.optimizer = make_optimizer(config.optimizer, self.model.parameters(), self.hyper)
        self.scheduler = build_scheduler(config.schedule, self.optimizer, total=config.steps,
                                         warmup=config.warmup_steps, final_ratio=config.final_lr_ratio)
        self.adaptive = get_optimizer(config.optimizer).adaptive
        self.tracker = SharpnessTracker(tol=config.tol, max_iter=config.max_hvps, seed=config.seed)
        self.batches = torch.Generator().manual_seed(config.seed)
        self.full_batch = config.batch_size is None or config.batch_size >= len(self.data)
        self.elapsed, self.clock = 0.0, time.perf_counter()
        self.resumed_at: int | None = None  # the checkpoint step, whose row is already on disk
        self.last_row = -1
        self.start_loss: float | None = None  # the full-batch loss at step 0, the scale of divergence
        self.oscillation = OscillationMeter()  # the period-2 amplitude at every step, rms per row
        self.lr_used: tuple[float, ...] | None = None  # each group's lr in the last update taken

    # ------------------------------------------------------------------ the loop
    def train(self, progress: bool, checkpoint: dict[str, Any] | None = None) -> tuple[str, int, int, float]:
        """Run to the end from ``checkpoint`` (a state :class:`RunFolder` verified; None: from step 0) on
        ``config.threads`` torch threads; returns (status, final step, rows in metrics.csv, wall time in s)."""
        step = self.restore(checkpoint)
        kept = checkpoint["rows"] if checkpoint else 0
        self.writer = (runlog.MetricsWriter(self.folder.metrics, keep_rows=kept) if self.ranks.is_writer
                       else runlog.RowCounter(kept))
        self.theory_constant(step)  # the first call derives the formula (sympy)
        self.bar = progress_reporter(self.config.steps, initial=step, desc=f"{self.config.optimizer} eta={self.eta:g}",
                                     unit="steps", enabled=progress)  # a bar on a terminal, lines in a log
        self.clock = time.perf_counter()
        try:
            with torch_threads(self.config.threads):
                status, step = self.loop(step)
        finally:
            self.bar.close()
            self.writer.close()
        return status, step, self.writer.rows, self.wall_time()

    def loop(self, step: int) -> tuple[str, int]:
        """observe -> record + checkpoint (on the grid) -> descend, until the end, a divergence or the target."""
        while True:
            loss, accuracy = self.observe(step)
            if step == 0 and loss is not None:
                self.start_loss = loss
            if loss is not None and self.diverged(loss):
                self.record(step, loss, math.nan, measure=False)
                return "diverged", step
            reached = loss is not None and self.config.target_loss is not None and loss <= self.config.target_loss
            if step != self.resumed_at and (self.on_grid(step) or reached):
                self.record(step, loss, accuracy)
                self.checkpoint(step)
            if reached:
                return "target_reached", step
            if step >= self.config.steps:
                return "completed", step
            if not self.descend(step):
                return "diverged", step
            step += 1
            self.bar.update(1)

    def on_grid(self, step: int) -> bool:
        return step % self.config.measure_every == 0 or step == self.config.steps

    def diverged(self, loss: float) -> bool:
        """A loss that is not finite, or above :data:`DIVERGENCE_FACTOR` times the loss at step 0."""
        return not math.isfinite(loss) or (self.start_loss is not None and self.start_loss > 0
                                           and loss > DIVERGENCE_FACTOR * self.start_loss)

    # ------------------------------------------------------------------ the steps of the loop
    def restore(self, state: dict[str, Any] | None) -> int:
        """Load a verified checkpoint ``state`` (None: a new run); the step to continue from."""
        if state is None:
            self.oscillation.observe(flat_parameters(self.model))  # w_0
            return 0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.tracker.load_state_dict(state["tracker"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.batches.set_state(state["batch_rng"])
        self.elapsed, self.resumed_at = float(state["elapsed"]), int(state["step"])
        self.last_row, self.start_loss = self.resumed_at, state["start_loss"]
        self.lr_used = tuple(state["lr_used"]) if state.get("lr_used") is not None else None
        self.oscillation.load_state_dict(state["oscillation"], self.device)
        return self.resumed_at

    def observe(self, step: int) -> tuple[float | None, float]:
        """Full-batch loss and accuracy at theta_step (None, NaN when not evaluated this step).

        Full batch: the same pass also accumulates the gradient that :meth:`descend` applies.  Minibatch:
        the full batch is evaluated only for a row (or at a resumed start when a target is set: the run
        may have been killed after reaching it, before summary.json).
        """
        pass_over = (self.model, self.loss_fn, self.chunks, self.data)
        if self.full_batch:
            self.optimizer.zero_grad(set_to_none=True)
            return full_batch_pass(*pass_over, backward=step < self.config.steps, group=self.ranks.group)
        resumed_start = step == self.resumed_at and self.config.target_loss is not None
        if (self.on_grid(step) and step != self.resumed_at) or resumed_start:
            return full_batch_pass(*pass_over, backward=False, group=self.ranks.group)
        return None, math.nan

    def descend(self, step: int) -> bool:
        """One optimizer step (minibatch: on a fresh random batch); False if the batch loss is not finite."""
        if not self.full_batch:
            idx = torch.randperm(len(self.data), generator=self.batches)[: self.config.batch_size].to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            batch_loss = self.minibatch_loss(idx)
            if self.diverged(float(batch_loss.detach())):
                if self.last_row != step:  # else this step's row is written already
                    self.record(step, float(batch_loss.detach()), math.nan, measure=False)
                return False
            batch_loss.backward()
            reduce_gradients(self.model, self.ranks.group)
        self.lr_used = tuple(float(group["lr"]) for group in self.optimizer.param_groups)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.oscillation.observe(flat_parameters(self.model))
        return True

    def record(self, step: int, loss: float | None, accuracy: float, measure: bool = True) -> None:
        """Append the row of ``step``: loss, accuracy, lr, the threshold and (``measure``) S, S_P, the edge."""
        self.last_row = step
        lr = self.update_lrs(step)[0]
        row: dict[str, Any] = {"step": step, "train_loss": loss, "train_accuracy": accuracy, "lr": lr,
                               "eta_threshold": self.theory_constant(step)}
        if measure:
            has_p = step > 0 or not self.adaptive  # an adaptive optimizer has no P before its first step
            m = self.tracker.measure(self.model, self.loss_fn, self.measured, self.optimizer if has_p else None,
                                     step=max(step, 1), lr=self.update_lrs(step))
            row.update(sharpness=m["sharpness"], preconditioned_sharpness=m["preconditioned_sharpness"],
                       hvps=m["hvps"], converged=m["converged"], eta_S_P=m["eta_S_P"])
            if has_p:
                row["eta_threshold"] = m["edge_constant"]
            row["oscillation"], row["oscillation_total"] = self.oscillation.read()
            row.update(self.batch_measurements(step, has_p))
            if has_p and self.tracker.last_preconditioned is not None:  # the direction of the next rows' windows
                self.oscillation.aim(top_direction(self.optimizer, self.model,
                                                   self.tracker.last_preconditioned.eigenvectors[:, 0],
                                                   lr=self.update_lrs(step)))
            if not (math.isfinite(m["sharpness"]) and (step == 0 or math.isfinite(row["eta_S_P"]))):
                self.tracker.reset()  # an overflowing HVP leaves no usable warm start
            self.bar.set_postfix_str(f"eta*S_P={row['eta_S_P']:.4g} (thr {row['eta_threshold']:.4g}) loss={loss:.3g}")
        row["threshold"] = row["eta_threshold"] / lr if lr > 0 else math.inf  # lr 0: no curvature is unstable
        row["edge_ratio"] = row.get("eta_S_P", math.nan) / row["eta_threshold"]
        row["wall_time"] = self.wall_time()
        self.writer.write(row)

    def batch_measurements(self, step: int, has_p: bool) -> dict[str, float]:
        """The minibatch columns of the row of ``step`` (:data:`deep.training.runlog.BATCH_COLUMNS`) at the run's
        batch size (the whole data set in a full-batch run), P and lr those of the update just taken."""
        forms = ("raw", "preconditioned", "update") if has_p else ("raw", "update")
        size = len(self.data) if self.full_batch else self.config.batch_size
        res = batch_sharpness_forms(self.model, self.loss_fn, self.measured, size, self.optimizer, forms=forms,
                                    samples=BATCH_SAMPLES, tol=BATCH_TOL, seed=batch_seed(self.config.seed, step),
                                    step=max(step, 1), lr=self.update_lrs(step))
        out = {"batch_sharpness": res["raw"].value, "batch_sharpness_stderr": res["raw"].stderr,
               "batch_update_ratio": res["update"].value, "batch_update_ratio_stderr": res["update"].stderr,
               "batch_samples": res["raw"].samples}
        if has_p:
            out.update(eta_BS_P=res["preconditioned"].eta_value, eta_BS_P_stderr=res["preconditioned"].eta_stderr)
        return out

    def update_lrs(self, step: int) -> tuple[float, ...]:
        """Each group's lr in update ``step``, the update just taken (at step 0, the first update's)."""
        if step > 0 and self.lr_used is not None:
            return self.lr_used
        return tuple(float(group["lr"]) for group in self.optimizer.param_groups)

    def theory_constant(self, step: int) -> float:
        """c_t of the t-th update (t = max(step, 1)) from the live optimizer's first param group at that
        update's lr, without reading its state (rows before the first update, rows of a diverged step)."""
        name, hyper = identify_group(self.optimizer, self.optimizer.param_groups[0], self.update_lrs(step)[0])
        return threshold_constant(name, step=max(step, 1), **hyper)

    def minibatch_loss(self, idx: Tensor) -> Tensor:
        """The mean loss over the minibatch ``idx``; with several ranks each computes its share (weighted
        by its size) and the returned value is the whole batch's, the gradient summed by the caller."""
        if self.ranks.group is None:
            return self.loss_fn(self.model(self.data.X[idx]), self.data.y[idx])
        part = idx[shard_slice(len(idx), self.ranks.rank, self.ranks.world)]
        local = self.loss_fn(self.model(self.data.X[part]), self.data.y[part]) * (len(part) / len(idx))
        total = reduce_sum(local.detach().clone(), self.ranks.group)
        return local + (total - local.detach())  # the batch's value, this rank's gradient

    def checkpoint(self, step: int) -> None:
        """Save everything a resume needs, atomically, after the row of ``step`` (fsynced before it), with
        the proofs of :class:`RunFolder` (rank 0 only)."""
        if not self.ranks.is_writer:
            return
        self.folder.save_checkpoint({
            "step": step, "start_loss": self.start_loss, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "tracker": self.tracker.state_dict(), "torch_rng": torch.get_rng_state(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "batch_rng": self.batches.get_state(), "elapsed": self.wall_time(),
            "oscillation": self.oscillation.state_dict(), "lr_used": self.lr_used,
        }, self.config.to_dict(), self.writer.rows)

    def wall_time(self) -> float:
        """Training wall time in seconds, summed over every resume."""
        return self.elapsed + time.perf_counter() - self.clock


#: The minibatch columns of a row: at most this many batches, fewer once every relative standard error is
#: at most :data:`BATCH_TOL` (:func:`deep.measure.batch.batch_sharpness_forms`).
BATCH_SAMPLES = 64
BATCH_TOL = 0.05


def full_batch_pass(model: torch.nn.Module, loss_fn, chunks: list, data: Dataset, backward: bool,
                    group: Any = None) -> tuple[float, float]:
    """Full-batch loss L = sum_i (n_i/N) L_i and accuracy; with ``backward`` also accumulate grad L in ``.grad``.

    ``chunks`` cover the full batch ``data``, or, with a process ``group``, this rank's shard of it:
    then the loss, the hits and the gradient are summed over the ranks (every rank gets the full batch's).
    """
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
    if group is not None:
        device = next(model.parameters()).device  # NCCL reduces tensors on the GPU only
        totals = reduce_sum(torch.tensor([loss_sum, float(hits)], dtype=torch.float64, device=device), group)
        loss_sum, hits = float(totals[0]), int(totals[1])
        if backward:
            reduce_gradients(model, group)
    accuracy = hits / count(data.y) if data.task != "regression" else math.nan
    return loss_sum, accuracy


def reduce_gradients(model: torch.nn.Module, group: Any) -> None:
    """Sum every parameter's ``.grad`` over the ranks of ``group`` (one all-reduce of a flat buffer)."""
    if group is None:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    reduce_sum(flat, group)
    for p, part in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(part.view_as(p.grad))
