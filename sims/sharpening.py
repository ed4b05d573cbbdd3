"""A progressive-sharpening model with analytic gradient and Hessian, and its numba driver.

**Model** (a two-layer linear network with one shared output weight w on k features):

    L(w, z) = 1/2 sum_i kappa_i (w z_i - y_i)^2 + c/2 (w - w_star)^2,    theta = (w, z_1..z_k).

With r_i = w z_i - y_i:  dL/dw = sum_i kappa_i r_i z_i + c (w - w_star),  dL/dz_i = kappa_i w r_i;
H_ww = sum_i kappa_i z_i^2 + c,  H_wz_i = kappa_i (2 w z_i - y_i),  H_z_i z_i = kappa_i w^2 (others 0).

**Why it sharpens.**  The curvature along z_i is kappa_i w^2, and the anchor c/2 (w - w_star)^2 (the
rest of the data, which wants a large output scale) pulls |w| up, so every descent step along w raises
S ~ kappa_max w^2: sharpening is the direction of progress.  The fitted minimum (w = w_star,
z = y / w_star) has S ~ kappa_max w_star^2, chosen above 2/eta.

**Why GD is blocked at 2/eta and Adam is not.**  Once S > 2/eta the z-coordinates oscillate with
residual r_i = +-a; since z_i = (y_i + r_i)/w, the mean of kappa_i r_i z_i over the oscillation is
kappa_i a^2 / w > 0, a force on w that pushes it (and S) back: GD self-stabilises at eta S ~ 2.  Adam's
P on z_i is ~ |g_z_i| = kappa_i w |r_i|, so S_P = lambda_max(P^-1 H) reaches 38/eta at an oscillation
amplitude |r_i| ~ eta w / 38 that shrinks with eta: the restoring force is negligible, w keeps moving
to w_star and raw S keeps rising while eta S_P sits at the threshold 38 (beta1 = 0.9).

Defaults (k = 8, kappa = logspace(-1, 0, k), y ~ N(0, 1), c = 0.01, w_star = 31.6, start w = 1,
z ~ 0.1 N(0, 1)) give, at eta = 0.01 over 10k steps: GD's eta S rises from 0.02 and hovers at
1.8-2.2 from step ~5500, Adam's raw S climbs from 2 to ~1000 (eta S = 10) while eta S_P stays in 34-40.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from aeos_base import checks
from aeos_theory.optimizers import get_optimizer
from sims.jit_cache import njit
from sims.updates import (EPS, apply_update, branch_flags, keep_for_preconditioner, preconditioner, run_scalars,
                          time_scalars)


@dataclass(frozen=True, eq=False)
class SharpeningModel:
    """Parameters of the model above; ``theta0`` = (w0, z0) is drawn from ``seed``."""

    k: int = 8
    c: float = 0.01
    w_star: float = 31.6
    w0: float = 1.0
    z_scale: float = 0.1
    seed: int = 0
    kappa: np.ndarray = field(init=False, repr=False)
    y: np.ndarray = field(init=False, repr=False)
    theta0: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        checks.integer("k", self.k, low=1)
        for name in ("c", "w_star", "w0", "z_scale"):
            checks.real(name, getattr(self, name), low=0.0, low_inclusive=False)
        rng = np.random.default_rng(self.seed)
        object.__setattr__(self, "kappa", np.logspace(-1.0, 0.0, self.k))
        object.__setattr__(self, "y", rng.standard_normal(self.k))
        object.__setattr__(self, "theta0", np.concatenate([[self.w0], self.z_scale * rng.standard_normal(self.k)]))

    def loss(self, theta: np.ndarray) -> float:
        return float(_loss(theta, self.kappa, self.y, self.c, self.w_star))

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        g = np.empty(self.k + 1)
        _gradient(theta, self.kappa, self.y, self.c, self.w_star, g)
        return g

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        H = np.empty((self.k + 1, self.k + 1))
        _hessian(theta, self.kappa, self.y, self.c, H)
        return H


@njit(cache=True, error_model="numpy")
def _loss(theta, kappa, y, c, w_star):
    w = theta[0]
    s = 0.5 * c * (w - w_star) ** 2
    for i in range(kappa.shape[0]):
        r = w * theta[i + 1] - y[i]
        s += 0.5 * kappa[i] * r * r
    return s


@njit(cache=True, error_model="numpy")
def _gradient(theta, kappa, y, c, w_star, g):
    w = theta[0]
    gw = c * (w - w_star)
    for i in range(kappa.shape[0]):
        z = theta[i + 1]
        r = w * z - y[i]
        gw += kappa[i] * r * z
        g[i + 1] = kappa[i] * w * r
    g[0] = gw


@njit(cache=True, error_model="numpy")
def _hessian(theta, kappa, y, c, H):
    w = theta[0]
    H[:, :] = 0.0
    hww = c
    for i in range(kappa.shape[0]):
        z = theta[i + 1]
        hww += kappa[i] * z * z
        H[0, i + 1] = kappa[i] * (2.0 * w * z - y[i])
        H[i + 1, 0] = H[0, i + 1]
        H[i + 1, i + 1] = kappa[i] * w * w
    H[0, 0] = hww


@njit(cache=True, error_model="numpy")
def run_model(opt, adaptive, shift, theta, m, v, eta, hp, kappa, y, c, w_star, steps, record_every, blowup,
              rec_step, rec_loss, rec_s, rec_sp):
    """Optimizer on the model from ``theta`` (shape (1, k + 1), updated in place), recording every k steps.

    Records L, S = lambda_max(H) and S_P = lambda_max(P^-1/2 (H + shift I) P^-1/2) (P of the step just
    taken, NaN at t = 0 for adaptive methods; ``shift`` the coupled weight decay).  Returns (number of
    records, divergence step or -1).
    """
    d = theta.shape[1]
    th = theta[0]
    g = np.empty(d)
    P = np.ones(d)
    H = np.empty((d, d))
    M = np.empty((d, d))
    dummy = np.ones((1, 1))
    m_before = np.empty_like(m)  # m as the step found it, for the P of optimizers that need it
    low, decay = branch_flags(hp)
    mu_prod = 1.0
    c1 = 0.0
    c2 = 0.0
    n_rec = 0
    for t in range(0, steps + 1):
        if t > 0:
            a, b, cc, dd, e, mu_prod = time_scalars(opt, False, t, hp, mu_prod)
            c0, c1, c2 = run_scalars(opt, False, eta, a, b, cc, dd, e)
            _gradient(th, kappa, y, c, w_star, g)
            keep_for_preconditioner(opt, False, m, m_before)
            if apply_update(opt, False, low, decay, theta, dummy, g, False, m, v, dummy, 0, eta, hp, c0, c1, c2,
                            blowup):
                return n_rec, t
        if t % record_every == 0:
            _hessian(th, kappa, y, c, H)
            rec_step[n_rec] = t
            rec_loss[n_rec] = _loss(th, kappa, y, c, w_star)
            rec_s[n_rec] = np.linalg.eigvalsh(H)[d - 1]
            if t == 0 and adaptive:
                rec_sp[n_rec] = np.nan
            else:
                preconditioner(opt, False, v, dummy, m_before, 0, c1, c2, hp[EPS], P)
                for i in range(d):
                    for j in range(d):
                        M[i, j] = (H[i, j] + (shift if i == j else 0.0)) / (math.sqrt(P[i]) * math.sqrt(P[j]))
                rec_sp[n_rec] = np.linalg.eigvalsh(M)[d - 1]
            n_rec += 1
    return n_rec, -1


def simulate_sharpening(optimizer: str, eta: float, steps: int, record_every: int = 100, *,
                        model: SharpeningModel | None = None, blowup: float = 1e100, **hyper: float):
    """Run ``optimizer`` on the sharpening model; returns a :class:`sims.api.SimulationResult`
    whose ``sharpness`` (S) now varies with t, alongside ``preconditioned_sharpness`` (S_P)."""
    from sims.api import SimulationResult, _check_blowup, _prepare, curvature_shift

    if model is not None and not isinstance(model, SharpeningModel):
        raise ValueError(f"model must be a sims.SharpeningModel or None; got {type(model).__name__}")
    model = model if model is not None else SharpeningModel()
    code, values, hp = _prepare(optimizer, eta, hyper)
    steps = checks.integer("steps", steps, low=0)
    record_every = checks.integer("record_every", record_every, low=1)
    blowup = _check_blowup(blowup)
    d = model.k + 1
    theta = model.theta0.copy().reshape(1, d)
    m = np.zeros((1, d))
    v = np.zeros((1, d))
    n_rec = steps // record_every + 1
    rec = [np.zeros(n_rec, dtype=np.int64), np.zeros(n_rec), np.zeros(n_rec), np.zeros(n_rec)]
    n, div = run_model(code, get_optimizer(optimizer).adaptive, curvature_shift(optimizer, values), theta, m, v,
                       values["eta"], hp, model.kappa, model.y, float(model.c), float(model.w_star), steps,
                       record_every, blowup, *rec)
    return SimulationResult(optimizer=optimizer, hyper=values, step=rec[0][:n], loss=rec[1][:n],
                            sharpness=rec[2][:n], preconditioned_sharpness=rec[3][:n], diverged=div >= 0,
                            diverged_at=int(div) if div >= 0 else None, x=theta[0])
