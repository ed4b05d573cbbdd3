"""The door of every measurement: model, loss and data checked once, before any number is computed.

Fed the wrong data, a curvature measurement does not fail, it answers: targets of shape (10, 100) for
outputs (100, 10) reshape into another loss, a NaN anywhere makes every eigenvalue NaN.
:func:`check_measurement_inputs` refuses such inputs with one ValueError that names the argument (``model``,
``loss_fn``, ``data``) and the shapes involved:

* ``model`` not a ``torch.nn.Module``, or without a trainable parameter; ``loss_fn`` not callable, or not
  a mean over its chunk (:func:`deep.curvature.inputs.check_loss`);
* ``data`` that is not (inputs, targets) chunks (:func:`deep.curvature.inputs.as_data`), or a chunk whose
  inputs and targets differ in their first dimension (one row per example);
* a value that is not finite: in the data's inputs or targets (after the cast to the model's dtype), or
  in a parameter or buffer of the model (named);
* on the first chunk: a model that cannot take the inputs (5 features for a first layer of 64; integer
  inputs for a floating-point layer: integers are never converted, they may be the token ids of an
  embedding); a loss that fails, or that would broadcast the targets against the outputs (torch's
  elementwise losses, ``F.mse_loss`` and the like, warn "target size ... different to the input size":
  refused; the package's ``deep.mse`` and ``deep.cross_entropy`` accept only the outputs' shape, or for
  class indices the outputs' shape without its last axis); a loss that is not one finite number;
* integer targets laid out as class indices (the outputs' shape without the last axis, of size K) that
  are not in [0, K), on any chunk (values equal to the loss module's ``ignore_index`` excepted).

Every public measurement calls it once: :func:`deep.sharpness`, :func:`deep.preconditioned_sharpness`,
:func:`deep.top_eigenpairs`, :func:`deep.measure_edge`, :meth:`deep.SharpnessTracker.measure` (once per
call), :func:`deep.hessian_trace`, :func:`deep.spectral_density`, :func:`deep.curvature_operator` and
every operator of :mod:`deep.curvature.hessian` and :mod:`deep.curvature.ggn` built directly, and
:func:`deep.central_flow` (once, at its start: the flow's own later points are its results, not inputs).
A new measurement (a minibatch sharpness, say) calls it first, once, and hands the returned
:class:`deep.curvature.inputs.CheckedData` to the operators it builds, which then skip the door (a call
with the ``CheckedData`` of the same model and loss checks the parameters only).

Cost: one pass over the data (``isfinite`` of every chunk, the range of integer targets), one forward
and loss on the first chunk, ``isfinite`` of the parameters; measured against a measurement in
``benchmarks/README.md``.  On a :class:`deep.Shard` each rank checks its own chunks and the ranks
agree on the verdict (one all-reduce), so a bad shard stops every rank instead of leaving the others
waiting for it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .inputs import CheckedData, LossFn, as_data, check_loss, check_model, chunks, evaluation
from .params import ParamLayout, ParamSelection
from .reductions import group_of, reduce_sum


def check_measurement_inputs(model: nn.Module, loss_fn: LossFn, data: Any,
                             params: ParamSelection = None) -> CheckedData:
    """``data`` as :class:`CheckedData` once model, loss and data pass the checks of the module docstring;
    ValueError naming what is wrong otherwise.  ``params``: the parameter block to be measured
    (:mod:`deep.curvature.params`), which must hold a trainable parameter."""
    model, loss_fn = check_model(model), check_loss(loss_fn)
    layout = ParamLayout.of(model, params)
    if isinstance(data, CheckedData) and data.checked_for(model, loss_fn):
        _agree(lambda: _check_parameters(model), group_of(data), layout.device)
        return data
    data = as_data(data)

    def check() -> None:
        _check_parameters(model)
        _check_data(model, loss_fn, data, layout.device, layout.dtype)

    _agree(check, group_of(data), layout.device)
    return CheckedData(data, model, loss_fn)


def _agree(check, group: Any, device: torch.device) -> None:
    """Run ``check`` (it raises ValueError); over a process group, every rank raises when any rank's check did."""
    try:
        check()
        problem = None
    except ValueError as err:
        problem = err
    if group is not None:
        flag = torch.tensor([0.0 if problem is None else 1.0], dtype=torch.float64, device=device)
        if float(reduce_sum(flag, group).item()) > 0 and problem is None:
            problem = ValueError("data of another rank of the process group failed the input checks (that rank "
                                 "names it)")
    if problem is not None:
        raise problem


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def _describe(t: Any) -> str:
    return f"{_shape(t)} {str(t.dtype).removeprefix('torch.')}" if isinstance(t, Tensor) else type(t).__name__


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _non_finite(t: Tensor) -> str:
    nan = int(torch.isnan(t).sum())
    return f"{nan} nan and {int((~torch.isfinite(t)).sum()) - nan} inf of its {t.numel()} entries"


def _floats(tensors) -> list[tuple[str, Tensor]]:
    return [(name, t) for name, t in tensors if isinstance(t, Tensor) and (t.is_floating_point() or t.is_complex())]


def _check_parameters(model: nn.Module) -> None:
    """ValueError naming the first parameter or buffer of ``model`` that holds a value that is not finite."""
    named = ([(f"parameter {n!r}", p) for n, p in _floats(model.named_parameters())]
             + [(f"buffer {n!r}", b) for n, b in _floats(model.named_buffers())])
    if not named:
        return
    with torch.no_grad():
        finite = torch.stack([torch.isfinite(t).all() for _, t in named])
    if not bool(finite.all()):
        name, t = named[int((~finite).nonzero()[0])]
        raise ValueError(f"model {name} is not finite ({_non_finite(t.detach())}); a measurement at this point "
                         "would be nan")


