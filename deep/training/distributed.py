"""Training runs over several processes and GPUs: where this process stands, and how ranks are started.

A training run's full batch is split over the ranks of a ``torch.distributed`` process group, each rank
holding a contiguous shard (:func:`shard_slice`); the sums over the shards are
:mod:`deep.curvature.reductions`' job, and every measurement of ``deep`` takes a rank's shard as a
:class:`deep.Shard`.  This module holds the rest: :func:`join` (this process's :class:`Ranks`, initialising
the default process group from the launcher's environment), :func:`broadcast`, and the launching.

``aeos train --nproc N`` starts N local ranks through torch's own launcher (``torch.distributed``
elastic: :func:`launch`), gloo on CPU and NCCL on CUDA (one GPU per rank); ``torchrun ... -m deep.cli
-- train ...`` across nodes runs the same code, and the figures' runs start theirs as ``python -m
deep.training.rank CONFIG_JSON OUT_DIR`` (:mod:`deep.training.rank`).  Rank 0 alone writes the run folder.
The training loop (:mod:`deep.training.train`) imports this module, never the other way round.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NoReturn, Sequence

import torch
import torch.distributed as dist

from aeos_base import checks


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: ``rank`` of ``world`` processes, its ``local_rank`` on the node, the
    ``group`` to reduce over (None for one process) and the ``device`` it computes on."""

    rank: int
    world: int
    local_rank: int
    group: Any
    device: torch.device

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes files."""
        return self.rank == 0


def join(nproc: int, device: str = "auto") -> Ranks:
    """This process's place among ``nproc`` ranks, initialising the default process group from the
    launcher's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...) when ``nproc`` > 1: gloo on the
    CPU, NCCL with one GPU per rank (``cuda:LOCAL_RANK``).  ValueError when the environment's world size
    is not ``nproc`` (a run's process count is part of its config)."""
    nproc = checks.integer("nproc", nproc, low=1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if nproc == 1 and world == 1:
        return Ranks(0, 1, 0, None, _device(device, 0))
    if world != nproc:
        raise ValueError(f"nproc is {nproc} but this process runs among WORLD_SIZE={world}: start it with "
                         f"`aeos train --nproc {nproc}` or `torchrun --nproc-per-node ... -m deep.cli -- train ...`")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    target = _device(device, local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    if target.type == "cuda":
        torch.cuda.set_device(target)
    return Ranks(dist.get_rank(), dist.get_world_size(), local, dist.group.WORLD, target)


@contextmanager
def session(nproc: int, device: str = "auto") -> Iterator[Ranks]:
    """:func:`join` for the duration of a ``with`` block; a process group it initialised is destroyed at
    the end (a gloo group left to the interpreter's exit can abort the process after its work is done)."""
    owned = not (dist.is_available() and dist.is_initialized())
    ranks = join(nproc, device)
    try:
        yield ranks
    finally:
        if owned and ranks.group is not None:
            dist.destroy_process_group()


def _device(device: str, local_rank: int) -> torch.device:
    """The device of local rank ``local_rank``: "auto" and "cuda" give each rank its own GPU, cuda:LOCAL_RANK."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(device)


def shard_slice(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` examples (the first n % world ranks take one more)."""
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (1 if rank < extra else 0))


def broadcast(value: Any, ranks: Ranks) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object; returned as is for one process)."""
    if ranks.group is None:
        return value
    box = [value if ranks.rank == 0 else None]
    dist.broadcast_object_list(box, src=0, group=ranks.group)
    return box[0]


#: Set in the ranks that :func:`launch` starts: the launcher reports a rank's death, its peers stay quiet.
LAUNCHED = "AEOS_LAUNCHED_RANK"


def launch(arguments: Sequence[str], nproc: int) -> int:
    """Run ``python <arguments>`` as ``nproc`` local ranks through torch's elastic launcher (what
    ``torchrun --standalone --nproc-per-node nproc`` does) and return their exit status: 0 when every rank
    succeeded, else the first failed rank's status.  A rank's own error is one line on stderr from that
    rank; a rank killed by a signal is reported here, in one line (its peers, cut off, stay quiet)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nproc = checks.integer("nproc", nproc, low=1)
    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the ranks print their own one-line errors
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2,
                          start_method="spawn")
    os.environ[LAUNCHED] = "1"  # inherited by the ranks
    try:
        elastic_launch(config, sys.executable)(*arguments)
    except ChildFailedError as err:
        killed = sorted((rank, f) for rank, f in err.failures.items() if f.exitcode < 0)
        if killed:
            rank, failure = killed[0]
            print(f"error: rank {rank} of {nproc} was killed by {failure.signal_name()}; the other ranks were "
                  "stopped (a run folder keeps its last checkpoint: the same command resumes it)", file=sys.stderr)
            return 1
        return next((f.exitcode for _, f in sorted(err.failures.items()) if f.exitcode > 0), 1)
    finally:
        os.environ.pop(LAUNCHED, None)
    return 0


def lost_peer(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another rank is gone (gloo and NCCL raise
    ``DistError`` subclasses or plain RuntimeErrors naming their transport)."""
    if isinstance(err, dist.DistError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        mark in text for mark in ("gloo", "NCCL", "Connection reset", "Connection closed", "Broken pipe"))


def run_as_rank(work: Callable[[], int]) -> NoReturn:
    """Do this rank's whole job, ``work()`` (its exit status), report its errors as every ``aeos``
    command does (one line on stderr; :func:`aeos_base.command.dispatch`), then end the process with
    that status through ``os._exit``, after flushing.

    One line for the whole run: bad input and untrustworthy records (ValueError, RecordError) are raised
    alike on every rank, so ranks other than 0 stay quiet about them; a collective cut off by a dead
    peer is left to :func:`launch` to report (under ``torchrun``, each rank says it lost its peers).

    Skipping the interpreter's finalisation is deliberate: gloo's worker threads may release the last
    tensors of a finished all-reduce while Python shuts down, and a thread that then needs the GIL
    aborts the process (SIGABRT, "terminate called without an active exception") after its work is
    done, even with the process group destroyed (a race in torch, reproduced here in about one launch
    in four).  Every file a run writes is closed and fsynced before ``work`` returns."""
    import traceback
    import warnings

    from aeos_base import command

    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:
        warnings.simplefilter("ignore")  # rank 0 warns for all

    def quiet_work() -> int:
        try:
            return work()
        except Exception as err:
            if lost_peer(err):
                if os.environ.get(LAUNCHED):
                    return command.EXIT_FAILED
                command.fail(f"rank {rank} lost contact with the other ranks: {str(err).splitlines()[0]}",
                             command.EXIT_FAILED)
            if rank > 0 and isinstance(err, ValueError):
                return command.EXIT_BAD_INPUT
            if rank > 0 and isinstance(err, command.RecordError):
                return command.EXIT_FAILED
            raise

    code = command.EXIT_FAILED
    try:
        code = command.dispatch(argparse.Namespace(handler=lambda _: quiet_work()))
    except SystemExit as exit_:  # command.fail: the one-line error is printed already
        code = exit_.code if isinstance(exit_.code, int) else command.EXIT_FAILED
    except BaseException:  # AEOS_TRACEBACK=1: dispatch re-raised an internal error for its traceback
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
