"""sims.simulate / sims.simulate_batch: batch runs against the numpy reference, divergence against the
closed form |x_t| = |1 - eta h|^t, and ValueError on bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from aeos_theory import validate
from sims import simulate, simulate_batch
from sims.api import _run_batch
from sims.problems import dense_problem
from sims.reference import reference_batch, reference_run
from sims.updates import CODES, pack_hyper


@pytest.mark.parametrize("optimizer,hyper", [
    ("adam", {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.01}),
])
def test_batch_matches_numpy_reference(optimizer, hyper):
    """Per-run eta, B = 37 runs, d = 5, 300 steps, uneven curvatures: final iterates and losses equal the
    vectorised numpy reference (every optimizer is compared bit for bit in the test below)."""
    rng = np.random.default_rng(3)
    B, d = 37, 5
    h = rng.uniform(0.5, 20.0, (B, d))
    x0 = rng.standard_normal((B, d))
    eta = rng.uniform(0.001, 0.05, B)
    res = simulate_batch(optimizer, h, x0, eta, 300, **hyper)
    ref = reference_batch(optimizer, h, x0, eta, 300, **hyper)
    assert not res.diverged.any()
    np.testing.assert_allclose(res.x, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(res.loss, 0.5 * np.sum(h * ref * ref, axis=1), rtol=1e-9)


BIT_CASES = [
    ("gd", {"weight_decay": 0.05}),
    ("heavy_ball", {"beta": 0.9, "dampening": 0.2, "weight_decay": 0.05}),
    ("nesterov", {"beta": 0.8}),
    ("adam", {"beta1": 0.9, "beta2": 0.99}),
    ("adam", {"beta1": 0.2, "beta2": 0.99, "weight_decay": 0.05}),  # torch.lerp's other formula (w > 0.5)
    ("adamw", {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.3}),
    ("rmsprop", {"beta": 0.5, "beta2": 0.99, "weight_decay": 0.05}),
    ("nadam", {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.05}),
    ("adagrad", {"lr_decay": 0.01, "weight_decay": 0.05}),
    ("adamax", {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.05}),
    ("adamax", {"beta1": 0.2, "beta2": 0.99}),  # torch.lerp's other formula
    ("radam", {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.05}),  # warm phase t <= 5, then rectified
    ("radam", {"beta1": 0.9, "beta2": 0.5}),  # rho_inf = 3 <= 5: warm phase throughout
    ("asgd", {"lambd": 0.5, "decay_power": 0.75, "weight_decay": 0.05}),
    ("adadelta", {"beta2": 0.9, "weight_decay": 0.05}),  # its two accumulators; lr of order 1 (below)
]


#: The cases run in every batch layout (momentum, an adaptive P with bias correction, NAdam's schedule).
EVERY_LAYOUT = [BIT_CASES[1], BIT_CASES[3], BIT_CASES[7]]
#: The others run in the per-run-eta layout: torch.lerp's two formulas, RAdam's phases, ASGD's decay, Adadelta.  Every
#: optimizer's step is also compared with the reference in the single-run kernels (test_sims_kernels.py).
BATCH_ONLY = [BIT_CASES[4], BIT_CASES[10], BIT_CASES[11], BIT_CASES[13], BIT_CASES[14]]


@pytest.mark.parametrize("optimizer,hyper", EVERY_LAYOUT + BATCH_ONLY,
                         ids=[f"{o}-{BIT_CASES.index((o, h))}" for o, h in EVERY_LAYOUT + BATCH_ONLY])
def test_every_batch_layout_equals_numpy_reference_bit_for_bit(optimizer, hyper):
    """The kernels do torch's operations in torch's order, as the numpy reference does: the final iterates
    are equal to the last bit in each layout the batch takes, many small runs with one eta (run-major),
    per-run etas (one run per item, parallel), one run (serial), and one long run split in pieces."""
    rng = np.random.default_rng(4)
    layouts = ((40, 6, 0.02), (40, 6, np.linspace(0.005, 0.02, 40)), (1, 9, 0.02), (1, 700, 0.02))
    # a layout is a driver around the same inlined step: every layout for a few optimizers, and every
    # optimizer in the per-run-eta layout (each case compiles its own kernels, seconds apiece)
    for B, d, eta in layouts if (optimizer, hyper) in EVERY_LAYOUT else layouts[1:2]:
        eta = eta * (50.0 if optimizer == "adadelta" else 1.0)  # Adadelta's lr is of order 1 (torch's default)
        h = np.tile(np.logspace(0, 1, d), (B, 1))
        x0 = rng.standard_normal((B, d))
        res = simulate_batch(optimizer, h, x0, eta, 300, **hyper)
        ref = reference_batch(optimizer, h, x0, eta, 300, **hyper)
        assert not res.diverged.any()
        assert res.x.tobytes() == ref.tobytes(), (B, d, float(np.max(np.abs(res.x - ref))))


def test_split_runs_equal_unsplit_runs():
    """Splitting one long diagonal run into coordinate pieces (used when B < threads) is exact,
    including a run that diverges: its final iterate is the one of its divergence step."""
    rng = np.random.default_rng(4)
    d = 1001
    h = rng.uniform(0.1, 10.0, (2, d))
    h[1, 500] = 1e5  # with frozen P = 1, run 1 is far above 38 / eta = 3800 and diverges
    x0 = rng.standard_normal((2, d))
    values = validate("adam", {"eta": 1e-2})
    hp = pack_hyper(values)
    p = np.ones((2, d))
    whole_x, whole_div = _run_batch(CODES["adam"], hp, h, x0, np.full(2, 1e-2), 400, p, 1e100, 1, 1)
    split_x, split_div = _run_batch(CODES["adam"], hp, h, x0, np.full(2, 1e-2), 400, p, 1e100, 3, 2)
    assert whole_div[0] == -1 and whole_div[1] > 0
    np.testing.assert_array_equal(split_div, whole_div)
    np.testing.assert_array_equal(split_x[0], whole_x[0])
    res = simulate_batch("adam", h[1:], x0[1:], 1e-2, 400, preconditioner=1.0)
    assert res.diverged_at[0] == whole_div[1]
    np.testing.assert_array_equal(res.x[0], whole_x[1])
    # the reference, run to the divergence step, has the same iterate
    ref = reference_run("adam", h[1], x0[1], 1e-2, int(whole_div[1]), preconditioner=np.ones(d))[0][-1]
    np.testing.assert_allclose(res.x[0], ref, rtol=1e-12)


def test_divergence_step_matches_closed_form():
    """GD on h = (1, 3) with eta = 1: x_2 is multiplied by -2 per step, so |x_2| = 2^t first exceeds the
    blowup 1e100 at t = 333 (and 1e10 at t = 34).  Reported, not raised, and without warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = simulate("gd", np.array([1.0, 3.0]), np.ones(2), 1.0, 1000, record_every=10)
    assert res.diverged and res.diverged_at == math.floor(100 * math.log2(10)) + 1 == 333
    assert res.step[-1] == 330 and np.all(np.isfinite(res.loss))
    res = simulate("gd", np.array([1.0, 3.0]), np.ones(2), 1.0, 1000, blowup=1e10)
    assert res.diverged_at == 34
    batch = simulate_batch("gd", np.array([[1.0, 3.0], [1.0, 0.5], [1.0, 2.5]]), np.ones((3, 2)),
                           np.array([1.0, 1.0, 1.0]), 1000)
    # factors |1 - h|: 2 -> step 333; 0.5 -> never; 1.5 -> first t with 1.5^t > 1e100
    assert batch.diverged_at.tolist() == [333, -1, math.floor(100 / math.log10(1.5)) + 1]
    assert batch.diverged.tolist() == [True, False, True]


