"""Stable and central flows of a network's full-batch training: GD, RMSProp and Adam.

The flows are those of :mod:`aeos_theory.central_flow` (Cohen, Damian, Talwalkar, Kolter and Lee,
ICLR 2025, arXiv 2410.24206; Adam's momentum by the quasi-static approximation documented there); this
module supplies a network as their :class:`~aeos_theory.central_flow.FlowProblem`, built from the
package's own curvature toolkit:

* at each point w, one Hessian operator (:func:`deep.curvature.hessian.hessian_operator`: the full batch's gradient graph
  kept, so the gradient comes free and every product is one backward pass);
* the top eigenpairs of K = eta P^-1/2 H P^-1/2 by the warm-started Lanczos solver
  (:func:`deep.measure.eigenpairs_of` on a :class:`deep.PreconditionedOperator`), starting from the
  previous point's eigenvectors;
* grad_w (u^T H u) by ``torch.func`` (:meth:`deep.curvature.hessian.ModelOperator.curvature_gradient`);
* float64 by default: the flow works on a float64 copy of the model (the user's model is not touched).

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
from aeos_theory.central_flow import FlowResult, central_flow_of

from ..curvature.door import check_measurement_inputs
from ..curvature.eigen import eigenpairs_of
from ..curvature.hessian import ModelOperator, hessian_operator
from ..curvature.inputs import Data, LossFn, check_loss, check_model, chunks
from ..curvature.operators import PreconditionedOperator
from ..curvature.params import ParamLayout
from ..measure.oscillation import flat_parameters
from ..training.losses import correct, count

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class NetworkFlow:
    """A network's full-batch loss L(w) over the flat parameter vector w (a float64 copy of ``model``)."""

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
        """grad L(w) (one pass over the data; ``torch.func.grad`` per chunk)."""
        self.load(w)
        return ModelOperator(self.model, self.loss_fn, self.data).gradient()

    def eigenpairs(self, operator, key: str, k: int):
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
        self.converged = True

    def loss(self) -> float:
        return self.operator.loss()

    def gradient(self) -> Tensor:
        return self.operator.start_direction()  # the full-batch gradient, read off the kept graph

    def eigenpairs(self, scale: Any, k: int) -> tuple[np.ndarray, list[Tensor]]:
        """Top-k of diag(scale) H diag(scale) = P'^-1/2 H P'^-1/2 with P' = 1 / scale^2."""
        op = self.operator
        scale = torch.as_tensor(scale, dtype=op.dtype, device=op.device).expand(op.n)
        result = self.flow.eigenpairs(PreconditionedOperator(op, scale.pow(-2)), "K", min(k, op.n))
        self.converged = self.converged and result.converged
        return np.asarray(result.eigenvalues), [result.eigenvectors[:, i] for i in range(len(result.eigenvalues))]

    def curvature_gradients(self, pairs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
        """All pairs at once (``vmap``: :meth:`deep.curvature.hessian.ModelOperator.curvature_gradients`)."""
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


def flow_of_run(config: Any, *, central: bool = True, dtype: str = "float64", tol: float = 1e-3,
                flow_options: dict | None = None) -> FlowResult:
    """The central (or stable) flow of the full-batch training run ``config`` (a :class:`deep.TrainConfig`
    or its dict): the same data, initial model (its seed), loss, optimizer and hyperparameters, recorded on
    the run's grid (every ``measure_every`` steps), on the run's torch thread count, so the flow and the
    run compare row by row.  Raises ValueError for a minibatch run or a learning-rate schedule."""
    from ..training.config import TrainConfig
    from ..training.train import materials

    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    config.validate()
    if config.batch_size is not None or config.schedule != "constant":
        raise ValueError("a flow follows a full-batch run at a constant learning rate: batch_size must be None "
                         f"and schedule 'constant'; got batch_size={config.batch_size!r}, schedule={config.schedule!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        data, model, loss_fn = materials(config, config.torch_device(), config.torch_dtype())
        return central_flow(model, loss_fn, data.chunks(config.chunk_size), config.optimizer, steps=config.steps,
                            record_every=config.measure_every, central=central, dtype=dtype, tol=tol,
                            seed=config.seed, flow_options=flow_options, **config.resolved_hyper())
    finally:
        torch.set_num_threads(threads)


def flow_experiment(run: dict, central: bool = True, dtype: str = "float64", tol: float = 1e-3) -> dict:
    """:func:`flow_of_run` as JSON-ready data (the figures cache it): ``status``, ``reason``, ``step`` and
    the ``records`` as columns."""
    result = flow_of_run(run, central=central, dtype=dtype, tol=tol)
    return {"status": result.status, "reason": result.reason, "step": result.step,
            "records": {name: [float(v) for v in values] for name, values in result.records.items()}}


def central_flow(model: nn.Module, loss_fn: LossFn, data: Data, optimizer_name: str, *, steps: int,
                 record_every: int = 10, central: bool = True, dtype: str = "float64", tol: float = 1e-4,
                 max_hvps: int = 100, seed: int = 0, flow_options: dict | None = None, **hyper: float) -> FlowResult:
    """The central flow (``central=False``: the stable flow) of full-batch ``optimizer_name`` ("gd",
    "rmsprop" or "adam", torch semantics, the registry's hyperparameter names: ``eta``, ``beta1``,
    ``beta2``, ``eps``) from the model's current parameters, for ``steps`` optimizer steps.

    Args:
        model, loss_fn, data: the full-batch loss (:mod:`deep.curvature.inputs`); the model is copied, not changed.
        steps: flow time in optimizer steps (>= 0); record_every: steps between records (>= 1).
        dtype: the copy's dtype, "float64" (default) or "float32".
        tol, max_hvps, seed: the eigensolver's relative residual tolerance, product cap and random start.
        flow_options: :class:`aeos_theory.central_flow.CentralFlow`'s (``dt_max``, ``margin``, ...).

    Returns a :class:`aeos_theory.central_flow.FlowResult` whose ``records`` hold a training run's columns
    with the flow's meaning (module docstring) and ``w`` the final flat parameters.
    """
    problem = NetworkFlow(model, loss_fn, data, dtype=dtype, tol=tol, max_hvps=max_hvps, seed=seed)
    return central_flow_of(problem, optimizer_name, problem.flat(), steps, record_every=record_every,
                           central=central, hyper=hyper, **(flow_options or {}))
