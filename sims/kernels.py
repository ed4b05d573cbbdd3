"""numba drivers: many runs in parallel, one run with recording, and the frozen-P stability probe.

The update math lives in :mod:`sims.updates`; these loops own batching, recording and divergence.
All arrays are C-contiguous float64 (int64 for steps); the Python wrappers in :mod:`sims.api`
and :mod:`sims.threshold` validate and convert before entering here.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from sims.jit_cache import njit
from sims.updates import BETA, BETA1, EPS, apply_update, preconditioner, run_scalars, time_scalars


@njit(cache=True, error_model="numpy", inline="always")
def _run_item(opt, frozen, h, x, m, v, p, eta, hp, steps, blowup, r0, r1, diverged_at):
    """Runs r0..r1-1 for ``steps`` steps (see :func:`batch_diagonal`)."""
    g = np.empty(1)  # unused: the diagonal gradient h x is fused into the update loop
    mu_prod = 1.0
    for t in range(1, steps + 1):
        # t-only coefficients are shared by the item's runs; only eta differs between runs.
        a, b, c, dd, e, mu_prod = time_scalars(opt, frozen, t, hp, mu_prod)
        alive = False
        for r in range(r0, r1):
            if diverged_at[r] >= 0:
                continue
            alive = True
            c0, c1, c2 = run_scalars(opt, frozen, eta[r], a, b, c, dd, e)
            if apply_update(opt, frozen, x, h, g, True, m, v, p, r, eta[r], hp, c0, c1, c2, blowup):
                diverged_at[r] = t
        if not alive:
            break


@njit(cache=True, error_model="numpy", parallel=True)
def batch_diagonal(opt, frozen, h, x, m, v, p, eta, hp, steps, blowup, runs_per_item, diverged_at):
    """Run B independent diagonal quadratics L_b(x) = 1/2 sum_j h[b, j] x[b, j]^2 for ``steps`` steps.

    ``x``, ``m``, ``v`` (B, d) are updated in place; ``eta`` has shape (B,); ``p`` is (B, d) when
    ``frozen`` (else any (B, 1) array).  Runs are grouped in items of ``runs_per_item`` consecutive runs:
    parallel across items, sequential in time inside one, so an item's state stays in cache and the
    t-only coefficients are computed once per item and step.  ``diverged_at[b]`` (initially -1)
    receives the step t >= 1 at which run b first left [-blowup, blowup]; the run is then frozen.
    """
    n_runs = x.shape[0]
    n_items = (n_runs + runs_per_item - 1) // runs_per_item
    for item in prange(n_items):
        r0 = item * runs_per_item
        _run_item(opt, frozen, h, x, m, v, p, eta, hp, steps, blowup, r0, min(n_runs, r0 + runs_per_item),
                  diverged_at)


@njit(cache=True, error_model="numpy")
def batch_diagonal_serial(opt, frozen, h, x, m, v, p, eta, hp, steps, blowup, diverged_at):
    """:func:`batch_diagonal` as one item on the calling thread: for a single small job, where waking a
    thread pool (milliseconds when the cores are shared) would cost more than the work."""
    _run_item(opt, frozen, h, x, m, v, p, eta, hp, steps, blowup, 0, x.shape[0], diverged_at)


@njit(cache=True, error_model="numpy", parallel=True)
def batch_diagonal_transposed(opt, frozen, hT, xT, mT, vT, pT, eta, hp, steps, blowup, diverged_at):
    """Many short runs with one eta: state laid out (item, coordinate, run) so loops run across runs.

    ``xT[i, j, r]`` is coordinate j of run r in item i (C-contiguous), so each :func:`apply_update` call
    updates coordinate j of all the item's runs in one vectorised loop (a small d would leave a
    per-run loop mostly overhead).  A run that leaves [-blowup, blowup] gets ``diverged_at[i, r] = t``
    and is parked in a quiescent state (x = m = 0, v = 1, which no optimizer moves); the caller
    re-runs it to its divergence step to report its iterate there.
    """
    n_items, d, width = xT.shape
    for item in prange(n_items):
        x = xT[item]
        h = hT[item]
        m = mT[item]
        v = vT[item]
        p = pT[item]
        div = diverged_at[item]
        g = np.empty(1)  # unused: the gradient h x is fused into the update loop
        mu_prod = 1.0
        for t in range(1, steps + 1):
            a, b, c, dd, e, mu_prod = time_scalars(opt, frozen, t, hp, mu_prod)
            c0, c1, c2 = run_scalars(opt, frozen, eta, a, b, c, dd, e)
            for j in range(d):
                if apply_update(opt, frozen, x, h, g, True, m, v, p, j, eta, hp, c0, c1, c2, blowup):
                    for r in range(width):
                        if not abs(x[j, r]) <= blowup:
                            div[r] = t
                            for jj in range(d):
                                x[jj, r] = 0.0
                                m[jj, r] = 0.0
                                if v.shape[1] == width:
                                    v[jj, r] = 1.0


@njit(cache=True, error_model="numpy")
def _lambda_max_dense(H, shift, P, work):
    """lambda_max(P^-1/2 (H + shift I) P^-1/2) by LAPACK's symmetric eigensolver (NaN if P or H is not finite)."""
    d = H.shape[0]
    for i in range(d):
        if not (math.isfinite(P[i]) and P[i] > 0.0):
            return np.nan
    for i in range(d):
        si = 1.0 / math.sqrt(P[i])
        for j in range(d):
            work[i, j] = (H[i, j] + (shift if i == j else 0.0)) * si / math.sqrt(P[j])
    for i in range(d):
        for j in range(d):
            if not math.isfinite(work[i, j]):
                return np.nan
    return np.linalg.eigvalsh(work)[d - 1]


