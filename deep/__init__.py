"""Raw and preconditioned sharpness of real PyTorch networks, and training runs that record them.

What it is for: measuring, on a real network and a real ``torch.optim`` optimizer, the quantities the
theory is about: the sharpness S = lambda_max(H) of the full-batch loss, the preconditioned sharpness
S_P = lambda_max(P^-1/2 H P^-1/2) with P read from the optimizer's state exactly as its last step used
it, and where that step stands against its stability threshold.  Runs on CUDA when present, CPU otherwise.

Main entry points (the names a user types; everything else is imported from its sub-package):

* measurement (:mod:`deep.measure`): :func:`sharpness`, :func:`preconditioned_sharpness`,
  :func:`top_eigenpairs` (:class:`SharpnessResult`), :func:`measure_edge` (:class:`Edge`), the
  warm-started :class:`SharpnessTracker`, and :func:`batch_sharpness`, the minibatch quantity (raw, in the
  optimizer's metric, or along its step);
* the curvature toolkit (:mod:`deep.curvature`): :func:`curvature_operator`, the one way to build an
  operator (H or the Gauss-Newton G, raw or preconditioned, any parameter block, any HVP ``strategy``),
  the protocol :class:`CurvatureOperator` (and :func:`as_operator` for a user's own), :func:`hessian_trace`,
  :func:`spectral_density`, and :class:`Shard` for a full batch split over ``torch.distributed`` ranks;
* training (:mod:`deep.training`): :func:`run` with a :class:`TrainConfig`, read back by
  :func:`read_metrics`; :class:`Monitor` for your own loop (``model_loss`` for Hugging Face style dict
  batches); offline data (:class:`Dataset`, :func:`load`, :func:`load_digits`,
  :func:`load_text`, :func:`load_cifar10`), :func:`build_model`, the losses :func:`mse` and
  :func:`cross_entropy`, :func:`make_optimizer`;
* prediction (:mod:`deep.flows`): :func:`central_flow`, the time-averaged trajectory at the edge;
* ``aeos train`` on the command line (:mod:`deep.cli`).

The sub-packages depend one way: curvature <- measure <- training <- flows.  Importing ``deep`` is light;
torch is imported when the first of these names is used.  When torch is already imported, importing
``deep`` also starts remembering the lr of each optimizer step (:mod:`deep.measure.last_step`), so that
a measurement describes the update just taken even when a scheduler has moved the lr since.
"""

from __future__ import annotations

import sys

from deep._lazy import lazy_attributes

_PUBLIC = {
    "sharpness": "deep.measure.sharpness", "preconditioned_sharpness": "deep.measure.sharpness",
    "top_eigenpairs": "deep.measure.sharpness", "SharpnessResult": "deep.curvature.eigen",
    "measure_edge": "deep.measure.edge", "Edge": "deep.measure.edge",
    "SharpnessTracker": "deep.measure.tracker", "batch_sharpness": "deep.measure.batch",
    "curvature_operator": "deep.curvature.build", "CurvatureOperator": "deep.curvature.operators",
    "as_operator": "deep.curvature.operators", "hessian_trace": "deep.curvature.trace",
    "spectral_density": "deep.curvature.density", "Shard": "deep.curvature.inputs",
    "run": "deep.training.train", "TrainConfig": "deep.training.config", "read_metrics": "deep.training.runlog",
    "Dataset": "deep.training.data", "load": "deep.training.data", "load_digits": "deep.training.data",
    "load_text": "deep.training.data", "load_cifar10": "deep.training.data",
    "build_model": "deep.training.models", "mse": "deep.training.losses", "cross_entropy": "deep.training.losses",
    "make_optimizer": "deep.training.optim", "Monitor": "deep.training.monitor",
    "model_loss": "deep.curvature.inputs",
    "central_flow": "deep.flows.network",
}

#: Names ``deep`` once had, and where they are now.
_MOVED = {
    "HessianOperator": "use deep.curvature_operator(model, loss_fn, data, strategy=...)",
    "operator_for": "use deep.curvature_operator(model, loss_fn, data, optimizer, ...)",
    "hvp": "use deep.curvature_operator(model, loss_fn, data) @ v",
    "full_batch_loss": "use deep.curvature_operator(model, loss_fn, data).loss()",
    "full_batch_gradient": "use deep.curvature_operator(model, loss_fn, data).gradient()",
    "ParamLayout": "it is deep.curvature.ParamLayout", "GGNOperator": "it is deep.curvature.GGNOperator",
    "trace_estimate": "it is deep.curvature.trace_estimate",
    "density_estimate": "it is deep.curvature.density_estimate",
    "preconditioner_diagonal": "it is deep.curvature.preconditioner_diagonal",
    "LanczosResult": "it is deep.curvature.LanczosResult",
    "LanczosConvergenceWarning": "it is deep.curvature.LanczosConvergenceWarning",
    "EdgeSetting": "it is deep.measure.EdgeSetting", "edge_setting": "it is deep.measure.edge_setting",
    "gradient_overlap": "it is deep.measure.gradient_overlap", "layer_mass": "it is deep.measure.layer_mass",
    "NetworkFlow": "it is deep.flows.NetworkFlow", "chunks": "use Dataset.chunks(size)",
    "get_loss": "it is deep.training.get_loss", "load_synthetic": "it is deep.training.load_synthetic",
}

__all__ = sorted(_PUBLIC)
_public_getattr, __dir__ = lazy_attributes(__name__, _PUBLIC, _MOVED,
                                           ("curvature", "measure", "training", "flows", "cli"))


def __getattr__(name: str):
    if name == "hessian_operator":  # the name of the first releases, kept working
        import warnings

        warnings.warn("deep.hessian_operator is deep.curvature_operator (same arguments, plus optimizer=)",
                      DeprecationWarning, stacklevel=2)
        name = "curvature_operator"
    value = _public_getattr(name)
    _remember_steps()
    return value


def _remember_steps() -> None:
    """Start remembering the lr of every optimizer step, once torch is imported anyway."""
    if "torch" in sys.modules:
        import deep.measure.last_step  # noqa: F401  (installs the step hooks on import)


_remember_steps()
