"""aeos_theory against independent references: closed forms typed from the paper's threshold table, and the
spectral radius of numeric update matrices written here in numpy straight from torch.optim's update
rules (not from aeos_theory.optimizers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from aeos_theory import (
    LAMBDA,
    OPTIMIZERS,
    SYMBOLS,
    derive,
    derive_boundary,
    stability_threshold,
    threshold,
    threshold_at_step,
)

eta, beta, beta1, d, wd = (SYMBOLS[n] for n in ("eta", "beta", "beta1", "dampening", "weight_decay"))

CLOSED_FORMS = {
    "gd": 2 / eta - wd,
    "heavy_ball": (2 + 2 * beta) / ((1 - d) * eta) - wd,
    "nesterov": (2 + 2 * beta) / ((1 + 2 * beta) * eta) - wd,
    "adam": (2 + 2 * beta1) / ((1 - beta1) * eta) - wd,
    "adamw": (1 + beta1) * (2 - eta * wd) / ((1 - beta1) * eta),
    "rmsprop": (2 + 2 * beta) / eta - wd,
    "nadam": (2 + 2 * beta1) / ((1 - beta1) * (1 + 2 * beta1) * eta) - wd,
}


def test_every_optimizer_has_a_closed_form_here():
    assert set(CLOSED_FORMS) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_derivation_equals_closed_form(name):
    assert sp.simplify(derive(name) - CLOSED_FORMS[name]) == 0
    assert derive_boundary(name).kind == "z = -1"


def test_spec_constants():
    assert threshold(0.9, 1e-3) == pytest.approx(38_000, rel=1e-12)
    assert threshold(0.99, 1.0) == pytest.approx(398, rel=1e-12)
    assert threshold(0.0, 0.5) == pytest.approx(4, rel=1e-12)
    assert stability_threshold("nadam", eta=1.0, beta1=0.9) == pytest.approx(95 / 7, rel=1e-12)
    assert stability_threshold("gd", eta=0.05) == pytest.approx(40, rel=1e-12)
    assert stability_threshold("heavy_ball", eta=0.1, beta=0.9) == pytest.approx(38, rel=1e-12)
    assert stability_threshold("rmsprop", eta=0.01) == pytest.approx(200, rel=1e-12)


# ---------------------------------------------------------------- numeric truth (numpy, torch semantics)
def update_matrix(name: str, lam: float, h: dict) -> np.ndarray:
    """One step of the torch.optim rule on L = lam x^2 / 2 with P = 1, as a matrix on (x, buffer)."""
    e, w = h["eta"], h.get("weight_decay", 0.0)
    if name == "gd":
        return np.array([[1 - e * (lam + w)]])
    if name in ("heavy_ball", "rmsprop"):  # buf = b buf + (1 - d) g; x -= e buf
        b, damp = h.get("beta", 0.0), h.get("dampening", 0.0)
        g = (1 - damp) * (lam + w)
        return np.array([[1 - e * g, -e * b], [g, b]])
    if name == "nesterov":  # buf = b buf + g; x -= e (g + b buf)
        b, g = h["beta"], lam + w
        buf = np.array([g, b])  # new buf as a row acting on (x, buf)
        step = np.array([g, 0.0]) + b * buf
        return np.array([np.array([1.0, 0.0]) - e * step, buf])
    b1 = h["beta1"]
    if name in ("adam", "nadam"):
        g = lam + w
        m = np.array([(1 - b1) * g, b1])
        direction = m if name == "adam" else b1 * m + np.array([(1 - b1) * g, 0.0])
        return np.array([np.array([1.0, 0.0]) - e * direction, m])
    if name == "adamw":  # x <- (1 - e w) x - e m
        m = np.array([(1 - b1) * lam, b1])
        return np.array([np.array([1 - e * w, 0.0]) - e * m, m])
    raise AssertionError(name)


def spectral_radius(matrix: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(matrix))))


coefficient = st.floats(0.0, 0.999)
step_size = st.floats(1e-5, 10.0)
fraction = st.floats(0.0, 0.99)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@settings(max_examples=150, deadline=None)
@given(eta_=step_size, b=coefficient, damp=fraction, wd_fraction=fraction)
def test_threshold_is_the_stability_edge(name, eta_, b, damp, wd_fraction):
    hyper = {"eta": eta_, "weight_decay": wd_fraction / eta_}
    if name in ("heavy_ball", "nesterov", "rmsprop"):
        hyper["beta"] = b
    if name == "heavy_ball":
        hyper["dampening"] = damp
    if name in ("adam", "adamw", "nadam"):
        hyper["beta1"] = b
    lam_star = stability_threshold(name, **hyper)
    assert spectral_radius(update_matrix(name, 0.999 * lam_star, hyper)) < 1
    assert spectral_radius(update_matrix(name, 1.001 * lam_star, hyper)) > 1


# ---------------------------------------------------------------- the engine does not assume z = -1
def test_complex_pair_boundary_of_delayed_gradient_descent():
    """x_{t+1} = x_t - eta lambda x_{t-1}: chi = z^2 - z + eta lambda, roots reach |z| = 1 as a complex
    pair exp(+-i pi/3) at lambda = 1/eta, while chi(-1) = 2 + eta lambda never vanishes."""
    e = sp.Symbol("eta", positive=True)
    matrix = sp.Matrix([[1, -e * LAMBDA], [1, 0]])
    boundary = derive_boundary(matrix)
    assert boundary.kind == "complex pair |z| = 1"
    assert sp.simplify(boundary.expression - 1 / e) == 0
    for eta_value in (0.01, 0.3, 2.0):
        lam = 1 / eta_value
        below = np.array([[1, -eta_value * 0.999 * lam], [1, 0]])
        above = np.array([[1, -eta_value * 1.001 * lam], [1, 0]])
        assert spectral_radius(below) < 1 < spectral_radius(above)


def test_plus_one_boundary_of_a_user_recurrence():
    """x <- (1 + a lambda - a) x with 0 < a: the root leaves through z = +1 at lambda = 1."""
    a = sp.Symbol("a", positive=True)
    boundary = derive_boundary(sp.Matrix([[1 + a * LAMBDA - a]]))
    assert boundary.kind == "z = +1"
    assert boundary.expression == 1


def test_third_order_recurrence_with_two_step_delay():
    """x_{t+1} = x_t - eta lambda x_{t-2}: the first crossing is a complex pair at
    eta lambda = 2 sin(pi/10) = (sqrt(5) - 1)/2 (classic delay-2 boundary), checked numerically."""
    e = sp.Symbol("eta", positive=True)
    matrix = sp.Matrix([[1, 0, -e * LAMBDA], [1, 0, 0], [0, 1, 0]])
    boundary = derive_boundary(matrix)
    assert boundary.kind == "complex pair |z| = 1"
    assert sp.simplify(boundary.expression - (sp.sqrt(5) - 1) / 2 / e) == 0
    eta_value = 0.7
    lam = float(boundary.expression.subs(e, eta_value))
    shift = lambda f: np.array([[1, 0, -eta_value * f * lam], [1, 0, 0], [0, 1, 0]])
    assert spectral_radius(shift(0.999)) < 1 < spectral_radius(shift(1.001))


# ---------------------------------------------------------------- bias-corrected threshold
def test_threshold_at_step_matches_bias_corrected_closed_form():
    for t in (1, 2, 10, 100):
        expected = (2 + 2 * 0.9) * (1 - 0.9**t) / ((1 - 0.9) * 1e-3)
        assert threshold_at_step(t, 0.9, 1e-3) == pytest.approx(expected, rel=1e-12)
    assert threshold_at_step(10_000, 0.9, 1e-3) == pytest.approx(threshold(0.9, 1e-3), rel=1e-12)
    assert threshold_at_step(1, 0.0, 0.1) == pytest.approx(20, rel=1e-12)


def test_threshold_at_step_with_weight_decay_early_in_a_run():
    """eta = 0.1, wd = 2 is a valid Adam config (eta wd = 0.2 < 1) although eta_1 = eta / (1 - 0.9) = 1
    has eta_1 wd = 2: the step-1 threshold is still defined, (2 + 2 b1)(1 - b1) / ((1 - b1) eta) - wd."""
    assert threshold_at_step(1, 0.9, 0.1, 2.0) == pytest.approx(38.0 - 2.0, rel=1e-12)
    for t in (1, 5, 50):
        expected = (2 + 2 * 0.9) * (1 - 0.9**t) / ((1 - 0.9) * 0.1) - 2.0
        assert threshold_at_step(t, 0.9, 0.1, 2.0) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="weight_decay must satisfy"):
        threshold_at_step(1, 0.9, 0.1, 10.0)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: threshold(1.0, 1e-3), "beta1 must satisfy 0 <= beta1 < 1"),
        (lambda: threshold(-0.1, 1e-3), "beta1 must satisfy 0 <= beta1 < 1"),
        (lambda: threshold(0.9, 0.0), "eta must satisfy 0 < eta"),
        (lambda: threshold(0.9, -1.0), "eta must satisfy 0 < eta"),
        (lambda: threshold(math.nan, 1e-3), "beta1 must be finite"),
        (lambda: threshold(0.9, math.inf), "eta must be finite"),
        (lambda: threshold("0.9", 1e-3), "beta1 must be a real number"),
        (lambda: stability_threshold("lion", eta=1e-3), "optimizer must be one of"),
        (lambda: stability_threshold("gd", eta=1e-3, beta1=0.9), "unknown: beta1"),
        (lambda: stability_threshold("gd"), "eta is required"),
        (lambda: stability_threshold("heavy_ball", eta=0.1, dampening=1.0), "dampening must satisfy"),
        (lambda: stability_threshold("adamw", eta=0.1, weight_decay=10.0), "weight_decay must satisfy"),
        (lambda: threshold_at_step(0, 0.9, 1e-3), "t must be an integer >= 1"),
        (lambda: threshold_at_step(2.5, 0.9, 1e-3), "t must be an integer >= 1"),
        (lambda: threshold(0.9, 10**400), "eta must be finite"),
    ],
)
def test_bad_input_names_argument_and_range(call, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_user_matrix_must_depend_on_lambda():
    with pytest.raises(ValueError, match="does not depend on the curvature"):
        derive(sp.Matrix([[sp.Rational(1, 2)]]))
