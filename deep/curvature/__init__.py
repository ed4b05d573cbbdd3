"""Curvature of a network's full-batch loss as operators, and the solvers that read them.

What it is for: every curvature matrix a measurement needs (the Hessian H, the generalised
Gauss-Newton G, the empirical Fisher F, K-FAC; any of them in an optimizer's metric P^-1/2 (A + W) P^-1/2)
as an operator v -> A v of one protocol, and the solvers that take any such operator: Lanczos for the
extreme eigenpairs, stochastic trace estimation, and the spectral density by stochastic Lanczos
quadrature.

Main entry points:

* :func:`curvature_operator` (:mod:`.build`): the one way to build an operator from (model, loss_fn,
  data), with ``optimizer=``, ``curvature="hessian" | "ggn" | "empirical_fisher" | "kfac"``,
  ``strategy=`` and ``params=``;
* :class:`CurvatureOperator` (:mod:`.operators`): the protocol (``A @ v``, ``to_scipy()``,
  ``to_dense()``, sums, :class:`PreconditionedOperator`; :func:`as_operator` wraps a user's function);
* :func:`eigenpairs_of` (:mod:`.eigen`) on :func:`~deep.curvature.lanczos.lanczos`: top-k eigenpairs, cold or
  warm started; :func:`hessian_trace` / :func:`trace_estimate` (:mod:`.trace`);
  :func:`spectral_density` / :func:`density_estimate` (:mod:`.density`);
* what feeds them: :mod:`.inputs` (data, losses and models made uniform; :class:`Shard`), :mod:`.door`
  (:func:`check_measurement_inputs`, the checks every measurement passes once), :mod:`.params`
  (parameter blocks and flat vectors), :mod:`.hessian` (one class per HVP strategy), :mod:`.ggn`,
  :mod:`.fisher`, :mod:`.kfac`, :mod:`.preconditioners` (a diagonal P read from a ``torch.optim``
  optimizer's state), :mod:`.block_preconditioners` (the protocol for any P, block by block: Muon, Shampoo,
  SOAP, a user's own; :func:`preconditioner_of`, the one entry point), :mod:`.step_records` (what a step
  used but did not keep), :mod:`.reductions` (sums over the ranks of a :class:`Shard`).

It imports nothing of ``deep``'s other sub-packages: :mod:`deep.measure`, :mod:`deep.training` and
:mod:`deep.flows` build on it.
"""

from __future__ import annotations

from deep._lazy import lazy_attributes

_PUBLIC = {
    "curvature_operator": ".build", "CURVATURES": ".build",
    "CurvatureOperator": ".operators", "CallableOperator": ".operators", "DiagonalOperator": ".operators",
    "PreconditionedOperator": ".operators", "as_operator": ".operators",
    "STRATEGIES": ".hessian", "GGNOperator": ".ggn", "EmpiricalFisherOperator": ".fisher",
    "KFACOperator": ".kfac", "ParamLayout": ".params", "Shard": ".inputs",
    "check_measurement_inputs": ".door",
    "LanczosResult": ".lanczos", "LanczosConvergenceWarning": ".lanczos",
    "eigenpairs_of": ".eigen", "SharpnessResult": ".eigen",
    "hessian_trace": ".trace", "trace_estimate": ".trace", "TraceResult": ".trace", "ESTIMATORS": ".trace",
    "spectral_density": ".density", "density_estimate": ".density", "SpectralDensity": ".density",
    "preconditioner_diagonal": ".preconditioners",
    "preconditioner_of": ".block_preconditioners", "BlockPreconditioner": ".block_preconditioners",
    "DiagonalBlock": ".block_preconditioners", "KroneckerBlock": ".block_preconditioners",
    "EigenbasisBlock": ".block_preconditioners", "as_preconditioner": ".block_preconditioners",
    "BlockPreconditionedOperator": ".operators",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
