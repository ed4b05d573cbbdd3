"""The edge of stability measured inside your own training loop: :class:`Monitor`.

A researcher's loop (their model, loss, data, optimizer and scheduler) calls ``monitor.step()`` after every
``optimizer.step()`` (and ``scheduler.step()``).  Every ``every``-th update the monitor measures, at the
parameters theta_t the update left,

* ``sharpness`` S = lambda_max(H) (every ``sharpness_every``-th measurement; nan in between), and the
  preconditioned sharpness S_P = lambda_max(P^-1/2 (H + W) P^-1/2) with P the denominator of the update
  just taken (:class:`deep.SharpnessTracker`, warm-started from the previous call's eigenvectors, both solves
  through one kept gradient graph);
* the edge of that update (:mod:`deep.measure.edge`): the ``lr`` it used (remembered as the step ran, so a
  scheduler stepped since does not matter; lr 0, the last step of a cosine schedule to 0, gives eta_S_P = 0),
  ``eta_S_P`` = lr S_P, the threshold constant ``eta_threshold`` c_t of that step, ``threshold`` = c_t / lr
  and ``edge_ratio`` = eta_S_P / c_t (1 at the edge);
* the full-batch ``train_loss`` at theta_t (summed while the graph is built: no extra pass), and the
  period-2 ``oscillation`` of the iterates (:mod:`deep.measure.oscillation`; the monitor keeps the two
  iterates before each measurement, a copy of the parameters, which is why it is called every step).

Each row has the columns of ``metrics.csv`` (:data:`deep.training.runlog.COLUMNS`; ``train_accuracy`` is
nan, since the monitor knows no labels' meaning, so are the minibatch columns, since it knows no batch size
(:func:`deep.batch_sharpness` measures them in a user's loop), and ``wall_time`` counts seconds since the
monitor was made).  Rows are kept in :attr:`Monitor.rows`, appended to ``csv`` (written by the run folder's own writer,
flushed row by row, readable by :func:`deep.read_metrics`) and, with ``tensorboard``, logged as scalars
``aeos/<column>`` through ``torch.utils.tensorboard`` (needs the ``tensorboard`` package: ``pip install
aeos[tensorboard]``).  :attr:`Monitor.seconds` and :attr:`Monitor.overhead` say what measuring cost.

The step t of a row is the optimizer's own count (``state["step"]``) when it keeps one, else the number of
``step()`` calls.  Every quantity is full batch over ``data`` (any form :mod:`deep.curvature.inputs` takes).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aeos_base import checks

from ..curvature.eigen import DEFAULT_MAX_ITER
from ..curvature.inputs import LossFn, as_data, check_loss, check_model
from ..curvature.preconditioners import optimizer_step
from ..measure.oscillation import flat_parameters, period_two_amplitude, top_direction
from ..measure.tracker import SharpnessTracker
from .runlog import BATCH_COLUMNS, MetricsWriter


class Monitor:
    """Measure S, S_P and the edge every ``every`` updates of your own loop (module docstring).

    Args:
        model, loss_fn, data: the full-batch loss L(theta) = sum_i (n_i/N) loss_fn(model(x_i), y_i).
        optimizer: the ``torch.optim`` optimizer the loop steps (its P, lr, betas and step count are read).
        every: measure after every this many updates (t = every, 2 every, ...), >= 1.
        sharpness_every: solve for S at every this many-th measurement (1: always; 0: never, S stays nan);
            S_P and the edge are measured every time.
        csv: path of a CSV file of rows (the columns of ``metrics.csv``; created, or replaced); None: none.
        tensorboard: a log directory or a ``torch.utils.tensorboard.SummaryWriter``; None: none.
        tol, max_iter, seed, strategy: of the warm-started Lanczos solves (:class:`SharpnessTracker`).  The
            relative residual ``tol`` = 1e-2 puts an eigenvalue within about tol^2 lambda^2 / gap of the true one:
            on the README's GPT, eta * S_P within 1.4e-4 (median; 4.8e-4 at most) of a tol = 1e-7 solve, for 28%
            fewer products than tol = 1e-3 (``benchmarks/real_loop.py``).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Any, optimizer: torch.optim.Optimizer, *,
                 every: int = 100, sharpness_every: int = 1, csv: str | os.PathLike | None = None,
                 tensorboard: Any = None, tol: float = 1e-2, max_iter: int = DEFAULT_MAX_ITER, seed: int = 0,
                 strategy: str = "auto") -> None:
        import deep.measure.last_step  # noqa: F401  (the lr of each update, remembered as it runs)

        self.model, self.loss_fn, self.data = check_model(model), check_loss(loss_fn), as_data(data)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.every = checks.integer("every", every, low=1)
        self.sharpness_every = checks.integer("sharpness_every", sharpness_every, low=0)
        self.tracker = SharpnessTracker(tol=tol, max_iter=max_iter, seed=seed, strategy=strategy)
        self.rows: list[dict[str, Any]] = []
        self.calls, self.measurements, self.seconds = 0, 0, 0.0
        self.started = time.perf_counter()
        self.recent: dict[int, Tensor] = {}  # theta_s of the two updates s before the next measurement
        self._csv = None
        if csv is not None:
            Path(csv).parent.mkdir(parents=True, exist_ok=True)
            self._csv = MetricsWriter(csv)
        self._board = _summary_writer(tensorboard)

    # ------------------------------------------------------------------ the loop's calls
    def step(self) -> dict[str, Any] | None:
        """Call after each ``optimizer.step()`` (and ``scheduler.step()``): measure when the update's count t
        is a multiple of ``every`` and return the row; else keep theta_t if a measurement is two updates away
        (for the oscillation) and return None."""
        self.calls += 1
        t = self._count()
        if t % self.every == 0:
            return self.measure()
        if (t + 1) % self.every == 0 or (t + 2) % self.every == 0:
            self.recent = {s: w for s, w in self.recent.items() if s >= t - 1}
            self.recent[t] = flat_parameters(self.model)
        return None

    def measure(self) -> dict[str, Any]:
        """Measure now, at the update just taken; the row (also kept, written and logged)."""
        start = time.perf_counter()
        t = self._count()
        solve_s = self.sharpness_every > 0 and self.measurements % self.sharpness_every == 0
        m = self.tracker.measure(self.model, self.loss_fn, self.data, self.optimizer, step=t,
                                 sharpness=solve_s, loss=True)
        lr, constant = m["lr"], m["edge_constant"]
        oscillation = self._oscillation(t)
        row = {"step": t, "train_loss": m["loss"], "train_accuracy": math.nan, "lr": lr,
               "sharpness": m["sharpness"], "preconditioned_sharpness": m["preconditioned_sharpness"],
               "threshold": constant / lr if lr > 0 else math.inf, "eta_S_P": m["eta_S_P"],
               "eta_threshold": constant, "edge_ratio": m["edge_ratio"], "hvps": m["hvps"],
               "converged": m["converged"], "oscillation": oscillation[0], "oscillation_total": oscillation[1],
               **dict.fromkeys(BATCH_COLUMNS, math.nan)}
        self.measurements += 1
        self.seconds += time.perf_counter() - start
        row["wall_time"] = time.perf_counter() - self.started
        self.rows.append(row)
        if self._csv is not None:
            self._csv.write(row)
        if self._board is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._board.add_scalar(f"aeos/{key}", float(value), t)
        return row

    def close(self) -> None:
        """Close the CSV file and flush the TensorBoard writer."""
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._board is not None:
            self._board.flush()

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ what it reports
    @property
    def overhead(self) -> float:
        """Seconds spent measuring per second of everything else since the monitor was made (0.1: the
        measurements added 10% to the loop's time)."""
        other = time.perf_counter() - self.started - self.seconds
        return self.seconds / other if other > 0 else math.inf

    def __repr__(self) -> str:
        last = self.rows[-1] if self.rows else None
        edge = f", last step {last['step']}: eta_S_P {last['eta_S_P']:.4g}, ratio {last['edge_ratio']:.3g}" if last else ""
        return (f"Monitor(every={self.every}, {len(self.rows)} rows{edge}, {self.seconds:.1f} s measuring)")

    # ------------------------------------------------------------------ internals
    def _count(self) -> int:
        counted = optimizer_step(self.optimizer, self.model) if self.optimizer.state else None
        return counted if counted is not None else self.calls

    def _oscillation(self, t: int) -> tuple[float, float]:
        pre = self.tracker.last_preconditioned
        if t - 1 not in self.recent or t - 2 not in self.recent or pre is None:
            return math.nan, math.nan
        u = top_direction(self.optimizer, self.model, pre.eigenvectors[:, 0])
        iterates = (flat_parameters(self.model), self.recent[t - 1], self.recent[t - 2])
        return period_two_amplitude(*iterates, u), period_two_amplitude(*iterates)


def _summary_writer(tensorboard: Any):
    """A ``SummaryWriter`` for ``tensorboard`` (a log directory, or a writer given as is); None for None."""
    if tensorboard is None or hasattr(tensorboard, "add_scalar"):
        return tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ValueError("tensorboard= needs the tensorboard package (pip install aeos[tensorboard]); "
                         f"{err}") from None
    return SummaryWriter(log_dir=str(tensorboard))
