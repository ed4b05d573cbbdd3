"""One step of every optimizer, written once, for numba.

The math is exactly ``torch.optim``'s single-tensor update (same operations in the same order, so a
float64 run agrees with torch to rounding).  With g the loss gradient and x the iterate:

* ``gd``          x <- x - eta G,                                    G = g + weight_decay x
* ``heavy_ball``  b <- beta b + (1 - dampening) G  (b_1 = G);  x <- x - eta b / P
* ``nesterov``    b <- beta b + G  (b_1 = G);                  x <- x - eta (G + beta b) / P
* ``adam``        m <- lerp(m, G, 1 - beta1);  v <- beta2 v + (1 - beta2) G^2;
                  P = sqrt(v) / sqrt(1 - beta2^t) + eps;  x <- x - eta / (1 - beta1^t) m / P
* ``adamw``       as adam with g instead of G, after x <- (1 - eta weight_decay) x
* ``rmsprop``     v <- beta2 v + (1 - beta2) G^2;  P = sqrt(v) + eps;  b <- beta b + G / P;  x <- x - eta b
* ``nadam``       mu_t = beta1 (1 - 0.5 * 0.96^(psi t)),  Pi_t = prod_{s <= t} mu_s  (psi = momentum_decay);
                  m, v as adam;  P = sqrt(v / (1 - beta2^t)) + eps;
                  x <- x - eta (1 - mu_t)/(1 - Pi_t) G / P - eta mu_{t+1}/(1 - Pi_t mu_{t+1}) m / P
* ``adagrad``     v <- v + G^2;  x <- x - eta / (1 + (t - 1) lr_decay) G / (sqrt(v) + eps)
* ``adamax``      m as adam;  u <- max(beta2 u, |G| + eps);  x <- x - eta / (1 - beta1^t) m / u
* ``adadelta``    (rho = beta2)  s <- rho s + (1 - rho) G^2;  delta = sqrt(a + eps) / sqrt(s + eps) G;
                  a <- rho a + (1 - rho) delta^2;  x <- x - eta delta,  so P = sqrt(s_t + eps) / sqrt(a_{t-1} + eps)
* ``radam``       m, v as adam;  x <- x - eta r_t m_hat / P once rho_t > 5, x <- x - eta m_hat before
* ``asgd``        x <- (1 - lambd eta_t) x - eta_t G,  eta_t = eta / (1 + lambd eta (t - 1))^alpha

**Frozen mode** (P given, every optimizer): the time-invariant linear map of
:mod:`aeos_theory.optimizers` with that P, i.e. the recurrence whose stability the theory computes.
v is not updated, Adam's bias correction of m is dropped (it only rescales eta by 1/(1 - beta1^t) -> 1)
and NAdam's schedule is settled (mu_t = beta1, or beta1 / 2 when psi = 0; Pi_t = 0).  For gd / heavy_ball / nesterov frozen P
divides the step (preconditioned SGD); with P = 1 it is plain torch SGD.

torch details kept: SGD's buffer starts as b_1 = G (no dampening on the first step) and with beta = 0
SGD ignores dampening; ``lerp`` switches formula at weight 0.5; ``addcdiv`` is x + (value t1) / t2; the
weight decay term is added only when weight_decay != 0.

The drivers in :mod:`sims.kernels` call :func:`time_scalars` once per step (the parts that depend only
on t), :func:`run_scalars` once per run and step, and one step function per optimizer family
(:func:`step_gd`, :func:`step_momentum`, :func:`step_adam`, :func:`step_rmsprop`, :func:`step_nadam`;
:func:`apply_update` picks one by code) over the coordinates.  Every branch sits outside the
coordinate loops, so every loop vectorizes; all functions use numba's ``error_model="numpy"``
(x / 0 -> inf, no Python exception check, which would block SIMD).
"""

from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload

from aeos_theory.optimizers import OPTIMIZERS
from sims.jit_cache import njit

