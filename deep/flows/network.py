"""Stable and central flows of a network's full-batch training: GD, RMSProp, Adam, AdamW and NAdam.

The flows are those of :mod:`aeos_theory.central_flow` (Cohen, Damian, Talwalkar, Kolter and Lee,
ICLR 2025, arXiv 2410.24206; weight decay, momentum and learning-rate schedules as derived there); this
module supplies a network as their :class:`~aeos_theory.central_flow.FlowProblem`, built from the
package's own curvature toolkit:

* at each point w, one Hessian operator (:func:`deep.curvature.hessian.hessian_operator`: the full
  batch's gradient graph kept, so the gradient comes free and every product is one backward pass);
* the top eigenpairs of K = eta P^-1/2 (H + wd I) P^-1/2 by the warm-started Lanczos solver
  (:func:`deep.curvature.eigen.eigenpairs_of` on a :class:`~deep.curvature.operators.PreconditionedOperator`),
  starting from the previous point's eigenvectors;
* grad_w (u^T H v) through the same kept graph, two backward passes per pair
  (:meth:`deep.curvature.hessian.CachedDoubleBackward.curvature_gradients`);
* the gradients between those points by plain autograd on the copy;
* the kept graph built under :func:`deep.curvature.hessian.third_order_ops` (attention on its math
  backend, layer norm from mean and variance), whose ops autograd differentiates correctly to the third
  order;
* float64 by default, float32 on request: the flow works on a copy of the model in that dtype (the
  user's model, its dtype and its gradients are not touched).

The optimizer is a package name with hyperparameters or a ``torch.optim`` object, the schedule a
``torch.optim.lr_scheduler`` object or the lr factors of each update (:mod:`deep.flows.follow`, which
refuses what a flow cannot follow).

Data are anything :mod:`deep.curvature.inputs` takes, a :class:`deep.Shard` included (each rank then holds its
shard and every sum is all-reduced, as for the other measurements).

A flow's records carry the full-batch columns of a training run's ``metrics.csv`` (:data:`deep.training.runlog.COLUMNS`
but the minibatch :data:`~deep.training.runlog.BATCH_COLUMNS`) with the flow's meaning: ``train_loss`` is the *time-averaged* loss the flow predicts,
L(w) + 1/2 <Sigma, H>, ``train_accuracy`` the accuracy at the central point w; plus ``center_loss``
(L(w)), ``oscillation`` (rms of the predicted oscillation along the unit top eigenvector of P^-1 H,
parameter units), ``directions`` (how many eigen-directions oscillate), ``gradients`` and ``dt``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aeos_base import checks
from aeos_base.threads import torch_threads
from aeos_theory.central_flow import FlowResult, central_flow_of

from ..curvature.door import check_measurement_inputs
from ..curvature.eigen import SharpnessResult, eigenpairs_of
from ..curvature.hessian import hessian_operator, third_order_ops
from ..curvature.inputs import Data, LossFn, check_loss, check_model, chunks, evaluation
from ..curvature.operators import DiagonalOperator, PreconditionedOperator
from ..curvature.params import ParamLayout
from ..curvature.reductions import group_of, reduce_mean
from ..measure.oscillation import flat_parameters
from ..training.losses import correct, count
from .follow import flow_setting

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class NetworkFlow:
    """A network's full-batch loss L(w) over the flat parameter vector w (a copy of ``model`` in ``dtype``)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Any, *, dtype: str = "float64", tol: float = 1e-4,
                 max_hvps: int = 100, seed: int = 0) -> None:
        self.model = copy.deepcopy(check_model(model)).to(_DTYPES[checks.choice("dtype", dtype, tuple(_DTYPES))])
        self.model.eval()  # Dropout / BatchNorm: the deterministic network the measurements use
        self.loss_fn = check_loss(loss_fn)
        self.data = check_measurement_inputs(self.model, self.loss_fn, data)  # once: later points are results
        self.layout = ParamLayout.of(self.model)
        self.tol = checks.real("tol", tol, low=0.0, low_inclusive=False, high=1.0)
        self.max_hvps = checks.integer("max_hvps", max_hvps, low=2)
        self.seed = checks.integer("seed", seed)
        self.warm: dict[str, Tensor | None] = {"K": None, "H": None}
        self.hvps = 0

    def flat(self) -> Tensor:
        """The copy's current parameters as one flat vector (the flow's start)."""
        return flat_parameters(self.model)

    def load(self, w: Tensor) -> None:
        """Set the copy's parameters to the flat vector w."""
        with torch.no_grad():
            for p, part in zip(self.layout.parameters(self.model), self.layout.split(w).values()):
                p.copy_(part)

    def at(self, w: Tensor) -> "NetworkPoint":
        return NetworkPoint(self, w)

    def gradient(self, w: Tensor) -> Tensor:
        """grad L(w) = sum_i (n_i / N) grad L_i(w): one forward and backward pass per chunk (autograd on the
        copy; all-reduced over a :class:`deep.Shard`'s ranks)."""
        self.load(w)
        params = self.layout.parameters(self.model)
        acc = torch.zeros(self.layout.n, dtype=w.dtype, device=w.device)
        total = 0
        with torch.enable_grad(), evaluation(self.model):
            for inputs, targets, n in chunks(self.data, w.device, w.dtype):
                parts = torch.autograd.grad(self.loss_fn(self.model(*inputs), targets), params, allow_unused=True,
                                            materialize_grads=True)
                acc.add_(torch.cat([g.reshape(-1) for g in parts]), alpha=n)
                total += n
        return reduce_mean(acc, total, group_of(self.data))

    def eigenpairs(self, operator, key: str, k: int) -> SharpnessResult:
        """Top-k eigenpairs of ``operator`` by Lanczos, warm-started from the last ones under ``key``."""
        warm = self.warm[key]
        result = eigenpairs_of(operator, k=k, tol=self.tol, max_iter=min(self.max_hvps, operator.n),
                               init=warm, seed=self.seed, warn=False)
        finite = bool(torch.isfinite(result.eigenvectors).all())
        self.warm[key] = result.eigenvectors.detach().clone() if finite else None
        self.hvps += result.hvps
        return result


