"""Stable and central flows against closed forms and against the discrete runs they predict.

References: gradient flow on a quadratic in closed form (exp(-eta H t)); the one-direction
complementarity solution sigma^2 = 2 <grad S, -grad L> / |grad S|^2 with grad S by finite differences
of the dense Hessian's top eigenvalue; a plain-numpy Adam loop (torch's arithmetic written here) for the
discrete iterates on the sharpening model; ``deep.run`` for a network; finite differences of
Hessian-vector products for the third-derivative product.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import deep
import sims
from aeos_theory.flow_rules import edge_onset, moving_average, rms, tracking_error
from deep.flows.network import flow_of_run
from sims.flows import sharpening_third_derivative
from sims.sharpening import SharpeningModel


# ----------------------------------------------------------------------------- quadratics: closed forms
@pytest.mark.parametrize("central", [True, False])
def test_gd_below_the_edge_is_gradient_flow_in_closed_form(central):
    """eta S = 1.5 < 2: no oscillation, and the flow converges (first order in dt) to x(t) = exp(-eta H t) x0."""
    h, eta, x0 = np.array([0.5, 2.0, 5.0]), 0.3, np.ones(3)
    exact = [0.5 * np.sum(h * x0 ** 2 * np.exp(-2 * eta * h * t)) for t in range(0, 31, 5)]
    errors = []
    for dt in (0.04, 0.02, 0.01):
        flow = sims.central_flow("gd", h, x0, eta=eta, steps=30, record_every=5, central=central,
                                 flow_options={"dt_max": dt})
        assert flow.status == "completed" and set(flow.column("directions")) == {0.0}
        assert np.array_equal(flow.column("train_loss"), flow.column("center_loss"))
        errors.append(np.max(np.abs(flow.column("train_loss") / exact - 1)))
    assert errors[2] < 0.01
    assert 1.5 < errors[0] / errors[1] < 2.5 and 1.5 < errors[1] / errors[2] < 2.5  # first order in dt


def test_the_central_flow_is_the_stable_flow_until_the_edge():
    """GD on the sharpening model: before eta S reaches 2 the two flows are one."""
    model = SharpeningModel()
    central = sims.central_flow("gd", model, None, eta=0.01, steps=3000, record_every=500)
    stable = sims.central_flow("gd", model, None, eta=0.01, steps=3000, record_every=500, central=False)
    assert np.max(central.column("eta_S_P")) < 2 * 0.95
    np.testing.assert_array_equal(central.column("train_loss"), stable.column("train_loss"))


def test_gd_on_a_quadratic_beyond_the_edge_cannot_be_held():
    """Its Hessian does not move, so no oscillation restores stability: the flow reports divergence at
    once, and so does the discrete run."""
    flow = sims.central_flow("gd", np.array([3.0]), np.ones(1), eta=1.0, steps=20, record_every=5)
    assert flow.status == "diverged" and "edge cannot be held" in flow.reason and flow.step == 0
    assert sims.simulate("gd", np.array([3.0]), np.ones(1), 1.0, 2000).diverged


def test_a_stable_flow_stops_when_its_stiffness_rises_past_10_thresholds_not_when_it_starts_there():
    """GD's stable flow on the sharpening model (eta 0.05) sharpens without end: it stops at the step where
    eta S rises past 10 x 2, its last record below that.  RMSProp's first P = sqrt(1 - beta2) |g| on a
    coordinate with a small gradient gives eta S_P = 100 = 50 x 2 at t = 1, a transient of the start: the
    flow goes on (eta S_P is back to 1.42 at t = 2) and completes."""
    gd = sims.central_flow("gd", SharpeningModel(), None, eta=0.05, steps=12000, record_every=100, central=False)
    assert gd.status == "stopped" and "rose past 10 times the threshold" in gd.reason
    assert 1000 < gd.step < 3000 and 15 < gd.column("eta_S_P")[-1] < 20
    rms_flow = sims.central_flow("rmsprop", np.array([1.0, 10.0]), np.array([1.0, 1e-3]), eta=0.01, steps=40,
                                 record_every=1, central=False, beta2=0.99)
    eta_sp = rms_flow.column("eta_S_P")
    assert rms_flow.status == "completed" and rms_flow.step == 40
    # the first P from one gradient: eta h / P = 0.01 * 10 / (sqrt(0.01) * 10 * 1e-3 + eps), eps = 1e-8
    assert eta_sp[1] == pytest.approx(0.01 * 10 / (1e-3 + 1e-8), rel=1e-9) and eta_sp[2] < 2


def _grad_top_eigenvalue(model: SharpeningModel, theta: np.ndarray, h: float = 1e-6) -> np.ndarray:
    top = lambda th: np.linalg.eigvalsh(model.hessian(th))[-1]  # noqa: E731
    return np.array([(top(theta + h * e) - top(theta - h * e)) / (2 * h) for e in np.eye(len(theta))])


def test_one_direction_is_held_by_the_closed_form_oscillation():
    """At a point where eta S = 2 exactly, the central flow's oscillation along the top eigenvector is
    sigma^2 = 2 <grad S, -grad L> / |grad S|^2: the one that keeps dS/dt = 0 (Cohen et al. 2025)."""
    model = SharpeningModel()
    theta = model.theta0.copy()
    for _ in range(3000):  # progressive sharpening under GD, eta = 0.01
        theta = theta - 0.01 * model.gradient(theta)
    S = np.linalg.eigvalsh(model.hessian(theta))[-1]
    dS, g = _grad_top_eigenvalue(model, theta), model.gradient(theta)
    assert dS @ -g > 0  # gradient flow would sharpen: the oscillation must push back
    flow = sims.central_flow("gd", model, theta, eta=2.0 / S, steps=1, record_every=1)
    assert flow.column("directions")[0] == 1
    assert flow.column("oscillation")[0] ** 2 == pytest.approx(2 * (dS @ -g) / (dS @ dS), rel=1e-5)


def test_sharpening_third_derivative_is_the_hessian_s_derivative():
    model = SharpeningModel()
    rng = np.random.default_rng(0)
    theta, u, v = (rng.standard_normal(model.k + 1) for _ in range(3))
    h = 1e-6
    fd = np.array([(u @ model.hessian(theta + h * e) @ v - u @ model.hessian(theta - h * e) @ v) / (2 * h)
                   for e in np.eye(len(theta))])
    np.testing.assert_allclose(sharpening_third_derivative(model, theta, u, v), fd, rtol=1e-7, atol=1e-8)


def test_adam_on_a_dense_quadratic_holds_its_threshold():
    """The AEoS in its simplest form: nu decays until eta S_P meets 38, then the oscillation's share of nu
    holds it there; before that the flow follows the discrete run's rise."""
    p = sims.problems.dense_problem(seed=0, d=10)
    flow = sims.central_flow("adam", p.H, p.x0, eta=1e-2, steps=1400, record_every=100, beta2=0.99)
    run = sims.simulate("adam", p.H, p.x0, 1e-2, 1400, record_every=100, beta2=0.99)
    level = flow.column("eta_threshold")[-1]
    assert level == pytest.approx(38.0, rel=1e-9)
    late = flow.column("step") >= 1000
    np.testing.assert_allclose(flow.column("eta_S_P")[late], level, rtol=1e-3)
    rising = (run.step > 0) & (run.step < edge_onset(run.step, run.eta_sp / level))
    np.testing.assert_allclose(flow.column("eta_S_P")[rising], run.eta_sp[rising], rtol=0.05)