#: Integer code of each optimizer's step inside the kernels, from the registry (the public API uses names).
CODES: dict[str, int] = {name: spec.kernel for name, spec in OPTIMIZERS.items()}
GD, HEAVY_BALL, NESTEROV, ADAM, ADAMW, RMSPROP, NADAM, ADAGRAD, ADAMAX, ADADELTA, RADAM, ASGD = (
    CODES[name] for name in ("gd", "heavy_ball", "nesterov", "adam", "adamw", "rmsprop", "nadam", "adagrad", "adamax",
                             "adadelta", "radam", "asgd"))
#: Codes of the optimizers that divide their step by an adaptive P (they keep a second moment v).
ADAPTIVE_CODES = tuple(spec.kernel for spec in OPTIMIZERS.values() if spec.adaptive)

#: Layout of the hyperparameter vector ``hp`` passed to the kernels (eta travels separately).
HP_NAMES = ("beta", "beta1", "beta2", "eps", "dampening", "weight_decay", "momentum_decay", "lr_decay", "lambd",
            "decay_power")
BETA, BETA1, BETA2, EPS, DAMPENING, WEIGHT_DECAY, MOMENTUM_DECAY, LR_DECAY, LAMBD, DECAY_POWER = range(10)


#: hp[SAT1], hp[SAT2]: the step t from which beta1^t, beta2^t <= 2^-60, so 1 - beta^t == 1.0 exactly in
#: float64 and the bias-correction pow can be skipped without changing a bit (it costs ~50 ns a step).
SAT1, SAT2 = 10, 11


def _saturation_step(beta: float) -> float:
    if beta <= 0.0:
        return 1.0
    return float(math.ceil(-60.0 * math.log(2.0) / math.log(beta)))


def pack_hyper(values: dict) -> np.ndarray:
    """The validated hyperparameter dict (without eta) as the kernels' float64 vector ``hp``."""
    hp = [float(values.get(name, 0.0)) for name in HP_NAMES]
    hp += [_saturation_step(hp[BETA1]), _saturation_step(hp[BETA2])]
    return np.array(hp, dtype=np.float64)


@njit(cache=True, error_model="numpy", inline="always")
def time_scalars(opt, frozen, t, hp, mu_prod):
    """The parts of step t's coefficients (1-based t) that depend on t only, not on eta.

    Returns (a, b, c, d, e, mu_prod_new), read by :func:`run_scalars`.  heavy_ball / nesterov:
    a = factor on the buffer (0 at t = 1, as torch starts b_1 = G), b = factor on G.  adam / adamw:
    a = 1 - beta1^t, b = sqrt(1 - beta2^t) (adamax: a).  adagrad: a = s_t = 1 + (t - 1) lr_decay (frozen: settled,
    inf when lr_decay > 0).  radam: a = 1 - beta1^t, b = sqrt(1 - beta2^t), c = r_t in the rectified phase
    (rho_t > 5) and 0 in the warm phase.  asgd: a = t - 1, b = lambd, c = alpha (``decay_power``).  nadam: a = 1 - mu_t, b = 1 - Pi_t, c = mu_{t+1},
    d = 1 - Pi_t mu_{t+1}, e = 1 - beta2^t (frozen: the settled values mu = beta1, Pi = 0).
    """
    beta = hp[BETA]
    beta1 = hp[BETA1]
    beta2 = hp[BETA2]
    a = 0.0
    b = 0.0
    c = 0.0
    d = 0.0
    e = 0.0
    ft = float(t)
    if opt == HEAVY_BALL or opt == NESTEROV:
        if t == 1 or beta == 0.0:
            b = 1.0
        else:
            a = beta
            b = 1.0 - hp[DAMPENING] if opt == HEAVY_BALL else 1.0
    elif opt == ADAM or opt == ADAMW or opt == ADAMAX:
        if not frozen:
            a = 1.0 - beta1 ** ft if ft < hp[SAT1] else 1.0
            b = math.sqrt(1.0 - beta2 ** ft) if ft < hp[SAT2] else 1.0
    elif opt == ADAGRAD:
        if not frozen:
            a = 1.0 + (ft - 1.0) * hp[LR_DECAY]
        else:  # settled: s_t -> inf when the lr decays
            a = math.inf if hp[LR_DECAY] > 0.0 else 1.0
    elif opt == RADAM:
        if not frozen:  # torch's order of operations, in float64 as torch's Python floats
            a = 1.0 - beta1 ** ft
            bias2 = 1.0 - beta2 ** ft
            rho_inf = 2.0 / (1.0 - beta2) - 1.0
            rho_t = rho_inf - 2.0 * ft * (beta2 ** ft) / bias2
            if rho_t > 5.0:  # rectified phase; c = 0 marks the warm phase
                b = bias2 ** 0.5
                c = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) ** 0.5
    elif opt == ASGD:
        a = ft - 1.0  # torch computes step t's rate at the end of step t - 1
        b = hp[LAMBD]
        c = hp[DECAY_POWER]
    elif opt == NADAM:
        psi = hp[MOMENTUM_DECAY]
        if frozen:
            mu_settled = beta1 if psi > 0.0 else 0.5 * beta1
            a = 1.0 - mu_settled
            b = 1.0
            c = mu_settled
            d = 1.0
        else:
            mu = beta1 * (1.0 - 0.5 * 0.96 ** (ft * psi))
            mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((ft + 1.0) * psi))
            mu_prod = mu_prod * mu
            a = 1.0 - mu
            b = 1.0 - mu_prod
            c = mu_next
            d = 1.0 - mu_prod * mu_next
            e = 1.0 - beta2 ** ft if ft < hp[SAT2] else 1.0
    return a, b, c, d, e, mu_prod


