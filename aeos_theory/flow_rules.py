"""What a central flow needs to know about an optimizer, a problem and its own records.

* :class:`FlowRule`: one optimizer's continuous-time rule, from the registry's hyperparameters: its
  preconditioner P(nu, t), the EMA rates of its moments, its first-moment bias correction and the
  threshold constant c_t of :func:`aeos_theory.threshold_constant`;
* :class:`FlowProblem` / :class:`FlowPoint`: what a flow asks of a loss (``sims`` and ``deep`` supply them);
* :class:`FlowResult` and :data:`FLOW_COLUMNS`: a flow's records;
* :func:`moving_average`: the smoothing a discrete run's oscillating loss is compared through.

The flows themselves: :mod:`aeos_theory.central_flow`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from aeos_base import checks
from aeos_theory.optimizers import validate
from aeos_theory.thresholds import threshold_constant

#: The optimizers with a flow: the registry's names.
FLOW_OPTIMIZERS: tuple[str, ...] = ("gd", "rmsprop", "adam")

#: Columns of a flow's records: the full-batch ones of a training run's metrics (``deep.training.runlog.COLUMNS``
#: but its minibatch ``BATCH_COLUMNS``), with
#: ``train_loss`` the predicted time-averaged loss L(w) + 1/2 <Sigma, H> and ``train_accuracy`` the
#: accuracy at w (NaN where the problem has none), ``oscillation`` the predicted rms of the oscillation
#: along the unit top eigenvector of P^-1 H and ``oscillation_total`` that of its whole length
#: sqrt(E|delta|^2) = sqrt(tr Sigma) (parameter units; the discrete runs measure both), then the flow's
#: own: ``center_loss`` L(w), ``directions`` (how many oscillate), ``gradients`` (evaluations so far)
#: and ``dt`` (the step in use, in optimizer steps).
FLOW_COLUMNS: tuple[str, ...] = ("step", "train_loss", "train_accuracy", "lr", "sharpness",
                                 "preconditioned_sharpness", "threshold", "eta_S_P", "eta_threshold", "edge_ratio",
                                 "hvps", "converged", "wall_time", "oscillation", "oscillation_total", "center_loss",
                                 "directions", "gradients", "dt")


class FlowPoint(Protocol):
    """What a flow asks of the loss at one point w (a problem may cache work shared between them)."""

    def loss(self) -> float: ...
    def gradient(self) -> Any: ...
    def eigenpairs(self, scale: Any, k: int) -> tuple[np.ndarray, list[Any]]:
        """The top-k eigenvalues (descending) and unit eigenvectors of diag(scale) H diag(scale)."""
    def curvature_gradients(self, pairs: list[tuple[Any, Any]]) -> list[Any]:
        """grad_w (u^T H(w) v) for each fixed pair (u, v) (third-derivative-vector products)."""
    def sharpness(self) -> float:
        """S = lambda_max(H) at w (for the records)."""


class FlowProblem(Protocol):
    """A loss L(w) over flat vectors w (numpy arrays or torch tensors: a flow uses +, -, * and ** only)."""

    def at(self, w: Any) -> FlowPoint: ...
    def gradient(self, w: Any) -> Any: ...


@functools.lru_cache(maxsize=65536)
def _constant(optimizer: str, hyper: tuple, step: int) -> float:
    return threshold_constant(optimizer, step=step, **dict(hyper))


@dataclass(frozen=True)
class FlowRule:
    """One optimizer's flow: its hyperparameters (the registry's names), P, its EMA rates and c_t."""

    optimizer: str
    hyper: Mapping[str, float]

    @classmethod
    def of(cls, optimizer: str, hyper: Mapping[str, object]) -> "FlowRule":
        """Validated: ``optimizer`` one of :data:`FLOW_OPTIMIZERS`, no weight decay, RMSProp without momentum."""
        checks.choice("optimizer", optimizer, FLOW_OPTIMIZERS)
        values = validate(optimizer, hyper)
        if values.get("weight_decay", 0.0) != 0.0:
            raise ValueError(f"weight_decay must be 0 for a central flow; got {values['weight_decay']!r}")
        if optimizer == "rmsprop" and values.get("beta", 0.0) != 0.0:
            raise ValueError(f"beta (RMSprop momentum) must be 0 for a central flow; got {values['beta']!r}")
        return cls(optimizer, values)

    @property
    def eta(self) -> float:
        return self.hyper["eta"]

    @property
    def adaptive(self) -> bool:
        """Whether P moves (RMSProp, Adam)."""
        return self.optimizer != "gd"

    @property
    def momentum(self) -> bool:
        """Whether the flow carries a first moment m (Adam)."""
        return self.optimizer == "adam"

    @property
    def ema_rate(self) -> float:
        """c2 = -ln beta2: nu's continuous EMA rate per step (its decay is then beta2^t, as the discrete one's)."""
        return -math.log(self.hyper["beta2"])

    @property
    def momentum_rate(self) -> float:
        """c1 = -ln beta1: m's continuous EMA rate per step."""
        return -math.log(self.hyper["beta1"])

    def momentum_bias(self, t: float) -> float:
        """m_hat / m = 1 / (1 - beta1^t) (Adam's first-moment bias correction)."""
        return 1.0 / (1.0 - self.hyper["beta1"] ** t)

    def bias(self, t: float) -> tuple[float, float]:
        """(b, db/dt) of nu_hat = b(t) nu: Adam 1 / (1 - beta2^t), RMSProp 1."""
        if self.optimizer != "adam":
            return 1.0, 0.0
        decay = self.hyper["beta2"] ** t
        return 1.0 / (1.0 - decay), decay * math.log(self.hyper["beta2"]) / (1.0 - decay) ** 2

    def preconditioner(self, nu: Any, t: float) -> Any:
        """P = sqrt(b(t) nu) + eps (1.0 for GD)."""
        return 1.0 if not self.adaptive else (self.bias(t)[0] * nu) ** 0.5 + self.hyper["eps"]

    def preconditioner_rate(self, nu: Any, nu_rate: Any, t: float, *, with_time: bool = True) -> Any:
        """dP/dt for dnu/dt = ``nu_rate`` (+ the bias correction's own change when ``with_time``)."""
        b, db = self.bias(t)
        rate = b * nu_rate + (db * nu if with_time else 0.0)
        return rate / (2.0 * (b * nu) ** 0.5 + 1e-30)

    def constant(self, t: float) -> float:
        """c_t: the threshold constant of the update at step ceil(t)."""
        return _constant(self.optimizer, tuple(sorted(self.hyper.items())), max(1, math.ceil(t - 1e-9)))


