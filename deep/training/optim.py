"""The package's optimizer names on top of ``torch.optim``.

Which ``torch.optim`` class and which keyword arguments a package name stands for is a fact of the
registry (:data:`aeos_theory.OPTIMIZERS`: ``torch_class`` and ``torch_arguments``); this module only
applies it.  For example ``make_optimizer("adam", params, {"eta": 1e-3})`` is
``torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)``.  Shampoo and SOAP come
from ``pytorch_optimizer`` (the optional extra ``optimizers``); Muon takes matrices only (pair it with
AdamW for the rest, as :func:`deep.training.zoo.zoo_optimizers` does).
"""

from __future__ import annotations

import importlib
from typing import Iterable, Mapping

import torch

from aeos_theory.optimizers import get_optimizer


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], hyper: Mapping[str, object]) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer for package name ``name`` with validated, defaults-completed hyperparameters."""
    spec = get_optimizer(name)
    values = spec.validate(dict(hyper))
    try:
        module = importlib.import_module(spec.torch_module)
    except ImportError:
        raise ValueError(f"optimizer {name!r} needs the package {spec.torch_module} (pip install "
                         f"'aeos[optimizers]', with torch pinned)") from None
    return getattr(module, spec.torch_class)(params, **spec.torch_arguments(values))