@njit(cache=True, error_model="numpy", inline="always")
def run_scalars(opt, frozen, eta, a, b, c, d, e):
    """Step coefficients (c0, c1, c2) of one run with step size eta, as :func:`apply_update` reads them.

    gd / rmsprop: c0 = eta.  heavy_ball / nesterov: c0 = eta, c1 = buffer factor, c2 = G factor.
    adam / adamw / adamax: c0 = -eta / (1 - beta1^t) (frozen: -eta), c1 = sqrt(1 - beta2^t).
    adagrad: c0 = -eta / s_t.  radam: c0 = 1 - beta1^t, c1 = sqrt(1 - beta2^t), c2 = r_t or 0 (warm phase)
    (frozen: c0 = -eta).  asgd: c0 = -eta_t, c1 = 1 - lambd eta_t, eta_t = eta / (1 + lambd eta (t - 1))^alpha
    (frozen: settled, eta_t = 0 when lambd eta alpha > 0).
    nadam: c0 = -eta (1 - mu_t) / (1 - Pi_t), c1 = -eta mu_{t+1} / (1 - Pi_t mu_{t+1}), c2 = 1 - beta2^t.
    """
    if opt == HEAVY_BALL or opt == NESTEROV:
        return eta, a, b
    if opt == ADAM or opt == ADAMW or opt == ADAMAX:
        if frozen:
            return -eta, 0.0, 0.0
        return -(eta / a), b, 0.0
    if opt == ADAGRAD:
        return -(eta / a), 0.0, 0.0
    if opt == RADAM:
        if frozen:
            return -eta, 0.0, 0.0
        return a, b, c
    if opt == ASGD:
        if frozen:  # settled: eta_t -> 0 when lambd eta alpha > 0
            eta_t = 0.0 if b * eta > 0.0 and c > 0.0 else eta
        else:
            eta_t = eta / ((1.0 + b * eta * a) ** c)
        return -eta_t, 1.0 - b * eta_t, 0.0
    if opt == NADAM:
        return -eta * a / b, (-eta * c) / d, e
    return eta, 0.0, 0.0


@njit(cache=True, error_model="numpy", inline="always")
def branch_flags(hp):
    """(low, decay): the two branches of a step fixed by the hyperparameters ``hp`` for a whole run.

    low: torch.lerp's formula for the first moment of adam / adamw / nadam (weight 1 - beta1 below 0.5);
    decay: weight_decay != 0 (torch adds the decay term only then).  The batch kernels compile them in as
    constants (:func:`sims.kernels.batch_kernels`), so their coordinate loops carry neither test.
    """
    return abs(1.0 - hp[BETA1]) < 0.5, hp[WEIGHT_DECAY] != 0.0