class NetworkPoint:
    """The network at one w: a Hessian operator (kept gradient graph) shared by every question."""

    def __init__(self, flow: NetworkFlow, w: Tensor) -> None:
        flow.load(w)
        self.flow = flow
        self.operator = hessian_operator(flow.model, flow.loss_fn, flow.data)
        with third_order_ops():  # the kept graph, whose backward passes give every product and third derivative
            self.g = self.operator.start_direction()  # the full-batch gradient, read off the kept graph
        self.converged = True

    def loss(self) -> float:
        return self.operator.loss()

    def gradient(self) -> Tensor:
        return self.g

    def eigenpairs(self, scale: Any, k: int, shift: float = 0.0) -> tuple[np.ndarray, list[Tensor]]:
        """Top-k of diag(scale) (H + shift I) diag(scale) = P'^-1/2 (H + shift I) P'^-1/2 with P' = 1 / scale^2
        (``shift``: a coupled weight decay)."""
        op = self.operator
        scale = torch.as_tensor(scale, dtype=op.dtype, device=op.device).expand(op.n)
        curvature = op + DiagonalOperator(torch.full((op.n,), float(shift), dtype=op.dtype, device=op.device)) \
            if shift else op
        result = self.flow.eigenpairs(PreconditionedOperator(curvature, scale.pow(-2)), "K", min(k, op.n))
        self.converged = self.converged and result.converged
        return np.asarray(result.eigenvalues), [result.eigenvectors[:, i] for i in range(len(result.eigenvalues))]

    def curvature_gradients(self, pairs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
        """grad_w (u^T H v) of every pair, through the kept graph
        (:meth:`deep.curvature.hessian.CachedDoubleBackward.curvature_gradients`)."""
        rows = self.operator.curvature_gradients(torch.stack([u for u, _ in pairs]), torch.stack([v for _, v in pairs]))
        return list(rows)

    def sharpness(self) -> float:
        result = self.flow.eigenpairs(self.operator, "H", 1)
        self.converged = self.converged and result.converged
        return result.top

    def accuracy(self) -> float:
        """Accuracy of the network at w over the full batch (NaN for regression targets)."""
        model, hits, total = self.flow.model, 0, 0
        with torch.no_grad():
            for inputs, targets, _ in chunks(self.flow.data, self.operator.device, self.operator.dtype):
                if targets.is_floating_point() and not _one_hot(targets):
                    return float("nan")
                hits += correct(model(*inputs), targets)
                total += count(targets)
        return hits / total if total else float("nan")


def _one_hot(y: Tensor) -> bool:
    return bool(torch.all((y == 0) | (y == 1))) and bool(torch.all(y.sum(dim=-1) == 1))


def run_scheduler(config: Any) -> Any:
    """The scheduler an ``aeos train`` run of ``config`` steps with (None for a constant lr), built as the
    trainer builds it (:func:`deep.training.schedules.build_scheduler`) on an optimizer of its own."""
    from ..training.optim import make_optimizer
    from ..training.schedules import build_scheduler

    if config.schedule == "constant":
        return None
    optimizer = make_optimizer(config.optimizer, [torch.zeros(1, requires_grad=True)], config.resolved_hyper())
    return build_scheduler(config.schedule, optimizer, total=config.steps, warmup=config.warmup_steps,
                           final_ratio=config.final_lr_ratio)


def flow_of_run(config: Any, *, central: bool = True, dtype: str = "float64", tol: float = 1e-3,
                flow_options: dict | None = None) -> FlowResult:
    """The central (or stable) flow of the full-batch training run ``config`` (a :class:`deep.TrainConfig`
    or its dict): the same data, initial model (its seed), loss, optimizer, hyperparameters and
    learning-rate schedule (its lr at every update, read from the scheduler the run builds), recorded on
    the run's grid (every ``measure_every`` steps), on the run's torch thread count, so the flow and the
    run compare row by row.  Raises ValueError for a minibatch run."""
    from ..training.config import TrainConfig
    from ..training.train import materials

    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    config.validate()
    if config.batch_size is not None:
        raise ValueError(f"a flow follows a full-batch run: batch_size must be None; got {config.batch_size!r}")
    with torch_threads(config.threads):
        data, model, loss_fn = materials(config, config.torch_device(), config.torch_dtype())
        return central_flow(model, loss_fn, data.chunks(config.chunk_size), config.optimizer, steps=config.steps,
                            scheduler=run_scheduler(config), record_every=config.measure_every, central=central,
                            dtype=dtype, tol=tol, seed=config.seed, flow_options=flow_options,
                            **config.resolved_hyper())


def flow_experiment(run: dict, central: bool = True, dtype: str = "float64", tol: float = 1e-3) -> dict:
    """:func:`flow_of_run` as JSON-ready data (the figures cache it): ``status``, ``reason``, ``step`` and
    the ``records`` as columns."""
    result = flow_of_run(run, central=central, dtype=dtype, tol=tol)
    return {"status": result.status, "reason": result.reason, "step": result.step,
            "records": {name: [float(v) for v in values] for name, values in result.records.items()}}


def central_flow(model: nn.Module, loss_fn: LossFn, data: Data, optimizer: str | torch.optim.Optimizer, *,
                 steps: int, scheduler: Any = None, record_every: int = 10, central: bool = True,
                 dtype: str = "float64", tol: float = 1e-4, max_hvps: int = 100, seed: int = 0,
                 flow_options: dict | None = None, **hyper: float) -> FlowResult:
    """The central flow (``central=False``: the stable flow) of full-batch ``optimizer`` from the model's
    current parameters, for ``steps`` optimizer steps.

    Args:
        model, loss_fn, data: the full-batch loss (:mod:`deep.curvature.inputs`); the model is copied, not changed.
        optimizer: a package name ("gd", "rmsprop", "adam", "adamw", "nadam"; torch semantics) with the
            registry's hyperparameters in ``hyper`` (``eta``, ``beta1``, ``beta2``, ``eps``, ``beta``,
            ``weight_decay``, ``momentum_decay``), or a fresh ``torch.optim`` object over the model's
            parameters (its settings read from it).
        scheduler: None (constant lr), a ``torch.optim.lr_scheduler`` object attached to that optimizer (the
            flow's lr at every update is the scheduler's), a sequence of lr factors (update 1 first) or a
            function of the update index t >= 1 (:mod:`deep.flows.follow`).
        steps: flow time in optimizer steps (>= 0); record_every: steps between records (>= 1).
        dtype: the copy's dtype, "float64" (default) or "float32".
        tol, max_hvps, seed: the eigensolver's relative residual tolerance, product cap and random start.
        flow_options: :class:`aeos_theory.central_flow.CentralFlow`'s (``dt_max``, ``margin``, ...).

    Returns a :class:`aeos_theory.central_flow.FlowResult` whose ``records`` hold a training run's columns
    with the flow's meaning (module docstring) and ``w`` the final flat parameters.  ValueError for an
    optimizer or scheduler a flow cannot follow (:mod:`deep.flows.follow`).
    """
    steps = checks.integer("steps", steps, low=0)
    name, values, schedule = flow_setting(model, optimizer, scheduler, steps, hyper)
    problem = NetworkFlow(model, loss_fn, data, dtype=dtype, tol=tol, max_hvps=max_hvps, seed=seed)
    return central_flow_of(problem, name, problem.flat(), steps, record_every=record_every, central=central,
                           hyper=values, schedule=schedule, **(flow_options or {}))