def test_non_adaptive_sp_equals_sharpness_and_dense_sharpness():
    rng = np.random.default_rng(5)
    A = rng.standard_normal((6, 6))
    H = A @ A.T
    res = simulate("heavy_ball", H, rng.standard_normal(6), 1e-3, 50, record_every=5, beta=0.5)
    lam = np.linalg.eigvalsh(H)[-1]
    np.testing.assert_allclose(res.sharpness, lam, rtol=1e-12)
    np.testing.assert_allclose(res.preconditioned_sharpness, lam, rtol=1e-10)
    assert res.step.tolist() == list(range(0, 51, 5))
    x = rng.standard_normal(6)
    np.testing.assert_allclose(simulate("gd", H, x, 1e-3, 0).loss[0], 0.5 * x @ H @ x, rtol=1e-12)


def test_the_seed_fixes_the_problem_and_the_run():
    """dense_problem(seed) draws H's rotation and x0 from the seed: the same seed gives bit-identical
    recorded series, another seed a different problem with the same spectrum (numpy eigvalsh)."""
    a, b, c = dense_problem(seed=3, d=20), dense_problem(seed=3, d=20), dense_problem(seed=4, d=20)
    np.testing.assert_array_equal(a.H, b.H)
    np.testing.assert_array_equal(a.x0, b.x0)
    assert not np.allclose(a.H, c.H) and not np.allclose(a.x0, c.x0)
    for problem in (a, c):
        np.testing.assert_allclose(np.linalg.eigvalsh(problem.H), np.logspace(0, 2, 20), rtol=1e-10)
    runs = [simulate("adam", p.H, p.x0, 1e-2, 2000, 100) for p in (a, b, c)]
    np.testing.assert_array_equal(runs[0].preconditioned_sharpness, runs[1].preconditioned_sharpness)
    np.testing.assert_array_equal(runs[0].loss, runs[1].loss)
    assert not np.array_equal(runs[0].loss, runs[2].loss)