def cast_like(value, array):
    """``value`` in the dtype of ``array`` (numba: an exact no-op for float64 arrays).

    The steps read their scalars (hyperparameters, step coefficients, blowup) through it, so that on
    float32 state the arithmetic is float32 as torch's on float32 tensors (scalars computed in float64,
    then rounded to float32), and on float64 state nothing changes."""
    return array.dtype.type(value)


@overload(cast_like)
def _cast_like(value, array):
    dtype = array.dtype

    def impl(value, array):
        return dtype(value)

    return impl


def no_divergence(array):
    """The flag a step ORs its coordinates' divergence into, starting clear, as wide as a lane of ``array``:
    int64 0 for float64 state, False for float32.  An int64 flag held float32 loops to 4 lanes (4 int64 fill
    a 256-bit register) and a bool one lets them take 8: float32 Adam went from 0.70-0.74x to 1.19x the speed
    of float64 at (1000, 10) and from 0.69x to 1.23-1.24x at (100, 1000), float64 unchanged within the noise
    (0.96-0.995 of the roofline against 0.97 before); a bool flag in the float64 loops too cost them 6-15%
    at (1000, 10) (``benchmarks/sims_speed.py``, best of 7, the two versions run alternately, 2 threads)."""
    return False if array.dtype == np.float32 else 0


@overload(no_divergence)
def _no_divergence(array):
    if array.dtype == types.float32:
        return lambda array: False
    return lambda array: 0


@njit(cache=True, error_model="numpy", inline="always")
def _gradient(x, h, g, diag, r, j, decay, wd):
    """G_j = g_j + wd x_j on row r, with g_j = h[r, j] x[r, j] when ``diag`` (diagonal quadratic) or
    ``g[j]``; the decay term only when ``decay``."""
    gj = h[r, j] * x[r, j] if diag else g[j]
    return gj + wd * x[r, j] if decay else gj


# One step on row r of the 2-D state x in place, one function per optimizer family, with the arguments of
# apply_update; each returns a flag (:func:`no_divergence`, ORed over the coordinates) that is true when some
# coordinate left [-blowup, blowup] or became NaN.

@njit(cache=True, error_model="numpy", inline="always")
def step_gd(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup):
    """gd: x <- x - eta G (frozen: x - eta G / P)."""
    wd = cast_like(hp[WEIGHT_DECAY], x)
    c0 = cast_like(c0, x)
    blowup = cast_like(blowup, x)
    bad = no_divergence(x)
    if frozen:
        for j in range(x.shape[1]):
            xn = x[r, j] - c0 * (_gradient(x, h, g, diag, r, j, decay, wd) / p[r, j])
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    else:
        for j in range(x.shape[1]):
            xn = x[r, j] - c0 * _gradient(x, h, g, diag, r, j, decay, wd)
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    return bad


@njit(cache=True, error_model="numpy", inline="always")
def step_momentum(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup):
    """heavy_ball / nesterov: b <- c1 b + c2 G; x <- x - eta d, d = b or G + beta b (frozen: d / P)."""
    wd = cast_like(hp[WEIGHT_DECAY], x)
    beta = cast_like(hp[BETA] if opt == NESTEROV else 0.0, x)  # d = G + beta b (nesterov) or b (heavy ball)
    one = 1.0 if opt == NESTEROV else 0.0
    c0, c1, c2 = cast_like(c0, x), cast_like(c1, x), cast_like(c2, x)
    blowup = cast_like(blowup, x)
    bad = no_divergence(x)
    for j in range(x.shape[1]):
        gj = _gradient(x, h, g, diag, r, j, decay, wd)
        b = m[r, j] * c1 + c2 * gj
        m[r, j] = b
        d = gj + beta * b if one == 1.0 else b
        if frozen:
            d = d / p[r, j]
        xn = x[r, j] - c0 * d
        x[r, j] = xn
        bad |= not abs(xn) <= blowup
    return bad