@njit(cache=True, error_model="numpy")
def run_single(opt, adaptive, frozen, H, dense, shift, x, m, v, p, eta, hp, steps, record_every, blowup,
               rec_step, rec_loss, rec_sp, rec_x):
    """One run on L(x) = 1/2 x^T H x (``dense``, H (d, d)) or 1/2 sum_j H[0, j] x_j^2 (H of shape (1, d)).

    ``x``, ``m``, ``v``, ``p`` have shape (1, d); ``adaptive``: the optimizer preconditions (no P before
    its first step); ``shift``: the coupled weight decay, which belongs to the curvature the optimizer
    sees (0 otherwise).  Records at t = 0, k, 2k, ... (k = ``record_every``) the loss,
    lambda_max(P^-1/2 (H + shift I) P^-1/2) with the P of the step just taken (NaN at t = 0 for adaptive
    methods, which have no P yet) and, if ``rec_x`` has rows, the iterate.  Returns (number of records,
    divergence step or -1).
    """
    d = x.shape[1]
    x0 = x[0]
    g = np.empty(d)
    P = np.ones(d)
    work = np.empty((d, d)) if dense else np.empty((1, 1))
    adaptive_no_p = adaptive and not frozen
    mu_prod = 1.0
    n_rec = 0
    c1 = 0.0
    c2 = 0.0
    for t in range(0, steps + 1):
        if t > 0:
            a, b, c, dd, e, mu_prod = time_scalars(opt, frozen, t, hp, mu_prod)
            c0, c1, c2 = run_scalars(opt, frozen, eta, a, b, c, dd, e)
            if apply_update(opt, frozen, x, H, g, not dense, m, v, p, 0, eta, hp, c0, c1, c2, blowup):
                return n_rec, t
        if dense:
            np.dot(H, x0, g)  # BLAS gemv: the gradient H x for the next step (and the loss)
        if t % record_every == 0:
            loss = 0.0
            if dense:
                for i in range(d):
                    loss += 0.5 * x0[i] * g[i]
            else:
                for i in range(d):
                    loss += 0.5 * H[0, i] * x0[i] * x0[i]
            rec_step[n_rec] = t
            rec_loss[n_rec] = loss
            if t == 0 and adaptive_no_p:
                rec_sp[n_rec] = np.nan
            else:
                preconditioner(opt, frozen, v, p, 0, c1, c2, hp[EPS], P)
                if dense:
                    rec_sp[n_rec] = _lambda_max_dense(H, shift, P, work)
                else:
                    best = -np.inf
                    for i in range(d):
                        best = max(best, (H[0, i] + shift) / P[i])
                    rec_sp[n_rec] = best
            if rec_x.shape[0] > 0:
                rec_x[n_rec, :] = x0
            n_rec += 1
    return n_rec, -1


