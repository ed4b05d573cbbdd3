"""Central flows: ODEs for the time-averaged trajectory of GD, RMSProp and Adam at the edge of stability.

Cohen, Damian, Talwalkar, Kolter and Lee, "Understanding Optimization in Deep Learning with Central
Flows" (ICLR 2025, arXiv 2410.24206).  Time t counts optimizer steps.  The state is the parameter
vector w and, for the adaptive methods, the EMA nu of squared gradients, with the optimizer's

    P = sqrt(nu_hat) + eps   (Adam: nu_hat = nu / (1 - beta2^t); RMSProp: nu_hat = nu),   P = 1 for GD,

and the effective Hessian K = eta P^-1/2 H P^-1/2, whose top eigenvalue kappa_1 = eta S_P is what the
threshold constant c_t bounds (2 for GD and RMSProp, (2 + 2 beta1)(1 - beta1^t)/(1 - beta1) for Adam:
:func:`aeos_theory.threshold_constant`).

**Stable flow** (the optimizer without oscillation):

    dw/dt = -eta P^-1 grad L(w),        dnu/dt = c2 (grad L(w)^2 - nu),        c2 = -ln beta2

(c2 makes the continuous EMA decay exactly as the discrete one, beta2^t, so nu_hat's bias correction
carries over).

**Central flow.**  At the edge the iterates oscillate around w along the top eigenvectors of P^-1 H:
w + delta, delta = sum_i xi_i u_i with u_i = sqrt(eta / P) q_i (q_i the unit eigenvectors of K, so
u_i^T H u_j = kappa_i delta_ij) and E[xi xi^T] = X, a k x k PSD matrix (Sigma = E[delta delta^T] =
U X U^T).  Averaged over the oscillation to second order, the gradient and its square are

    E[grad L(w + delta)] = grad L + 1/2 grad_w <Sigma, H(w)>,    E[grad L(w + delta)^2] = grad L^2 + diag(H Sigma H),

with H u_a = (kappa_a / s) q_a (s = sqrt(eta / P)), so the flow is

    dw/dt  = -eta P^-1 (grad L + 1/2 sum_ab X_ab grad_w(u_a^T H u_b)),
    dnu/dt = c2 (grad L^2 + sum_ab X_ab kappa_a kappa_b q_a q_b / s^2 - nu),

and X is fixed at each instant by the stability of the oscillating directions: it is non-zero only
along directions held exactly at the edge, and holds them there (complementarity),

    X >= 0,    c_t I - Q^T K Q >= 0,    <X, c_t I - Q^T K Q> = 0.

Over a step dt the edge condition is asked of the linearisation at t + dt, as the authors' code does,
A(X) = c_{t+dt} I - diag(kappa) - dt dK/dt(X) with dK_ij/dt = grad_w(u_i^T H u_j) . dw/dt
- (kappa_i + kappa_j)/2 sum_n q_in q_jn (dP_n/dt) / P_n, affine in X: a semidefinite complementarity
problem (:func:`aeos_theory.complementarity.solve_complementarity`) over the directions within
``margin`` of the edge.  The time-averaged loss it predicts is L(w) + 1/2 <Sigma, H> = L(w) + 1/2
sum_i X_ii kappa_i, and the oscillation's rms along the unit top direction u_1/|u_1| is
sqrt(sum_ab X_ab <u_a, u_1><u_b, u_1>) / |u_1| (parameter units).

**Adam's momentum.**  Adam's flow carries the first moment m in its state, in the joint phase space
(w, m) of the rod-flow literature (Regis and Chewi, arXiv 2605.06821), with nu as a smooth auxiliary
variable:

    dw/dt = -eta m_hat / P,    m_hat = m / (1 - beta1^t),    dm/dt = c1 (E[grad L(w + delta)] - m),

c1 = -ln beta1: m lags the gradient by about 1/(1 - beta1) steps and the (w, m) modes ring with the
discrete optimizer's own damping, sqrt(beta1) per step.  The period-2 oscillation itself, which the
momentum filters, is not resolved: it enters through Sigma (the averaged gradient and nu's source) and
through Adam's threshold c_t, which the discrete recurrence fixes (:mod:`aeos_theory.optimizers`).
The oscillation then acts on K through nu at once (P grows) and through m with its lag, so the
complementarity problem sees both as the step's own map does.  This is an approximation: its error is
measured against the discrete runs, not assumed small (the ``central_flows`` figure,
``tests/test_central_flows.py``).

Steps: an adaptive dt, shrunk when the top eigenvalue moves fast.  GD and RMSProp: at most ``dt_max``
(1 near the edge), each a damped Chebyshev step (:mod:`aeos_theory.chebyshev`) of the w equation with P
and the oscillation's force frozen over the step.  Adam: at most 1/2, m and nu by their exact EMA
updates with sources frozen over the step, then w with the new m_hat / P, the order of torch's own
step: a map stable for eta S_P dt < (2 + 2 beta1^dt)/(1 - beta1^dt), 4 times Adam's threshold at dt =
1/2, damping the (w, m) modes as the continuous flow does.  nu always by its exact EMA update.  A flow
starts where the discrete optimizer stands after its first step for the adaptive methods (the first
update sets nu from nothing; torch's first step is applied exactly), at step 0 for GD.

The flow works on any problem through :class:`FlowProblem` (vectors: numpy arrays in :mod:`sims`,
torch tensors in :mod:`deep`; only +, -, * and ** are used on them).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from aeos_base import checks
from aeos_theory.chebyshev import chebyshev_step, stages_for
from aeos_theory.complementarity import EdgeNotHeld, solve_complementarity
from aeos_theory.flow_rules import (FLOW_COLUMNS, FLOW_OPTIMIZERS, FlowPoint, FlowProblem, FlowResult, FlowRule,
                                    moving_average)

__all__ = ["CentralFlow", "FlowState", "central_flow_of", "FLOW_COLUMNS", "FLOW_OPTIMIZERS", "FlowPoint",
           "FlowProblem", "FlowResult", "FlowRule", "moving_average"]


def _dot(a: Any, b: Any) -> float:
    return float((a * b).sum())


@dataclass
class FlowState:
    """Where a flow stands: parameters ``w``, first moment ``m`` (Adam; else None), second moment ``nu``
    (RMSProp, Adam; else None), time ``t`` in optimizer steps."""

    w: Any
    m: Any
    nu: Any
    t: float


@dataclass
class _Step:
    """What one step computed at its start point: the top eigenvalues ``kappa`` of K, the oscillation X
    over the directions ``q`` (unit eigenvectors of K) / ``u`` = sqrt(eta/P) q, per unit X_ab the
    increment of the averaged gradient (``pull``, 1/2 grad_w(u_a^T H u_b)) and of the averaged squared
    gradient (``square``, kappa_a kappa_b q_a q_b / s^2), the point, its loss and its gradient."""

    kappa: np.ndarray
    point: Any
    loss: float
    gradient: Any
    X: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    q: list[Any] = field(default_factory=list)
    u: list[Any] = field(default_factory=list)
    pull: list[list[Any]] = field(default_factory=list)
    square: list[list[Any]] = field(default_factory=list)


class CentralFlow:
    """The stable (``central=False``) or central flow of ``rule`` on ``problem`` (module docstring).

    Args:
        max_directions: most directions in the complementarity problem (the tracked eigenpairs are one more).
        margin: eigenvalues above (1 - margin) c_t take part in it.
        dt_max: the largest step, in optimizer steps (GD and RMSProp: 1 near the edge whatever this is;
            Adam: 1/2 whatever this is).
        tol_edge: a step is halved when kappa_1 moved by more than tol_edge c_t, grown when much less.
        stop_factor: a stable flow stops once kappa_1 > stop_factor c_t (its stiffness grows without end).
    """

    def __init__(self, problem: FlowProblem, rule: FlowRule, *, central: bool = True, max_directions: int = 4,
                 margin: float = 0.01, dt_max: float = 4.0, tol_edge: float = 0.01, stop_factor: float = 10.0) -> None:
        self.problem, self.rule, self.central = problem, rule, bool(central)
        self.max_directions = checks.integer("max_directions", max_directions, low=1, high=12)
        self.margin = checks.real("margin", margin, low=0.0, high=0.5)
        self.dt_max = checks.real("dt_max", dt_max, low=1e-3, high=64.0)
        self.tol_edge = checks.real("tol_edge", tol_edge, low=1e-6, high=1.0, low_inclusive=False)
        self.stop_factor = checks.real("stop_factor", stop_factor, low=1.0)
        self.k = 1
        self.gradients = 0
        self._last: tuple[np.ndarray, list[Any]] = (np.zeros((0, 0)), [])  # the previous X and its directions

    # ------------------------------------------------------------------ the run
    def run(self, w0: Any, steps: int, record_every: int = 10) -> FlowResult:
        """Flow from w0 (the optimizer's start) to t = ``steps``, recording every ``record_every`` steps."""
        steps = checks.integer("steps", steps, low=0)
        record_every = checks.integer("record_every", record_every, low=1)
        records: dict[str, list[float]] = {c: [] for c in FLOW_COLUMNS}
        clock = time.perf_counter()
        state = self._start(w0, records, clock)
        status, reason, preferred, last_kappa = "completed", "", min(0.5, self.dt_max), None
        on_grid = lambda t: abs(t / record_every - round(t / record_every)) < 1e-9  # noqa: E731
        while True:
            final = state.t >= steps - 1e-9
            target = min(steps, record_every * (math.floor(state.t / record_every + 1e-9) + 1))
            dt = 1.0 if final else min(preferred, target - state.t)
            try:
                step = self._prepare(state, dt)
            except EdgeNotHeld as err:
                status, reason = "diverged", f"the edge cannot be held: {err}"
                break
            if not (np.all(np.isfinite(step.kappa)) and math.isfinite(step.loss)):
                status, reason = "diverged", "the loss or the curvature is not finite"
                break
            if on_grid(state.t) or (final and round(state.t) == steps):
                self._record(records, round(state.t), state.t, math.nan if final else dt, step, clock)
            if final:
                break
            if not self.central and step.kappa[0] > self.stop_factor * self.rule.constant(state.t):
                status, reason = "stopped", f"eta S_P passed {self.stop_factor:g} times the threshold"
                break
            state = self._advance(state, dt, step)
            preferred = self._next_dt(preferred, step.kappa, last_kappa, state.t)
            last_kappa = step.kappa
        return FlowResult(self.rule.optimizer, self.central, records, status, state.t, reason, state.w, state.m,
                          state.nu)

    def _start(self, w0: Any, records: dict, clock: float) -> FlowState:
        """Record step 0 and return the start: w0 at t = 0 for GD; after torch's first update for RMSProp
        and Adam (nu_1 = (1 - beta2) g0^2, m_1 = (1 - beta1) g0, w_1 = w0 - eta g0 / P_1), whose P needs a
        gradient first."""
        if not self.rule.adaptive:
            return FlowState(w0, None, None, 0.0)
        point = self.problem.at(w0)
        unmeasured = _Step(kappa=np.array([math.nan]), point=point, loss=point.loss(), gradient=None)  # no P yet
        self._record(records, 0, 0.0, math.nan, unmeasured, clock)
        g = point.gradient()
        self.gradients += 1
        nu = (1.0 - self.rule.hyper["beta2"]) * (g * g)
        m = (1.0 - self.rule.hyper["beta1"]) * g if self.rule.momentum else None
        return FlowState(w0 - self.rule.eta * g / self.rule.preconditioner(nu, 1.0), m, nu, 1.0)

    def _next_dt(self, dt: float, kappa: np.ndarray, last: np.ndarray | None, t: float) -> float:
        """Halve the step when kappa_1 moved more than tol_edge c_t over the last one, grow it x1.5 when it
        moved less than a quarter of that, within the integrator's limit (:meth:`_limit`)."""
        c = self.rule.constant(t)
        if last is not None:
            moved = abs(kappa[0] - last[0])
            if moved > self.tol_edge * c:
                dt = dt / 2
            elif moved < 0.25 * self.tol_edge * c:
                dt = dt * 1.5
        return max(min(dt, self._limit(kappa[0], t)), min(1.0 / 64, self.dt_max))

    def _limit(self, kappa_max: float, t: float) -> float:
        """The largest step: GD and RMSProp dt_max (1 within 10% of the edge); Adam 1/2, halved until
        eta S_P m_hat/m dt is within half the map's stability bound (2 + 2 beta1^dt)/(1 - beta1^dt)."""
        if not self.rule.momentum:
            return min(1.0, self.dt_max) if kappa_max >= 0.9 * self.rule.constant(t) else self.dt_max
        dt, beta1 = min(0.5, self.dt_max), self.rule.hyper["beta1"]
        while dt > 1.0 / 64 and kappa_max * self.rule.momentum_bias(t) * dt > 0.5 * (2 + 2 * beta1 ** dt) / (1 - beta1 ** dt):
            dt /= 2
        return dt

    # ------------------------------------------------------------------ one step
    def _prepare(self, state: FlowState, dt: float) -> _Step:
        """Everything at the step's start: g, the top eigenpairs of K, and X (complementarity)."""
        rule, eta = self.rule, self.rule.eta
        p = rule.preconditioner(state.nu, state.t)
        scale = (eta / p) ** 0.5
        point = self.problem.at(state.w)
        loss, g = point.loss(), point.gradient()
        self.gradients += 1
        kappa, vectors = point.eigenpairs(scale, self.k)
        kappa = np.asarray(kappa, dtype=np.float64)
        c_next = rule.constant(state.t + dt)
        critical = [i for i in range(len(kappa)) if kappa[i] >= (1 - self.margin) * c_next][: self.max_directions]
        # the next step tracks one eigenpair beyond the oscillating ones (to see the next one coming); a
        # stable flow needs only the top one (its stiffness)
        self.k = min(self.max_directions + 1, len(critical) + 1) if self.central else 1
        step = _Step(kappa=kappa, point=point, loss=loss, gradient=g)
        if self.central and critical:
            step.q = [vectors[i] for i in critical]
            step.u = [scale * v for v in step.q]
            self._oscillation(step, state, dt, p, scale, kappa[critical], c_next)
        return step

    def _w_change(self, state: FlowState, dt: float, p: Any, g: Any) -> tuple[Any, float]:
        """(dw/dt of the step without oscillation, the gain: dw/dt per unit extra averaged gradient,
        times -P/eta).  First-order flows: -eta g / P and 1.  Adam: the step's own map, w moved by
        -dt eta m_hat_new / P with m_new = e^(-c1 dt) m + (1 - e^(-c1 dt)) g, so the gain is
        (1 - e^(-c1 dt)) / ((1 - beta1^(t+dt)) dt): the lag of m."""
        rule, eta = self.rule, self.rule.eta
        if not rule.momentum:
            return -(eta / p) * g, 1.0
        keep = math.exp(-rule.momentum_rate * dt)
        bias = rule.momentum_bias(state.t + dt)
        return -(eta / p) * bias * (keep * state.m + (1 - keep) * g), bias * (1 - keep) / dt

    def _oscillation(self, step: _Step, state: FlowState, dt: float, p: Any, scale: Any, kappa: np.ndarray,
                     c_next: float) -> None:
        """X from the complementarity problem A(X) = c_{t+dt} I - diag(kappa) - dt dK/dt(X) (see the module
        docstring), with the per-unit-X increments of the averaged gradient and squared gradient."""
        rule, eta, k = self.rule, self.rule.eta, len(step.q)
        point, g, q, u = step.point, step.gradient, step.q, step.u
        pull = [[None] * k for _ in range(k)]
        pairs = [(a, b) for a in range(k) for b in range(a, k)]
        for (a, b), grad_ab in zip(pairs, point.curvature_gradients([(u[a], u[b]) for a, b in pairs])):
            pull[a][b] = pull[b][a] = 0.5 * grad_ab
        w_rate, gain = self._w_change(state, dt, p, g)
        square = p_rate = p_per_x = None
        if rule.adaptive:
            c2 = rule.ema_rate
            square = [[kappa[a] * kappa[b] * (q[a] * q[b]) / scale ** 2 for b in range(k)] for a in range(k)]
            p_rate = rule.preconditioner_rate(state.nu, c2 * (g * g - state.nu), state.t)
            p_per_x = [[rule.preconditioner_rate(state.nu, c2 * square[a][b], state.t, with_time=False) / p
                        for b in range(k)] for a in range(k)]  # dP/dt / P per unit X_ab
        moved = [[(eta / p) * pull[a][b] for b in range(k)] for a in range(k)]  # dw/dt per unit X_ab, times -1/gain
        overlap = [[q[i] * q[j] for j in range(k)] for i in range(k)]
        d_k0 = np.zeros((k, k))
        m = np.zeros((k, k, k, k))
        for i in range(k):
            for j in range(k):
                mean_kappa = 0.5 * (kappa[i] + kappa[j])
                d_k0[i, j] = 2 * _dot(pull[i][j], w_rate)
                if rule.adaptive:
                    d_k0[i, j] -= mean_kappa * _dot(overlap[i][j], p_rate / p)
                for a in range(k):
                    for b in range(k):
                        m[i, j, a, b] = -2 * gain * _dot(pull[i][j], moved[a][b])
                        if rule.adaptive:
                            m[i, j, a, b] -= mean_kappa * _dot(overlap[i][j], p_per_x[a][b])
        alpha = c_next * np.eye(k) - np.diag(kappa) - dt * d_k0
        step.X, step.pull, step.square = solve_complementarity(alpha, -dt * m, self._carried(q)), pull, square
        self._last = (step.X, q)

    def _carried(self, q: list[Any]) -> np.ndarray | None:
        """The previous step's X in this step's directions, R X R^T with R_ij = <q_i, q'_j>: the start of
        the solve (near-degenerate eigenvectors rotate freely from one step to the next)."""
        X, old = self._last
        if not old:
            return None
        rotation = np.array([[_dot(a, b) for b in old] for a in q])
        return rotation @ X @ rotation.T

    def _advance(self, state: FlowState, dt: float, step: _Step) -> FlowState:
        """One step: nu (and Adam's m) by their exact EMA updates with sources frozen; w by a Chebyshev step
        with P and the oscillation's pull frozen (GD, RMSProp) or by -dt eta m_hat / P at the new m, nu (Adam)."""
        rule, eta, g = self.rule, self.rule.eta, step.gradient
        pull, square = 0.0, 0.0
        k = step.X.shape[0]
        for a in range(k):
            for b in range(k):
                pull = pull + step.X[a, b] * step.pull[a][b]
                if rule.adaptive:
                    square = square + step.X[a, b] * step.square[a][b]
        t_next = state.t + dt
        nu = m = None
        if rule.adaptive:
            keep = math.exp(-rule.ema_rate * dt)
            nu = keep * state.nu + (1.0 - keep) * (g * g + square)
        if rule.momentum:
            keep = math.exp(-rule.momentum_rate * dt)
            m = keep * state.m + (1.0 - keep) * (g + pull)
            w = state.w - dt * eta * rule.momentum_bias(t_next) * m / rule.preconditioner(nu, t_next)
            return FlowState(w, m, nu, t_next)
        p = rule.preconditioner(state.nu, state.t)

        def rate(v: Any) -> Any:
            self.gradients += 1
            return -(eta / p) * (self.problem.gradient(v) + pull)

        stages = stages_for(dt * max(float(step.kappa[0]), rule.constant(state.t)))
        w = chebyshev_step(state.w, rate, dt, stages, f0=-(eta / p) * (g + pull))
        return FlowState(w, None, nu, t_next)

    def _record(self, records: dict, step_no: int, t: float, dt: float, step: _Step, clock: float) -> None:
        """One row at the step's start point (``dt``: the step about to be taken; a step without eigenvalues,
        an adaptive flow's start, has no P yet: its measurements are NaN)."""
        loss, X, kappa = step.loss, step.X, step.kappa
        k = X.shape[0]
        averaged = loss + 0.5 * sum(X[i, i] * kappa[i] for i in range(k))
        oscillation = total = 0.0 if np.isfinite(kappa[0]) else math.nan
        if k:
            top = step.u[0]
            norm = _dot(top, top) ** 0.5
            along = [_dot(v, top) / norm for v in step.u]
            oscillation = max(0.0, sum(X[a, b] * along[a] * along[b] for a in range(k) for b in range(k))) ** 0.5
            total = max(0.0, sum(X[a, b] * _dot(step.u[a], step.u[b]) for a in range(k) for b in range(k))) ** 0.5
        c, eta = self.rule.constant(max(t, 1.0)), self.rule.eta
        row = {"step": step_no, "train_loss": averaged, "train_accuracy": _accuracy(step.point), "lr": eta,
               "sharpness": step.point.sharpness(), "preconditioned_sharpness": kappa[0] / eta, "threshold": c / eta,
               "eta_S_P": kappa[0], "eta_threshold": c, "edge_ratio": kappa[0] / c,
               "hvps": getattr(self.problem, "hvps", 0), "converged": int(getattr(step.point, "converged", True)),
               "wall_time": time.perf_counter() - clock, "center_loss": loss, "oscillation": oscillation,
               "oscillation_total": total, "directions": k, "gradients": self.gradients, "dt": dt}
        for name in FLOW_COLUMNS:
            records[name].append(row[name])


def _accuracy(point: Any) -> float:
    accuracy = getattr(point, "accuracy", None)
    return float(accuracy()) if callable(accuracy) else math.nan


def central_flow_of(problem: FlowProblem, optimizer: str, w0: Any, steps: int, *, record_every: int = 10,
                    central: bool = True, hyper: Mapping[str, object] | None = None, **options: Any) -> FlowResult:
    """The central (or, ``central=False``, stable) flow of ``optimizer`` with ``hyper`` on ``problem``
    from ``w0`` to step ``steps``, recorded every ``record_every`` steps (options: :class:`CentralFlow`)."""
    flow = CentralFlow(problem, FlowRule.of(optimizer, dict(hyper or {})), central=central, **options)
    return flow.run(w0, steps, record_every)
