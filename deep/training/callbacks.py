"""A :class:`deep.Monitor` inside PyTorch Lightning's and Hugging Face's training loops.

Each function returns a callback for that library, which makes a :class:`~deep.training.monitor.Monitor`
at the start of training (from the module being trained and its first optimizer) and calls its
``step()`` after every optimizer step; the monitor is the callback's ``monitor`` attribute (its ``rows``,
``overhead``).  The library is imported only when the function is called: install it yourself (``pip
install aeos[lightning]`` or ``aeos[huggingface]``, with torch pinned so that pip keeps your torch build).

* :func:`lightning_callback`: a ``lightning.pytorch.Callback`` (or ``pytorch_lightning.Callback``);
  ``on_train_batch_end`` runs after each batch, and steps the monitor once per optimizer step taken
  (``trainer.global_step``), so gradient accumulation still measures every ``every`` updates.
* :func:`huggingface_callback`: a ``transformers.TrainerCallback``; ``on_step_end`` runs after the
  optimizer and scheduler steps.  The data are dict batches (``{"input_ids", "attention_mask",
  "labels"}``) and the loss defaults to :func:`deep.model_loss`, the ``.loss`` the model returns.
"""

from __future__ import annotations

from typing import Any

from ..curvature.inputs import LossFn, model_loss
from .monitor import Monitor


def lightning_callback(loss_fn: LossFn, data: Any, **monitor: Any):
    """A Lightning callback measuring the module being trained every ``every`` updates; ``loss_fn(outputs,
    targets)`` and ``data`` (the full batch) as for :class:`Monitor`, ``monitor`` its keyword arguments."""
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError:
            raise ImportError("lightning_callback needs PyTorch Lightning (pip install aeos[lightning])") from None

    class EdgeCallback(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.monitor: Monitor | None = None
            self.updates = 0  # trainer.global_step when the monitor last stepped

        def on_train_start(self, trainer, pl_module) -> None:
            self.monitor = Monitor(pl_module, loss_fn, data, trainer.optimizers[0], **monitor)
            self.updates = trainer.global_step

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            while self.monitor is not None and self.updates < trainer.global_step:  # an optimizer step was taken
                self.updates += 1
                self.monitor.step()

        def on_train_end(self, trainer, pl_module) -> None:
            if self.monitor is not None:
                self.monitor.close()

    return EdgeCallback()


def huggingface_callback(data: Any, loss_fn: LossFn = model_loss, **monitor: Any):
    """A ``transformers.TrainerCallback`` measuring the model being trained every ``every`` updates, on the
    full batch ``data`` (dict batches) with ``loss_fn`` (default :func:`deep.model_loss`)."""
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise ImportError("huggingface_callback needs transformers (pip install aeos[huggingface])") from None

    class EdgeCallback(TrainerCallback):
        def __init__(self) -> None:
            self.monitor: Monitor | None = None

        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            if self.monitor is None:
                self.monitor = Monitor(model, loss_fn, data, _torch_optimizer(optimizer), **monitor)
            self.monitor.step()
            return control

        def on_train_end(self, args, state, control, **kwargs):
            if self.monitor is not None:
                self.monitor.close()
            return control

    return EdgeCallback()


def _torch_optimizer(optimizer: Any):
    """The ``torch.optim`` optimizer inside Accelerate's wrapper (``.optimizer``), or the optimizer itself."""
    return getattr(optimizer, "optimizer", optimizer)
