"""The pieces of the central flows that are pure math: the complementarity solve and the Chebyshev step.

References: the closed form for one direction; the convex program's minimum found by scipy (BFGS over a
Cholesky factor X = L L^T, an independent parametrisation); numpy's Chebyshev polynomials; exact
solutions of scalar ODEs.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.polynomial import chebyshev
from scipy.optimize import minimize

from aeos_theory.chebyshev import chebyshev_step, coefficients, damping_factor, stability_bound, stages_for
from aeos_theory.complementarity import EdgeNotHeld, solve_complementarity


def _map(beta: np.ndarray, x: np.ndarray) -> np.ndarray:
    k = x.shape[0]
    return (beta.reshape(k * k, k * k) @ x.reshape(-1)).reshape(k, k)


def _random_problem(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric alpha and a symmetric PSD map B (a Gram matrix over symmetric k x k matrices)."""
    mats = rng.standard_normal((k * k + 2, k, k))
    mats = mats + mats.transpose(0, 2, 1)
    flat = mats.reshape(len(mats), -1)
    beta = (flat.T @ flat).reshape(k, k, k, k) / len(mats)
    a = rng.standard_normal((k, k))
    return a + a.T - np.eye(k), beta


def test_one_direction_is_the_closed_form():
    # (the map is made definite by REGULARISATION = 1e-9 of its size: the closed form -alpha / (B (1 + 1e-9)))
    assert solve_complementarity([[-0.3]], np.full((1, 1, 1, 1), 2.0))[0, 0] == pytest.approx(0.15, rel=2e-9)
    assert solve_complementarity([[0.3]], np.full((1, 1, 1, 1), 2.0))[0, 0] == 0.0
    with pytest.raises(EdgeNotHeld):  # beyond the edge with nothing to pull it back: GD on a quadratic
        solve_complementarity([[-0.3]], np.zeros((1, 1, 1, 1)))


@pytest.mark.parametrize("k", [2, 3, 4])
def test_random_problems_meet_the_conditions_and_the_convex_minimum(k):
    rng = np.random.default_rng(k)
    for _ in range(12):
        alpha, beta = _random_problem(rng, k)
        X = solve_complementarity(alpha, beta)
        A = alpha + _map(beta, X)
        scale = np.abs(alpha).max()
        assert np.linalg.eigvalsh(X)[0] >= -1e-12 * scale
        assert np.linalg.eigvalsh(A)[0] >= -1e-7 * scale
        assert abs(np.sum(X * A)) <= 1e-7 * scale * max(1.0, np.abs(X).max())

        def objective(l_flat):
            L = np.zeros((k, k))
            L[np.tril_indices(k)] = l_flat
            Y = L @ L.T
            return 0.5 * np.sum(Y * _map(beta, Y)) + np.sum(alpha * Y)

        best = min((minimize(objective, rng.standard_normal(k * (k + 1) // 2), method="BFGS", tol=1e-12)
                    for _ in range(8)), key=lambda r: r.fun)
        ours = 0.5 * np.sum(X * _map(beta, X)) + np.sum(alpha * X)
        assert ours == pytest.approx(best.fun, rel=1e-6, abs=1e-9 * scale)


def test_complementarity_refuses_malformed_input():
    with pytest.raises(ValueError, match="alpha must be a non-empty square"):
        solve_complementarity(np.zeros((2, 3)), np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="beta must have shape"):
        solve_complementarity(np.eye(2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        solve_complementarity([[np.nan]], np.ones((1, 1, 1, 1)))


@pytest.mark.parametrize("stages", [1, 2, 3, 5, 8])
def test_the_stability_polynomial_is_the_shifted_chebyshev_polynomial(stages):
    """R(z) = T_s(w0 + w1 z) / T_s(w0), from the step applied to dy/dt = z y with h = 1."""
    w0, w1, _ = coefficients(stages)
    t_s = chebyshev.Chebyshev.basis(stages)
    for z in np.linspace(-stability_bound(stages), 0.0, 41):
        assert chebyshev_step(1.0, lambda y: z * y, 1.0, stages) == pytest.approx(t_s(w0 + w1 * z) / t_s(w0),
                                                                                   rel=1e-10, abs=1e-12)
    stiff = np.linspace(-stability_bound(stages), -(w0 - 1) / w1, 200)
    amplification = [abs(chebyshev_step(1.0, lambda y: z * y, 1.0, stages)) for z in stiff]
    assert max(amplification) <= damping_factor(stages) * (1 + 1e-9) < 0.34  # stiff parts are damped


def test_first_order_accuracy_on_a_nonlinear_flow():
    """dy/dt = -y^2, y(0) = 1: y(1) = 1/2; the error halves with the step."""
    errors = []
    for h in (0.1, 0.05, 0.025):
        y = 1.0
        for _ in range(round(1 / h)):
            y = chebyshev_step(y, lambda v: -v * v, h, stages=3)
        errors.append(abs(y - 0.5))
    assert errors[0] / errors[1] == pytest.approx(2.0, rel=0.1)
    assert errors[1] / errors[2] == pytest.approx(2.0, rel=0.1)


def test_stage_count_covers_the_stiffness():
    assert stages_for(0.5) == 1 and stages_for(2.0) == 2
    for stiffness in (3.0, 38.0, 400.0):
        s = stages_for(stiffness)
        assert stability_bound(s) >= 1.2 * stiffness > stability_bound(s - 1)
    with pytest.raises(ValueError, match="stiffness must be"):
        stages_for(1e9)
