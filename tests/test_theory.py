"""aeos_theory against independent references.

* Closed forms typed from the paper's threshold table (settled thresholds) and for the t-th update
  (Adam's and AdamW's bias correction written out).
* The spectral radius of the t-th update map of every optimizer, written here in numpy straight from
  torch.optim's source (``_single_tensor_sgd``, ``_single_tensor_adam``, ``_single_tensor_nadam``,
  ``_single_tensor_rmsprop``), with P frozen, coupled weight decay added to the gradient and the raw
  curvature h bisected: the threshold must be the edge of stability at random hyperparameters and
  t in {1, 10, 100, 1000, 20000}.
* Those numpy maps are themselves checked against one real ``torch.optim`` step from a prepared state.
"""

from __future__ import annotations

import math
import re
import zlib

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from aeos_theory import LAMBDA, OPTIMIZERS, SYMBOLS, derive, derive_boundary, identify, stability_threshold, threshold
from support import ZOO_MAPS, nadam_mu, spectral_radius, step_map

eta, beta, beta1, d, wd = (SYMBOLS[n] for n in ("eta", "beta", "beta1", "dampening", "weight_decay"))

# lambda is an eigenvalue of P^-1 (H + wd I) for coupled decay, so coupled decay drops out; AdamW's stays.
CLOSED_FORMS = {
    "gd": 2 / eta,
    "heavy_ball": (2 + 2 * beta) / ((1 - d) * eta),
    "nesterov": (2 + 2 * beta) / ((1 + 2 * beta) * eta),
    "adam": (2 + 2 * beta1) / ((1 - beta1) * eta),
    "adamw": (1 + beta1) * (2 - eta * wd) / ((1 - beta1) * eta),
    "rmsprop": (2 + 2 * beta) / eta,
    "nadam": (2 + 2 * beta1) / ((1 - beta1) * (1 + 2 * beta1) * eta),
    # beyond the paper's seven (tests/test_zoo_theory.py checks them against torch's maps); Adagrad's and
    # ASGD's lr decays to 0, so their settled update is stable at every curvature
    "adagrad": sp.oo, "asgd": sp.oo, "adadelta": 2 / eta, "shampoo": 2 / eta,
    "adamax": (2 + 2 * beta1) / ((1 - beta1) * eta), "radam": (2 + 2 * beta1) / ((1 - beta1) * eta),
    "adafactor": (2 - eta * wd) / eta,
    "muon": (1 + beta) * (2 - eta * wd) / ((1 - beta) * (1 + 2 * beta) * eta),
    "muon_plain": (1 + beta) * (2 - eta * wd) / ((1 - beta) * eta),
    "soap": (1 + beta1) * (2 - eta * wd) / ((1 - eta * wd) * (1 - beta1) * eta),
}
#: The paper's seven, whose maps the tests below write from torch's source (the rest: test_zoo_theory.py).
PAPER = sorted(name for name in OPTIMIZERS if name not in ZOO_MAPS)
STEPS = (1, 10, 100, 1000, 20000)


def test_every_optimizer_has_a_closed_form_here():
    assert set(CLOSED_FORMS) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_derivation_equals_closed_form(name):
    expected = CLOSED_FORMS[name]
    assert derive(name) == expected if expected == sp.oo else sp.simplify(derive(name) - expected) == 0
    assert derive_boundary(name).kind == "z = -1"


def test_derivation_at_step_t_equals_the_bias_corrected_closed_forms():
    t = 7
    assert sp.simplify(derive("adam", step=t) - CLOSED_FORMS["adam"] * (1 - beta1**t)) == 0
    assert sp.simplify(derive("adamw", step=t) - CLOSED_FORMS["adamw"] * (1 - beta1**t)) == 0
    assert sp.simplify(derive("heavy_ball", step=1) - 2 / eta) == 0  # torch's buffer starts at the gradient
    assert sp.simplify(derive("nesterov", step=1) - 2 / ((1 + beta) * eta)) == 0
    assert derive("adam", step=True).has(sp.Symbol("k_t", positive=True))