@njit(cache=True, error_model="numpy", inline="always")
def step_adam(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup):
    """adam / adamw: m <- lerp(m, G, 1 - beta1), v <- beta2 v + (1 - beta2) G^2, x <- x + c0 m / P."""
    # torch.lerp(m, G, w): m + w (G - m) if w < 0.5 else G - (G - m)(1 - w) = G + (-(1 - w))(G - m)
    wd = hp[WEIGHT_DECAY]
    w = 1.0 - hp[BETA1]
    cw = cast_like(w if low else -(1.0 - w), x)
    beta2 = cast_like(hp[BETA2], x)
    a2 = cast_like(1.0 - hp[BETA2], x)
    eps = cast_like(hp[EPS], x)
    coupled = decay and opt == ADAM  # L2 added to the gradient (adam) ...
    shrink = cast_like(1.0 - eta * wd, x)  # ... or decoupled decay x <- (1 - eta wd) x (adamw)
    decoupled = decay and opt == ADAMW
    wd = cast_like(wd, x)
    c0, c1 = cast_like(c0, x), cast_like(c1, x)
    blowup = cast_like(blowup, x)
    bad = no_divergence(x)
    if frozen:
        for j in range(x.shape[1]):
            xj = x[r, j]
            gj = _gradient(x, h, g, diag, r, j, coupled, wd)
            mo = m[r, j]
            mj = (mo if low else gj) + cw * (gj - mo)
            m[r, j] = mj
            xn = (xj * shrink if decoupled else xj) + (c0 * mj) / p[r, j]
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    else:
        for j in range(x.shape[1]):
            xj = x[r, j]
            gj = _gradient(x, h, g, diag, r, j, coupled, wd)
            mo = m[r, j]
            mj = (mo if low else gj) + cw * (gj - mo)
            m[r, j] = mj
            vj = v[r, j] * beta2 + (a2 * gj) * gj
            v[r, j] = vj
            # torch addcdiv: (value t1) / t2
            xn = (xj * shrink if decoupled else xj) + (c0 * mj) / (math.sqrt(vj) / c1 + eps)
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    return bad


@njit(cache=True, error_model="numpy", inline="always")
def step_rmsprop(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup):
    """rmsprop: v <- beta2 v + (1 - beta2) G^2, P = sqrt(v) + eps; with momentum b <- beta b + G / P."""
    wd = cast_like(hp[WEIGHT_DECAY], x)
    beta = cast_like(hp[BETA], x)
    beta2 = cast_like(hp[BETA2], x)
    a2 = cast_like(1.0 - hp[BETA2], x)
    eps = cast_like(hp[EPS], x)
    c0 = cast_like(c0, x)
    blowup = cast_like(blowup, x)
    bad = no_divergence(x)
    if beta > 0.0:  # torch: buf = beta buf + G / avg; x += -eta buf
        for j in range(x.shape[1]):
            gj = _gradient(x, h, g, diag, r, j, decay, wd)
            if frozen:
                avg = p[r, j]
            else:
                vj = v[r, j] * beta2 + (a2 * gj) * gj
                v[r, j] = vj
                avg = math.sqrt(vj) + eps
            b = m[r, j] * beta + gj / avg
            m[r, j] = b
            xn = x[r, j] - c0 * b
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    else:  # torch: x += (-eta G) / avg
        for j in range(x.shape[1]):
            gj = _gradient(x, h, g, diag, r, j, decay, wd)
            if frozen:
                avg = p[r, j]
            else:
                vj = v[r, j] * beta2 + (a2 * gj) * gj
                v[r, j] = vj
                avg = math.sqrt(vj) + eps
            xn = x[r, j] + (-c0 * gj) / avg
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    return bad


