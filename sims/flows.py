"""Stable and central flows on the quadratic models, where every quantity is exact.

The flows themselves live in :mod:`aeos_theory.central_flow`; this module supplies the two models of
``sims`` as :class:`aeos_theory.central_flow.FlowProblem`\\ s, in float64 numpy:

* :class:`QuadraticFlow`: L(x) = 1/2 x^T H x (H a 1-D spectrum or a dense symmetric matrix).  Its
  Hessian does not move, so grad_x (u^T H v) = 0: gradient descent has no way back from beyond 2/eta
  (its central flow is the stable one until the edge, and then cannot hold it), while Adam and RMSProp
  hold the edge through their preconditioner, which the oscillation feeds (the AEoS in its simplest form);
* :class:`SharpeningFlow`: the progressive-sharpening model of :mod:`sims.sharpening`, with its
  analytic gradient, Hessian and third derivative.

Eigenpairs are those of the dense d x d matrix diag(s) (H + wd I) diag(s) (``numpy.linalg.eigh``; wd the
coupled weight decay).

>>> import numpy as np, sims
>>> from sims.problems import dense_problem
>>> p = dense_problem(seed=0, d=10)                # Adam, beta2 = 0.99: nu decays until eta S_P meets 38
>>> flow = sims.central_flow("adam", p.H, p.x0, eta=1e-2, steps=1400, record_every=200, beta2=0.99)
>>> np.round(flow.column("eta_S_P")[1:], 1)         # then the oscillation's share of nu holds it there
array([ 0.7,  2.1,  5.8, 15.9, 38. , 38. , 38. ])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aeos_theory.central_flow import FlowResult, Schedule, central_flow_of
from sims.sharpening import SharpeningModel


def _top(matrix: np.ndarray, k: int) -> tuple[np.ndarray, list[np.ndarray]]:
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    k = min(k, len(values))
    return values[::-1][:k].copy(), [vectors[:, -1 - i].copy() for i in range(k)]


@dataclass
class _QuadraticPoint:
    H: np.ndarray
    x: np.ndarray

    def loss(self) -> float:
        return 0.5 * float(self.x @ self.gradient())

    def gradient(self) -> np.ndarray:
        return self.H @ self.x

    def eigenpairs(self, scale, k: int, shift: float = 0.0):
        s = np.broadcast_to(np.asarray(scale, dtype=np.float64), self.x.shape)
        return _top(s[:, None] * (self.H + shift * np.eye(len(s))) * s[None, :], k)

    def curvature_gradients(self, pairs) -> list[np.ndarray]:
        return [np.zeros_like(self.x) for _ in pairs]  # H does not depend on x

    def sharpness(self) -> float:
        return float(np.linalg.eigvalsh(self.H)[-1])


class QuadraticFlow:
    """L(x) = 1/2 x^T H x as a flow problem (``H``: 1-D spectrum or dense symmetric d x d)."""

    def __init__(self, H: np.ndarray) -> None:
        from sims.api import _as_float_array

        H = _as_float_array("H", H)
        if H.ndim == 1:
            H = np.diag(H)
        if H.ndim != 2 or H.shape[0] != H.shape[1] or H.shape[0] == 0:
            raise ValueError(f"H must be a 1-D spectrum or a square matrix; got shape {H.shape}")
        if not np.allclose(H, H.T, rtol=1e-12, atol=0.0):
            raise ValueError("H must be symmetric")
        self.H = 0.5 * (H + H.T)

    def at(self, x: np.ndarray) -> _QuadraticPoint:
        return _QuadraticPoint(self.H, x)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        return self.H @ x


def sharpening_third_derivative(model: SharpeningModel, theta: np.ndarray, u: np.ndarray,
                                v: np.ndarray) -> np.ndarray:
    """grad_theta (u^T H(theta) v) of the sharpening model, theta = (w, z_1..z_k).

    With H_ww = sum kappa_i z_i^2 + c, H_wz_i = kappa_i (2 w z_i - y_i), H_z_i z_i = kappa_i w^2:
    d/dw = sum_i 2 kappa_i [u_w v_i z_i + u_i v_w z_i + u_i v_i w],
    d/dz_i = 2 kappa_i [u_w v_w z_i + (u_w v_i + u_i v_w) w].
    """
    w, z = theta[0], theta[1:]
    uw, vw, ui, vi = u[0], v[0], u[1:], v[1:]
    kappa = model.kappa
    out = np.empty_like(theta)
    out[0] = float(np.sum(2 * kappa * (uw * vi * z + ui * vw * z + ui * vi * w)))
    out[1:] = 2 * kappa * (uw * vw * z + (uw * vi + ui * vw) * w)
    return out


@dataclass
class _SharpeningPoint:
    model: SharpeningModel
    theta: np.ndarray

    def loss(self) -> float:
        return self.model.loss(self.theta)

    def gradient(self) -> np.ndarray:
        return self.model.gradient(self.theta)

    def eigenpairs(self, scale, k: int, shift: float = 0.0):
        s = np.broadcast_to(np.asarray(scale, dtype=np.float64), self.theta.shape)
        return _top(s[:, None] * (self.model.hessian(self.theta) + shift * np.eye(len(s))) * s[None, :], k)

    def curvature_gradients(self, pairs) -> list[np.ndarray]:
        return [sharpening_third_derivative(self.model, self.theta, u, v) for u, v in pairs]

    def sharpness(self) -> float:
        return float(np.linalg.eigvalsh(self.model.hessian(self.theta))[-1])


class SharpeningFlow:
    """The progressive-sharpening model (:class:`sims.SharpeningModel`) as a flow problem."""

    def __init__(self, model: SharpeningModel | None = None) -> None:
        self.model = model or SharpeningModel()

    def at(self, theta: np.ndarray) -> _SharpeningPoint:
        return _SharpeningPoint(self.model, theta)

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        return self.model.gradient(theta)


def central_flow(optimizer: str, H: np.ndarray | SharpeningModel, x0: np.ndarray | None, eta: float, steps: int,
                 record_every: int = 10, *, central: bool = True, schedule: Schedule | None = None,
                 flow_options: dict | None = None, **hyper: float) -> FlowResult:
    """The central flow (``central=False``: the stable flow) of ``optimizer`` ("gd", "rmsprop", "adam",
    "adamw" or "nadam", torch semantics and hyperparameter names, ``weight_decay`` included) on
    L = 1/2 x^T H x from ``x0``, or on a :class:`sims.SharpeningModel` given as ``H`` (``x0`` None: the
    model's own start), for ``steps`` optimizer steps, recorded every ``record_every``, at the lr eta times
    ``schedule``'s factor of each update (a sequence from update 1, or a function of its index t >= 1;
    None: constant) (:class:`aeos_theory.central_flow.FlowResult`; ``flow_options``:
    :class:`aeos_theory.central_flow.CentralFlow`'s)."""
    from sims.api import _as_float_array

    if isinstance(H, SharpeningModel):
        problem = SharpeningFlow(H)
        start = H.theta0.copy() if x0 is None else _as_float_array("x0", x0)
    else:
        problem = QuadraticFlow(H)
        if x0 is None:
            raise ValueError("x0 must be given for a quadratic (an array of length d)")
        start = _as_float_array("x0", x0)
    d = problem.H.shape[0] if isinstance(problem, QuadraticFlow) else H.k + 1
    if start.shape != (d,):
        raise ValueError(f"x0 must have shape ({d},); got {start.shape}")
    return central_flow_of(problem, optimizer, start, steps, record_every=record_every, central=central,
                           hyper={"eta": eta, **hyper}, schedule=schedule, **(flow_options or {}))
