"""Raw and preconditioned sharpness of real PyTorch networks, and training runs that record them.

What it is for: measuring, on a real network and a real ``torch.optim`` optimizer, the quantities the
theory is about: the sharpness S = lambda_max(H) of the full-batch loss and the preconditioned
sharpness S_P = lambda_max(P^-1/2 H P^-1/2), with P read from the optimizer's state exactly as its last
step used it.  Runs on CUDA when present, CPU otherwise.

Main entry points:

* measurement (:mod:`deep.measure`): :func:`sharpness`, :func:`preconditioned_sharpness`,
  :func:`top_eigenpairs` (``which="largest" | "smallest"``, ``params=`` for a layer, ``curvature="ggn"``)
  and the warm-started :class:`SharpnessTracker`; :func:`measure_edge` (:mod:`deep.edge`): where a live
  optimizer stands against its threshold at its current step, read from the optimizer itself (lr
  schedules, param groups, bias corrections, NAdam's schedule); :func:`hessian_trace` (Hutch++,
  :mod:`deep.trace`) and :func:`spectral_density` (stochastic Lanczos quadrature, :mod:`deep.density`);
* the curvature toolkit underneath: one operator protocol, :class:`CurvatureOperator`
  (:mod:`deep.operators`: composition, ``to_scipy``), the Hessian strategies picked by
  :func:`hessian_operator` (:mod:`deep.strategies`), the Gauss-Newton :class:`GGNOperator`
  (:mod:`deep.ggn`), the eigensolver :func:`deep.lanczos.lanczos` and :func:`preconditioner_diagonal`
  (:mod:`deep.preconditioners`); what a user passes as data, loss and model is made uniform by
  :mod:`deep.inputs`;
* prediction (:mod:`deep.flows`): :func:`central_flow`, the stable and central flows of full-batch GD,
  RMSProp and Adam on a network: the time-averaged trajectory at the edge of stability;
* training (:mod:`deep.train`): :func:`run` with a :class:`TrainConfig`, writing a resumable run folder
  read back by :func:`read_metrics`; data sets that work offline (:mod:`deep.data`), models
  (:mod:`deep.models`), losses (:mod:`deep.losses`) and :func:`make_optimizer` (package optimizer names
  on top of ``torch.optim``, :mod:`deep.optim`);
* ``aeos train`` on the command line (:mod:`deep.cli`).

Importing ``deep`` is light; torch is imported when the first of these names is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CallableOperator": "deep.operators", "CurvatureOperator": "deep.operators", "DiagonalOperator": "deep.operators",
    "PreconditionedOperator": "deep.operators", "as_operator": "deep.operators",
    "hessian_operator": "deep.strategies", "curvature_operator": "deep.curvature", "operator_for": "deep.curvature",
    "GGNOperator": "deep.ggn", "ParamLayout": "deep.params",
    "TraceResult": "deep.trace", "hessian_trace": "deep.trace", "trace_estimate": "deep.trace",
    "SpectralDensity": "deep.density", "density_estimate": "deep.density", "spectral_density": "deep.density",
    "HessianOperator": "deep.hessian", "full_batch_gradient": "deep.hessian", "full_batch_loss": "deep.hessian",
    "hvp": "deep.hessian",
    "LanczosConvergenceWarning": "deep.lanczos", "LanczosResult": "deep.lanczos",
    "preconditioner_diagonal": "deep.preconditioners",
    "Shard": "deep.distributed",
    "Edge": "deep.edge", "EdgeSetting": "deep.edge", "edge_setting": "deep.edge", "measure_edge": "deep.edge",
    "SharpnessResult": "deep.measure", "SharpnessTracker": "deep.measure", "gradient_overlap": "deep.measure",
    "layer_mass": "deep.measure", "preconditioned_sharpness": "deep.measure", "sharpness": "deep.measure",
    "top_eigenpairs": "deep.measure",
    "TrainConfig": "deep.config",
    "Dataset": "deep.data", "chunks": "deep.data", "load": "deep.data", "load_cifar10": "deep.data",
    "load_digits": "deep.data", "load_synthetic": "deep.data", "load_text": "deep.data",
    "cross_entropy": "deep.losses", "get_loss": "deep.losses", "mse": "deep.losses",
    "build_model": "deep.models",
    "make_optimizer": "deep.optim",
    "read_metrics": "deep.runlog",
    "run": "deep.train",
    "central_flow": "deep.flows", "NetworkFlow": "deep.flows",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deep' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))
