"""The files of a run folder: ``config.json``, ``metrics.csv``, ``checkpoint.pt``, ``summary.json``.

* ``config.json``: the :class:`deep.TrainConfig`, the resolved hyperparameters, the git hash, the
  command, versions, and a log of every resume.
* ``metrics.csv`` is appended one row per measurement, flushed and fsynced at once, so a killed run
  keeps every row it wrote and a checkpoint never covers a row the disk does not hold.  Floats are
  written with ``repr`` (exact round trip).
* ``checkpoint.pt`` is written atomically (:func:`aeos_base.files.atomic_write`): a kill leaves either
  the old or the new checkpoint whole.  Its first line holds the length and SHA-256 of the rest, the
  bytes of ``torch.save`` (every tensor, RNG state and number of the checkpoint), checked before anything
  is loaded: a corrupted or truncated checkpoint is refused, naming the file, never resumed.
* ``summary.json`` is written last; its presence means the run is over (status and final step).

How a folder proves what it holds (config, versions, row hashes, one writer) is
:mod:`deep.training.run_folder`'s job.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Mapping

from aeos_base import files

METRICS = "metrics.csv"
CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"

#: Columns of ``metrics.csv``.  The row of step t is written after t updates, before update t + 1; it
#: describes theta_t and the update t that produced it:
#:
#: * ``step`` t; ``train_loss`` and ``train_accuracy`` at theta_t, full batch; ``sharpness``
#:   S = lambda_max(H(theta_t));
#: * ``lr``: the rate of the update just taken, t (the first param group's; at t = 0, where no update has
#:   been taken, the rate of the first update), so that lr, P_t and c_t all describe update t;
#: * ``preconditioned_sharpness`` S_P = lambda_max(P_t^-1/2 (H + W) P_t^-1/2) with P_t the preconditioner
#:   of the update just taken, t (Adam: sqrt(v_t / (1 - beta2^t)) + eps), and W the coupled weight decay
#:   (S_P = S + wd when P = I); NaN at t = 0 for an adaptive optimizer, which has no P yet;
#: * ``eta_S_P`` = lambda_max(D^1/2 (H + W) D^1/2), D = lr_t / P_t, i.e. lr S_P: update t's rate with update
#:   t's P, frozen (:func:`deep.measure_edge`); NaN where S_P is; 0 when the update's lr was 0;
#: * ``eta_threshold`` c_t, the dimensionless threshold of update t, t = max(step, 1), read from the live
#:   optimizer (:func:`deep.measure_edge`: Adam's (2 + 2 beta1)(1 - beta1^t)/(1 - beta1), 38 at beta1 = 0.9
#:   once the bias correction has faded; NAdam's schedule at t; 2 for gd), from the first group's
#:   hyperparameters in a row without a measurement; ``threshold`` = eta_threshold / lr, the threshold on
#:   S_P in units of 1/lr (inf when lr is 0: no curvature makes a step of 0 unstable); ``edge_ratio`` = eta_S_P / eta_threshold (1 at the edge);
#: * ``hvps`` used by the measurement, ``converged`` (1/0: Lanczos met its tolerance) and ``wall_time``,
#:   the cumulative training time in seconds;
#: * ``oscillation``: the rms over every step s since the previous row of
#:   |<theta_s - 2 theta_(s-1) + theta_(s-2), u/|u|>| / 4, with u the top eigenvector of P^-1 (H + W) measured
#:   at the previous row (:mod:`deep.measure.oscillation`): the amplitude, in parameter units, of the period-2
#:   oscillation along it, which a central flow predicts (NaN in a row whose window has no step >= 2, or
#:   before the first measured u); ``oscillation_total``: the rms of the whole length
#:   |theta_s - 2 theta_(s-1) + theta_(s-2)| / 4 over the same steps, whatever its direction.
#:
#: Then the minibatch quantities, :data:`BATCH_COLUMNS` (:func:`deep.batch_sharpness`, from random batches of the
#: run's batch size b drawn as the run draws its own; in a full-batch run b = N, where they are exact):
#:
#: * ``batch_sharpness`` BS = E_B[g_B^T H_B g_B] / E_B[|g_B|^2] at theta_t (loss units per squared parameter
#:   unit; compare 2 / lr) and ``batch_sharpness_stderr``, its standard error;
#: * ``eta_BS_P`` = lr * BS_P, BS_P = E_B[gh^T P^-1 (H_B + W) P^-1 gh] / E_B[gh^T P^-1 gh] (gh = g_B + W theta),
#:   with update t's lr and P as for ``eta_S_P`` (compare ``eta_threshold``), and ``eta_BS_P_stderr``; NaN where
#:   ``eta_S_P`` is;
#: * ``batch_update_ratio`` = E_B[d^T (H_B + W) d] / E_B[d^T gh] with d the step the optimizer would take next
#:   on batch B, i.e. eta E[s^T H_B s] / E[s^T g_B] along its own step s (compare 2; the one column about
#:   update t + 1, at its lr), and its ``batch_update_ratio_stderr``;
#: * ``batch_samples``: the batches drawn (1 in a full-batch run; sampling stops at a relative standard
#:   error of :data:`deep.training.train.BATCH_TOL` or at :data:`deep.training.train.BATCH_SAMPLES` batches).
#:
#: A row written because the run diverged at step t holds the loss that stopped it (in a minibatch run,
#: that batch's loss at theta_t), lr and the threshold, and NaN for the accuracy and every measurement.
#:
#: **Which batch.**  The loss, the accuracy, H and so S, S_P, eta_S_P and edge_ratio of a row are of the
#: *full batch* (the whole training set of the run, or the ``data`` a :class:`deep.Monitor` is given),
#: whatever batch the optimizer steps on (:data:`FULL_BATCH`).  In a minibatch run P comes from minibatches
#: (the optimizer's state, built from the minibatch gradients it stepped on), so edge_ratio is the minibatch
#: optimizer's frozen update against the full-batch curvature, the quantity of the paper's minibatch
#: experiment.  The minibatch numbers are :data:`BATCH_COLUMNS` and the ``train_loss`` of a diverged row of a
#: minibatch run (:data:`MINIBATCH`).
#:
#: A ``metrics.csv`` written before the minibatch columns existed lacks them; :func:`read_metrics` gives NaN there.
BATCH_COLUMNS = ("batch_sharpness", "batch_sharpness_stderr", "eta_BS_P", "eta_BS_P_stderr", "batch_update_ratio",
                 "batch_update_ratio_stderr", "batch_samples")
COLUMNS = ("step", "train_loss", "train_accuracy", "lr", "sharpness", "preconditioned_sharpness", "threshold",
           "eta_S_P", "eta_threshold", "edge_ratio", "hvps", "converged", "wall_time", "oscillation",
           "oscillation_total", *BATCH_COLUMNS)

#: Columns computed over the full batch (see "Which batch" above).
FULL_BATCH = ("train_loss", "train_accuracy", "sharpness", "preconditioned_sharpness", "eta_S_P", "edge_ratio")
#: Where a minibatch number can appear: the minibatch columns, and the loss of a minibatch run's diverged row.
MINIBATCH = (*BATCH_COLUMNS, "train_loss (the row of a minibatch run that diverged)")

_INTS = ("step", "hvps", "converged", "batch_samples")


def _format(value: Any) -> str:
    if value is None:
        return "nan"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _parse(name: str, text: str) -> float | int:
    if name in _INTS:
        try:
            return int(text)
        except ValueError:
            return math.nan  # type: ignore[return-value]
    return float(text)


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` (or of the run folder holding it) as dicts of numbers.

    ``step``, ``hvps``, ``converged`` and ``batch_samples`` are ints, the rest floats (NaN where not
    measured).  A half-written last line (a run killed mid-write) is ignored.  A file written before the
    minibatch columns (:data:`BATCH_COLUMNS`) existed reads with NaN in them.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.DictReader(io.StringIO(text)))
    absent = {c: math.nan for c in BATCH_COLUMNS}
    return [{**absent, **{k: _parse(k, v) for k, v in row.items()}} for row in rows]


class MetricsWriter:
    """Appends rows to ``metrics.csv``, each flushed and fsynced; on open keeps the first rows only."""

    def __init__(self, path: str | os.PathLike, keep_rows: int = 0):
        """Open ``path``, keeping its header and first ``keep_rows`` lines byte for byte (their hash was
        checked by the caller) and dropping the rest (rows after the last checkpoint, a torn line)."""
        self.path = Path(path)
        lines = [",".join(COLUMNS)]
        if keep_rows:
            lines = self.path.read_text().split("\n")[: keep_rows + 1]
        files.atomic_write_text(self.path, "\n".join(lines) + "\n")
        self.rows = keep_rows
        self._fh = open(self.path, "a", newline="")

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (missing columns become NaN), flushed and fsynced to the disk."""
        self._fh.write(",".join(_format(row.get(c)) for c in COLUMNS) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows += 1

    def close(self) -> None:
        self._fh.close()


class RowCounter:
    """A :class:`MetricsWriter` that writes nothing: what ranks other than 0 keep (they compute the same
    rows, rank 0 writes them)."""

    def __init__(self, rows: int = 0) -> None:
        self.rows = rows

    def write(self, row: Mapping[str, Any]) -> None:
        self.rows += 1

    def close(self) -> None:
        pass


#: The first line of ``checkpoint.pt``: this tag, the payload's length and its SHA-256; the payload (the bytes
#: of ``torch.save``) follows the newline.
CHECKPOINT_TAG = b"aeos-checkpoint 1"
_HEADER = re.compile(rb"aeos-checkpoint 1 bytes=(\d+) sha256=([0-9a-f]{64})")
_RECOVER = "delete it to restart the run from step 0, or restore a copy of it"


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """``torch.save`` of ``state`` onto ``path`` behind a one-line header holding the payload's length and
    SHA-256, written atomically in one file (a kill leaves the old checkpoint or the new one, each whole
    with its digest)."""
    import torch  # here, not at the top: reading a finished run's records imports no torch

    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    payload = buffer.getvalue()
    header = CHECKPOINT_TAG + f" bytes={len(payload)} sha256={hashlib.sha256(payload).hexdigest()}\n".encode()

    def write(fh) -> None:
        fh.write(header)
        fh.write(payload)

    files.atomic_write(path, write)


def _payload(path: Path, blob: bytes) -> bytes:
    """The payload of a checkpoint file's bytes once its length and SHA-256 match the header; RecordError
    naming the file, saying what is wrong and how to recover, otherwise."""
    from aeos_base.command import RecordError

    end = blob.find(b"\n", 0, 200)
    header = _HEADER.fullmatch(blob[:end]) if end >= 0 else None
    if header is None:
        if blob.startswith(CHECKPOINT_TAG[:15]):
            raise RecordError(f"{path} is corrupted (its header is damaged); {_RECOVER}")
        raise RecordError(f"{path} cannot be read as a checkpoint (it has no aeos-checkpoint header: not a "
                          f"checkpoint of aeos train, or one written before checkpoints carried a digest); {_RECOVER}")
    payload, length = blob[end + 1:], int(header.group(1))
    if len(payload) != length:
        raise RecordError(f"{path} is corrupted (truncated or extended: {len(payload)} bytes where its header "
                          f"says {length}); {_RECOVER}")
    if hashlib.sha256(payload).hexdigest() != header.group(2).decode():
        raise RecordError(f"{path} is corrupted (its bytes do not match the SHA-256 written with them); {_RECOVER}")
    return payload


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The dict saved by :func:`save_checkpoint` (tensors on CPU), after its bytes are proven against the
    SHA-256 in its header; RecordError naming the file when they are not (corrupted, truncated), or when it
    cannot be read (not a checkpoint)."""
    import torch

    from aeos_base.command import RecordError

    path = Path(path)
    payload = _payload(path, path.read_bytes())
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors: a payload this version of torch cannot read
        detail = " ".join(str(err).split())[:200] or "no detail"
        raise RecordError(f"{path} cannot be read as a checkpoint ({type(err).__name__}: {detail})") from None
    if not isinstance(state, dict):
        raise RecordError(f"{path} is not a checkpoint of aeos train (it holds a {type(state).__name__})")
    return state


def git_hash(start: str | os.PathLike | None = None) -> str | None:
    """The commit hash of the checkout holding this package (``None`` if not a git checkout/no commit)."""
    where = Path(start) if start is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