# ----------------------------------------------------------------------------- the sharpening model vs Adam
def _numpy_adam(model: SharpeningModel, eta: float, steps: int, every: int) -> dict:
    """torch.optim.Adam's update written in numpy (beta1 0.9, beta2 0.999, eps 1e-8): losses and the
    period-2 amplitude |theta_t - 2 theta_(t-1) + theta_(t-2)| / 4 on the grid."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    theta, m, v = model.theta0.copy(), 0.0, 0.0
    history, loss, total = [theta], [], []
    for t in range(1, steps + 1):
        g = model.gradient(theta)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        theta = theta - eta * (m / (1 - b1 ** t)) / (np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps)
        history = (history + [theta])[-3:]
        if t % every == 0:
            loss.append(model.loss(theta))
            total.append(np.linalg.norm(history[-1] - 2 * history[-2] + history[-3]) / 4)
    return {"step": np.arange(every, steps + 1, every), "loss": np.array(loss), "oscillation_total": np.array(total)}


@pytest.mark.slow
def test_adam_central_flow_tracks_the_sharpening_model_run():
    """Adam's raw S keeps rising at the AEoS; the central flow's time-averaged loss follows the discrete
    run (to 1%) and holds eta S_P at 38, its stable flow runs off far beyond the threshold, and the
    oscillation it needs is the run's."""
    model, eta, steps, every = SharpeningModel(), 0.01, 600, 50
    central = sims.central_flow("adam", model, None, eta=eta, steps=steps, record_every=every)
    stable = sims.central_flow("adam", model, None, eta=eta, steps=steps, record_every=every, central=False)
    run = sims.simulate_sharpening("adam", eta, steps, every)
    onset = edge_onset(run.step, run.eta_sp / central.column("eta_threshold"))
    assert onset is not None and onset <= 300
    error = tracking_error(run.step, run.loss, central.column("step"), central.column("train_loss"), onset)
    stable_error = tracking_error(run.step, run.loss, stable.column("step"), stable.column("train_loss"), onset)
    assert error < 0.01 and stable_error >= error
    assert np.nanmax(stable.column("edge_ratio")) > 2  # the stable flow leaves the edge
    at_edge = central.column("step") > onset  # the flow reaches the edge within a record of the run
    np.testing.assert_allclose(central.column("edge_ratio")[at_edge], 1.0, atol=0.05)
    reference = _numpy_adam(model, eta, steps, every)
    np.testing.assert_allclose(reference["loss"], run.loss[1:], rtol=1e-5)  # the reference is Adam (round-off aside)
    measured = rms(reference["oscillation_total"][reference["step"] > onset])
    assert rms(central.column("oscillation_total")[at_edge]) == pytest.approx(measured, rel=0.5)


