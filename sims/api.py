"""Public simulation API on quadratics: :func:`simulate` (one recorded run) and :func:`simulate_batch`.

L(x) = 1/2 x^T H x with H diagonal (given as its spectrum h) or dense symmetric.  Optimizer names and
hyperparameters are those of :mod:`aeos_theory` (validated by :func:`aeos_theory.hyperparams.validate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from aeos_base import checks
from aeos_theory.optimizers import OPTIMIZERS, get_optimizer, validate
from sims.updates import ADAPTIVE_CODES, CODES, branch_flags, pack_hyper

#: A coordinate with |x_j| above this (or NaN) marks the run as diverged (1e100 times any sane start).
DEFAULT_BLOWUP = 1e100


@dataclass
class SimulationResult:
    """A recorded run.  Arrays have one entry per record (t = 0, k, 2k, ... up to divergence).

    ``loss`` = L(x_t); ``sharpness`` S = lambda_max(H) (constant on a quadratic);
    ``preconditioned_sharpness`` S_P = lambda_max(P^-1/2 (H + wd I) P^-1/2) with the P of step t and wd
    the coupled weight decay (0 for decoupled decay): the curvature of the objective the optimizer
    descends; NaN at t = 0 for adaptive methods; S + wd for gd / heavy_ball / nesterov; units 1/x^2
    (curvature) and loss units.  ``diverged_at`` is the step whose update left [-blowup, blowup] or
    None (records stop before it); ``x`` is the final iterate (for a diverged run, the iterate of its
    divergence step); ``trajectory`` holds the recorded iterates when ``record_x`` was set.
    """

    optimizer: str
    hyper: dict
    step: np.ndarray
    loss: np.ndarray
    sharpness: np.ndarray
    preconditioned_sharpness: np.ndarray
    diverged: bool
    diverged_at: Optional[int]
    x: np.ndarray
    trajectory: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def eta_sp(self) -> np.ndarray:
        """The normalised level eta * S_P (compare with 2 for GD, 38 for Adam at beta1 = 0.9)."""
        return self.hyper["eta"] * self.preconditioned_sharpness

    @property
    def eta_threshold(self) -> np.ndarray:
        """eta * lambda* of the update at each recorded step t (t = max(step, 1)), from
        :func:`aeos_theory.stability_threshold`: what eta * S_P is compared with (Adam's bias correction,
        NAdam's momentum schedule included).  Theory, for comparison only."""
        from aeos_theory import stability_threshold

        eta = self.hyper["eta"]
        return np.array([eta * stability_threshold(self.optimizer, step=max(int(t), 1), **self.hyper)
                         for t in self.step])

    @property
    def edge_ratio(self) -> np.ndarray:
        """eta * S_P / (eta * lambda*_t): 1 at the edge of stability of the step's own update."""
        return self.eta_sp / self.eta_threshold


@dataclass
class BatchResult:
    """Final state of B independent runs: ``x`` (B, d), ``loss`` (B,), ``diverged_at`` (B,) int, -1 = never.

    A diverged run keeps the iterate of its divergence step (loss possibly inf / NaN).
    """

    x: np.ndarray
    loss: np.ndarray
    diverged_at: np.ndarray

    @property
    def diverged(self) -> np.ndarray:
        return self.diverged_at >= 0


def _as_float_array(name: str, value: object) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64, order="C")
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of real numbers") from None
    except OverflowError:  # an int too large for a float, such as 10**400
        raise ValueError(f"{name} must be finite") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _prepare(optimizer: str, eta: object, hyper: dict) -> tuple[int, dict, np.ndarray]:
    if "eta" in hyper:
        raise ValueError("eta is passed positionally, not as a keyword hyperparameter")
    if np.ndim(eta) != 0:  # an array of etas: validate the rest with the largest (strictest for eta * wd < 1)
        etas = _as_float_array("eta", eta)
        if etas.size == 0:
            raise ValueError("eta must be a real number or a non-empty array of them; got an empty array")
        eta = float(np.max(etas)) if np.all(etas > 0) else float(etas[etas <= 0][0])  # else: the value refused
    values = validate(optimizer, {"eta": eta, **hyper})
    return kernel_code(optimizer), values, pack_hyper(values)