@njit(cache=True, error_model="numpy")
def _probe_unstable(opt, lam, eta, hp, horizon):
    """Frozen P = 1 on L = 1/2 lam x^2 from (x, buffer) = (1, 0): does the state grow?

    The recurrence is linear, so after ``horizon`` steps the dominant root z of the update map has
    taken over; the run is unstable iff |s_T|^2 > |s_{T/2}|^2 (T = 2 * horizon).  Early exits: the
    state grew by 1e20 (unstable) or shrank below 1e-100 (stable).
    """
    x = np.ones((1, 1))
    m = np.zeros((1, 1))
    v = np.zeros((1, 1))
    p = np.ones((1, 1))
    h = np.full((1, 1), lam)
    g = np.empty(1)
    mu_prod = 1.0
    half = 0.0
    for t in range(1, 2 * horizon + 1):
        a, b, c, dd, e, mu_prod = time_scalars(opt, True, t, hp, mu_prod)
        c0, c1, c2 = run_scalars(opt, True, eta, a, b, c, dd, e)
        apply_update(opt, True, x, h, g, True, m, v, p, 0, eta, hp, c0, c1, c2, 1e300)
        norm2 = x[0, 0] * x[0, 0] + m[0, 0] * m[0, 0]
        if not norm2 < 1e40:
            return True
        if norm2 < 1e-200:
            return False
        if t == horizon:
            half = norm2
    return x[0, 0] * x[0, 0] + m[0, 0] * m[0, 0] > half


@njit(cache=True, error_model="numpy")
def _threshold_one(opt, eta, hp, rtol):
    beta_max = max(hp[BETA], hp[BETA1])
    horizon = max(200, int(math.ceil(50.0 / (1.0 - beta_max))))
    hi = 1.0 / eta
    lo = 0.0
    while not _probe_unstable(opt, hi, eta, hp, horizon):
        lo = hi
        hi *= 2.0
        if hi > 1e300:
            return np.inf
    if lo == 0.0:
        lo = hi
        while lo > 1e-300:
            lo *= 0.5
            if not _probe_unstable(opt, lo, eta, hp, horizon):
                break
            hi = lo
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if _probe_unstable(opt, mid, eta, hp, horizon):
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


@njit(cache=True, error_model="numpy", parallel=True)
def threshold_bisection(opt, eta, hp, rtol, out):
    """Bisection on lambda for each row: the smallest lambda whose frozen-P (P = 1) iterates diverge.

    ``eta`` (N,), ``hp`` (N, 8) (rows of :func:`sims.updates.pack_hyper`); ``out`` (N,) receives
    lambda* in units of 1/x^2 (inf if none found).  Parallel over rows.
    """
    for i in prange(eta.shape[0]):
        out[i] = _threshold_one(opt, eta[i], hp[i], rtol)


@njit(cache=True, error_model="numpy")
def threshold_bisection_serial(opt, eta, hp, rtol, out):
    """:func:`threshold_bisection` on the calling thread (a few rows: no thread-pool wake-up)."""
    for i in range(eta.shape[0]):
        out[i] = _threshold_one(opt, eta[i], hp[i], rtol)
