"""numba drivers: many runs in parallel, one run with recording, and the frozen-P stability probe.

The update math lives in :mod:`sims.updates`; these loops own batching, recording and divergence.
All arrays are C-contiguous float64 (int64 for steps); the Python wrappers in :mod:`sims.api`
and :mod:`sims.threshold` validate and convert before entering here.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
from numba import prange

from sims.jit_cache import njit
from sims.updates import (ADADELTA, ADAGRAD, ADAM, ADAMAX, ADAMW, BETA, BETA1, EPS, GD, HEAVY_BALL, NADAM, NESTEROV,
                          RADAM, RMSPROP, apply_update, branch_flags, keep_for_preconditioner, preconditioner,
                          run_scalars, step_adadelta, step_adagrad, step_adam, step_adamax, step_asgd, step_gd,
                          step_momentum, step_nadam, step_radam, step_rmsprop, time_scalars)

#: Steps per block of the batch drivers: the t-only coefficients of a block are tabulated once (serially,
#: ``STEP_BLOCK`` x 5 doubles), then every run takes the block's steps in turn, its state in cache.
STEP_BLOCK = 1024


@njit(cache=True, error_model="numpy")
def _time_table(opt, frozen, hp, start, n, mu_prod, out):
    """out[k] = :func:`time_scalars` of step t = start + k + 1 (k < n); returns the running mu_prod."""
    for k in range(n):
        a, b, c, d, e, mu_prod = time_scalars(opt, frozen, start + k + 1, hp, mu_prod)
        out[k, 0] = a
        out[k, 1] = b
        out[k, 2] = c
        out[k, 3] = d
        out[k, 4] = e
    return mu_prod


@functools.lru_cache(maxsize=None)
def batch_kernel(opt: int, low: bool, decay: bool, layout: str) -> Callable:
    """The driver of :func:`sims.api.simulate_batch` for optimizer code ``opt``, the branches (low, decay)
    of :func:`sims.updates.branch_flags` and a state ``layout``, all compiled in as constants.

    ``kernel(frozen, h, x, m, v, p, eta, hp, steps, blowup, diverged_at)`` runs B independent diagonal
    quadratics L_b(x) = 1/2 sum_j h[b, j] x[b, j]^2 for ``steps`` steps, the state grouped in items:
    ``x``, ``h``, ``m`` have shape (items, rows, width) and are updated in place, ``v`` and ``p`` too
    when used (else (items, 1, 1)), ``eta`` (items,) and ``diverged_at`` (items, 1 or width), initially -1.

    * layout ``"rows"`` (``prange`` over items) or ``"serial"`` (the calling thread, for one small job,
      where waking the thread pool would cost more than the work): one run per item, one row of its d
      coordinates, so each run takes a block of steps with its state (4 d doubles) in L1 / L2.  A run
      that leaves [-blowup, blowup] gets ``diverged_at[b, 0] = t`` and stops there.
    * ``"transposed"``: many short runs with one eta, item i holding coordinate j of its run r at
      ``x[i, j, r]``, so each update of coordinate j runs across the item's runs in one vectorised loop
      (a small d would leave a per-run loop mostly overhead).  A run that leaves [-blowup, blowup] gets
      ``diverged_at[i, r] = t`` and is parked in a quiescent state (x = m = 0, v = 1: with x = 0 every
      optimizer's step is 0); the caller re-runs it to its divergence step to report its iterate there.

    Steps go in blocks of :data:`STEP_BLOCK`: the block's t-only coefficients are tabulated once, then
    every item takes the whole block.  numba freezes a closure's variables and prunes the branches they
    decide before it inlines and types anything, so each kernel holds one optimizer's step, whose
    coordinate loops test neither flag; one kernel for all optimizers, flags read at run time, was ~10%
    slower (its inner loops spilled registers and re-tested loop invariants).  Each kernel is compiled
    on its first call (1-3 s) and cached on disk (:mod:`sims.jit_cache`; numba's cache key holds the
    closure's constants).
    """
    @njit(cache=True, error_model="numpy", parallel=layout != "serial")
    def kernel(frozen, h, x, m, v, p, eta, hp, steps, blowup, diverged_at):
        coef = np.empty((max(1, min(steps, STEP_BLOCK)), 5))
        g = np.empty(1)  # unused: the diagonal gradient h x is fused into the update loop
        mu_prod = 1.0
        for start in range(0, steps, STEP_BLOCK):
            n = min(STEP_BLOCK, steps - start)
            mu_prod = _time_table(opt, frozen, hp, start, n, mu_prod, coef)
            for item in prange(x.shape[0]):  # range when compiled serial
                xi, hi, mi, vi, pi, div = x[item], h[item], m[item], v[item], p[item], diverged_at[item]
                for k in range(n):
                    if layout != "transposed" and div[0] >= 0:
                        break
                    c0, c1, c2 = run_scalars(opt, frozen, eta[item], coef[k, 0], coef[k, 1], coef[k, 2], coef[k, 3],
                                             coef[k, 4])
                    for j in range(xi.shape[0]):
                        # apply_update's branch on opt, written here so that numba prunes it before
                        # inlining: only this optimizer's step is compiled into the kernel.
                        if opt == GD:
                            bad = step_gd(opt, frozen, low, decay, xi, hi, g, True, mi, vi, pi, j, eta[item], hp,
                                           c0, c1, c2, blowup)
                        elif opt == HEAVY_BALL or opt == NESTEROV:
                            bad = step_momentum(opt, frozen, low, decay, xi, hi, g, True, mi, vi, pi, j, eta[item],
                                                 hp, c0, c1, c2, blowup)
                        elif opt == ADAM or opt == ADAMW:
                            bad = step_adam(opt, frozen, low, decay, xi, hi, g, True, mi, vi, pi, j, eta[item], hp,
                                             c0, c1, c2, blowup)
                        elif opt == RMSPROP:
                            bad = step_rmsprop(opt, frozen, low, decay, xi, hi, g, True, mi, vi, pi, j, eta[item],
                                                hp, c0, c1, c2, blowup)
                        elif opt == NADAM:
                            bad = step_nadam(opt, frozen, low, decay, xi, hi, g, True, mi, vi, pi, j, eta[item], hp,
                                              c0, c1, c2, blowup)
                        elif opt == ADAGRAD:
                            bad = step_adagrad(opt, frozen, low, decay, xi, hi, g, True, mi, vi, pi, j, eta[item],
                                                hp, c0, c1, c2, blowup)
                        elif opt == ADAMAX:
                            bad = step_adamax(opt, frozen, low, decay, xi, hi, g, True, mi, vi, pi, j, eta[item],
                                               hp, c0, c1, c2, blowup)
                        elif opt == ADADELTA:
                            bad = step_adadelta(opt, frozen, low, decay, xi, hi, g, True, mi, vi, pi, j, eta[item],
                                                 hp, c0, c1, c2, blowup)
                        elif opt == RADAM:
                            bad = step_radam(opt, frozen, low, decay, xi, hi, g, True, mi, vi, pi, j, eta[item], hp,
                                              c0, c1, c2, blowup)
                        else:
                            bad = step_asgd(opt, frozen, low, decay, xi, hi, g, True, mi, vi, pi, j, eta[item], hp,
                                             c0, c1, c2, blowup)
                        if bad and layout != "transposed":
                            div[0] = start + k + 1
                        elif bad:
                            for r in range(xi.shape[1]):
                                if not abs(xi[j, r]) <= blowup:
                                    div[r] = start + k + 1
                                    for jj in range(xi.shape[0]):
                                        xi[jj, r] = 0.0
                                        mi[jj, r] = 0.0
                                        if vi.shape[1] == xi.shape[1]:
                                            vi[jj, r] = 1.0

    return kernel


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
    m_before = np.empty_like(m)  # m as the step found it, for the P of optimizers that need it
    work = np.empty((d, d)) if dense else np.empty((1, 1))
    adaptive_no_p = adaptive and not frozen
    low, decay = branch_flags(hp)
    mu_prod = 1.0
    n_rec = 0
    c1 = 0.0
    c2 = 0.0
    for t in range(0, steps + 1):
        if t > 0:
            a, b, c, dd, e, mu_prod = time_scalars(opt, frozen, t, hp, mu_prod)
            c0, c1, c2 = run_scalars(opt, frozen, eta, a, b, c, dd, e)
            keep_for_preconditioner(opt, frozen, m, m_before)
            if apply_update(opt, frozen, low, decay, x, H, g, not dense, m, v, p, 0, eta, hp, c0, c1, c2, blowup):
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
                preconditioner(opt, frozen, v, p, m_before, 0, c1, c2, hp[EPS], P)
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
    low, decay = branch_flags(hp)
    mu_prod = 1.0
    half = 0.0
    for t in range(1, 2 * horizon + 1):
        a, b, c, dd, e, mu_prod = time_scalars(opt, True, t, hp, mu_prod)
        c0, c1, c2 = run_scalars(opt, True, eta, a, b, c, dd, e)
        apply_update(opt, True, low, decay, x, h, g, True, m, v, p, 0, eta, hp, c0, c1, c2, 1e300)
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

    ``eta`` (N,), ``hp`` (N, len(HP_NAMES) + 2) (rows of :func:`sims.updates.pack_hyper`); ``out`` (N,) receives
    lambda* in units of 1/x^2 (inf if none found).  Parallel over rows.
    """
    for i in prange(eta.shape[0]):
        out[i] = _threshold_one(opt, eta[i], hp[i], rtol)


@njit(cache=True, error_model="numpy")
def threshold_bisection_serial(opt, eta, hp, rtol, out):
    """:func:`threshold_bisection` on the calling thread (a few rows: no thread-pool wake-up)."""
    for i in range(eta.shape[0]):
        out[i] = _threshold_one(opt, eta[i], hp[i], rtol)