def _check_data(model: nn.Module, loss_fn: LossFn, data, device: torch.device, dtype: torch.dtype) -> None:
    """One pass over the chunks (module docstring); ValueError at the first problem."""
    single = isinstance(data, list) and len(data) == 1
    classes = None  # K when the targets are class indices
    for index, (inputs, targets, _) in enumerate(chunks(data, device, dtype)):
        where = "data" if single else f"data chunk {index}"
        _check_rows(where, inputs, targets)
        _check_finite(where, inputs, targets, dtype)
        if index == 0:
            outputs = _forward(where, model, inputs, dtype)
            classes = _classes(outputs, targets)
        if classes is not None and isinstance(targets, Tensor) and not targets.is_floating_point():
            _check_labels(where, targets, classes, getattr(loss_fn, "ignore_index", None))
        if index == 0:
            _check_loss_value(where, loss_fn, outputs, targets)


def _check_rows(where: str, inputs: tuple | dict, targets: Any) -> None:
    if isinstance(inputs, dict):  # a dict batch: its tensors share the first dimension
        rows = {key: v for key, v in inputs.items() if isinstance(v, Tensor) and v.ndim > 0}
        if len({v.shape[0] for v in rows.values()}) > 1:
            shown = ", ".join(f"{key} {_shape(v)}" for key, v in rows.items())
            raise ValueError(f"{where}: a dict batch's tensors must have the same first dimension (one row per "
                             f"example); got {shown}")
        return
    first = inputs[0]
    if not (isinstance(first, Tensor) and isinstance(targets, Tensor)):
        return
    if first.ndim == 0 or targets.ndim == 0 or first.shape[0] != targets.shape[0]:
        raise ValueError(f"{where}: inputs and targets must have the same first dimension (one row per example); "
                         f"got inputs of shape {_shape(first)} and targets of shape {_shape(targets)}")


def _check_finite(where: str, inputs: tuple | dict, targets: Any, dtype: torch.dtype) -> None:
    if isinstance(inputs, dict):  # a dict batch is its own targets
        inputs, targets = tuple(inputs.values()), None
    for kind, tensors in (("inputs", inputs), ("targets", (targets,))):
        for t in tensors:
            if isinstance(t, Tensor) and (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{where}: {kind} are not finite ({_non_finite(t)}, shape {_shape(t)} as "
                                 f"{str(dtype).removeprefix('torch.')}); a measurement on them would be nan")


def _forward(where: str, model: nn.Module, inputs: tuple, dtype: torch.dtype) -> Any:
    """The model's outputs on the first chunk; ValueError saying why the model cannot take the inputs."""
    try:
        with torch.no_grad(), evaluation(model):
            return model(**inputs) if isinstance(inputs, dict) else model(*inputs)
    except Exception as err:  # whatever the model raises: a shape, a dtype, a type
        inputs = tuple(inputs.values()) if isinstance(inputs, dict) else inputs
        shown = ", ".join(_describe(x) for x in inputs)
        integers = [x for x in inputs if isinstance(x, Tensor) and not (x.is_floating_point() or x.is_complex())]
        hint = (f"; integer inputs are passed as they are (token ids for an embedding): for a "
                f"{str(dtype).removeprefix('torch.')} model convert them, e.g. X.float()") if integers else ""
        raise ValueError(f"{where}: the model cannot take the inputs (shape {shown}): {_one_line(err)}{hint}") from None


def _classes(outputs: Any, targets: Any) -> int | None:
    """K when the targets are class indices of the outputs' last axis (integer, the outputs' shape without it)."""
    if not (isinstance(outputs, Tensor) and isinstance(targets, Tensor)) or outputs.ndim == 0:
        return None
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        return None
    return int(outputs.shape[-1]) if tuple(targets.shape) == tuple(outputs.shape[:-1]) else None


def _check_labels(where: str, targets: Tensor, classes: int, ignore_index: Any) -> None:
    valid = (targets >= 0) & (targets < classes)
    if isinstance(ignore_index, int):
        valid |= targets == ignore_index
    if bool(valid.all()):
        return
    bad = torch.unique(targets[~valid])
    shown = ", ".join(str(int(v)) for v in bad[:5]) + (", ..." if bad.numel() > 5 else "")
    raise ValueError(f"{where}: targets hold class indices outside [0, {classes}) (the outputs' last axis has "
                     f"{classes} classes): {shown}")


def _check_loss_value(where: str, loss_fn: LossFn, outputs: Any, targets: Any) -> None:
    shapes = f"outputs of shape {_describe(outputs)} and targets of shape {_describe(targets)}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.no_grad():
                loss = loss_fn(outputs, targets)
        except Exception as err:  # whatever the loss raises
            raise ValueError(f"{where}: loss_fn(outputs, targets) fails for {shapes}: {_one_line(err)}") from None
    for w in caught:
        if "different to the input size" in str(w.message):  # torch's elementwise losses about to broadcast
            raise ValueError(f"{where}: loss_fn would broadcast targets of shape {_shape(targets)} against outputs "
                             f"of shape {_shape(outputs)}; targets must have the outputs' shape {_shape(outputs)}")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(f"loss_fn must return one number, the mean loss over its chunk; got {_describe(loss)} for "
                         f"{shapes} ({where})")
    if not bool(torch.isfinite(loss).all()):
        raise ValueError(f"{where}: loss_fn returned {float(loss)} for {shapes}, with finite inputs, targets and "
                         "parameters; the loss must be finite where it is measured")
