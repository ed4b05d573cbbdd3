"""What a user passes, made uniform: data, loss function, dtype and device, train/eval mode.

Data (the full batch over which L(theta) is taken) may be

* an iterable of ``(inputs, targets)`` chunks (a list, a ``torch.utils.data.DataLoader``; curvlinops'
  convention); chunk i of n_i examples enters the full-batch loss with weight n_i / N, so a DataLoader's
  short last batch is weighted correctly;
* a :class:`deep.Dataset` (split into chunks of at most :data:`DATASET_CHUNK` examples);
* a single ``(X, y)`` pair of tensors (a tuple or a list of two);
* a :class:`Shard` (``deep.Shard``): this rank's chunks of a full batch split over the ranks of a
  ``torch.distributed`` process group, whose sums :mod:`deep.training.distributed` all-reduces.

Floating-point inputs and targets are cast to the model's dtype and every tensor is moved to its
device; integer tensors (class indices, token ids) keep their dtype: integer *inputs* are never made
floats (they may be the token ids of an embedding), so a model that needs floats refuses them at the
door.  numpy arrays are converted (``torch.as_tensor``) and then follow the same rules.

Every public measurement checks its inputs once before computing anything
(:func:`deep.curvature.door.check_measurement_inputs`: shapes, finiteness, the loss of the first chunk)
and hands the checked data on as :class:`CheckedData`, which the operators it builds do not check again.

``loss_fn(outputs, targets)`` must return the *mean* over its chunk: a function (``deep.mse``,
``torch.nn.functional.mse_loss``, ...) or a ``torch.nn`` loss module with ``reduction="mean"``
(``reduction="sum"`` or ``"none"`` is refused, since the size-weighted sum over chunks would be wrong).

Curvature is that of one fixed function of theta, so modules whose output depends on the mode
(Dropout, BatchNorm, ...) are evaluated in eval mode during a measurement (:func:`evaluation`),
and every module's mode is restored afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

LossFn = Callable[[Any, Any], Tensor]
Data = Iterable[tuple[Any, Any]]

#: A deep.Dataset is measured in chunks of at most this many examples (as the trainer's default).
DATASET_CHUNK = 1000


def check_loss(loss_fn: LossFn) -> LossFn:
    """``loss_fn`` itself if it averages over its chunk; ValueError otherwise."""
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable (outputs, targets) -> mean loss; got {type(loss_fn).__name__}")
    reduction = getattr(loss_fn, "reduction", "mean") if isinstance(loss_fn, nn.Module) else "mean"
    if reduction != "mean":
        raise ValueError(f"loss_fn must average over its chunk (reduction='mean'); got a "
                         f"{type(loss_fn).__name__} with reduction={reduction!r}")
    return loss_fn


def check_model(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return model


def _is_array(x: Any) -> bool:
    return isinstance(x, (Tensor, np.ndarray)) and x.ndim > 0


def _is_pair_of_tensors(data: Any) -> bool:
    """One (X, y) pair: a tuple or list of two tensors (or numpy arrays); a list of chunks holds pairs, never
    tensors, so the two cannot be confused.  Their first dimensions are compared at the door."""
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(_is_array(t) for t in data)


class CheckedData:
    """Data that passed :func:`deep.curvature.door.check_measurement_inputs` for ``model`` and ``loss_fn``:
    the chunks of :func:`as_data` (a :class:`Shard` included), re-iterable.  Operators built on it for the
    same model and loss skip the door, so a measurement that builds several operators checks once."""

    def __init__(self, data: Data, model: nn.Module, loss_fn: LossFn) -> None:
        self.data, self.model, self.loss_fn = data, model, loss_fn

    def __iter__(self) -> Iterator:
        return iter(self.data)

    def checked_for(self, model: nn.Module, loss_fn: LossFn) -> bool:
        """True when these chunks were checked with this very model and loss function."""
        return self.model is model and self.loss_fn is loss_fn


class Shard:
    """This rank's shard of the full batch: re-iterable ``(X, y)`` chunks (anything :func:`as_data`
    takes) and the process ``group`` whose ranks hold the other shards (default: the whole world)."""

    def __init__(self, data: Any, group: Any = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("a Shard needs an initialised torch.distributed process group (run under torchrun "
                             "or call torch.distributed.init_process_group first)")
        self.data = as_data(data)
        self.group = group if group is not None else dist.group.WORLD

    def __iter__(self) -> Iterator:
        return iter(self.data)


def as_data(data: Any) -> Data:
    """The full batch as a re-iterable of ``(inputs, targets)`` chunks (see the module docstring)."""
    if isinstance(data, (Shard, CheckedData)):
        return data
    if callable(getattr(data, "chunks", None)) and hasattr(data, "X") and hasattr(data, "y"):
        return data.chunks(DATASET_CHUNK)  # a deep.Dataset (deep.training.data), known by what it offers
    if _is_pair_of_tensors(data):
        return [tuple(data)]
    if isinstance(data, Tensor) or not isinstance(data, Iterable):
        raise ValueError("data must be (inputs, targets) chunks, a deep.Dataset, an (X, y) pair of tensors or a "
                         f"DataLoader; got {type(data).__name__}")
    if iter(data) is data:
        raise ValueError("data must be a re-iterable collection of (inputs, targets) chunks "
                         "(a list or DataLoader), not a one-shot iterator/generator")
    return data


def _to(x: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if isinstance(x, np.ndarray):
        x = torch.as_tensor(x)
    if not isinstance(x, Tensor):
        return x
    return x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device=device)


def chunks(data: Data, device: torch.device, dtype: torch.dtype) -> Iterator[tuple[tuple, Any, int]]:
    """Yield ``(inputs_tuple, targets, n_i)`` for each chunk, cast to ``dtype`` and moved to ``device``."""
    empty = True
    for chunk in data:
        if _is_array(chunk):  # unpacking would split a tensor along its first axis
            raise ValueError(f"data must yield (inputs, targets) pairs; got a {type(chunk).__name__} of shape "
                             f"{tuple(chunk.shape)} (pass one pair as (X, y), several as [(X1, y1), (X2, y2)])")
        try:
            inputs, targets = chunk
        except (TypeError, ValueError):
            raise ValueError("data must yield (inputs, targets) pairs; got an item of type "
                             f"{type(chunk).__name__}") from None
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        inputs = tuple(_to(x, device, dtype) for x in inputs)
        targets = _to(targets, device, dtype)
        first = inputs[0]
        n = int(first.shape[0]) if isinstance(first, Tensor) and first.ndim > 0 else len(first)
        if n <= 0:
            raise ValueError("data chunks must contain at least one example; got an empty chunk")
        empty = False
        yield inputs, targets, n
    if empty:
        raise ValueError("data must contain at least one (inputs, targets) chunk; got none")


@contextlib.contextmanager
def evaluation(model: nn.Module):
    """Run the block with every module of ``model`` in eval mode; restore each module's mode after.

    Dropout is then the identity and BatchNorm uses its running statistics, so the loss is one
    deterministic function of theta (train-mode Dropout would make every product random).
    """
    modes = [(m, m.training) for m in model.modules()]
    if not any(training for _, training in modes):
        yield
        return
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
