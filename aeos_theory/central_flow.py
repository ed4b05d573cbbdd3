"""Central flows: ODEs for the time-averaged trajectory of GD, RMSProp, Adam, AdamW and NAdam at the edge.

Cohen, Damian, Talwalkar, Kolter and Lee, "Understanding Optimization in Deep Learning with Central
Flows" (ICLR 2025, arXiv 2410.24206), extended here to weight decay (coupled and decoupled),
momentum in the Adam family and RMSprop, and learning-rate schedules.  Time t counts optimizer steps.

**Time and the learning rate.**  Update n (the n-th ``.step()``) uses lr_n = eta f_n (f_n the
schedule's factor, 1 without one) and is taken over (n - 1, n].  The flow's eta(t) is piecewise
constant: eta(t) = lr_(floor(t) + 1), so it follows the scheduler the discrete run uses step by step,
and no integrator step straddles a whole step where the lr changes.

**State.**  The parameters w; for the adaptive methods the EMA nu of squared gradients, with

    P = sqrt(b(t) nu) + eps,   b(t) = 1 / (1 - beta2^t) (Adam, AdamW, NAdam), 1 (RMSProp);   P = 1 for GD;

for the momentum methods the first moment m.  The gradient the optimizer sees is g = grad L(w) + wd w
under coupled decay (GD, RMSProp, Adam, NAdam with ``weight_decay``; wd = 0 otherwise), and W = wd I.
The effective Hessian is K = eta(t) P^-1/2 (H + W) P^-1/2; its top eigenvalue kappa_1 = eta S_P is
what the threshold constant c_n of the update in progress bounds (:func:`aeos_theory.threshold_constant`:
2 for GD, 2 (1 + beta) for RMSProp with momentum beta, (2 + 2 beta1)(1 - beta1^n)/(1 - beta1) for Adam,
(1 + beta1)(2 - lr_n wd)(1 - beta1^n)/(1 - beta1) for AdamW, NAdam's under its momentum schedule).

**Stable flow** (the optimizer without oscillation):

    dw/dt  = -eta(t) (a_t g + b_t m) / P - rho(t) w,
    dm/dt  = c1 (s - m),      s = g (Adam family),  s = g / P (RMSprop: its buffer averages g / P),
    dnu/dt = c2 (g^2 - nu),

with c1 = -ln beta1 (RMSprop: -ln beta) and c2 = -ln beta2, so that the continuous EMAs decay as the
discrete ones, beta^t, and rho(t) = -ln(1 - eta(t) wd) for AdamW's decoupled decay (0 otherwise), whose
factor over one step is torch's 1 - lr wd.  The step coefficients (a_t, b_t) are those of torch's
update (:meth:`aeos_theory.flow_rules.FlowRule.coefficients`):

    GD, RMSProp, any Adam with beta1 = 0     (1, 0)                      no m
    Adam, AdamW                              (0, 1 / (1 - beta1^t))      m_hat = m / (1 - beta1^t)
    NAdam                                    (c1_n, c2_n)                torch's momentum schedule mu_n
    RMSprop with momentum beta               (0, 1 / (1 - beta))         m = (1 - beta) b, b torch's buffer

(for RMSprop the step is -eta (a g / P + b m), m already preconditioned).

**Central flow.**  At the edge the iterates oscillate around w along the top eigenvectors of
P^-1 (H + W): w + delta, delta = sum_i xi_i u_i with u_i = sqrt(eta / P) q_i (q_i the unit
eigenvectors of K, so u_i^T (H + W) u_j = kappa_i delta_ij) and E[xi xi^T] = X, a k x k PSD matrix
(Sigma = E[delta delta^T] = U X U^T).  Averaged over the oscillation to second order,

    E[g(w + delta)] = g + 1/2 grad_w <Sigma, H(w)>,    E[g(w + delta)^2] = g^2 + diag((H + W) Sigma (H + W)),

(the decay term wd (w + delta) averages to wd w), with (H + W) u_a = (kappa_a / s) q_a (s = sqrt(eta /
P)); the flow is the stable flow with g replaced by the averaged gradient in w's and m's equations and
the averaged square in nu's:

    g  ->  g + 1/2 sum_ab X_ab grad_w(u_a^T H u_b),     g^2  ->  g^2 + sum_ab X_ab kappa_a kappa_b q_a q_b / s^2,

and X is fixed at each instant by the stability of the oscillating directions: non-zero only along
directions held exactly at the edge, and holding them there (complementarity),

    X >= 0,    c I - Q^T K Q >= 0,    <X, c I - Q^T K Q> = 0.

Over a step dt the edge condition is asked of the linearisation at t + dt, as the authors' code does,
A(X) = c_n I - diag(kappa) - dt dK/dt(X), n the update in progress, with

    dK_ij/dt = grad_w(u_i^T H u_j) . dw/dt  -  (kappa_i + kappa_j)/2 sum_n q_in q_jn (dP_n/dt) / P_n,

affine in X through dw/dt and dP/dt: a semidefinite complementarity problem
(:func:`aeos_theory.complementarity.solve_complementarity`) over the directions within ``margin`` of
the edge.  The time-averaged (data) loss it predicts is L(w) + 1/2 <Sigma, H> = L(w) + 1/2 sum_ab X_ab
(kappa_a delta_ab - wd u_a . u_b), and the oscillation's rms along the unit top direction u_1/|u_1| is
sqrt(sum_ab X_ab <u_a, u_1><u_b, u_1>) / |u_1| (parameter units).

**What weight decay does.**  *Coupled* decay makes the flow that of L + wd/2 |w|^2: the gradient is
g + wd w everywhere (w's, m's and nu's equations), the curvature in K is H + wd I (the S_P that
:mod:`deep.measure.edge` measures), and the threshold is unchanged (its lambda is an eigenvalue of
P^-1 (H + wd I)).  In the complementarity problem the shift is constant, so grad_w(u^T (H + W) u) =
grad_w(u^T H u): decay enters only through dw/dt, whose pull -eta wd w / P toward 0 moves the curvature
along w.  *Decoupled* decay (AdamW) adds -rho w to dw/dt and nothing to g: K holds H alone, and the
threshold (1 + beta1)(2 - lr wd)(1 - beta1^n)/(1 - beta1) is lowered by the factor 1 - lr wd / 2.  Its
term in the complementarity problem is grad_w(u_i^T H u_j) . (-rho w), independent of X: where
shrinking w sharpens the loss (layers followed by a normalisation, whose curvature grows as 1/|w|^2),
decay pushes kappa up and the oscillation must grow to hold the edge; where it flattens it, the run
drifts off the edge sooner.

**How a moving threshold enters.**  With a schedule, kappa = eta(t) lambda_max(P^-1 (H + W)) jumps by
the factor lr_(k+1) / lr_k at each whole step k, and c_n moves with n (bias corrections, NAdam's
schedule, AdamW's lr wd).  Each step's problem holds eta and c of the update in progress, so the jump
is absorbed at the first solve after it: during a warmup the rising lr raises kappa and the oscillation
grows to hold it at c; during the decay kappa falls below c, X falls to 0 and the flow is stable until
nu has decayed enough (P shrinks) to bring eta S_P back.  *This is an approximation*: X is the
oscillation that holds the edge at this instant, as if the oscillation settled at once, while the
discrete run's oscillation grows and dies at a finite rate (a few steps at a strong instability, many
near the edge).  A schedule that changes the lr faster than that relaxation is followed by the flow's
eta(t) exactly but not by its oscillation: RMSProp on the sharpening model with its lr doubled at step
200, at once or over 100 steps, keeps its loss within 3% of the run's either way, but the predicted
oscillation is 50% from the one measured at every step after the jump, 10% after the ramp (medians over
the next 90 steps; ``tests/test_flow_schedules.py``).

**Momentum.**  The momentum flows carry m in their state, in the joint phase space (w, m) of the
rod-flow literature (Regis and Chewi, arXiv 2605.06821), with nu as a smooth auxiliary variable: m
lags the gradient by about 1/(1 - beta) steps and the (w, m) modes ring with the discrete optimizer's
own damping, sqrt(beta) per step.  The period-2 oscillation itself, which the momentum filters, is not
resolved: it enters through Sigma (the averaged gradient and nu's source) and through the threshold
c_n, which the discrete recurrence fixes (:mod:`aeos_theory.optimizers`).  This quasi-static treatment
is an approximation: its error is measured against the discrete runs, not assumed small (the
``central_flows`` figure, ``tests/test_central_flows.py``, ``tests/test_flow_schedules.py``: within 2%
of torch's AdamW, Adam with coupled decay, NAdam and RMSprop with momentum on the sharpening model).  It
degrades with the step: RMSprop with momentum 0.9 takes steps 1/(1 - beta) = 10 times Adam's at the same
lr, and at lr 0.01 on that model its flow runs ahead of the discrete run already below the edge (its
loss 3-10% lower over steps 30-100, and not closer at smaller flow steps: the discrete map at that step
size is not close to its ODE; at lr 0.003 the two agree within 1%).

**Steps.**  An outer step dt (at most ``dt_edge`` = 1 within 10% of the edge, ``dt_max`` = 4 away from
it, never past a record or a whole step where the lr changes; halved when kappa_1 moves fast, the lr's
own jumps aside) solves for the top
eigenpairs of K, the third-derivative products grad_w(u_a^T H u_b) and X once, then holds the
oscillation's force and share of nu fixed while it integrates:

* first-order flows (no m): a damped Chebyshev step (:mod:`aeos_theory.chebyshev`) of w with P frozen,
  nu by its exact EMA update;
* momentum flows: substeps h <= 1/2 (halved until the map is stable with a factor 2 to spare), each
  one torch's step with its rates made continuous: the gradient at the substep's start, nu and m by
  their exact EMA updates over h, then w by -h eta (a g + b m) / P at the new m and P, after the decay
  factor (1 - lr wd)^h.  The map is stable for kappa h < (2 + 2 e)/(a (1 + e) + b (1 - e)), e = beta^h
  (4 times Adam's threshold at h = 1/2), so it damps the (w, m) modes as the continuous flow does.
  The complementarity problem sees the substeps' own response to a constant extra gradient (the lag
  of m).

A flow starts where the discrete optimizer stands after its first step for the adaptive methods (the
first update sets nu from nothing; torch's first step is applied exactly), at step 0 for GD.  A flow
that leaves the region where it is defined stops with its reason recorded (``status`` "diverged"): the
loss or the curvature is not finite, or no oscillation can hold the edge.

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
                                    Schedule, moving_average)

__all__ = ["CentralFlow", "FlowState", "central_flow_of", "FLOW_COLUMNS", "FLOW_OPTIMIZERS", "FlowPoint",
           "FlowProblem", "FlowResult", "FlowRule", "Schedule", "moving_average"]


def _dot(a: Any, b: Any) -> float:
    return float((a * b).sum())


@dataclass
class FlowState:
    """Where a flow stands: parameters ``w``, first moment ``m`` (momentum methods; else None), second
    moment ``nu`` (adaptive methods; else None), time ``t`` in optimizer steps."""

    w: Any
    m: Any
    nu: Any
    t: float


@dataclass
class _Step:
    """What one outer step computed at its start point: the top eigenvalues ``kappa`` of K at the step's lr
    ``lr`` (``kappa_record``: at the lr of the update just taken, for the records), the oscillation X over
    the directions ``q`` (unit eigenvectors of K) / ``u`` = sqrt(lr/P) q, per unit X_ab the increment of
    the averaged gradient (``pull``, 1/2 grad_w(u_a^T H u_b)) and of the averaged squared gradient
    (``square``, kappa_a kappa_b q_a q_b / s^2), the point, its loss and the optimizer's gradient g."""

    kappa: np.ndarray
    point: Any
    loss: float
    gradient: Any
    lr: float = 0.0
    kappa_record: np.ndarray | None = None
    X: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    q: list[Any] = field(default_factory=list)
    u: list[Any] = field(default_factory=list)
    pull: list[list[Any]] = field(default_factory=list)
    square: list[list[Any]] = field(default_factory=list)