H2 = np.array([[2.0, 0.5], [0.5, 1.0]])


@pytest.mark.parametrize("call,word", [
    (lambda: simulate("adam", H2, np.ones(2), -1e-3, 10), "eta"),
    (lambda: simulate("adam", np.array([[2.0, 0.5], [0.4, 1.0]]), np.ones(2), 1e-3, 10), "symmetric"),
    (lambda: simulate("adam", H2, np.ones(3), 1e-3, 10), "x0"),
    (lambda: simulate("adafactor", H2, np.ones(2), 1e-3, 10), "optimizer 'adafactor' has no simulation kernel"),
    (lambda: simulate("adam", H2, np.ones(2), 1e-3, -1), "steps"),
    (lambda: simulate("adam", H2, np.ones(2), 1e-3, 10, record_every=0), "record_every"),
    (lambda: simulate("adam", H2, np.ones(2), 1e-3, 10, beta=0.9), "beta"),
    (lambda: simulate("adam", H2, np.ones(2), 1e-3, 10, beta1=1.5), "beta1"),
    (lambda: simulate("adam", np.ones((2, 3)), np.ones(2), 1e-3, 10), "square"),
    (lambda: simulate("adam", np.ones((2, 2, 2)), np.ones(2), 1e-3, 10), "H"),
    (lambda: simulate("adam", np.array([1.0, np.nan]), np.ones(2), 1e-3, 10), "H"),
    (lambda: simulate("adam", H2, np.ones(2), 1e-3, 10, preconditioner=[1.0, -1.0]), "preconditioner"),
    (lambda: simulate("gd", H2, np.ones(2), 1.0, 10, weight_decay=2.0), "weight_decay"),
    (lambda: simulate_batch("adam", np.ones((3, 2)), np.ones((3, 2)), np.ones(2) * 1e-3, 10), "eta"),
    (lambda: simulate_batch("adam", np.ones((3, 2)), np.ones((3, 2)), -np.ones(3), 10), "eta"),
    (lambda: simulate_batch("adam", np.ones(3), np.ones(3), 1e-3, 10), "h"),
    (lambda: simulate_batch("adam", np.ones((3, 2)), np.ones((2, 3)), 1e-3, 10), "x0"),
    (lambda: simulate_batch("sgd", np.ones((3, 2)), np.ones((3, 2)), 1e-3, 10), "optimizer"),
    (lambda: simulate_batch("adam", np.ones((3, 2)), np.ones((3, 2)), 1e-3, 10, dtype="float16"), "dtype"),
    (lambda: simulate_batch("adam", np.ones((3, 2)), np.ones((3, 2)), 1e-3, 10, dtype="double32"), "dtype"),
])
def test_bad_input_raises_value_error(call, word):
    with pytest.raises(ValueError, match=word):
        call()