@dataclass
class FlowResult:
    """A flow's trajectory: ``records`` (columns :data:`FLOW_COLUMNS`, one row per record step),
    ``status`` ("completed"; "diverged": no oscillation holds the edge or the loss is not finite;
    "stopped": a stable flow whose eta S_P passed ``stop_factor`` times the threshold), the time ``step``
    it ended at and why (``reason``), and the final state ``w``, ``m``, ``nu``."""

    optimizer: str
    central: bool
    records: dict[str, list[float]]
    status: str
    step: float
    reason: str = ""
    w: Any = None
    m: Any = None
    nu: Any = None

    def __repr__(self) -> str:
        rows = len(next(iter(self.records.values()), []))
        why = f", reason={self.reason!r}" if self.reason else ""
        return (f"FlowResult(optimizer={self.optimizer!r}, central={self.central}, status={self.status!r}, "
                f"step={self.step:g}{why}, records: {rows} rows of {len(self.records)} columns)")

    def column(self, name: str) -> np.ndarray:
        """One record column as a float64 array."""
        return np.asarray(self.records[name], dtype=np.float64)


def moving_average(values: Sequence[float], width: int = 3) -> np.ndarray:
    """Centred moving average over ``width`` records (the ends average what they have): the smoothing a
    discrete run's oscillating loss is compared through."""
    v = np.asarray(values, dtype=np.float64)
    width = checks.integer("width", width, low=1)
    half = width // 2
    return np.array([np.nanmean(v[max(0, i - half): i + half + 1]) for i in range(len(v))])


def edge_onset(steps: Sequence[float], edge_ratio: Sequence[float], level: float = 0.95) -> float | None:
    """The first step whose edge ratio (eta S_P / c_t) reaches ``level``: where a run arrives at the edge."""
    for step, ratio in zip(steps, edge_ratio):
        if np.isfinite(ratio) and ratio >= level:
            return float(step)
    return None


def tracking_error(steps: Sequence[float], reference: Sequence[float], flow_steps: Sequence[float],
                   flow: Sequence[float], start: float | None, width: int = 3) -> float:
    """Median over the records at or after ``start`` of |f - r| / r, with r the ``width``-record moving
    average of the discrete run's ``reference`` and f the flow's value at the same step (a step the flow
    did not reach, e.g. a stopped stable flow, counts as infinitely far); NaN when there is no such record."""
    if start is None:
        return math.nan
    smooth = moving_average(reference, width)
    at = {float(s): float(v) for s, v in zip(flow_steps, flow)}
    errors = [abs(at.get(float(s), math.inf) - r) / abs(r) for s, r in zip(steps, smooth)
              if float(s) >= start and np.isfinite(r) and r != 0]
    return float(np.median(errors)) if errors else math.nan


def rms(values: Sequence[float]) -> float:
    """sqrt(mean(v^2)) over the finite values (NaN when none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.sqrt(np.mean(v * v))) if v.size else math.nan
