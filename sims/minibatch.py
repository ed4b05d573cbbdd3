"""Minibatch runs on a quadratic with per-example Hessians: the measured mean-square stability boundary.

The model of :mod:`aeos_theory.minibatch`, run rather than solved: n per-example Hessians H_i (d x d;
preconditioned ones, P^-1/2 H_i P^-1/2, for an optimizer with frozen P); every step each run draws its
own batch B of b examples uniformly without replacement (a partial Fisher-Yates shuffle driven by a
per-run SplitMix64 stream, so results are identical for a given seed), takes g = H_B x, and applies

    buffer <- beta buffer + gain g,   x <- x - eta buffer,

torch's ``SGD`` (gd: beta = 0, gain = 1; heavy_ball: gain = 1 - dampening) and Adam with P frozen and
no bias correction (beta = beta1, gain = 1 - beta1), the buffer starting at 0.

**What is measured.**  E|s_t|^2 of the state s = (x, eta buffer) over independent runs is dominated, near
the mean-square boundary, by rare runs: log|s_t|^2 spreads like sqrt(t), and a plain average over R runs
sees only the typical ones after a few dozen steps.  :func:`ensemble_growth` therefore estimates it with
a weighted ensemble (sequential Monte Carlo, "population dynamics"): after every step each run r has
grown by w_r = N(s_r') (N(s) = |x|^2 + eta^2 |buffer|^2, states normalised to N = 1), the step's factor is
mean_r w_r, and the ensemble is resampled in proportion to w_r (systematic resampling) and renormalised.
Every run still takes exactly the optimizer's steps on independently drawn batches; the product of the
factors is an unbiased estimate of E[N(s_T)] / N(s_0) for this linear recursion, and its per-step
logarithm, averaged after a burn-in, converges to log of the spectral radius of the second-moment map
(the growth rate; < 0 iff mean-square stable).  Its logarithm is biased low by O(1/R) (Jensen), which
moves the measured boundary up by O(1/R), besides the statistical error: with R = 512 runs of 1000 steps
the measured boundaries were within 0.7 % of the exact ones for gd, heavy_ball and adam on three problems
(16 and 64 scalar curvatures, 32 rank-one 3 x 3 Hessians; b from 1 to n), but for heavy ball
(beta = 0.9) at nu = 5.8: +1.8 % (+0.4 % with R = 2048).

``criterion="almost_sure"`` instead averages log w_r over runs without resampling: the top Lyapunov
exponent, whose sign decides whether a *typical* run diverges.

The same particles measure, on the mode they concentrate on, the batch sharpness
E[g_B^T H_B g_B] / E|g_B|^2, the gauge Q = E|g_B|^2 / E[x^T H x] and the signal fraction
E|H x|^2 / E|g_B|^2, each with the batch that run drew for its step, as a training run would.
:func:`empirical_eta` finds where the growth rate changes sign (brentq on eta, the same seed at every eta).
It never calls :mod:`aeos_theory`'s formulas, which it checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sims.jit_cache import njit
from scipy.optimize import brentq

from aeos_base import checks
from aeos_theory.optimizers import validate

#: The optimizers the runs implement: torch SGD (with and without heavy-ball momentum), and Adam's EMA
#: with frozen P (settled, no bias correction).
SUPPORTED = ("gd", "heavy_ball", "adam")
CRITERIA = ("mean_square", "almost_sure")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always")
def _uniform(rng, r):
    """A uniform float in [0, 1) from SplitMix64 stream r (53 random bits)."""
    z = rng[r] + _GOLDEN
    rng[r] = z
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def _draw_batch(rng, r, order, n, b):
    """order[r, :b] becomes a uniform b-subset of 0..n-1 (partial Fisher-Yates; any permutation in, any out)."""
    for k in range(b):
        j = k + int(_uniform(rng, r) * (n - k))
        if j >= n:  # guards the rounding of u (n - k) up to n - k
            j = n - 1
        tmp = order[r, k]
        order[r, k] = order[r, j]
        order[r, j] = tmp


@njit(cache=True, inline="always")
def _batch_product(hessians, order_row, b, v, out):
    """out = H_B v = (1/b) sum_{k < b} H_{order_row[k]} v."""
    d = v.shape[0]
    for p in range(d):
        out[p] = 0.0
    for k in range(b):
        h = hessians[order_row[k]]
        for p in range(d):
            acc = 0.0
            for q in range(d):
                acc += h[p, q] * v[q]
            out[p] += acc
    for p in range(d):
        out[p] /= b


@njit(cache=True)
def ensemble_kernel(hessians, mean, b, eta, beta, gain, steps, burn, x, buffer, rng, order, resample, measure, stats):
    """Run the ensemble (R runs: ``x``, ``buffer`` (R, d), updated in place, normalised) for ``steps`` steps.

    ``rng`` (R + 1,) uint64: one stream per run slot and the last for resampling; ``order`` (R, n) int64
    permutations.  ``stats`` (5,) receives, summed over the steps t >= ``burn``: the log growth factor
    (log mean_r w_r with ``resample``, mean_r log w_r without), then over runs and steps
    g^T H_B g, |g|^2, x^T H x and |H x|^2 (pre-step, normalised states; g = H_B x) when ``measure``.
    A state that lands exactly on 0 (e.g. 1 - eta h_B = 0 for every batch) stays there: the growth is then
    -inf and the kernel returns at once.
    """
    runs, d = x.shape
    n = hessians.shape[0]
    momentum = beta > 0.0
    g = np.empty(d)
    hg = np.empty(d)
    weight = np.empty(runs)
    new_x = np.empty_like(x)
    new_buffer = np.empty_like(buffer)
    for i in range(5):
        stats[i] = 0.0
    for t in range(steps):
        record = t >= burn
        measuring = record and measure
        for r in range(runs):
            _draw_batch(rng, r, order, n, b)
            _batch_product(hessians, order[r], b, x[r], g)
            if measuring:
                _batch_product(hessians, order[r], b, g, hg)
                loss = 0.0
                full = 0.0
                for p in range(d):
                    stats[1] += g[p] * hg[p]
                    stats[2] += g[p] * g[p]
                    acc = 0.0
                    for q in range(d):
                        acc += mean[p, q] * x[r, q]
                    loss += x[r, p] * acc
                    full += acc * acc
                stats[3] += loss
                stats[4] += full
            size = 0.0
            for p in range(d):
                buffer[r, p] = beta * buffer[r, p] + gain * g[p]
                x[r, p] -= eta * buffer[r, p]
                size += x[r, p] * x[r, p]
                if momentum:
                    size += eta * eta * buffer[r, p] * buffer[r, p]
            weight[r] = size
        if resample:
            total = 0.0
            last = 0
            for r in range(runs):
                total += weight[r]
                if weight[r] > 0.0:
                    last = r
            if total == 0.0:  # every state landed exactly on 0 and stays there
                stats[0] = -math.inf
                return
            if record:
                stats[0] += math.log(total / runs)
            # systematic resampling: slot j takes the run whose cumulative share covers (u + j) / R
            u = _uniform(rng, runs)
            cumulative = 0.0
            j = 0
            for r in range(runs):
                cumulative += weight[r] * runs / total
                while j < runs and u + j < cumulative:
                    scale = 1.0 / math.sqrt(weight[r])
                    for p in range(d):
                        new_x[j, p] = x[r, p] * scale
                        new_buffer[j, p] = buffer[r, p] * scale
                    j += 1
            while j < runs:  # rounding left the last slot(s) empty: the last run of weight > 0 fills them
                scale = 1.0 / math.sqrt(weight[last])
                for p in range(d):
                    new_x[j, p] = x[last, p] * scale
                    new_buffer[j, p] = buffer[last, p] * scale
                j += 1
            x[:, :] = new_x
            buffer[:, :] = new_buffer
        else:
            for r in range(runs):
                if weight[r] == 0.0:  # this run landed exactly on 0: its exponent, and the mean, is -inf
                    stats[0] = -math.inf
                    return
                if record:
                    stats[0] += math.log(weight[r]) / runs
                scale = 1.0 / math.sqrt(weight[r])
                for p in range(d):
                    x[r, p] *= scale
                    buffer[r, p] *= scale


@dataclass(frozen=True)
class EnsembleResult:
    """What one ensemble measured at step size ``eta``.

    ``growth``: per-step log growth of E|s|^2 (``mean_square``) or the mean per-step log growth of |s|^2
    (``almost_sure``), dimensionless, > 0 when unstable; ``batch_sharpness``, ``gauge``: curvatures
    (units of H); ``signal_fraction``: E|H x|^2 / E|g_B|^2 in (0, 1].
    """

    eta: float
    growth: float
    batch_sharpness: float
    gauge: float
    signal_fraction: float


def _momentum(optimizer: str, hyper: dict) -> tuple[float, float]:
    """(beta, gain) of ``buffer <- beta buffer + gain g`` for a supported optimizer (validated)."""
    if optimizer not in SUPPORTED:
        raise ValueError(f"optimizer must be one of {', '.join(SUPPORTED)} for minibatch runs; got {optimizer!r}")
    values = validate(optimizer, {"eta": 1.0, **hyper})
    if values.get("weight_decay", 0.0) != 0.0:
        raise ValueError(f"weight_decay must be 0 in minibatch runs (fold coupled decay into the per-example "
                         f"Hessians), got {values['weight_decay']!r}")
    if optimizer == "adam":
        return values["beta1"], 1.0 - values["beta1"]
    if optimizer == "heavy_ball" and values["beta"] > 0:  # torch skips the buffer at momentum 0
        return values["beta"], 1.0 - values["dampening"]
    return 0.0, 1.0


def _dense(hessians: object) -> np.ndarray:
    """(n, d, d) float64 C array from numbers (n,), diagonals (n, d) or matrices (n, d, d), checked finite,
    symmetric and PSD."""
    try:
        array = np.asarray(hessians, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("hessians must be an array of real numbers of shape (n,), (n, d) or (n, d, d)") from None
    if array.ndim not in (1, 2, 3) or 0 in array.shape:
        raise ValueError(f"hessians must have shape (n,), (n, d) or (n, d, d) with n, d >= 1, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("hessians must be finite")
    if array.ndim < 3:
        diagonals = array.reshape(array.shape[0], -1)
        array = np.einsum("ij,jk->ijk", diagonals, np.eye(diagonals.shape[1]))
    if array.shape[1] != array.shape[2] or not np.allclose(array, array.transpose(0, 2, 1), rtol=0, atol=1e-12):
        raise ValueError("hessians must be symmetric matrices of shape (n, d, d)")
    if np.linalg.eigvalsh(array).min() < -1e-10 * max(np.abs(array).max(), 1e-300):
        raise ValueError("each per-example Hessian H_i must be positive semi-definite")
    if not np.any(array):
        raise ValueError("the full-batch Hessian is zero")
    return np.ascontiguousarray(array)


def _run(h: np.ndarray, b: int, eta: float, beta: float, gain: float, runs: int, steps: int, burn: int,
         seed: int, resample: bool, measure: bool) -> np.ndarray:
    """The kernel's stats for one ensemble (arguments already checked)."""
    n, d = h.shape[0], h.shape[1]
    x = np.random.default_rng(seed).standard_normal((runs, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    buffer = np.zeros((runs, d))
    rng = np.random.SeedSequence(seed).generate_state(runs + 1, dtype=np.uint64)
    order = np.tile(np.arange(n, dtype=np.int64), (runs, 1))
    stats = np.zeros(5)
    ensemble_kernel(h, np.ascontiguousarray(h.mean(axis=0)), b, eta, beta, gain, steps, burn, x, buffer, rng,
                    order, resample, measure, stats)
    return stats


def _checked(hessians: object, b: int, runs: int, steps: int, burn: int, seed: int,
             criterion: str) -> tuple[np.ndarray, int, int, int, int, int, bool]:
    h = _dense(hessians)
    b = checks.integer("b", b, low=1, high=h.shape[0])
    runs = checks.integer("runs", runs, low=2, high=10**7)
    steps = checks.integer("steps", steps, low=1, high=10**9)
    burn = checks.integer("burn", burn, low=0, high=steps - 1)
    seed = checks.integer("seed", seed, low=0)
    resample = checks.choice("criterion", criterion, CRITERIA) == "mean_square"
    return h, b, runs, steps, burn, seed, resample


def ensemble_growth(optimizer: str, hessians: object, b: int, eta: float, *, runs: int = 1024,
                    steps: int = 1500, burn: int = 300, seed: int = 0, criterion: str = "mean_square",
                    **hyper: float) -> EnsembleResult:
    """Run ``runs`` minibatch runs of ``optimizer`` for ``steps`` steps at step size ``eta`` and measure the
    growth rate of the second moment (module docstring) and, after ``burn`` steps, the batch sharpness,
    gauge and signal fraction.  Same arguments, same result.

    ``hessians``: (n,), (n, d) (diagonal) or (n, d, d); ``b``: batch size, 1 <= b <= n; ``criterion``:
    ``"mean_square"`` (weighted ensemble) or ``"almost_sure"`` (independent runs, mean log growth).
    """
    h, b, runs, steps, burn, seed, resample = _checked(hessians, b, runs, steps, burn, seed, criterion)
    eta = checks.real("eta", eta, low=0.0, low_inclusive=False)
    beta, gain = _momentum(optimizer, hyper)
    stats = _run(h, b, eta, beta, gain, runs, steps, burn, seed, resample, True)
    return EnsembleResult(eta=eta, growth=stats[0] / (steps - burn), batch_sharpness=stats[1] / stats[2],
                          gauge=stats[2] / stats[3], signal_fraction=stats[4] / stats[2])


def empirical_eta(optimizer: str, hessians: object, b: int, *, rtol: float = 1e-3, scan: float = 2.0,
                  runs: int = 1024, steps: int = 1500, burn: int = 300, seed: int = 0,
                  criterion: str = "mean_square", **hyper: float) -> EnsembleResult:
    """The step size eta at which the measured growth rate of :func:`ensemble_growth` first turns positive,
    and what the ensemble measures there (an :class:`EnsembleResult` whose ``eta`` is the boundary).

    Bracket: from eta = 1/lambda_max(H), halved until the growth is negative, or else multiplied by
    ``scan`` > 1 until it is positive (the first sign change on that grid: the almost-sure growth of SGD
    can change sign more than once, so pass a finer ``scan`` such as 1.05 for it); then brentq to
    relative width ``rtol``, every evaluation with the same ``seed`` (common random numbers, so the
    measured growth is a deterministic, nearly smooth function of eta).
    """
    h, b, runs, steps, burn, seed, resample = _checked(hessians, b, runs, steps, burn, seed, criterion)
    rtol = checks.real("rtol", rtol, low=1e-9, high=0.1)
    scan = checks.real("scan", scan, low=1.0, high=16.0, low_inclusive=False)
    beta, gain = _momentum(optimizer, hyper)

    def growth(eta: float) -> float:
        # -inf (states landed exactly on 0) floored so that brentq's interpolation stays finite
        return max(_run(h, b, eta, beta, gain, runs, steps, burn, seed, resample, False)[0], -1e3)

    high = 1.0 / float(np.linalg.eigvalsh(h.mean(axis=0)).max())
    factor = 0.5 if growth(high) > 0 else scan
    for _ in range(2000):
        low, high = high, high * factor
        if (growth(high) > 0) == (factor > 1):
            break
    else:
        raise ValueError("the growth rate kept its sign over 2000 bracket steps: no boundary found")
    low, high = min(low, high), max(low, high)
    eta = brentq(growth, low, high, xtol=rtol * low / 4, rtol=rtol / 4)
    return ensemble_growth(optimizer, h, b, eta, runs=runs, steps=steps, burn=burn, seed=seed,
                           criterion=criterion, **hyper)