@njit(cache=True, error_model="numpy", inline="always")
def step_nadam(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup):
    """nadam: m, v as adam; x <- x + c0 G / P + c1 m / P, P = sqrt(v / c2) + eps."""
    wd = cast_like(hp[WEIGHT_DECAY], x)
    w = 1.0 - hp[BETA1]
    cw = cast_like(w if low else -(1.0 - w), x)
    beta2 = cast_like(hp[BETA2], x)
    a2 = cast_like(1.0 - hp[BETA2], x)
    eps = cast_like(hp[EPS], x)
    c0, c1, c2 = cast_like(c0, x), cast_like(c1, x), cast_like(c2, x)
    blowup = cast_like(blowup, x)
    bad = no_divergence(x)
    for j in range(x.shape[1]):
        gj = _gradient(x, h, g, diag, r, j, decay, wd)
        mo = m[r, j]
        mj = (mo if low else gj) + cw * (gj - mo)
        m[r, j] = mj
        if frozen:
            denom = p[r, j]
        else:
            vj = v[r, j] * beta2 + (a2 * gj) * gj
            v[r, j] = vj
            denom = math.sqrt(vj / c2) + eps
        xn = x[r, j] + (c0 * gj) / denom
        xn = xn + (c1 * mj) / denom
        x[r, j] = xn
        bad |= not abs(xn) <= blowup
    return bad


@njit(cache=True, error_model="numpy", inline="always")
def step_adagrad(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup):
    """adagrad: v <- v + G^2 (the sum), x <- x + c0 G / (sqrt(v) + eps), c0 = -eta / s_t (frozen: / P)."""
    wd = cast_like(hp[WEIGHT_DECAY], x)
    eps = cast_like(hp[EPS], x)
    c0 = cast_like(c0, x)
    blowup = cast_like(blowup, x)
    bad = no_divergence(x)
    if frozen:
        for j in range(x.shape[1]):
            xn = x[r, j] + (c0 * _gradient(x, h, g, diag, r, j, decay, wd)) / p[r, j]
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    else:
        for j in range(x.shape[1]):
            gj = _gradient(x, h, g, diag, r, j, decay, wd)
            vj = v[r, j] + gj * gj  # torch addcmul with value 1
            v[r, j] = vj
            xn = x[r, j] + (c0 * gj) / (math.sqrt(vj) + eps)
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    return bad


@njit(cache=True, error_model="numpy", inline="always")
def step_adamax(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup):
    """adamax: m <- lerp(m, G, 1 - beta1), u <- max(beta2 u, |G| + eps) (in ``v``), x <- x + c0 m / u (frozen: / P)."""
    wd = cast_like(hp[WEIGHT_DECAY], x)
    w = 1.0 - hp[BETA1]
    cw = cast_like(w if low else -(1.0 - w), x)
    beta2 = cast_like(hp[BETA2], x)
    eps = cast_like(hp[EPS], x)
    c0 = cast_like(c0, x)
    blowup = cast_like(blowup, x)
    bad = no_divergence(x)
    if frozen:
        for j in range(x.shape[1]):
            gj = _gradient(x, h, g, diag, r, j, decay, wd)
            mo = m[r, j]
            mj = (mo if low else gj) + cw * (gj - mo)
            m[r, j] = mj
            xn = x[r, j] + (c0 * mj) / p[r, j]
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    else:
        for j in range(x.shape[1]):
            gj = _gradient(x, h, g, diag, r, j, decay, wd)
            mo = m[r, j]
            mj = (mo if low else gj) + cw * (gj - mo)
            m[r, j] = mj
            uj = max(v[r, j] * beta2, abs(gj) + eps)
            v[r, j] = uj
            xn = x[r, j] + (c0 * mj) / uj
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    return bad


