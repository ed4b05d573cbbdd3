"""Frozen-preconditioner bisection (sims.empirical_threshold) against the closed forms of aeos_theory.

The bisection runs the numba update maps; aeos_theory derives lambda* symbolically (Schur-Cohn).
Independent computations, agreement required to 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import pytest

from aeos_theory import OPTIMIZERS, stability_threshold
from sims import empirical_threshold

BETAS = (0.0, 0.5, 0.9, 0.99)


@pytest.mark.parametrize("optimizer", [name for name, spec in OPTIMIZERS.items() if spec.simulated])
def test_bisection_matches_theory_for_every_beta(optimizer):
    name = OPTIMIZERS[optimizer].momentum
    for eta in (1e-3, 0.3):
        for beta in BETAS if name else (None,):
            hyper = {name: beta} if name else {}
            emp = empirical_threshold(optimizer, eta, **hyper)
            theo = stability_threshold(optimizer, eta=eta, **hyper)
            assert emp == pytest.approx(theo, rel=1e-4), (optimizer, eta, hyper)


@pytest.mark.parametrize("optimizer,hyper", [
    ("gd", {"weight_decay": 3.0}),
    ("heavy_ball", {"beta": 0.9, "dampening": 0.5, "weight_decay": 1.0}),
    ("nesterov", {"beta": 0.5, "weight_decay": 2.0}),
    ("adam", {"beta1": 0.9, "weight_decay": 5.0}),
    ("adamw", {"beta1": 0.9, "weight_decay": 5.0}),
    ("adamw", {"beta1": 0.99, "weight_decay": 20.0}),
    ("rmsprop", {"beta": 0.9, "weight_decay": 1.0}),
    ("nadam", {"beta1": 0.99, "weight_decay": 1.0}),
    ("adagrad", {"weight_decay": 3.0}),
    ("adagrad", {"lr_decay": 0.1}),  # settled: the lr decays to 0, no threshold (inf)
    ("adamax", {"beta1": 0.9, "weight_decay": 5.0}),
    ("adadelta", {"weight_decay": 3.0}),
    ("radam", {"beta1": 0.99, "beta2": 0.99, "weight_decay": 1.0}),
    ("asgd", {"lambd": 5.0, "decay_power": 0.0, "weight_decay": 1.0}),  # lambd a coupled decay: H + (wd + lambd) I
    ("asgd", {"lambd": 5.0, "weight_decay": 1.0}),  # settled: eta_t -> 0, no threshold (inf)
])
def test_bisection_with_dampening_and_weight_decay(optimizer, hyper):
    emp = empirical_threshold(optimizer, 0.01, **hyper)
    assert emp == pytest.approx(stability_threshold(optimizer, eta=0.01, **hyper), rel=1e-4)


def test_adam_reference_values():
    """The paper's numbers: 38/eta at beta1 = 0.9, 398/eta at 0.99, NAdam 95/(7 eta)."""
    assert empirical_threshold("adam", 1e-3, beta1=0.9) == pytest.approx(38e3, rel=1e-6)
    assert empirical_threshold("adam", 1e-3, beta1=0.99) == pytest.approx(398e3, rel=1e-6)
    assert empirical_threshold("nadam", 1.0, beta1=0.9) == pytest.approx(95 / 7, rel=1e-6)


def test_vectorised_sweep_equals_scalar_calls():
    etas = np.logspace(-3, 0, 9)  # >= 8 rows: the parallel kernel (scalar calls use the serial one)
    betas = np.array([0.0, 0.5, 0.9, 0.99, 0.3, 0.7, 0.95, 0.1, 0.8])
    many = empirical_threshold("heavy_ball", etas, beta=betas)
    assert many.shape == (9,)
    for e, b, value in zip(etas, betas, many):
        assert value == empirical_threshold("heavy_ball", float(e), beta=float(b))
        assert value == pytest.approx(stability_threshold("heavy_ball", eta=float(e), beta=float(b)), rel=1e-4)


@pytest.mark.parametrize("call,word", [
    (lambda: empirical_threshold("adam", -1.0), "eta"),
    (lambda: empirical_threshold("adam", 1e-2, beta1=1.0), "beta1"),
    (lambda: empirical_threshold("sgd", 1e-2), "optimizer"),
    (lambda: empirical_threshold("gd", 1e-2, beta=0.9), "beta"),
    (lambda: empirical_threshold("gd", 1e-2, rtol=0.0), "rtol"),
    (lambda: empirical_threshold("gd", np.ones(3), weight_decay=np.ones(2)), "broadcast"),
    (lambda: empirical_threshold("muon", 1e-2), "'muon' has no simulation kernel"),
])
def test_bad_input_raises_value_error(call, word):
    with pytest.raises(ValueError, match=word):
        call()
