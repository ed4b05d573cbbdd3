"""The names ``deep`` accepts for data sets, models, activations, losses and dtypes (no torch import).

The command line and the run configuration read these lists, so ``aeos train --help`` and its errors
never need torch; :mod:`deep.training.data`, :mod:`deep.training.models` and :mod:`deep.training.losses` implement exactly these.
"""

from __future__ import annotations

#: Data sets that work offline (:func:`deep.training.data.load`).
DATASETS: tuple[str, ...] = ("digits", "cifar10", "text", "synthetic")

#: Networks (:func:`deep.training.models.build_model`).
MODELS: tuple[str, ...] = ("mlp", "cnn", "resnet", "transformer")

#: Activation name -> ``torch.nn`` class name.
ACTIVATIONS: dict[str, str] = {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU", "gelu": "GELU",
                               "softplus": "Softplus", "identity": "Identity"}

#: Losses (:func:`deep.training.losses.get_loss`).
LOSSES: tuple[str, ...] = ("mse", "ce")

#: Learning-rate schedules (:mod:`deep.training.schedules`).
SCHEDULES: tuple[str, ...] = ("constant", "warmup_cosine")

#: Floating-point types of a run (torch dtype names).
DTYPES: tuple[str, ...] = ("float32", "float64")