_MATRIX_STEP = "neither elementwise nor linear in the gradient, so a diagonal quadratic cannot carry it"
#: Why an optimizer has no kernel, by the kind of its P (the registry's ``preconditioner``): the kernels run
#: elementwise steps on diagonal quadratics, and these optimizers' steps act on whole weight matrices.
NOT_SIMULATED: dict[str, str] = {
    "factored": "its second moment is factored into the row and column means of a weight matrix and its step "
                f"is scaled by the RMS of the iterate and of the update: {_MATRIX_STEP}",
    "polar": f"its step orthogonalises the momentum matrix (Newton-Schulz): {_MATRIX_STEP}",
    "kronecker": "its preconditioner L^-1/4 (x) R^-1/4 is a Kronecker product of matrix roots of a weight "
                 "matrix's gradient statistics, not elementwise",
    "eigenbasis": "it runs Adam in the eigenbasis of Shampoo's matrix factors, a preconditioner that is not elementwise",
}


def kernel_code(optimizer: str) -> int:
    """The kernel code of a simulated optimizer; ValueError naming the optimizer, why it has no kernel and
    the optimizers that have one otherwise."""
    if not get_optimizer(optimizer).simulated:
        simulated = [name for name, spec in OPTIMIZERS.items() if spec.simulated]
        reason = NOT_SIMULATED.get(get_optimizer(optimizer).preconditioner,
                                   "its step is elementwise but not written in sims.updates yet")
        raise ValueError(f"optimizer {optimizer!r} has no simulation kernel: {reason} (sims runs "
                         f"{', '.join(simulated)}); its threshold is aeos_theory.stability_threshold and deep "
                         "measures its edge")
    return CODES[optimizer]


def curvature_shift(optimizer: str, values: dict) -> float:
    """The coupled weight decay wd, which adds wd I to the curvature the optimizer descends (0 when the
    optimizer's decay is decoupled, as AdamW's, or absent)."""
    return get_optimizer(optimizer).coupled_decay(values)


def _check_blowup(blowup: float) -> float:
    return checks.real("blowup", blowup, low=0.0, low_inclusive=False)


def simulate(
    optimizer: str,
    H: np.ndarray,
    x0: np.ndarray,
    eta: float,
    steps: int,
    record_every: int = 1,
    *,
    preconditioner: Optional[np.ndarray] = None,
    record_x: bool = False,
    blowup: float = DEFAULT_BLOWUP,
    **hyper: float,
) -> SimulationResult:
    """Run ``optimizer`` (torch.optim semantics) on L(x) = 1/2 x^T H x for ``steps`` steps.

    ``H``: 1-D spectrum (diagonal quadratic) or 2-D symmetric matrix.  ``preconditioner``: a frozen
    diagonal P (positive, shape (d,)); the run then uses the frozen-mode recurrence of
    :mod:`sims.updates`.  Records every ``record_every`` steps (see :class:`SimulationResult`).  A run
    that overflows stops and is reported as diverged, it never raises.
    """
    from sims.kernels import run_single

    if np.ndim(eta) != 0:
        raise ValueError(f"eta must be one real number for one run (simulate_batch takes many), got an array of "
                         f"shape {np.shape(eta)}")
    code, values, hp = _prepare(optimizer, eta, hyper)
    eta_f = values["eta"]
    steps = checks.integer("steps", steps, low=0)
    record_every = checks.integer("record_every", record_every, low=1)
    blowup = _check_blowup(blowup)
    Hm = _as_float_array("H", H)
    x = _as_float_array("x0", x0)
    if Hm.ndim not in (1, 2):
        raise ValueError(f"H must be a 1-D spectrum or a 2-D symmetric matrix, got {Hm.ndim} dimensions")
    d = Hm.shape[0]
    if d == 0:
        raise ValueError("H must have at least one coordinate")
    if Hm.ndim == 2:
        if Hm.shape != (d, d):
            raise ValueError(f"H must be square, got shape {Hm.shape}")
        scale = max(float(np.max(np.abs(Hm))), 1e-300)
        if np.max(np.abs(Hm - Hm.T)) > 1e-12 * scale:
            raise ValueError("H must be symmetric (|H - H^T| <= 1e-12 max|H|)")
        sharp = float(np.linalg.eigvalsh(Hm)[-1])
    else:
        sharp = float(np.max(Hm))
    if x.shape != (d,):
        raise ValueError(f"x0 must have shape ({d},) to match H, got {x.shape}")
    p = _frozen_p(preconditioner, (d,))
    n_rec = steps // record_every + 1
    rec_step = np.zeros(n_rec, dtype=np.int64)
    rec_loss = np.zeros(n_rec)
    rec_sp = np.zeros(n_rec)
    rec_x = np.zeros((n_rec if record_x else 0, d))
    x = x.reshape(1, d)
    m = np.zeros((1, d))
    v = np.zeros((1, d))
    n, div = run_single(code, get_optimizer(optimizer).adaptive, p is not None, Hm if Hm.ndim == 2 else Hm.reshape(1, d),
                        Hm.ndim == 2, curvature_shift(optimizer, values), x, m, v, p.reshape(1, d) if p is not None else np.ones((1, d)),
                        eta_f, hp, steps, record_every, blowup, rec_step, rec_loss, rec_sp, rec_x)
    x = x[0]
    sp = rec_sp[:n]
    return SimulationResult(
        optimizer=optimizer, hyper=values, step=rec_step[:n], loss=rec_loss[:n],
        sharpness=np.full(n, sharp), preconditioned_sharpness=sp, diverged=div >= 0,
        diverged_at=int(div) if div >= 0 else None, x=x, trajectory=rec_x[:n] if record_x else None,
    )