class CentralFlow:
    """The stable (``central=False``) or central flow of ``rule`` on ``problem`` (module docstring).

    Args:
        max_directions: most directions in the complementarity problem (the tracked eigenpairs are one more).
        margin: eigenvalues above (1 - margin) c take part in it.
        dt_max: the largest outer step, in optimizer steps.
        dt_edge: the largest outer step within 10% of the edge (at most dt_max).
        tol_edge: a step is halved when kappa_1 moved by more than tol_edge c, grown when much less.
        stop_factor: a stable flow stops once kappa_1 rises past stop_factor c (its stiffness grows without
            end).  One that starts above it (an adaptive P from one gradient, as RMSProp's first v =
            (1 - beta2) g^2) is followed until it has come below: that stiffness is a transient of the start.
    """

    def __init__(self, problem: FlowProblem, rule: FlowRule, *, central: bool = True, max_directions: int = 4,
                 margin: float = 0.01, dt_max: float = 4.0, dt_edge: float = 1.0, tol_edge: float = 0.01,
                 stop_factor: float = 10.0) -> None:
        self.problem, self.rule, self.central = problem, rule, bool(central)
        self.max_directions = checks.integer("max_directions", max_directions, low=1, high=12)
        self.margin = checks.real("margin", margin, low=0.0, high=0.5)
        self.dt_max = checks.real("dt_max", dt_max, low=1e-3, high=64.0)
        self.dt_edge = min(checks.real("dt_edge", dt_edge, low=1e-3, high=64.0), self.dt_max)
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
        status, reason, preferred, last = "completed", "", min(0.5, self.dt_max), None
        armed = False  # the stable flow's stop rule: kappa_1 has been below stop_factor c
        on_grid = lambda t: abs(t / record_every - round(t / record_every)) < 1e-9  # noqa: E731
        while True:
            final = state.t >= steps - 1e-9
            target = min(steps, record_every * (math.floor(state.t / record_every + 1e-9) + 1),
                         self.rule.next_change(state.t))
            dt = 1.0 if final else min(preferred, target - state.t)
            try:
                step = self._prepare(state, dt)
            except EdgeNotHeld as err:
                status, reason = "diverged", f"the edge cannot be held: {err}"
                break
            except np.linalg.LinAlgError as err:
                status, reason = "diverged", f"the complementarity problem could not be solved: {err}"
                break
            if not (np.all(np.isfinite(step.kappa)) and math.isfinite(step.loss)):
                status, reason = "diverged", "the loss or the curvature is not finite"
                break
            if on_grid(state.t) or (final and round(state.t) == steps):
                self._record(records, round(state.t), state.t, math.nan if final else dt, step, clock)
            if final:
                break
            if not self.central:
                stiff = step.kappa[0] > self.stop_factor * self.rule.constant(state.t + dt)
                if stiff and armed:
                    status, reason = "stopped", f"eta S_P rose past {self.stop_factor:g} times the threshold"
                    break
                armed = armed or not stiff
            state = self._advance(state, dt, step)
            preferred = self._next_dt(preferred, step, last, state.t)
            last = step
        return FlowResult(self.rule.optimizer, self.central, records, status, state.t, reason, state.w, state.m,
                          state.nu)

    def _gradient(self, w: Any) -> Any:
        """The gradient the optimizer sees at w: grad L(w) + wd w under coupled decay (one evaluation)."""
        self.gradients += 1
        g = self.problem.gradient(w)
        wd = self.rule.coupled_decay
        return g + wd * w if wd else g

    def _start(self, w0: Any, records: dict, clock: float) -> FlowState:
        """Record step 0 and return the start: w0 at t = 0 for GD; after torch's first update for the
        adaptive methods (nu_1 = (1 - beta2) g0^2, m_1 = (1 - beta) s0, w_1 = (1 - lr_1 wd) w0 - lr_1 (a_1 g0 /
        P_1 + b_1 m_1 / P_m)), whose P needs a gradient first."""
        rule = self.rule
        if not rule.adaptive:
            return FlowState(w0, None, None, 0.0)
        point = self.problem.at(w0)
        unmeasured = _Step(kappa=np.array([math.nan]), point=point, loss=point.loss(), gradient=None,
                           lr=rule.lr(1))  # no P yet
        self._record(records, 0, 0.0, math.nan, unmeasured, clock)
        g = self._gradient(w0)
        nu = (1.0 - rule.hyper["beta2"]) * (g * g)
        p = rule.preconditioner(nu, 1.0)
        m = None
        if rule.momentum:
            m = (1.0 - rule.beta) * (g / p if rule.preconditioned_momentum else g)
        return FlowState(self._moved(w0, m, g, p, 1.0, 0.0, 1.0), m, nu, 1.0)

    def _moved(self, w: Any, m: Any, g: Any, p: Any, h: float, t: float, t_next: float) -> Any:
        """w after one (sub)step of size h from t, with m and P already those of t_next: the decay factor
        (1 - lr wd)^h, then -h lr (a g / P + b m / P_m), P_m = P (Adam family) or 1 (RMSprop)."""
        rule = self.rule
        lr, (a, b) = rule.lr_at(t), rule.coefficients(t_next)
        if rule.decoupled:
            w = math.exp(-rule.decay_rate(t) * h) * w
        change = (a * g) / p if a else 0.0
        if rule.momentum:
            change = change + (b * m if rule.preconditioned_momentum else (b * m) / p)
        return w - (h * lr) * change

    def _next_dt(self, dt: float, step: _Step, last: _Step | None, t: float) -> float:
        """Halve the step when kappa_1 moved more than tol_edge c over the last one, grow it x1.5 when it
        moved less than a quarter of that, within dt_max (dt_edge within 10% of the edge).  A change of the
        lr between the two is not a move: it is exact at the whole step where it happens, so kappa_1 is
        compared with the last one at this step's lr."""
        c, kappa = self.rule.constant(t + 1), step.kappa
        if last is not None and last.lr > 0:
            moved = abs(kappa[0] - last.kappa[0] * step.lr / last.lr)
            if moved > self.tol_edge * c:
                dt = dt / 2
            elif moved < 0.25 * self.tol_edge * c:
                dt = dt * 1.5
        limit = self.dt_edge if kappa[0] >= 0.9 * c else self.dt_max
        return max(min(dt, limit), min(1.0 / 64, self.dt_max))

    def _substeps(self, kappa_max: float, t: float, dt: float) -> tuple[int, float]:
        """(n, h = dt / n) for a momentum flow: h <= 1/2, halved until kappa_max h is within half the map's
        stability bound (2 + 2 e)/(a (1 + e) + b (1 - e)), e = beta^h (module docstring)."""
        rule = self.rule
        h = min(0.5, dt)
        a, b = rule.coefficients(t + h)
        while h > 1.0 / 256:
            e = rule.beta ** h
            if kappa_max * h * (a * (1 + e) + b * (1 - e)) <= 0.5 * (2 + 2 * e):
                break
            h /= 2
        n = max(1, math.ceil(dt / h - 1e-9))
        return n, dt / n

    # ------------------------------------------------------------------ one step
    def _prepare(self, state: FlowState, dt: float) -> _Step:
        """Everything at the step's start: g, the top eigenpairs of K, and X (complementarity)."""
        rule = self.rule
        lr, lr_record = rule.lr_at(state.t), rule.lr(max(1, math.ceil(state.t - 1e-9)))
        solve_lr = lr if lr > 0 else lr_record  # a step at lr 0 takes no step; its record still has one
        p = rule.preconditioner(state.nu, state.t)
        point = self.problem.at(state.w)
        loss = point.loss()
        g = point.gradient()
        self.gradients += 1
        if rule.coupled_decay:
            g = g + rule.coupled_decay * state.w
        if solve_lr > 0:
            scale = (solve_lr / p) ** 0.5
            shift = {"shift": rule.coupled_decay} if rule.coupled_decay else {}
            solved, vectors = point.eigenpairs(scale, self.k, **shift)
            solved = np.asarray(solved, dtype=np.float64)
        else:
            solved, vectors = np.zeros(1), []
        kappa = solved * (lr / solve_lr) if solve_lr > 0 else solved
        step = _Step(kappa=kappa, point=point, loss=loss, gradient=g, lr=lr,
                     kappa_record=solved * (lr_record / solve_lr) if solve_lr > 0 else solved)
        c_next = rule.constant(state.t + dt)
        critical = [i for i in range(len(kappa)) if kappa[i] >= (1 - self.margin) * c_next][: self.max_directions]
        # the next step tracks one eigenpair beyond the oscillating ones (to see the next one coming); a
        # stable flow needs only the top one (its stiffness)
        self.k = min(self.max_directions + 1, len(critical) + 1) if self.central else 1
        if self.central and critical and lr > 0:
            scale = (lr / p) ** 0.5
            step.q = [vectors[i] for i in critical]
            step.u = [scale * v for v in step.q]
            self._oscillation(step, state, dt, p, scale, kappa[critical], c_next)
        return step

    def _response(self, state: FlowState, dt: float, p: Any, g: Any, kappa_max: float) -> tuple[Any, float]:
        """(dw/dt over the step without oscillation, with g and P frozen; the gain: dw/dt per unit extra
        averaged gradient, times -P/lr).  First-order flows: -lr g / P - rho w and 1.  Momentum flows: the
        substeps' own map, m_j = e^j m + (1 - e^j) s after j substeps (e = beta^h), so the gain is
        (1/dt) sum_j h (a_j + b_j (1 - e^j)): the lag of m."""
        rule, t = self.rule, state.t
        lr = rule.lr_at(t)
        decay = -rule.decay_rate(t) * state.w if rule.decoupled else 0.0
        if not rule.momentum:
            return -(lr / p) * g + decay, 1.0
        n, h = self._substeps(kappa_max, t, dt)
        e = math.exp(-rule.momentum_rate * h)
        carried = state.m * p if rule.preconditioned_momentum else state.m  # so that b m / P_m = b carried / P
        direct_total, carried_total = 0.0, 0.0
        for j in range(1, n + 1):
            a, b = rule.coefficients(t + j * h)
            direct_total += h * (a + b * (1 - e ** j))
            carried_total += h * b * e ** j
        rate = -(lr / p) * ((direct_total / dt) * g + (carried_total / dt) * carried) + decay
        return rate, direct_total / dt

    def _oscillation(self, step: _Step, state: FlowState, dt: float, p: Any, scale: Any, kappa: np.ndarray,
                     c_next: float) -> None:
        """X from the complementarity problem A(X) = c I - diag(kappa) - dt dK/dt(X) (see the module
        docstring), with the per-unit-X increments of the averaged gradient and squared gradient."""
        rule, lr, k = self.rule, step.lr, len(step.q)
        point, g, q = step.point, step.gradient, step.q
        u = step.u
        pull = [[None] * k for _ in range(k)]
        pairs = [(a, b) for a in range(k) for b in range(a, k)]
        for (a, b), grad_ab in zip(pairs, point.curvature_gradients([(u[a], u[b]) for a, b in pairs])):
            pull[a][b] = pull[b][a] = 0.5 * grad_ab
        w_rate, gain = self._response(state, dt, p, g, float(step.kappa[0]))
        square = p_rate = p_per_x = None
        if rule.adaptive:
            c2 = rule.ema_rate
            square = [[kappa[a] * kappa[b] * (q[a] * q[b]) / scale ** 2 for b in range(k)] for a in range(k)]
            p_rate = rule.preconditioner_rate(state.nu, c2 * (g * g - state.nu), state.t)
            p_per_x = [[rule.preconditioner_rate(state.nu, c2 * square[a][b], state.t, with_time=False) / p
                        for b in range(k)] for a in range(k)]  # dP/dt / P per unit X_ab
        moved = [[(lr / p) * pull[a][b] for b in range(k)] for a in range(k)]  # dw/dt per unit X_ab, times -1/gain
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
        """One outer step with the oscillation's force ``pull`` and share of nu ``square`` held (module
        docstring): a Chebyshev step of w (first-order flows) or the momentum substeps."""
        rule = self.rule
        pull, square = 0.0, 0.0
        k = step.X.shape[0]
        for a in range(k):
            for b in range(k):
                pull = pull + step.X[a, b] * step.pull[a][b]
                if rule.adaptive:
                    square = square + step.X[a, b] * step.square[a][b]
        if rule.momentum:
            return self._momentum_steps(state, dt, step, pull, square)
        lr, t = step.lr, state.t
        nu = None
        if rule.adaptive:
            keep = math.exp(-rule.ema_rate * dt)
            nu = keep * state.nu + (1.0 - keep) * (step.gradient * step.gradient + square)
        p = rule.preconditioner(state.nu, t)
        rho = rule.decay_rate(t)

        def rate(v: Any) -> Any:
            change = -(lr / p) * (self._gradient(v) + pull)
            return change - rho * v if rho else change

        f0 = -(lr / p) * (step.gradient + pull) - (rho * state.w if rho else 0.0)
        stages = stages_for(dt * max(float(step.kappa[0]), rule.constant(t + dt)))
        w = chebyshev_step(state.w, rate, dt, stages, f0=f0)
        return FlowState(w, None, nu, t + dt)

    def _momentum_steps(self, state: FlowState, dt: float, step: _Step, pull: Any, square: Any) -> FlowState:
        """The substeps of a momentum flow: per substep the gradient at its start (the step's own at the
        first), nu and m by their exact EMA updates over h, then w (:meth:`_moved`)."""
        rule = self.rule
        n, h = self._substeps(float(step.kappa[0]), state.t, dt)
        keep_nu, keep_m = math.exp(-rule.ema_rate * h), math.exp(-rule.momentum_rate * h)
        w, m, nu, t = state.w, state.m, state.nu, state.t
        for j in range(n):
            g = step.gradient if j == 0 else self._gradient(w)
            t_next = state.t + (j + 1) * h
            nu = keep_nu * nu + (1.0 - keep_nu) * (g * g + square)
            p = rule.preconditioner(nu, t_next)
            averaged = g + pull
            m = keep_m * m + (1.0 - keep_m) * (averaged / p if rule.preconditioned_momentum else averaged)
            w = self._moved(w, m, averaged, p, h, t, t_next)
            t = t_next
        return FlowState(w, m, nu, state.t + dt)

    def _record(self, records: dict, step_no: int, t: float, dt: float, step: _Step, clock: float) -> None:
        """One row at the step's start point (``dt``: the step about to be taken; a step without eigenvalues,
        an adaptive flow's start, has no P yet: its measurements are NaN).  ``lr`` and eta_S_P are those of
        the update just taken (update t; the first at step 0), as a training run records them."""
        loss, X = step.loss, step.X
        kappa = step.kappa if step.kappa_record is None else step.kappa_record
        k = X.shape[0]
        wd = self.rule.coupled_decay
        averaged = loss + 0.5 * sum(X[a, b] * ((step.kappa[a] if a == b else 0.0) - wd * _dot(step.u[a], step.u[b]))
                                    for a in range(k) for b in range(k))
        oscillation = total = 0.0 if np.isfinite(kappa[0]) else math.nan
        if k:
            top = step.u[0]
            norm = _dot(top, top) ** 0.5
            along = [_dot(v, top) / norm for v in step.u]
            oscillation = max(0.0, sum(X[a, b] * along[a] * along[b] for a in range(k) for b in range(k))) ** 0.5
            total = max(0.0, sum(X[a, b] * _dot(step.u[a], step.u[b]) for a in range(k) for b in range(k))) ** 0.5
        lr = self.rule.lr(max(1, step_no))
        c = self.rule.constant(max(t, 1.0))
        row = {"step": step_no, "train_loss": averaged, "train_accuracy": _accuracy(step.point), "lr": lr,
               "sharpness": step.point.sharpness(), "preconditioned_sharpness": kappa[0] / lr if lr > 0 else math.nan,
               "threshold": c / lr if lr > 0 else math.inf, "eta_S_P": kappa[0], "eta_threshold": c,
               "edge_ratio": kappa[0] / c, "hvps": getattr(self.problem, "hvps", 0),
               "converged": int(getattr(step.point, "converged", True)),
               "wall_time": time.perf_counter() - clock, "center_loss": loss, "oscillation": oscillation,
               "oscillation_total": total, "directions": k, "gradients": self.gradients, "dt": dt}
        for name in FLOW_COLUMNS:
            records[name].append(row[name])


def _accuracy(point: Any) -> float:
    accuracy = getattr(point, "accuracy", None)
    return float(accuracy()) if callable(accuracy) else math.nan


def central_flow_of(problem: FlowProblem, optimizer: str, w0: Any, steps: int, *, record_every: int = 10,
                    central: bool = True, hyper: Mapping[str, object] | None = None, schedule: Schedule | None = None,
                    **options: Any) -> FlowResult:
    """The central (or, ``central=False``, stable) flow of ``optimizer`` with ``hyper`` on ``problem``
    from ``w0`` to step ``steps``, recorded every ``record_every`` steps, at the learning rates of
    ``schedule`` (the lr factor of each update, a sequence from update 1 or a function of its index t >= 1;
    None: constant) (options: :class:`CentralFlow`)."""
    steps = checks.integer("steps", steps, low=0)
    rule = FlowRule.of(optimizer, dict(hyper or {}), schedule, updates=max(steps, 1))
    flow = CentralFlow(problem, rule, central=central, **options)
    return flow.run(w0, steps, record_every)