@njit(cache=True, error_model="numpy", inline="always")
def step_adadelta(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup):
    """adadelta (rho = beta2; s in ``v``, the accumulated squared update a in ``m``): s <- rho s + (1 - rho) G^2,
    delta = (sqrt(a + eps) / sqrt(s + eps)) G, a <- rho a + (1 - rho) delta^2, x <- x - c0 delta, c0 = eta
    (frozen: x - c0 G / P, which is gd's frozen step)."""
    if frozen:
        return step_gd(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup)
    wd = cast_like(hp[WEIGHT_DECAY], x)
    rho = cast_like(hp[BETA2], x)
    a2 = cast_like(1.0 - hp[BETA2], x)
    eps = cast_like(hp[EPS], x)
    c0 = cast_like(c0, x)
    blowup = cast_like(blowup, x)
    bad = no_divergence(x)
    for j in range(x.shape[1]):
        gj = _gradient(x, h, g, diag, r, j, decay, wd)
        sj = v[r, j] * rho + (a2 * gj) * gj  # torch: square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        v[r, j] = sj
        # torch: delta = acc_delta.add(eps).sqrt_(); delta.div_(std).mul_(grad), std = sqrt(s + eps)
        delta = (math.sqrt(m[r, j] + eps) / math.sqrt(sj + eps)) * gj
        m[r, j] = m[r, j] * rho + (a2 * delta) * delta
        xn = x[r, j] - c0 * delta
        x[r, j] = xn
        bad |= not abs(xn) <= blowup
    return bad


@njit(cache=True, error_model="numpy", inline="always")
def step_radam(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup):
    """radam: m, v as adam; rectified (c2 = r_t > 0): x <- x - ((m / c0) eta) (c1 / (sqrt(v) + eps)) r_t, warm
    (c2 = 0): x <- x - (m / c0) eta, c0 = 1 - beta1^t, c1 = sqrt(1 - beta2^t) (torch's order); frozen: x + c0 m / P."""
    wd = cast_like(hp[WEIGHT_DECAY], x)
    w = 1.0 - hp[BETA1]
    cw = cast_like(w if low else -(1.0 - w), x)
    beta2 = cast_like(hp[BETA2], x)
    a2 = cast_like(1.0 - hp[BETA2], x)
    eps = cast_like(hp[EPS], x)
    lr = cast_like(eta, x)
    c0, c1, c2 = cast_like(c0, x), cast_like(c1, x), cast_like(c2, x)
    blowup = cast_like(blowup, x)
    bad = no_divergence(x)
    if frozen:
        for j in range(x.shape[1]):
            gj = _gradient(x, h, g, diag, r, j, decay, wd)
            mo = m[r, j]
            mj = (mo if low else gj) + cw * (gj - mo)
            m[r, j] = mj
            xn = x[r, j] + (c0 * mj) / p[r, j]
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    elif c2 > 0.0:
        for j in range(x.shape[1]):
            gj = _gradient(x, h, g, diag, r, j, decay, wd)
            mo = m[r, j]
            mj = (mo if low else gj) + cw * (gj - mo)
            m[r, j] = mj
            vj = v[r, j] * beta2 + (a2 * gj) * gj
            v[r, j] = vj
            xn = x[r, j] - (((mj / c0) * lr) * (c1 / (math.sqrt(vj) + eps))) * c2
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    else:
        for j in range(x.shape[1]):
            gj = _gradient(x, h, g, diag, r, j, decay, wd)
            mo = m[r, j]
            mj = (mo if low else gj) + cw * (gj - mo)
            m[r, j] = mj
            v[r, j] = v[r, j] * beta2 + (a2 * gj) * gj
            xn = x[r, j] - (mj / c0) * lr
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    return bad


@njit(cache=True, error_model="numpy", inline="always")
def step_asgd(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup):
    """asgd: x <- c1 x + c0 G, c0 = -eta_t, c1 = 1 - lambd eta_t (frozen: c0 G / P).  The averaged iterate
    ``ax`` never feeds back into x, so it is not kept."""
    wd = cast_like(hp[WEIGHT_DECAY], x)
    c0, c1 = cast_like(c0, x), cast_like(c1, x)
    blowup = cast_like(blowup, x)
    bad = no_divergence(x)
    if frozen:
        for j in range(x.shape[1]):
            gj = _gradient(x, h, g, diag, r, j, decay, wd)
            xn = x[r, j] * c1 + c0 * (gj / p[r, j])
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    else:
        for j in range(x.shape[1]):
            gj = _gradient(x, h, g, diag, r, j, decay, wd)
            xn = x[r, j] * c1 + c0 * gj
            x[r, j] = xn
            bad |= not abs(xn) <= blowup
    return bad