def _frozen_p(preconditioner: object, shape: tuple[int, ...]) -> Optional[np.ndarray]:
    if preconditioner is None:
        return None
    p = _as_float_array("preconditioner", preconditioner)
    try:
        p = np.array(np.broadcast_to(p, shape), dtype=np.float64, order="C")  # writable: one kernel type
    except ValueError:
        raise ValueError(f"preconditioner must broadcast to shape {shape}, got {p.shape}") from None
    if not np.all(p > 0):
        raise ValueError("preconditioner must be positive (0 < P < inf)")
    return p


def simulate_batch(
    optimizer: str,
    h: np.ndarray,
    x0: np.ndarray,
    eta: float | np.ndarray,
    steps: int,
    *,
    preconditioner: Optional[np.ndarray] = None,
    blowup: float = DEFAULT_BLOWUP,
    dtype: str = "float64",
    **hyper: float,
) -> BatchResult:
    """B independent diagonal quadratics L_b = 1/2 sum_j h[b, j] x[b, j]^2 at once (the hot path).

    ``h``, ``x0``: shape (B, d); ``eta``: scalar or shape (B,); ``preconditioner``: frozen P
    broadcastable to (B, d).  Parallel across runs (numba prange); when B is smaller than the number
    of threads, each run's coordinates are split into independent pieces (exact: the coordinates of a
    diagonal quadratic only share the step counter).

    ``dtype``: ``"float64"`` (torch.optim's float64 arithmetic, to the last bit) or ``"float32"``: h, x0,
    P and the state rounded to float32 and every update done in float32 arithmetic, as torch.optim on
    float32 tensors (the scalar coefficients computed in float64, then rounded), to reproduce what torch
    does in float32; on the project's 2-core machine it runs at 1.2-1.4x the speed of float64
    (``benchmarks/sims_speed.py`` measures both and the float32 error of the final iterates).  ``x`` is
    returned in ``dtype``, the loss in float64; in float32 a coordinate above the largest float32 (3.4e38)
    counts as diverged whatever ``blowup``.
    """
    code, values, hp = _prepare(optimizer, eta, hyper)
    steps = checks.integer("steps", steps, low=0)
    blowup = _check_blowup(blowup)
    h = _as_float_array("h", h)
    x = _as_float_array("x0", x0)
    if h.ndim != 2 or h.shape[0] == 0 or h.shape[1] == 0:
        raise ValueError(f"h must have shape (B, d) with B, d >= 1, got {h.shape}")
    if x.shape != h.shape:
        raise ValueError(f"x0 must have the shape of h {h.shape}, got {x.shape}")
    n_runs, d = h.shape
    etas = _as_float_array("eta", eta)
    if etas.ndim == 0:
        etas = np.full(n_runs, float(etas))
    if etas.shape != (n_runs,):
        raise ValueError(f"eta must be a scalar or have shape ({n_runs},), got {etas.shape}")
    if not np.all(etas > 0):
        raise ValueError("eta must satisfy 0 < eta < inf")
    wd = values.get("weight_decay", 0.0)
    if np.any(etas * wd >= 1.0):
        raise ValueError(f"weight_decay must satisfy 0 <= weight_decay < 1/eta for every eta, got {wd!r}")
    p = _frozen_p(preconditioner, (n_runs, d))
    loss_h = h
    if _check_dtype(dtype) == np.float32:
        h, x = h.astype(np.float32), x.astype(np.float32)
        p = None if p is None else p.astype(np.float32)
        blowup = min(blowup, float(np.finfo(np.float32).max))
    from numba import get_num_threads

    threads = get_num_threads()
    # Split few, long runs into pieces so that every thread has work.
    pieces = threads if (n_runs < threads and d >= 256 * threads) else 1
    if d <= 64 and n_runs >= 32 and np.all(etas == etas[0]):
        x_final, div = _run_transposed(code, hp, h, x, float(etas[0]), steps, p, blowup, threads)
        for r in np.flatnonzero(div >= 0):  # rerun a diverged run to its divergence step for its iterate
            xr, _ = _run_batch(code, hp, h[r:r + 1], x[r:r + 1], etas[r:r + 1], int(div[r]),
                               None if p is None else p[r:r + 1], blowup, 1, threads)
            x_final[r] = xr[0]
        pieces = 1
    else:
        x_final, div = _run_batch(code, hp, h, x, etas, steps, p, blowup, pieces, threads)
    if pieces > 1:
        for r in np.flatnonzero(div >= 0):  # rerun a diverged run, unsplit, to its divergence step
            xr, _ = _run_batch(code, hp, h[r:r + 1], x[r:r + 1], etas[r:r + 1], int(div[r]),
                               None if p is None else p[r:r + 1], blowup, 1, threads)
            x_final[r] = xr[0]
    with np.errstate(all="ignore"):
        x64 = x_final.astype(np.float64)
        loss = 0.5 * np.einsum("bj,bj,bj->b", loss_h, x64, x64)
    return BatchResult(x=x_final, loss=loss, diverged_at=div)


