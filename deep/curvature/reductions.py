"""Sums over the ranks of a ``torch.distributed`` process group that hold the shards of a full batch.

The paper's experiments are full batch: every step and every Hessian-vector product touches the whole
training set.  Split it over the W ranks of a process group, rank r holding the examples of its shard:
every full-batch quantity is a size-weighted sum over chunks, so each rank sums over its own chunks and
one all-reduce adds the shards,

    L = (1/N) sum_r sum_{i in r} n_i L_i,    g = (1/N) sum_r sum_{i in r} n_i g_i,    H v likewise,

with N = sum of every rank's n_i (itself all-reduced).  Every rank receives the same reduced numbers,
so parameters, optimizer state and Lanczos vectors stay replicated and in step (same seed, same
reduction): the ranks never drift.  The communication per Hessian-vector product is one all-reduce of
the parameter count (4 bytes each in float32) plus one scalar.

In your own script (under ``torchrun`` or any initialised process group), wrap each rank's shard in
:class:`deep.Shard` (:mod:`deep.curvature.inputs`) and every measurement of ``deep`` returns the full-batch value on every rank::

    shard = deep.Shard(my_chunks)                       # this rank's (X, y) chunks; group: the world
    S = deep.sharpness(model, loss_fn, shard)           # lambda_max of the full-batch H, on every rank

Starting the ranks of a training run is :mod:`deep.training.distributed`'s job.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .inputs import CheckedData, Shard


def group_of(data: Any) -> Any:
    """The process group over which ``data``'s chunk sums are to be reduced (None: one process)."""
    if isinstance(data, CheckedData):
        data = data.data
    return data.group if isinstance(data, Shard) else None


def reduce_sum(t: Tensor, group: Any) -> Tensor:
    """``t`` summed over the ranks of ``group`` in place (unchanged when ``group`` is None)."""
    if group is not None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def reduce_mean(acc: Tensor, count: int, group: Any) -> Tensor:
    """sum_i n_i x_i / sum_i n_i over every rank's chunks, from each rank's ``acc`` = sum n_i x_i and its
    ``count`` = sum n_i (in place; one process: ``acc / count``)."""
    if group is None:
        return acc.div_(count)
    total = torch.tensor([float(count)], dtype=torch.float64, device=acc.device)
    reduce_sum(total, group)
    return reduce_sum(acc, group).div_(float(total.item()))