def test_paper_constants_and_the_nadam_schedule():
    assert threshold(0.9, 1e-3) == pytest.approx(38_000, rel=1e-12)
    assert threshold(0.99, 1.0) == pytest.approx(398, rel=1e-12)
    assert threshold(0.0, 0.5) == pytest.approx(4, rel=1e-12)
    assert stability_threshold("nadam", eta=1.0, beta1=0.9) == pytest.approx(95 / 7, rel=1e-12)
    assert stability_threshold("gd", eta=0.05) == pytest.approx(40, rel=1e-12)
    assert stability_threshold("heavy_ball", eta=0.1, beta=0.9) == pytest.approx(38, rel=1e-12)
    assert stability_threshold("rmsprop", eta=0.01) == pytest.approx(200, rel=1e-12)
    # NAdam with torch's momentum_decay 0.004: 1.94, 3.53, 3.93, 5.96, 12.2 (x 1/eta) along the run
    nadam = [stability_threshold("nadam", eta=1.0, beta1=0.9, step=t) for t in (1, 100, 1000, 5000, 20000)]
    assert nadam == pytest.approx([1.942, 3.529, 3.926, 5.956, 12.22], abs=2e-3)
    # SGD with momentum 0 skips the momentum branch: dampening does nothing
    assert stability_threshold("heavy_ball", eta=0.1, beta=0.0, dampening=0.5) == pytest.approx(20, rel=1e-12)


# ---------------------------------------------------------------- the t-th update, from torch's source
def random_hyper(name: str, rng: np.random.Generator) -> dict:
    hyper = {"eta": float(10 ** rng.uniform(-4, 0))}
    hyper["weight_decay"] = float(rng.uniform(0, 0.9) / hyper["eta"]) if rng.random() < 0.5 else 0.0
    if name in ("heavy_ball", "nesterov", "rmsprop"):
        hyper["beta"] = float(rng.choice([0.0, rng.uniform(0, 0.999)]))
    if name == "heavy_ball":
        hyper["dampening"] = float(rng.uniform(0, 0.99))
    if name in ("adam", "adamw", "nadam"):
        hyper["beta1"] = float(rng.uniform(0, 0.999))
    if name == "nadam":
        hyper["momentum_decay"] = float(rng.choice([0.0, 0.004, rng.uniform(0, 0.05)]))
    return hyper


@pytest.mark.parametrize("name", PAPER)
@pytest.mark.parametrize("t", STEPS)
def test_step_threshold_is_the_edge_of_torchs_t_th_update(name, t):
    """At 25 random hyperparameter draws (and P in [1e-3, 10]), the spectral radius of torch's t-th
    update crosses 1 at lambda* = stability_threshold(step=t), to 1e-7 relative (a coefficient wrong by
    6e-6, such as NAdam's mu_t in place of mu_(t+1), fails): lambda = (h + wd)/P, coupled decay."""
    rng = np.random.default_rng(zlib.crc32(f"{name} {t}".encode()))  # the same draws in every process
    for _ in range(25):
        hyper = random_hyper(name, rng)
        p = float(10 ** rng.uniform(-3, 1)) if name in ("adam", "adamw", "nadam", "rmsprop") else 1.0  # SGD: P = I
        lam = stability_threshold(name, step=t, **hyper)
        coupled = 0.0 if name == "adamw" else hyper.get("weight_decay", 0.0)
        for factor, stable in ((1 - 1e-7, True), (1 + 1e-7, False)):
            h = factor * lam * p - coupled  # the raw curvature at (factor * lambda*)
            assert (spectral_radius(step_map(name, h, p, hyper, t)) < 1) == stable, (hyper, p, factor)


def test_coupled_weight_decay_belongs_to_the_curvature():
    """Adam with P = 0.01, wd = 100, eta = 1e-3: bisection on the raw curvature h finds h* = 280, i.e.
    h*/P = 28000 (not 38000 - 100): the threshold 38000 bounds (h + wd)/P."""
    hyper = {"eta": 1e-3, "beta1": 0.9, "weight_decay": 100.0}
    lo, hi = 0.0, 1e4
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if spectral_radius(step_map("adam", mid, 0.01, hyper, None)) < 1 else (lo, mid)
    assert lo / 0.01 == pytest.approx(28000, rel=1e-9)
    assert stability_threshold("adam", **hyper) == pytest.approx((lo + 100.0) / 0.01, rel=1e-9)


# ---------------------------------------------------------------- the numpy maps against real torch
TORCH_CASES = {
    "gd-wd": ("gd", {"eta": 0.1, "weight_decay": 0.5}),
    "heavy_ball-damped": ("heavy_ball", {"eta": 0.05, "beta": 0.8, "dampening": 0.3, "weight_decay": 0.2}),
    "heavy_ball-momentum-0": ("heavy_ball", {"eta": 0.05, "beta": 0.0, "dampening": 0.3}),
    "nesterov": ("nesterov", {"eta": 0.05, "beta": 0.7, "weight_decay": 0.1}),
    "adam-wd": ("adam", {"eta": 1e-2, "beta1": 0.8, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.5}),
    "adamw": ("adamw", {"eta": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 2.0}),
    "rmsprop-momentum": ("rmsprop", {"eta": 1e-2, "beta": 0.6, "beta2": 0.9, "eps": 1e-8, "weight_decay": 0.3}),
    "nadam": ("nadam", {"eta": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1,
                        "momentum_decay": 0.004}),
}