@pytest.mark.parametrize("optimizer,why", [
    ("adafactor", "factored"), ("muon", "orthogonalises"), ("muon_plain", "orthogonalises"), ("shampoo", "Kronecker"),
    ("soap", "eigenbasis")])
def test_matrix_optimizers_are_refused_with_the_reason(optimizer, why):
    """The registry optimizers whose step acts on whole matrices: one ValueError naming the optimizer and why."""
    with pytest.raises(ValueError, match=f"optimizer '{optimizer}' has no simulation kernel: .*{why}.*elementwise"):
        simulate_batch(optimizer, np.ones((2, 3)), np.ones((2, 3)), 1e-3, 10)


@pytest.mark.parametrize("optimizer,hyper,frozen", [
    ("adam", {"beta1": 0.9, "weight_decay": 0.01}, False),
    ("nadam", {}, True),
])
def test_many_small_runs_layout_equals_row_layout(optimizer, hyper, frozen):
    """B >= 32 small runs with one eta take the run-major (transposed) kernel; it equals the row-major
    kernel bit for bit, including runs that diverge (reported step and iterate at that step)."""
    rng = np.random.default_rng(6)
    B, d = 70, 3
    h = rng.uniform(0.5, 20.0, (B, d))
    h[::7, 1] = 1e6 if frozen else h[::7, 1]  # frozen P = 1: these runs are far above threshold
    x0 = rng.standard_normal((B, d))
    p = np.ones((B, d)) if frozen else None
    res = simulate_batch(optimizer, h, x0, 1e-2, 300, preconditioner=p, **hyper)
    values = validate(optimizer, {"eta": 1e-2, **hyper})
    row_x, row_div = _run_batch(CODES[optimizer], pack_hyper(values), h, x0, np.full(B, 1e-2), 300, p, 1e100, 1, 2)
    np.testing.assert_array_equal(res.diverged_at, row_div)
    np.testing.assert_array_equal(res.x, row_x)
    assert res.diverged.sum() == (10 if frozen else 0)
    ok = ~res.diverged
    ref = reference_batch(optimizer, h[ok], x0[ok], 1e-2, 300, **hyper) if not frozen else None
    if ref is not None:
        np.testing.assert_allclose(res.x[ok], ref, rtol=1e-10, atol=1e-14)


def test_float32_divergence_matches_closed_form():
    """GD with eta = 1 on L = 1/2 h x^2 from x = 1: x_t = (1 - h)^t exactly (powers of two).  In float32 a
    run diverges at the first t with |x_t| above blowup, or above the largest float32 (3.4e38 < 2^128)
    whatever blowup: without that bound an overflow to inf would pass the test |x| <= blowup = inf."""
    h = np.array([[3.0], [0.5]])  # x_t = (-2)^t and 2^-t (until float32 underflow)
    res = simulate_batch("gd", h, np.ones((2, 1)), 1.0, 300, blowup=1e30, dtype="float32")
    assert res.x.dtype == np.float32
    assert res.diverged_at.tolist() == [100, -1]  # 2^99 < 1e30 < 2^100
    assert res.x[0, 0] == 2.0 ** 100
    res32 = simulate_batch("gd", h, np.ones((2, 1)), 1.0, 400, dtype="float32")  # blowup 1e100
    res64 = simulate_batch("gd", h, np.ones((2, 1)), 1.0, 400)
    assert res32.diverged_at.tolist() == [128, -1] and np.isinf(res32.x[0, 0])  # 2^128 overflows float32
    assert res64.diverged_at.tolist() == [333, -1]  # 2^332 < 1e100 < 2^333


def test_weight_decay_checked_against_every_eta():
    h = np.ones((2, 3))
    res = simulate_batch("adamw", h, h, np.array([1e-3, 2e-3]), 5, weight_decay=5.0)  # eta * wd < 1
    assert res.x.shape == (2, 3)
    with pytest.raises(ValueError, match="weight_decay"):
        simulate_batch("adamw", h, h, np.array([1e-3, 0.5]), 5, weight_decay=5.0)
