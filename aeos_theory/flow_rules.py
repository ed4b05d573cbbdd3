"""What a central flow needs to know about an optimizer, a problem and its own records.

* :class:`FlowRule`: one optimizer's continuous-time rule, from the registry's hyperparameters and an
  optional learning-rate schedule: the lr of each update, its preconditioner P(nu, t), the EMA rates of
  its moments, the coefficients of its step (bias correction, NAdam's momentum schedule), its weight
  decay (coupled or decoupled) and the threshold constant c_t of :func:`aeos_theory.threshold_constant`;
* :class:`FlowProblem` / :class:`FlowPoint`: what a flow asks of a loss (``sims`` and ``deep`` supply them);
* :class:`FlowResult` and :data:`FLOW_COLUMNS`: a flow's records;
* :func:`moving_average`: the smoothing a discrete run's oscillating loss is compared through.

The flows themselves: :mod:`aeos_theory.central_flow`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from aeos_base import checks
from aeos_theory.optimizers import get_optimizer, validate
from aeos_theory.thresholds import threshold_constant

#: The optimizers with a flow: the registry's names.
FLOW_OPTIMIZERS: tuple[str, ...] = ("gd", "rmsprop", "adam", "adamw", "nadam")

#: Columns of a flow's records: the full-batch ones of a training run's metrics (``deep.training.runlog.COLUMNS``
#: but its minibatch ``BATCH_COLUMNS``), with
#: ``train_loss`` the predicted time-averaged loss L(w) + 1/2 <Sigma, H> and ``train_accuracy`` the
#: accuracy at w (NaN where the problem has none), ``lr`` the learning rate of the update just taken
#: (update t for the row of step t, the first update's at step 0, as a training run records it),
#: ``oscillation`` the predicted rms of the oscillation along the unit top eigenvector of P^-1 H and
#: ``oscillation_total`` that of its whole length sqrt(E|delta|^2) = sqrt(tr Sigma) (parameter units; the
#: discrete runs measure both), then the flow's own: ``center_loss`` L(w), ``directions`` (how many
#: oscillate), ``gradients`` (evaluations so far) and ``dt`` (the step in use, in optimizer steps).
FLOW_COLUMNS: tuple[str, ...] = ("step", "train_loss", "train_accuracy", "lr", "sharpness",
                                 "preconditioned_sharpness", "threshold", "eta_S_P", "eta_threshold", "edge_ratio",
                                 "hvps", "converged", "wall_time", "oscillation", "oscillation_total", "center_loss",
                                 "directions", "gradients", "dt")

#: A learning-rate schedule as a flow takes it: the lr factor of each update (lr_t = eta * factor_t), as a
#: sequence (update 1 first) or a function of the update's index t >= 1.
Schedule = Sequence[float] | Callable[[int], float]


class FlowPoint(Protocol):
    """What a flow asks of the loss at one point w (a problem may cache work shared between them)."""

    def loss(self) -> float: ...
    def gradient(self) -> Any: ...
    def eigenpairs(self, scale: Any, k: int, shift: float = 0.0) -> tuple[np.ndarray, list[Any]]:
        """The top-k eigenvalues (descending) and unit eigenvectors of diag(scale) (H + shift I) diag(scale)
        (``shift``: a coupled weight decay; a problem may leave the argument out when it is never given)."""
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


def _factors(schedule: Schedule | None, updates: int | None) -> tuple[float, ...]:
    """The lr factors of updates 1..``updates`` read from ``schedule`` and checked (() for no schedule)."""
    if schedule is None:
        return ()
    if callable(schedule):
        if updates is None:
            raise ValueError("updates must be given with a schedule function (how many updates to read)")
        values = [schedule(t) for t in range(1, updates + 1)]
    elif isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence):
        raise ValueError("schedule must be a sequence of lr factors (update 1 first) or a function of the update "
                         f"index t >= 1; got {type(schedule).__name__}")
    else:
        values = list(schedule)
        if updates is not None and len(values) < updates:
            raise ValueError(f"schedule must give the lr factor of each of the {updates} updates; got {len(values)}")
    if not values:
        raise ValueError("schedule must give at least one lr factor; got none")
    return tuple(checks.real(f"schedule factor of update {t}", v, low=0.0) for t, v in enumerate(values, 1))


@dataclass(frozen=True)
class FlowRule:
    """One optimizer's flow: its hyperparameters (the registry's names), its schedule, P, its EMA rates,
    its step coefficients and c_t.

    ``factors``: the lr factor of updates 1, 2, ... (lr_t = eta factors[t - 1]; past the end the last one
    holds; () for a constant lr).  Update t is the t-th ``.step()``; in flow time it is taken over
    (t - 1, t], so the lr in force at time t is that of update floor(t) + 1 (:meth:`lr_at`).
    """

    optimizer: str
    hyper: Mapping[str, float]
    factors: tuple[float, ...] = ()

    @classmethod
    def of(cls, optimizer: str, hyper: Mapping[str, object], schedule: Schedule | None = None,
           updates: int | None = None) -> "FlowRule":
        """Validated: ``optimizer`` one of :data:`FLOW_OPTIMIZERS` with the registry's hyperparameters
        (beta2 > 0: nu must be an EMA), ``schedule`` the lr factors of updates 1..``updates`` (a function
        is read for that many), lr_t * weight_decay < 1 at every update for decoupled decay."""
        checks.choice("optimizer", optimizer, FLOW_OPTIMIZERS)
        values = validate(optimizer, hyper)
        if get_optimizer(optimizer).adaptive and values["beta2"] == 0.0:
            raise ValueError("beta2 must satisfy 0 < beta2 < 1 for a flow (beta2 = 0 sets nu = g^2 at once: "
                             "no moving average to follow); got 0.0")
        rule = cls(optimizer, values, _factors(schedule, updates))
        if rule.decoupled:
            worst = max(rule.factors or (1.0,)) * values["eta"] * values["weight_decay"]
            if worst >= 1.0:
                raise ValueError(f"schedule must keep lr * weight_decay < 1 (decoupled decay multiplies w by "
                                 f"1 - lr wd); its largest is {worst:g}")
        return rule

    # ------------------------------------------------------------------ learning rate
    @property
    def eta(self) -> float:
        """The base learning rate (torch's ``initial_lr``)."""
        return self.hyper["eta"]

    @property
    def scheduled(self) -> bool:
        """Whether the lr moves from one update to the next."""
        return len(set(self.factors)) > 1 or (len(self.factors) == 1 and self.factors[0] != 1.0)

    def lr(self, update: int) -> float:
        """lr of update ``update`` >= 1 (the ``update``-th ``.step()``): eta times its factor."""
        if not self.factors:
            return self.eta
        return self.eta * self.factors[min(max(update, 1), len(self.factors)) - 1]

    def lr_at(self, t: float) -> float:
        """The lr in force at flow time t: that of update floor(t) + 1, taken over (floor(t), floor(t) + 1]."""
        return self.lr(math.floor(t + 1e-9) + 1)

    def next_change(self, t: float) -> float:
        """The next time after t where the lr may change (the next whole step; infinity without a schedule)."""
        return math.floor(t + 1e-9) + 1.0 if self.scheduled else math.inf

    # ------------------------------------------------------------------ what the optimizer is
    @property
    def spec(self):
        return get_optimizer(self.optimizer)

    @property
    def adaptive(self) -> bool:
        """Whether P moves (RMSProp and the Adam family)."""
        return self.spec.adaptive

    @property
    def beta(self) -> float:
        """The momentum coefficient: beta1 (Adam family), beta (RMSprop), 0 (GD)."""
        return self.hyper.get(self.spec.momentum, 0.0) if self.spec.momentum else 0.0

    @property
    def momentum(self) -> bool:
        """Whether the flow carries a first moment m (a momentum coefficient above 0)."""
        return self.beta > 0.0

    @property
    def preconditioned_momentum(self) -> bool:
        """Whether m averages the preconditioned gradient g / P (RMSprop) rather than g (the Adam family)."""
        return self.optimizer == "rmsprop"

    @property
    def coupled_decay(self) -> float:
        """wd of coupled decay (the gradient is g + wd w: the flow of L + wd/2 |w|^2); 0 otherwise."""
        return self.hyper.get("weight_decay", 0.0) if self.spec.decay == "coupled" else 0.0

    @property
    def decoupled(self) -> bool:
        """Whether the decay is decoupled (AdamW: w <- (1 - lr wd) w before the step)."""
        return self.spec.decay == "decoupled" and self.hyper.get("weight_decay", 0.0) > 0.0

    def decay_rate(self, t: float) -> float:
        """rho = -ln(1 - lr wd) per step at time t for decoupled decay (0 otherwise): dw/dt gains -rho w, whose
        factor over one step is torch's 1 - lr wd."""
        if not self.decoupled:
            return 0.0
        return -math.log1p(-self.lr_at(t) * self.hyper["weight_decay"])

    @property
    def ema_rate(self) -> float:
        """c2 = -ln beta2: nu's continuous EMA rate per step (its decay is then beta2^t, as the discrete one's)."""
        return -math.log(self.hyper["beta2"])

    @property
    def momentum_rate(self) -> float:
        """c1 = -ln beta (beta1 or RMSprop's beta): m's continuous EMA rate per step."""
        return -math.log(self.beta)

    def coefficients(self, t: float) -> tuple[float, float]:
        """(a_t, b_t) of the step at time t: w moves by -lr (a_t g + b_t m) / P (the Adam family; RMSprop:
        -lr (a_t g / P + b_t m), m averaging g / P).  Adam, AdamW: (0, 1 / (1 - beta1^t)), the bias
        correction at continuous t; NAdam: torch's (c1_n, c2_n) of update n = ceil(t) (its momentum
        schedule, :func:`aeos_theory.optimizers`); RMSprop with momentum: (0, 1 / (1 - beta)), m = (1 - beta)
        b for torch's buffer b; without momentum: (1, 0)."""
        if not self.momentum:
            return 1.0, 0.0
        if self.optimizer == "rmsprop":
            return 0.0, 1.0 / (1.0 - self.beta)
        if self.optimizer == "nadam":
            c = self.spec.step_coefficients(max(1, math.ceil(t - 1e-9)), self.hyper)
            return float(c["c1"]), float(c["c2"])
        return 0.0, 1.0 / (1.0 - self.beta ** t)

    # ------------------------------------------------------------------ the preconditioner
    def bias(self, t: float) -> tuple[float, float]:
        """(b, db/dt) of nu_hat = b(t) nu: the Adam family 1 / (1 - beta2^t), RMSProp 1."""
        if self.optimizer == "rmsprop":
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

    # ------------------------------------------------------------------ the threshold
    def constant(self, t: float) -> float:
        """c_t: the threshold constant of update n = ceil(t) (at least 1), at that update's lr (AdamW's
        (1 + beta1)(2 - lr wd)(1 - beta1^n)/(1 - beta1) depends on it; the others do not)."""
        n = max(1, math.ceil(t - 1e-9))
        hyper = dict(self.hyper)
        if self.spec.decay == "decoupled":
            hyper["eta"] = self.lr(n)
        return _constant(self.optimizer, tuple(sorted(hyper.items())), n)


@dataclass
class FlowResult:
    """A flow's trajectory: ``records`` (columns :data:`FLOW_COLUMNS`, one row per record step),
    ``status`` ("completed"; "diverged": no oscillation holds the edge or the loss is not finite;
    "stopped": a stable flow whose eta S_P rose past ``stop_factor`` times the threshold), the time ``step``
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