def _torch_step(name: str, hyper: dict, t: int, x0: float, buf0: float, h: float):
    """One real torch.optim step t from the state (x0, buffer buf0); returns (x1, buf1, P used)."""
    import torch

    from aeos_theory import OPTIMIZERS as registry  # the registry only names the class and its arguments

    spec = registry[name]
    x = torch.tensor([x0], dtype=torch.float64, requires_grad=True)
    opt = getattr(torch.optim, spec.torch_class)([x], **spec.torch_arguments(spec.validate(hyper)))
    g = h * x0  # the loss gradient; coupled decay is added by torch itself
    grad_seen = g + (0.0 if name == "adamw" else hyper.get("weight_decay", 0.0) * x0)
    state, p = {}, 1.0
    if spec.adaptive:
        b2 = hyper["beta2"]
        square = 4.0 * grad_seen**2 + 1.0  # any v_t >= (1 - b2) g^2 works: set v_{t-1} to reach it
        v_prev = (square - (1 - b2) * grad_seen**2) / b2
        state["square_avg" if name == "rmsprop" else "exp_avg_sq"] = torch.tensor([v_prev], dtype=torch.float64)
        denom = square if name == "rmsprop" else square / (1 - b2**t)
        p = math.sqrt(denom) + hyper["eps"]
        state["step"] = torch.tensor(float(t - 1), dtype=torch.float64)
    if name == "rmsprop" and hyper.get("beta"):
        state["momentum_buffer"] = torch.tensor([buf0], dtype=torch.float64)
    if name in ("adam", "adamw", "nadam"):
        state["exp_avg"] = torch.tensor([buf0], dtype=torch.float64)
    if name == "nadam":
        product = math.prod(nadam_mu(hyper["beta1"], hyper["momentum_decay"], s) for s in range(1, t))
        state["mu_product"] = torch.tensor(product, dtype=torch.float64)
    if name in ("heavy_ball", "nesterov") and t > 1 and hyper.get("beta"):
        state["momentum_buffer"] = torch.tensor([buf0], dtype=torch.float64)
    if state:
        opt.state[x] = state
    x.grad = torch.tensor([g], dtype=torch.float64)
    opt.step()
    new = opt.state[x]
    buf1 = new.get("exp_avg", new.get("momentum_buffer"))
    return float(x.detach()[0]), (float(buf1[0]) if buf1 is not None else 0.0), p


@pytest.mark.parametrize("case", list(TORCH_CASES))
@pytest.mark.parametrize("t", STEPS)
def test_the_numpy_maps_are_torchs_own_step(case, t):
    name, hyper = TORCH_CASES[case]
    hyper = OPTIMIZERS[name].validate(hyper)
    x0, buf0, h = 0.7, -0.3, 3.0
    x1, buf1, p = _torch_step(name, hyper, t, x0, buf0, h)
    expected = step_map(name, h, p, hyper, t) @ np.array([x0, buf0 if t > 1 or name not in ("heavy_ball", "nesterov")
                                                          else 0.0])
    assert x1 == pytest.approx(expected[0], rel=1e-10, abs=1e-14)
    if name not in ("gd",) and hyper.get("beta", 1.0) != 0:
        assert buf1 == pytest.approx(expected[1], rel=1e-10, abs=1e-14)


# ---------------------------------------------------------------- settled thresholds, any hyperparameters
coefficient = st.floats(0.0, 0.999)
step_size = st.floats(1e-5, 10.0)
fraction = st.floats(0.0, 0.99)


@pytest.mark.parametrize("name", PAPER)
@settings(max_examples=100, deadline=None)
@given(eta_=step_size, b=coefficient, damp=fraction, wd_fraction=fraction)
def test_settled_threshold_is_the_stability_edge(name, eta_, b, damp, wd_fraction):
    hyper = {"eta": eta_, "weight_decay": wd_fraction / eta_}
    if name in ("heavy_ball", "nesterov", "rmsprop"):
        hyper["beta"] = b
    if name == "heavy_ball":
        hyper["dampening"] = damp
    if name in ("adam", "adamw", "nadam"):
        hyper["beta1"] = b
    lam_star = stability_threshold(name, **OPTIMIZERS[name].validate(hyper))
    full = OPTIMIZERS[name].validate(hyper)
    coupled = 0.0 if name == "adamw" else full["weight_decay"]
    assert spectral_radius(step_map(name, 0.999 * lam_star - coupled, 1.0, full, None)) < 1
    assert spectral_radius(step_map(name, 1.001 * lam_star - coupled, 1.0, full, None)) > 1


