"""The configuration of a training run (:class:`TrainConfig`), validated at the boundary.

Validating a config imports no torch (unless it names a CUDA device, whose presence only torch knows), so
that ``aeos train`` answers at once when its run folder already holds the finished run.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Mapping

from aeos_base import checks
from aeos_theory.optimizers import get_optimizer

from .names import ACTIVATIONS, DATASETS, DTYPES, LOSSES, MODELS, SCHEDULES

#: The most updates a run may take: torch.optim counts steps in a float32 tensor (``state["step"]``), whose
#: integers are exact up to 2^24 = 16,777,216; beyond it the count stops growing, and the bias correction and
#: the threshold c_t of each update would describe another step.
MAX_STEPS = 2**24

if TYPE_CHECKING:
    import torch

#: A run is diverged when its full-batch loss (or a minibatch loss) is not finite or exceeds this many
#: times its loss at step 0.
DIVERGENCE_FACTOR = 1e4


@dataclass
class TrainConfig:
    """Everything that defines a run; two runs with equal configs (on CPU) give identical metrics.

    dataset, n, data_dir, context: the data (:func:`deep.training.data.load`; n = None is the data set's default:
        digits 1000, cifar10 5000, text 512 windows, synthetic 1000).
    model, width, depth, activation: the network (:func:`deep.training.models.build_model`; None = model default).
    loss: ``mse`` (1/2 ||f - onehot||^2 averaged over examples) or ``ce``.
    optimizer, hyper: package optimizer name and hyperparameters named as in :mod:`aeos_theory`
        (``eta`` is required; missing ones take the optimizer's defaults).
    steps: number of updates (at most :data:`MAX_STEPS`); measure_every: record a row every this many updates
        (and at the end).
    schedule, warmup_steps, final_lr_ratio: the learning-rate schedule (:mod:`deep.training.schedules`):
        ``constant`` or ``warmup_cosine`` (linear warmup over ``warmup_steps`` updates, then a cosine
        decay to ``final_lr_ratio * eta``).
    batch_size: None for full batch (gradient accumulated over chunks of ``chunk_size``), else the
        minibatch size (a fresh random subset every step); chunk_size: the physical batch for full-batch
        gradients, losses and Hessian-vector products (None = all at once).
    tol, max_hvps: Lanczos relative tolerance and the cap on HVPs per eigenvalue.
    target_loss: stop once the full-batch train loss is <= this (None: never).
    device: "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...; dtype: float32 or float64.
    threads: torch's CPU thread count during the run (part of the config: a different count changes
        float round-off, so the same config gives the same numbers on any machine and under any --jobs).
    nproc: the number of processes the full batch is sharded over (:mod:`deep.training.distributed`; part of the
        config, since the reductions' order changes float round-off).
    """

    dataset: str = "digits"
    model: str = "mlp"
    loss: str = "mse"
    optimizer: str = "adam"
    hyper: dict[str, float] = field(default_factory=lambda: {"eta": 1e-3})
    steps: int = 1000
    measure_every: int = 100
    schedule: str = "constant"
    warmup_steps: int = 0
    final_lr_ratio: float = 0.1
    seed: int = 0
    n: int | None = None
    batch_size: int | None = None
    chunk_size: int | None = 1000
    width: int | None = None
    depth: int | None = None
    activation: str | None = None
    context: int = 64
    data_dir: str | None = None
    tol: float = 1e-3
    max_hvps: int = 100
    target_loss: float | None = None
    device: str = "auto"
    dtype: str = "float32"
    threads: int = 1
    nproc: int = 1

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field and its allowed values; return self."""
        for name, allowed in (("dataset", DATASETS), ("model", MODELS), ("loss", LOSSES), ("dtype", DTYPES),
                              ("schedule", SCHEDULES)):
            checks.choice(name, getattr(self, name), allowed)
        if self.activation is not None:
            checks.choice("activation", self.activation, ACTIVATIONS)
        if (self.dataset == "text") != (self.model == "transformer"):
            raise ValueError("model 'transformer' goes with dataset 'text' and only with it; got "
                             f"model={self.model!r}, dataset={self.dataset!r}")
        if self.model in ("cnn", "resnet") and self.dataset == "synthetic":
            raise ValueError(f"model {self.model!r} needs images (dataset digits or cifar10); got 'synthetic'")
        self.resolved_hyper()
        checks.integer("steps", self.steps, low=0, high=MAX_STEPS)
        checks.integer("measure_every", self.measure_every, low=1)
        checks.integer("seed", self.seed, low=0)
        checks.integer("context", self.context, low=1)
        checks.integer("max_hvps", self.max_hvps, low=1)
        checks.integer("threads", self.threads, low=1, high=1024)
        checks.integer("nproc", self.nproc, low=1)
        checks.integer("warmup_steps", self.warmup_steps, low=0, high=max(self.steps, 0))
        checks.real("final_lr_ratio", self.final_lr_ratio, low=0.0, high=1.0)
        for name in ("n", "batch_size", "chunk_size", "width", "depth"):
            if getattr(self, name) is not None:
                checks.integer(name, getattr(self, name), low=0 if name == "depth" else 1)
        checks.real("tol", self.tol, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
        if self.target_loss is not None:
            checks.real("target_loss", self.target_loss)
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]'; got {self.device!r}")
        if self.device.startswith("cuda"):
            self.torch_device()  # is CUDA there?
        return self

    def resolved_hyper(self) -> dict[str, float]:
        """``hyper`` validated by :func:`aeos_theory.validate` and completed with the optimizer's defaults."""
        if not isinstance(self.hyper, Mapping):
            raise ValueError(f"hyper must be a dict of hyperparameters such as {{'eta': 0.001}}; got {self.hyper!r}")
        return get_optimizer(self.optimizer).validate(dict(self.hyper))

    def torch_dtype(self) -> "torch.dtype":
        """The torch dtype named by ``dtype``."""
        import torch

        return getattr(torch, checks.choice("dtype", self.dtype, DTYPES))

    def torch_device(self) -> "torch.device":
        """The device to run on ("auto": cuda if available, else cpu)."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]'; got {self.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for but CUDA is not available; use 'cpu' or 'auto'")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]'; got {self.device!r}")
        return device

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from a dict (e.g. ``config.json``'s ``config``); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        return cls(**dict(d))