def _check_dtype(dtype: object) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.float64, np.float32):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    return dt


def _run_batch(code, hp, h, x0, etas, steps, p, blowup, pieces, threads):
    """Enter :func:`sims.kernels.batch_kernel`, one run per item; returns (final x (B, d), divergence steps (B,))."""
    from sims.kernels import batch_kernel

    n_runs, d = h.shape
    frozen = p is not None
    hw, xw = _split(h, pieces), _split(x0, pieces)
    if xw is x0:
        xw = x0.copy()  # the kernel updates its x in place; never the caller's array
    pw = _split(p, pieces) if frozen else np.ones((hw.shape[0], 1), dtype=hw.dtype)
    ew = np.repeat(etas, pieces)
    rows, width = hw.shape
    m = np.zeros_like(xw)
    v = np.zeros_like(xw) if code in ADAPTIVE_CODES and not frozen else np.zeros((rows, 1), dtype=xw.dtype)
    div = np.full((rows, 1), -1, dtype=np.int64)
    kernel = batch_kernel(code, *branch_flags(hp), "serial" if rows == 1 or threads == 1 else "rows")
    kernel(frozen, hw.reshape(rows, 1, width), xw.reshape(rows, 1, width), m.reshape(rows, 1, width),
           v.reshape(rows, 1, -1), pw.reshape(rows, 1, -1), ew, hp, steps, blowup, div)
    div = div[:, 0]
    if pieces == 1:
        return xw, div
    div2 = div.reshape(n_runs, pieces)
    first = np.where(div2 >= 0, div2, np.iinfo(np.int64).max).min(axis=1)
    return xw.reshape(n_runs, -1)[:, :d].copy(), np.where(first == np.iinfo(np.int64).max, -1, first)


def _run_transposed(code, hp, h, x0, eta, steps, p, blowup, threads):
    """Enter :func:`sims.kernels.batch_kernel` in the transposed layout (small d, one eta); same returns as
    _run_batch."""
    from sims.kernels import batch_kernel

    n_runs, d = h.shape
    n_items = threads * max(1, -(-n_runs // (threads * 1024)))  # <= 1024 runs per item: state in L2
    width = -(-n_runs // n_items)
    total = n_items * width

    def layout(a):  # (B, d) -> (items, d, width), padding with copies of the last run
        a = np.concatenate([a, np.repeat(a[-1:], total - n_runs, axis=0)]) if total > n_runs else a
        return np.ascontiguousarray(a.reshape(n_items, width, d).transpose(0, 2, 1))

    hT, xT = layout(h), layout(x0)
    frozen = p is not None
    pT = layout(p) if frozen else np.ones((n_items, 1, 1), dtype=xT.dtype)
    mT = np.zeros_like(xT)
    vT = np.zeros_like(xT) if code in ADAPTIVE_CODES and not frozen else np.zeros((n_items, 1, 1), dtype=xT.dtype)
    div = np.full((n_items, width), -1, dtype=np.int64)
    kernel = batch_kernel(code, *branch_flags(hp), "transposed")
    kernel(frozen, hT, xT, mT, vT, pT, np.full(n_items, eta), hp, steps, blowup, div)
    x_final = xT.transpose(0, 2, 1).reshape(total, d)[:n_runs].copy()
    return x_final, div.reshape(total)[:n_runs].copy()


def _split(a: np.ndarray, pieces: int) -> np.ndarray:
    """(B, d) -> (B * pieces, ceil(d / pieces)), padding by repeating each run's last coordinate."""
    if pieces == 1:
        return a
    n_runs, d = a.shape
    width = -(-d // pieces)
    padded = np.concatenate([a, np.repeat(a[:, -1:], width * pieces - d, axis=1)], axis=1)
    return np.ascontiguousarray(padded.reshape(n_runs * pieces, width))