# ----------------------------------------------------------------------------- networks
def test_network_curvature_gradient_is_the_derivative_of_hessian_products(one_torch_thread):
    data = deep.load_digits(60)
    model = deep.build_model("mlp", data.input_shape, 10, width=8, depth=1, seed=1).double()
    op = deep.curvature_operator(model, deep.mse, data)
    gen = torch.Generator().manual_seed(0)
    U, V = (torch.randn(3, op.n, generator=gen, dtype=torch.float64) for _ in range(2))
    D = op.curvature_gradients(U, V)
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def hvp_at(w, v):
        moved = deep.build_model("mlp", data.input_shape, 10, width=8, depth=1, seed=1).double()
        torch.nn.utils.vector_to_parameters(w, moved.parameters())
        return deep.curvature_operator(moved, deep.mse, data) @ v

    for j in range(3):
        fd = (hvp_at(w0 + 1e-5 * U[j], V[j]) - hvp_at(w0 - 1e-5 * U[j], V[j])) / 2e-5
        torch.testing.assert_close(D[j], fd, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(op.curvature_gradient(U[0], V[0]), D[0])


def test_moving_average_averages_what_it_has():
    """The centred 3-record average; the ends average the records they have."""
    assert moving_average([1.0, 2.0, 6.0]) == pytest.approx([1.5, 3.0, 4.0])


@pytest.mark.slow
def test_a_network_central_flow_tracks_its_training_run(tmp_path):
    """Full-batch GD on a small digits MLP (deep.run) and the flows of the same run: after the run reaches
    2/eta, the central flow's loss is within 10% of the run's 3-record average and twice as close as the
    stable flow's, its eta S is held at 2, and its oscillation has the run's size."""
    config = dict(dataset="digits", n=200, model="mlp", width=16, depth=2, activation="tanh", loss="mse",
                  optimizer="gd", hyper={"eta": 0.3}, steps=300, measure_every=20, seed=0, threads=1)
    rows = deep.read_metrics(deep.run(deep.TrainConfig(**config), tmp_path / "run", progress=False))
    central = flow_of_run(config)
    stable = flow_of_run(config, central=False)
    step = np.array([r["step"] for r in rows])
    loss = np.array([r["train_loss"] for r in rows])
    assert np.array_equal(central.column("step"), step)  # the flow records on the run's grid
    onset = edge_onset(step, [r["edge_ratio"] for r in rows])
    assert onset is not None and onset <= 100
    error = tracking_error(step, loss, central.column("step"), central.column("train_loss"), onset)
    stable_error = tracking_error(step, loss, stable.column("step"), stable.column("train_loss"), onset)
    assert error <= 0.10 and stable_error >= 2 * error
    at_edge = step >= onset
    np.testing.assert_allclose(central.column("edge_ratio")[at_edge], 1.0, atol=0.05)
    measured = rms(np.array([r["oscillation_total"] for r in rows])[at_edge])
    assert rms(central.column("oscillation_total")[at_edge]) == pytest.approx(measured, rel=0.5)
    assert central.records["train_accuracy"][-1] == pytest.approx(rows[-1]["train_accuracy"], abs=0.1)
