"""What a user passes, made uniform: data, loss function, dtype and device, train/eval mode.

Data (the full batch over which L(theta) is taken) may be

* an iterable of ``(inputs, targets)`` chunks (a list, a ``torch.utils.data.DataLoader``; curvlinops'
  convention); chunk i of n_i examples enters the full-batch loss with weight n_i / N, so a DataLoader's
  short last batch is weighted correctly;
* a :class:`deep.Dataset` (split into chunks of at most :data:`DATASET_CHUNK` examples);
* a single ``(X, y)`` pair of tensors (a tuple or a list of two);
* a :class:`Shard` (``deep.Shard``): this rank's chunks of a full batch split over the ranks of a
  ``torch.distributed`` process group, whose sums :mod:`deep.training.distributed` all-reduces;
* dict batches as Hugging Face models take them (``{"input_ids", "attention_mask", "labels"}``), one dict
  or an iterable of them: the model is called as ``model(**batch)`` and the loss as
  ``loss_fn(outputs, batch)``, e.g. :func:`model_loss` (the ``.loss`` the model computed, or the
  cross-entropy of its ``.logits`` against ``batch["labels"]``).  A dict batch counts as many examples as
  the first dimension of its ``input_ids`` (of its first tensor when it has none).

A ``DataLoader`` with ``drop_last=True`` whose data set does not divide into its batches would leave the
last examples out of the full batch: a warning names how many.

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
import warnings
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.func import functional_call

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
    if isinstance(data, Mapping):
        return [data]  # one dict batch
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
    warn_dropped(data)
    return data


def warn_dropped(loader: Any) -> int:
    """Warn when a ``DataLoader(drop_last=True)`` leaves examples of its data set out of the full batch;
    return how many (0 when none, or when the loader's length or batch size is not known)."""
    if not isinstance(loader, torch.utils.data.DataLoader) or not loader.drop_last or not loader.batch_size:
        return 0
    try:
        total = len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:  # an IterableDataset without a length
        return 0
    dropped = total % loader.batch_size
    if dropped:
        warnings.warn(f"data is a DataLoader with drop_last=True: {dropped} of its {total} examples "
                      f"({total} is not a multiple of batch_size={loader.batch_size}) are left out of the full "
                      "batch the curvature is measured on; pass a DataLoader with drop_last=False to measure them "
                      "all", UserWarning, stacklevel=4)
    return dropped


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
        if isinstance(chunk, Mapping):  # a dict batch: model(**batch), loss_fn(outputs, batch)
            batch = {key: _to(value, device, dtype) for key, value in chunk.items()}
            sizes = [v for k, v in batch.items() if isinstance(v, Tensor) and v.ndim > 0 and k == "input_ids"]
            sizes = sizes or [v for v in batch.values() if isinstance(v, Tensor) and v.ndim > 0]
            if not sizes:
                raise ValueError(f"a dict batch must hold tensors (input_ids, ...); got keys {sorted(batch)}")
            empty = False
            yield batch, batch, int(sizes[0].shape[0])
            continue
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


def forward(model: nn.Module, params: Any, inputs: tuple | dict) -> Any:
    """``model`` at the parameters ``params`` (``torch.func.functional_call``) on one chunk's ``inputs``: the
    positional inputs of an ``(inputs, targets)`` chunk, or the keywords of a dict batch."""
    if isinstance(inputs, dict):
        return functional_call(model, params, (), inputs)
    return functional_call(model, params, inputs)


def model_loss(outputs: Any, batch: Mapping[str, Any]) -> Tensor:
    """The loss of a dict batch (Hugging Face style): ``outputs.loss`` when the model computed one (it does
    when the batch holds ``labels``), else the mean cross-entropy of ``outputs.logits`` (..., classes)
    against ``batch["labels"]`` (...), ignoring labels of -100 as Hugging Face does; no shift of the labels
    (a causal language model shifts them itself when it computes ``.loss``).  Units: nats per label."""
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else getattr(outputs, "loss", None)
    if loss is not None:
        return loss
    logits = outputs.get("logits") if isinstance(outputs, Mapping) else getattr(outputs, "logits", outputs)
    labels = batch.get("labels") if isinstance(batch, Mapping) else None
    if not isinstance(logits, Tensor) or labels is None:
        raise ValueError("model_loss needs outputs with a .loss, or .logits and a 'labels' entry in the batch; got "
                         f"{type(outputs).__name__} and batch keys {sorted(batch) if isinstance(batch, Mapping) else []}")
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100)


@contextlib.contextmanager
def evaluation(model: nn.Module):
    """Run the block with every module of ``model`` in eval mode and attention on its math kernel; restore
    each module's mode and the user's attention kernels after.

    Dropout is then the identity and BatchNorm uses its running statistics, so the loss is one
    deterministic function of theta (train-mode Dropout would make every product random).
    ``F.scaled_dot_product_attention`` (and ``nn.MultiheadAttention``, which calls it) runs on torch's
    math backend (:func:`math_attention`): the fused flash and memory-efficient kernels have no second
    derivative, and every curvature product differentiates the loss twice.
    """
    modes = [(m, m.training) for m in model.modules()]
    with math_attention():
        if not any(training for _, training in modes):
            yield
            return
        model.eval()
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training


def math_attention() -> contextlib.AbstractContextManager:
    """``F.scaled_dot_product_attention`` on the math backend (plain matmuls and softmax, differentiable
    any number of times) inside the block; the user's backend choice is restored on exit."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        return torch.backends.cuda.sdp_kernel(enable_flash=False, enable_math=True, enable_mem_efficient=False)
    return sdpa_kernel(SDPBackend.MATH)
