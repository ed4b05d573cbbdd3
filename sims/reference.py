"""Plain-numpy reference of every update in :mod:`sims.updates` (used by the tests and the benchmark).

Written independently of the numba code, straight from the torch.optim source (``addcdiv`` is
``self + (value * t1) / t2`` and ``addcmul`` is ``self + (value * t1) * t2`` on CPU), vectorised over any
array shape (a single run (d,) or a batch (B, d); ``eta`` broadcasts against the leading axes).  Never
used by the fast path.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from aeos_theory.optimizers import validate


class ReferenceOptimizer:
    """State and step of one optimizer on an array iterate, numpy only.

    ``step(x, grad)`` returns the new iterate and keeps ``self.P``, the preconditioner of the step just
    taken (ones for non-adaptive methods, the frozen P in frozen mode).
    """

    def __init__(self, optimizer: str, eta, shape: tuple[int, ...], preconditioner: Optional[np.ndarray] = None,
                 **hyper: float) -> None:
        self.name = optimizer
        self.h = validate(optimizer, {"eta": 1.0, **hyper})
        self.eta = np.asarray(eta, dtype=np.float64)
        if self.eta.ndim:
            self.eta = self.eta.reshape(self.eta.shape + (1,) * (len(shape) - self.eta.ndim))
        self.frozen = preconditioner is not None
        self.p = None if preconditioner is None else np.broadcast_to(np.asarray(preconditioner, float), shape)
        self.t = 0
        self.buf = np.zeros(shape)
        self.v = np.zeros(shape)
        self.mu_product = 1.0
        self.P = np.ones(shape) if self.p is None else np.array(self.p)

    def step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        self.t += 1
        t, h, lr = self.t, self.h, self.eta
        wd = h.get("weight_decay", 0.0)
        name = self.name
        if name in ("gd", "heavy_ball", "nesterov"):
            d_p = grad + wd * x
            beta = h.get("beta", 0.0)
            if beta != 0.0:
                if t == 1:
                    self.buf = d_p.copy()
                else:
                    damp = h.get("dampening", 0.0)
                    self.buf = self.buf * beta + (1 - damp) * d_p
                d_p = d_p + beta * self.buf if name == "nesterov" else self.buf
            if self.frozen:
                d_p = d_p / self.p
            return x + (-lr) * d_p
        if name in ("adam", "adamw", "nadam"):
            b1, b2, eps = h["beta1"], h["beta2"], h["eps"]
            if name == "adamw":
                x = x * (1 - lr * wd)
            elif wd != 0:
                grad = grad + wd * x
            w = 1 - b1
            self.buf = self.buf + w * (grad - self.buf) if abs(w) < 0.5 else grad - (grad - self.buf) * (1 - w)
            if name == "nadam":
                psi = h["momentum_decay"]
                if self.frozen:
                    settled = b1 if psi > 0 else 0.5 * b1
                    return x + ((-lr * (1 - settled)) * grad) / self.p + ((-lr * settled) * self.buf) / self.p
                mu = b1 * (1.0 - 0.5 * (0.96 ** (t * psi)))
                mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * psi)))
                self.mu_product *= mu
                self.v = self.v * b2 + (1 - b2) * grad * grad
                denom = np.sqrt(self.v / (1 - b2 ** t)) + eps
                self.P = denom
                mu_product_next = self.mu_product * mu_next
                x = x + ((-lr * (1.0 - mu) / (1.0 - self.mu_product)) * grad) / denom
                return x + (((-lr * mu_next) / (1.0 - mu_product_next)) * self.buf) / denom
            if self.frozen:
                return x + ((-lr) * self.buf) / self.p
            self.v = self.v * b2 + (1 - b2) * grad * grad
            step_size = lr / (1 - b1 ** t)
            denom = np.sqrt(self.v) / np.sqrt(1 - b2 ** t) + eps
            self.P = denom
            return x + ((-step_size) * self.buf) / denom
        if name == "rmsprop":
            alpha, eps, beta = h["beta2"], h["eps"], h["beta"]
            grad = grad + wd * x
            if self.frozen:
                avg = self.p
            else:
                self.v = self.v * alpha + (1 - alpha) * grad * grad
                avg = np.sqrt(self.v) + eps
                self.P = avg
            if beta > 0:
                self.buf = self.buf * beta + grad / avg
                return x + (-lr) * self.buf
            return x + ((-lr) * grad) / avg
        if name == "adagrad":
            grad = grad + wd * x if wd != 0 else grad
            if self.frozen:
                decay = h["lr_decay"]
                clr = lr / (math.inf if decay > 0 else 1.0)  # settled: the decayed lr is 0
                return x + ((-clr) * grad) / self.p
            clr = lr / (1 + (t - 1) * h["lr_decay"])
            self.v = self.v + 1 * grad * grad
            std = np.sqrt(self.v) + h["eps"]
            self.P = std
            return x + ((-clr) * grad) / std
        if name == "adamax":
            b1, b2, eps = h["beta1"], h["beta2"], h["eps"]
            grad = grad + wd * x if wd != 0 else grad
            w = 1 - b1
            self.buf = self.buf + w * (grad - self.buf) if abs(w) < 0.5 else grad - (grad - self.buf) * (1 - w)
            if self.frozen:
                return x + ((-lr) * self.buf) / self.p
            self.v = np.maximum(self.v * b2, np.abs(grad) + eps)
            self.P = np.array(self.v)
            clr = lr / (1 - b1 ** float(t))
            return x + ((-clr) * self.buf) / self.v
        if name == "adadelta":
            rho, eps = h["beta2"], h["eps"]
            grad = grad + wd * x if wd != 0 else grad
            if self.frozen:
                return x + (-lr) * (grad / self.p)
            self.v = self.v * rho + (1 - rho) * grad * grad  # square_avg
            std = np.sqrt(self.v + eps)
            delta = np.sqrt(self.buf + eps)  # from acc_delta before this step: P = std / delta
            self.P = std / delta
            delta = delta / std * grad
            self.buf = self.buf * rho + (1 - rho) * delta * delta  # acc_delta
            return x + (-lr) * delta
        if name == "radam":
            b1, b2, eps = h["beta1"], h["beta2"], h["eps"]
            grad = grad + wd * x if wd != 0 else grad
            w = 1 - b1
            self.buf = self.buf + w * (grad - self.buf) if abs(w) < 0.5 else grad - (grad - self.buf) * (1 - w)
            if self.frozen:  # settled: k_t = r_t = 1
                return x + ((-lr) * self.buf) / self.p
            self.v = self.v * b2 + (1 - b2) * grad * grad
            step = float(t)
            bias1, bias2 = 1 - b1 ** step, 1 - b2 ** step
            rho_inf = 2 / (1 - b2) - 1
            rho_t = rho_inf - 2 * step * (b2 ** step) / bias2
            if rho_t > 5.0:
                rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
                adaptive_lr = (bias2 ** 0.5) / (np.sqrt(self.v) + eps)
                self.P = 1 / adaptive_lr
                return x - (self.buf / bias1) * lr * adaptive_lr * rect
            self.P = np.ones(np.shape(x))
            return x - (self.buf / bias1) * lr
        if name == "asgd":
            lambd, alpha = h["lambd"], h["decay_power"]
            grad = grad + wd * x if wd != 0 else grad
            if self.frozen:
                eta_t = 0.0 * lr if lambd * lr.max() > 0 and alpha > 0 else lr
                return x * (1 - lambd * eta_t) + (-eta_t) * (grad / self.p)
            eta_t = lr / ((1 + lambd * lr * float(t - 1)) ** alpha)  # torch's rate for step t, set at step t - 1
            return x * (1 - lambd * eta_t) + (-eta_t) * grad
        raise ValueError(f"unknown optimizer {name!r}")


def reference_run(optimizer: str, H: np.ndarray, x0: np.ndarray, eta: float, steps: int,
                  preconditioner: Optional[np.ndarray] = None, **hyper: float) -> tuple[np.ndarray, np.ndarray]:
    """Iterates x_0..x_steps (steps + 1, d) on L = 1/2 x^T H x (H 1-D: diagonal), and the P of each step
    (steps + 1, d; row 0 is NaN for adaptive methods in adaptive mode)."""
    H = np.asarray(H, dtype=np.float64)
    grad: Callable[[np.ndarray], np.ndarray] = (lambda z: H @ z) if H.ndim == 2 else (lambda z: H * z)
    opt = ReferenceOptimizer(optimizer, eta, np.shape(x0), preconditioner, **hyper)
    xs = [np.array(x0, dtype=np.float64)]
    Ps = [np.full(np.shape(x0), np.nan)]
    for _ in range(steps):
        xs.append(opt.step(xs[-1], grad(xs[-1])))
        Ps.append(np.array(opt.P))
    return np.array(xs), np.array(Ps)


def reference_batch(optimizer: str, h: np.ndarray, x0: np.ndarray, eta, steps: int, **hyper: float) -> np.ndarray:
    """Final iterates of B diagonal quadratics (B, d) after ``steps`` steps, vectorised over the batch."""
    opt = ReferenceOptimizer(optimizer, eta, np.shape(x0), **hyper)
    x = np.array(x0, dtype=np.float64)
    for _ in range(steps):
        x = opt.step(x, h * x)
    return x