# ---------------------------------------------------------------- live param groups -> package optimizer
@pytest.mark.parametrize("torch_class, group, expected", [
    ("SGD", {"lr": 0.1, "momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False}, "gd"),
    ("SGD", {"lr": 0.1, "momentum": 0, "dampening": 0.5, "weight_decay": 0, "nesterov": False}, "heavy_ball"),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": False}, "heavy_ball"),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": True}, "nesterov"),
    ("Adam", {"lr": 1e-3, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0, "decoupled_weight_decay": False},
     "adam"),
    ("Adam", {"lr": 1e-3, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1, "decoupled_weight_decay": True},
     "adamw"),
    ("AdamW", {"lr": 1e-3, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1}, "adamw"),
    ("NAdam", {"lr": 1e-3, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0, "momentum_decay": 0.01,
               "decoupled_weight_decay": False}, "nadam"),
    ("RMSprop", {"lr": 1e-3, "alpha": 0.9, "eps": 1e-8, "weight_decay": 0, "momentum": 0.5}, "rmsprop"),
])
def test_identify_names_the_optimizer_a_param_group_runs(torch_class, group, expected):
    name, hyper = identify(torch_class, group)
    assert name == expected and hyper["eta"] == group["lr"]


@pytest.mark.parametrize("torch_class, group, words", [
    ("Rprop", {"lr": 1e-3}, "^optimizer Rprop has no edge of stability to measure: its step is -lr_i sign"),
    ("SparseAdam", {"lr": 1e-3}, "SparseAdam has no edge .*sparse gradient"),
    ("NAdam", {"lr": 1e-3, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1, "momentum_decay": 0.004,
               "decoupled_weight_decay": True}, "setting the package describes"),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": False, "maximize": True},
     "maximize=True"),
])
def test_identify_refuses_what_the_registry_does_not_describe(torch_class, group, words):
    with pytest.raises(ValueError, match=words):
        identify(torch_class, group)


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
    shift = lambda f: np.array([[1, 0, -eta_value * f * lam], [1, 0, 0], [0, 1, 0]])  # noqa: E731
    assert spectral_radius(shift(0.999)) < 1 < spectral_radius(shift(1.001))


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
        (lambda: threshold(0.9, 10**400), "eta must be finite with 0 < eta, got 1e+400 (an int)"),  # not 401 digits
        (lambda: threshold("0.9", 1e-3), "beta1 must be a real number"),
        (lambda: threshold(None, 1e-3), "beta1 must be a real number"),
        (lambda: stability_threshold("lion", eta=1e-3), "optimizer must be one of"),
        (lambda: stability_threshold("gd", eta=1e-3, beta1=0.9), "unknown: beta1"),
        (lambda: stability_threshold("gd"), "eta is required"),
        (lambda: stability_threshold("heavy_ball", eta=0.1, dampening=1.0), "dampening must satisfy"),
        (lambda: stability_threshold("adamw", eta=0.1, weight_decay=10.0), "weight_decay must satisfy"),
        (lambda: stability_threshold("nadam", eta=0.1, momentum_decay=-1.0), "momentum_decay must satisfy"),
        (lambda: stability_threshold("adam", eta=1e-3, step=0), "step must be an integer with 1 <= step <= 1e+300"),
        (lambda: stability_threshold("adam", eta=1e-3, step=2.5), "step must be an integer with 1 <= step"),
        (lambda: stability_threshold("adam", eta=1e-3, step=10**301), "got 1e+301 (an int)"),
    ],
)
def test_bad_input_names_argument_and_range(call, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        call()


def test_user_matrix_must_depend_on_lambda():
    with pytest.raises(ValueError, match="does not depend on the curvature"):
        derive(sp.Matrix([[sp.Rational(1, 2)]]))


# ---------------------------------------------------------------- unusual user matrices
def test_float_entries_are_made_exact():
    """x <- (0.5 - lambda) x leaves through z = -1 at lambda = 3/2; x <- (1 - 0.1 eta lambda) x at 20/eta."""
    e = sp.Symbol("eta", positive=True)
    assert derive(sp.Matrix([[sp.Float(0.5) - LAMBDA]])) == sp.Rational(3, 2)
    assert sp.simplify(derive(sp.Matrix([[1 - sp.Float(0.1) * e * LAMBDA]])) - 20 / e) == 0


@pytest.mark.parametrize("entry", [1 / (1 + SYMBOLS["eta"] * LAMBDA), sp.sqrt(LAMBDA)])
def test_entries_that_are_not_polynomials_in_lambda_are_refused(entry):
    with pytest.raises(ValueError, match="entries must be polynomials in lambda; entry \\[0, 0\\]"):
        derive(sp.Matrix([[entry]]))


def test_a_root_that_does_not_move_with_lambda_is_reported():
    """diag(1/2 - lambda/3, 1): the mode z = 1 is never strictly stable, whatever lambda (the first mode alone
    goes through z = -1 at lambda = 9/2, and a fixed mode inside the disk, z = 1/2, does not change that)."""
    half, third = sp.Rational(1, 2), sp.Rational(1, 3)
    with pytest.raises(ValueError, match="factor z - 1, independent of lambda, with the root z = 1 of modulus"):
        derive(sp.Matrix([[half - third * LAMBDA, 0], [0, 1]]))
    assert derive(sp.Matrix([[half - third * LAMBDA]])) == sp.Rational(9, 2)
    assert derive(sp.Matrix([[half - third * LAMBDA, 0], [0, half]])) == sp.Rational(9, 2)
    b = sp.Symbol("b", nonnegative=True)
    with pytest.raises(ValueError, match="the root z = .* of modulus >= 1 at b = "):
        derive(sp.Matrix([[half - third * LAMBDA, 0], [0, b]]), ranges={b: (1.5, 2.0)})


def test_a_recurrence_unstable_at_small_lambda_is_not_called_stable():
    """x <- (0.3 lambda - 1.7) x: |z| > 1 as lambda -> 0, stable only for 7/3 < lambda < 9."""
    with pytest.raises(ValueError, match="not stable even as lambda -> 0"):
        derive(sp.Matrix([[sp.Float(0.3) * LAMBDA - sp.Float(1.7)]]))


# ---------------------------------------------------------------- NAdam at any step
def test_nadam_at_a_huge_step_is_prompt_and_settled():
    """Step 10^20: mu_t = beta1 and Pi_t = 0 in float64, so the threshold is the settled one,
    (2 + 2 beta1)/((1 - beta1)(1 + 2 beta1) eta); answered at once, with the momentum products kept small."""
    import time

    from aeos_theory import optimizers

    stability_threshold("nadam", eta=1e-3, step=10)  # the sympy derivation, once
    start = time.perf_counter()
    for step in (10**6, 10**8, 99999999999999999999, 10**300):
        assert stability_threshold("nadam", eta=1e-3, step=step) == pytest.approx(3.8 / (0.1 * 2.8 * 1e-3), rel=1e-12)
    assert time.perf_counter() - start < 0.5  # step 10^8 used to take 43 s
    assert len(optimizers._PRODUCTS[(0.9, 0.004)]) < 1000  # Pi_t < 2^-60 after ~60 steps: nothing more is kept


@pytest.mark.parametrize("b1, psi, t", [(1 - 1e-9, 1.0, 10**6), (0.9999, 0.5, 150_000), (1 - 1e-7, 0.5, 300_000)])
def test_nadam_momentum_product_beyond_the_kept_prefix(b1, psi, t):
    """Past the steps the package multiplies out (beta1 near 1, where Pi_t is still above 2^-60 there), its
    closed form of Pi_t = mu_1 ... mu_t equals the product multiplied in order here."""
    from aeos_theory import optimizers

    product = 1.0
    for s in range(1, t + 1):
        product *= nadam_mu(b1, psi, s)
    assert optimizers._mu_product(b1, psi, t) == pytest.approx(product, rel=1e-12)


def test_irrational_entries_give_the_closed_form_or_a_value_error():
    """x <- (1 - sqrt(2) lambda) x beside a fixed mode 1/4: lambda* = 2/sqrt(2) = sqrt(2) through z = -1, or, where
    sympy cannot factor over sqrt(2), a ValueError saying so (never sympy's own exception)."""
    assert sp.simplify(derive(sp.Matrix([[1 - sp.sqrt(2) * LAMBDA]])) - sp.sqrt(2)) == 0
    try:
        value = derive(sp.Matrix([[1 - sp.sqrt(2) * LAMBDA, 1], [0, sp.Rational(1, 4)]]))
    except ValueError as err:
        assert "cannot factor the characteristic polynomial" in str(err)
    else:
        assert sp.simplify(value - sp.sqrt(2)) == 0