@njit(cache=True, error_model="numpy", inline="always")
def apply_update(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup):
    """One optimizer step on row ``r`` of the 2-D state ``x`` in place.

    The loss gradient is h[r, j] x[r, j] when ``diag`` (diagonal quadratic, fused into the loop) and
    ``g[j]`` otherwise.  ``m`` and ``v`` are the first and second buffers (SGD momentum / Adam m /
    RMSprop momentum / Adadelta's accumulated update, and Adam / RMSprop / Adadelta v); ``p`` is the
    frozen P (read only when ``frozen``); (c0, c1, c2) come from :func:`run_scalars`, (low, decay) from
    :func:`branch_flags`.  Returns a flag, true when some coordinate left [-blowup, blowup] or became NaN
    (the run diverged at this step).  Each branch is one branch-free loop, so it vectorizes.  The batch kernels
    (:func:`sims.kernels.batch_kernel`) branch on the optimizer themselves and call its step directly, so
    that numba prunes the other optimizers before inlining (inlining this function copies every step
    first: seconds of compile per kernel).
    """
    if opt == GD:
        bad = step_gd(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup)
    elif opt == HEAVY_BALL or opt == NESTEROV:
        bad = step_momentum(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup)
    elif opt == ADAM or opt == ADAMW:
        bad = step_adam(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup)
    elif opt == RMSPROP:
        bad = step_rmsprop(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup)
    elif opt == NADAM:
        bad = step_nadam(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup)
    elif opt == ADAGRAD:
        bad = step_adagrad(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup)
    elif opt == ADAMAX:
        bad = step_adamax(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup)
    elif opt == ADADELTA:
        bad = step_adadelta(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup)
    elif opt == RADAM:
        bad = step_radam(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup)
    else:
        bad = step_asgd(opt, frozen, low, decay, x, h, g, diag, m, v, p, r, eta, hp, c0, c1, c2, blowup)
    return bad


@njit(cache=True, error_model="numpy", inline="always")
def keep_for_preconditioner(opt, frozen, m, before):
    """Before a step: copy the first buffer ``m`` into ``before`` when :func:`preconditioner` will need it as
    the step found it (adadelta, whose P holds its accumulated update a_{t-1}); nothing otherwise."""
    if opt == ADADELTA and not frozen:
        before[:, :] = m


@njit(cache=True, error_model="numpy")
def preconditioner(opt, frozen, v, p, before, r, c1, c2, eps, out):
    """Write the P of row r's step just taken into ``out`` (1 for non-adaptive methods, ``p`` if frozen).

    ``before``: the first buffer ``m`` as the step found it, read by adadelta only, whose P = sqrt(s_t + eps)
    / sqrt(a_{t-1} + eps) holds the accumulated update a from before the step (the step overwrites it)."""
    n = out.shape[0]
    if frozen:
        for j in range(n):
            out[j] = p[r, j]
    elif opt == ADAM or opt == ADAMW:
        for j in range(n):
            out[j] = math.sqrt(v[r, j]) / c1 + eps
    elif opt == RMSPROP:
        for j in range(n):
            out[j] = math.sqrt(v[r, j]) + eps
    elif opt == NADAM:
        for j in range(n):
            out[j] = math.sqrt(v[r, j] / c2) + eps
    elif opt == ADAGRAD:
        for j in range(n):
            out[j] = math.sqrt(v[r, j]) + eps
    elif opt == ADAMAX:
        for j in range(n):
            out[j] = v[r, j]
    elif opt == ADADELTA:
        for j in range(n):
            out[j] = math.sqrt(v[r, j] + eps) / math.sqrt(before[r, j] + eps)  # torch's std, then delta
    elif opt == RADAM and c2 > 0.0:  # rectified phase (c2 = r_t); the warm phase has P = I
        for j in range(n):
            out[j] = (math.sqrt(v[r, j]) + eps) / c1
    else:
        for j in range(n):
            out[j] = 1.0
