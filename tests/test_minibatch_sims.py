"""Minibatch runs (sims.minibatch) against independent references and against the theory's formulas.

* The batch sampler: the mean one-step growth of SGD over many runs against the average over every
  b-subset (itertools.combinations) in plain numpy.
* Full batch: the measured growth rate against the spectral radius of the update matrix written by hand
  here (numpy eigvals).
* One direction, b = 1: the almost-sure boundary against the root of (1/n) sum_i log|1 - eta h_i| = 0
  (the Lyapunov exponent of an i.i.d. product of scalars), solved here with scipy.
* The measured mean-square boundary against aeos_theory.minibatch.mean_square_eta (closed form in one
  direction, numerical for non-commuting Hessians) across four batch sizes, within 1 %: the runs never
  call the theory.  With these seeds and 512 runs the measured boundaries are within 0.45 %.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import brentq

from aeos_theory.minibatch import mean_square_eta, minibatch_edge
from sims.minibatch import empirical_eta, ensemble_growth
from sims.minibatch_experiments import minibatch_boundary, minibatch_problem

CURVATURES = np.array([0.2, 0.5, 1.0, 1.0, 1.5, 2.0, 3.0, 0.1, 0.8, 1.2, 2.5, 0.3, 0.7, 1.1, 4.0, 0.6])
HYPER = {"gd": {}, "heavy_ball": {"beta": 0.9}, "adam": {"beta1": 0.9}}
RUNS = {"runs": 512, "steps": 1000, "burn": 200}


def rank_one(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d)) * rng.uniform(0.3, 2.0, size=(n, 1))
    return np.einsum("ip,iq->ipq", a, a)


@pytest.mark.parametrize("b", [1, 2, 3])
def test_sampled_batches_average_like_every_subset(b):
    """Third step of 100000 one-direction SGD runs: mean (1 - eta h_B)^2 and mean log (1 - eta h_B)^2."""
    h, eta, runs = np.array([0.1, 0.9, 1.7, 0.4, 2.6, 1.2]), 0.6, 100_000
    factors = np.array([(1 - eta * h[list(s)].mean()) ** 2 for s in itertools.combinations(range(6), b)])
    mean_square = ensemble_growth("gd", h, b, eta, runs=runs, steps=3, burn=2, seed=b)
    typical = ensemble_growth("gd", h, b, eta, runs=runs, steps=3, burn=2, seed=b, criterion="almost_sure")
    spread = factors.std() / np.sqrt(runs) / factors.mean()
    assert mean_square.growth == pytest.approx(np.log(factors.mean()), abs=4 * spread)
    assert typical.growth == pytest.approx(np.log(factors).mean(), abs=4 * np.log(factors).std() / np.sqrt(runs))


@pytest.mark.parametrize("optimizer", ["gd", "heavy_ball", "adam"])
def test_full_batch_growth_is_the_squared_spectral_radius(optimizer):
    hessians = rank_one(5, 2, seed=1)
    mean = hessians.mean(axis=0)
    eta = 0.3
    beta, gain = {"gd": (0.0, 1.0), "heavy_ball": (0.9, 1.0), "adam": (0.9, 0.1)}[optimizer]
    eye = np.eye(2)
    step = np.block([[eye - eta * gain * mean, -eta * beta * eye], [gain * mean, beta * eye]])
    expected = 2 * np.log(np.abs(np.linalg.eigvals(step)).max())
    measured = ensemble_growth(optimizer, hessians, 5, eta, runs=4, steps=3000, burn=500, **HYPER[optimizer])
    assert measured.growth == pytest.approx(expected, abs=3e-3)


def test_almost_sure_boundary_at_batch_one_is_the_lyapunov_root():
    """b = 1 draws i.i.d. examples, so a typical run diverges iff (1/n) sum_i log|1 - eta h_i| > 0; its first
    root (grid, then brentq) is 1.7907 here, where the mean-square boundary is 0.96."""
    h = np.array([0.35, 0.7, 1.15, 1.9, 2.3, 3.1, 0.45, 1.4])

    def exponent(eta: float) -> float:
        return float(np.mean(np.log(np.abs(1 - eta * h))))

    grid = np.linspace(0.05, 4.0, 400)
    first = next(i for i in range(1, grid.size) if exponent(grid[i]) > 0)
    root = brentq(exponent, grid[first - 1], grid[first])
    measured = empirical_eta("gd", h, 1, criterion="almost_sure", scan=1.05, **RUNS)
    assert measured.eta == pytest.approx(root, rel=0.01)
    assert measured.eta > 1.5 * mean_square_eta("gd", h, 1)  # a typical run outlives the second moment


@pytest.mark.parametrize("optimizer", ["gd", "heavy_ball", "adam"])
@pytest.mark.parametrize("b", [1, 2, 4, 8])
def test_measured_boundary_matches_the_closed_form(optimizer, b):
    measured = empirical_eta(optimizer, CURVATURES, b, **RUNS, **HYPER[optimizer])
    assert measured.eta == pytest.approx(mean_square_eta(optimizer, CURVATURES, b, **HYPER[optimizer]), rel=0.01)


def test_measured_boundary_with_dampening():
    hyper = {"beta": 0.5, "dampening": 0.3}
    measured = empirical_eta("heavy_ball", CURVATURES, 2, **RUNS, **hyper)
    assert measured.eta == pytest.approx(mean_square_eta("heavy_ball", CURVATURES, 2, **hyper), rel=0.01)


@pytest.mark.parametrize("b", [1, 2, 4, 8])
def test_measured_boundary_matches_the_numerical_criterion_for_non_commuting_hessians(b):
    hessians = rank_one(12, 2, seed=2)
    measured = empirical_eta("adam", hessians, b, **RUNS, beta1=0.9)
    assert measured.eta == pytest.approx(mean_square_eta("adam", hessians, b, beta1=0.9), rel=0.01)


@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_batch_sharpness_gauge_and_signal_measured_at_the_edge(optimizer):
    for hessians, b in ((CURVATURES, 2), (rank_one(12, 2, seed=3), 3)):
        edge = minibatch_edge(optimizer, hessians, b, **HYPER[optimizer])
        measured = ensemble_growth(optimizer, hessians, b, edge.eta, runs=1024, steps=1500, burn=300,
                                   **HYPER[optimizer])
        assert measured.batch_sharpness == pytest.approx(edge.batch_sharpness, rel=0.01)
        assert measured.gauge == pytest.approx(edge.gauge, rel=0.01)
        assert measured.signal_fraction == pytest.approx(edge.signal_fraction, rel=0.01)


def test_experiment_rows_are_the_direct_calls():
    hessians = minibatch_problem("rank_one", 6, 2, spread=0.5, seed=1)
    assert np.array_equal(hessians, minibatch_problem("rank_one", 6, 2, spread=0.5, seed=1))
    assert np.allclose(np.linalg.eigvalsh(hessians)[:, 0], 0, atol=1e-12)  # rank one, PSD
    assert minibatch_problem("lognormal", 5, 3).shape == (5, 3)
    out = minibatch_boundary("heavy_ball", {"beta": 0.5}, hessians, [2], runs=64, steps=200, burn=50)
    assert out["theory_eta"] == [mean_square_eta("heavy_ball", hessians, 2, beta=0.5)]
    direct = empirical_eta("heavy_ball", hessians, 2, runs=64, steps=200, burn=50, beta=0.5)
    assert out["measured_eta"] == [direct.eta]
    assert out["measured_eta_bs"] == [direct.eta * direct.batch_sharpness]


def test_same_seed_same_numbers():
    first = ensemble_growth("heavy_ball", CURVATURES, 3, 0.5, runs=64, steps=200, burn=50, seed=7, beta=0.5)
    again = ensemble_growth("heavy_ball", CURVATURES, 3, 0.5, runs=64, steps=200, burn=50, seed=7, beta=0.5)
    other = ensemble_growth("heavy_ball", CURVATURES, 3, 0.5, runs=64, steps=200, burn=50, seed=8, beta=0.5)
    assert first == again
    assert first.growth != other.growth


@pytest.mark.parametrize("call,message", [
    (lambda: ensemble_growth("gd", CURVATURES, 0, 0.1), "b must be"),
    (lambda: ensemble_growth("gd", CURVATURES, 17, 0.1), "b must be"),
    (lambda: ensemble_growth("gd", CURVATURES, 1, 0.0), "eta"),
    (lambda: ensemble_growth("gd", CURVATURES, 1, 0.1, runs=1), "runs"),
    (lambda: ensemble_growth("gd", CURVATURES, 1, 0.1, steps=10, burn=10), "burn"),
    (lambda: ensemble_growth("gd", CURVATURES, 1, 0.1, criterion="typical"), "criterion"),
    (lambda: ensemble_growth("nesterov", CURVATURES, 1, 0.1, beta=0.5), "optimizer"),
    (lambda: ensemble_growth("adam", CURVATURES, 1, 0.1, beta1=1.5), "beta1"),
    (lambda: ensemble_growth("gd", CURVATURES, 1, 0.1, weight_decay=0.1), "weight_decay"),
    (lambda: ensemble_growth("gd", -CURVATURES, 1, 0.1), "positive semi-definite"),
    (lambda: ensemble_growth("gd", [[[1.0, 2.0], [0.0, 1.0]]], 1, 0.1), "symmetric"),
    (lambda: empirical_eta("gd", CURVATURES, 1, rtol=0.5), "rtol"),
    (lambda: empirical_eta("gd", CURVATURES, 1, scan=1.0), "scan"),
])
def test_bad_input_is_refused_with_its_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()
