"""Quadratic problems L(x) = 1/2 x^T H x: spectra, random rotations, and the dense-quadratic experiment.

Every random object takes a seed (numpy ``default_rng``), so the same seed gives the same problem.
The progressive-sharpening model lives in :mod:`sims.sharpening`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aeos_base import checks


def spectrum(d: int, low: float, high: float, kind: str = "log") -> np.ndarray:
    """d eigenvalues from ``low`` to ``high`` (units 1/x^2), log- or linearly spaced, ascending."""
    d = checks.integer("d", d, low=1)
    if not (np.isfinite(low) and np.isfinite(high) and 0 < low <= high):
        raise ValueError(f"low and high must satisfy 0 < low <= high < inf, got {low!r}, {high!r}")
    if kind == "log":
        return np.logspace(np.log10(low), np.log10(high), int(d))
    if kind == "linear":
        return np.linspace(low, high, int(d))
    raise ValueError(f"kind must be 'log' or 'linear', got {kind!r}")


def random_rotation(d: int, seed: int) -> np.ndarray:
    """A Haar-distributed orthogonal d x d matrix Q (QR of a Gaussian matrix, signs fixed by diag(R))."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def dense_quadratic(eigenvalues: np.ndarray, seed: int) -> np.ndarray:
    """H = Q diag(eigenvalues) Q^T with Q = :func:`random_rotation` (exactly symmetric)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)):
        raise ValueError("eigenvalues must be a non-empty finite 1-D array")
    q = random_rotation(lam.size, seed)
    H = (q * lam) @ q.T
    return 0.5 * (H + H.T)


@dataclass(frozen=True)
class QuadraticProblem:
    """A quadratic L(x) = 1/2 x^T H x with its start x0 (H 1-D means diagonal)."""

    H: np.ndarray
    x0: np.ndarray

    def loss(self, x: np.ndarray) -> float:
        Hx = self.H @ x if self.H.ndim == 2 else self.H * x
        return 0.5 * float(x @ Hx)


def dense_problem(seed: int = 0, d: int = 50, low: float = 1.0, high: float = 100.0) -> QuadraticProblem:
    """The dense-quadratic experiment of the paper's simplest AEoS: H = Q diag(logspace(log10 low, log10 high,
    d)) Q^T with Q Haar-random from ``seed`` (d = 50, eigenvalues 1..100 by default), x0 ~ N(0, I) from
    ``seed + 1``."""
    H = dense_quadratic(spectrum(d, low, high), seed)
    x0 = np.random.default_rng(seed + 1).standard_normal(d)
    return QuadraticProblem(H, x0)
