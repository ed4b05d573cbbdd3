"""The registry's closed forms against the sympy derivation, and what computing thresholds imports.

* Every ``OptimizerSpec.constant`` (eta * lambda* of the t-th update, evaluated without sympy) equals
  the derivation of its update matrix, ``aeos_theory.stability.constant_expression``: symbolically, and
  numerically at random hyperparameters (zeros included) and steps 1, 2, 10, 1000 and settled.  An
  optimizer added without a correct closed form fails here.
* Every stored formula (``formulas``, ``step_formula``) and crossing equals what the derivation prints.
* eta = 0 gives the eta -> 0 limit of the constant, written here by hand; lambda* refuses it.
* ``threshold`` broadcasts numpy arrays, against the formula (2 + 2 beta1) / ((1 - beta1) eta) in numpy.
* ``import aeos_theory``, the thresholds, and the ``aeos`` commands that answer at once (``--help``,
  ``threshold``) import no sympy, torch, numba or matplotlib: checked on ``python -X importtime`` and on
  ``sys.modules`` in fresh processes (imports, not times).
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import zlib

import numpy as np
import pytest
import sympy as sp

from aeos_theory import OPTIMIZERS, SYMBOLS, STEP_SYMBOLS, derive, derive_boundary, stability_threshold, threshold
from aeos_theory import threshold_constant
from aeos_theory.stability import constant_expression

STEPS = (1, 2, 10, 1000, None)
HEAVY = ("sympy", "torch", "numba", "matplotlib")
ETA = SYMBOLS["eta"]


def _random_hyper(name: str, rng: np.random.Generator) -> dict[str, float]:
    """Hyperparameters of ``name`` inside their ranges, each 0 one time in five where 0 is allowed."""
    hyper = {"eta": float(np.exp(rng.uniform(np.log(1e-4), 0.0)))}
    highs = {"beta": 0.999, "beta1": 0.999, "beta2": 0.999, "dampening": 0.99, "momentum_decay": 1.0,
             "weight_decay": 0.99 / hyper["eta"], "lr_decay": 1.0, "lambd": 10.0, "decay_power": 1.0}
    for h in OPTIMIZERS[name].hypers:
        if h == "eps":
            hyper[h] = float(rng.uniform(1e-10, 1e-3))
        elif h != "eta":
            hyper[h] = 0.0 if rng.random() < 0.2 else float(rng.uniform(0.0, highs[h]))
    return hyper


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_closed_form_equals_the_derivation_symbolically(name):
    spec = OPTIMIZERS[name]
    symbols = {**{h: SYMBOLS[h] for h in spec.hypers}, **STEP_SYMBOLS}
    assert sp.simplify(sp.sympify(spec.constant(symbols)) - constant_expression(name)) == 0
    # eta is asked for exactly where it enters the constant: AdamW's decoupled decay (1 - eta wd)
    assert constant_expression(name).has(ETA) == (spec.decay == "decoupled")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_closed_form_equals_the_derivation_numerically(name):
    """At 40 random hyperparameter points and steps 1, 2, 10, 1000 and settled, to 1e-12 relative; the
    reference is the derived expression lambdified with sympy."""
    spec, expression = OPTIMIZERS[name], constant_expression(name)
    parameters = sorted(expression.free_symbols, key=lambda s: s.name)
    derived = sp.lambdify(parameters, expression, modules="math")
    names = {**{v: k for k, v in SYMBOLS.items()}, **{v: k for k, v in STEP_SYMBOLS.items()}}
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for _ in range(40):
        hyper = _random_hyper(name, rng)
        for step in STEPS:
            values = {**hyper, **spec.step_coefficients(step, hyper)}
            expected = derived(*(values[names[p]] for p in parameters))
            assert threshold_constant(name, step=step, **hyper) == pytest.approx(expected, rel=1e-12, abs=0)
            assert stability_threshold(name, step=step, **hyper) == pytest.approx(expected / hyper["eta"], rel=1e-12)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_stored_formulas_are_what_the_derivation_prints(name):
    """``aeos threshold`` prints these without sympy: the settled formula for every set of hyperparameters
    at 0 (a zero can change the step: heavy ball without momentum), the t-th update's, the crossing."""
    spec = OPTIMIZERS[name]
    general = derive_boundary(name, step=True)
    assert spec.step_formula == str(general.expression)
    assert spec.crossing == general.kind
    others = [h for h in spec.hypers if h != "eta"]
    for count in range(len(others) + 1):
        for zero in itertools.combinations(others, count):
            hyper = {h: 0.0 if h in zero else 0.5 for h in others}
            assert spec.formula(hyper) == str(derive(name, zero=zero)), zero


def test_derive_with_zeros_takes_the_branch_of_the_zero():
    eta, beta, d = SYMBOLS["eta"], SYMBOLS["beta"], SYMBOLS["dampening"]
    assert sp.simplify(derive("heavy_ball") - 2 * (1 + beta) / ((1 - d) * eta)) == 0
    assert derive("heavy_ball", zero=["beta"]) == 2 / eta  # torch skips the momentum branch: GD's step
    b1 = SYMBOLS["beta1"]  # NAdam with psi = 0: mu_t = beta1 / 2 at every step
    assert sp.simplify(derive("nadam", zero=["momentum_decay"]) - 2 * (1 + b1) / ((1 + b1 - b1**2) * eta)) == 0
    with pytest.raises(ValueError, match="zero must name hyperparameters of 'adam' other than eta"):
        derive("adam", zero=["eta"])
    with pytest.raises(ValueError, match="got 'beta'"):
        derive("adam", zero=["beta"])


@pytest.mark.parametrize("step", [1, 7, 1000, None])
def test_eta_zero_gives_the_limit_of_the_constant(step):
    """lr 0 (a param group that takes no step): the constant at eta -> 0, written here by hand; every
    other optimizer's constant does not depend on eta at all."""
    b1, wd = 0.9, 50.0
    bias = 1.0 if step is None else 1 - b1**step
    expected = (1 + b1) * 2 * bias / (1 - b1)
    value = threshold_constant("adamw", step=step, eta=0.0, beta1=b1, weight_decay=wd)
    assert value == pytest.approx(expected, rel=1e-14)
    limit = constant_expression("adamw").subs({ETA: 0, SYMBOLS["beta1"]: sp.Rational(9, 10),
                                               STEP_SYMBOLS["k"]: 1 / sp.Rational(str(bias))})
    assert float(limit) == pytest.approx(expected, rel=1e-14)
    for name in OPTIMIZERS:  # ASGD's lr schedule reads eta: asked for, as where decay is decoupled
        if OPTIMIZERS[name].decay != "decoupled" and not OPTIMIZERS[name].eta_in_coefficients:
            assert threshold_constant(name, step=step, eta=0.0) == threshold_constant(name, step=step)


def test_eta_zero_is_refused_where_it_divides():
    with pytest.raises(ValueError, match="eta must satisfy 0 < eta"):
        stability_threshold("adamw", eta=0.0)
    with pytest.raises(ValueError, match="eta must satisfy 0 < eta"):
        threshold(0.9, 0.0)
    with pytest.raises(ValueError, match="eta must satisfy 0 <= eta, got -1.0"):
        threshold_constant("adamw", eta=-1.0)
    with pytest.raises(ValueError, match="weight_decay must satisfy 0 <= weight_decay"):
        threshold_constant("adamw", eta=0.0, weight_decay=-1.0)
    with pytest.raises(ValueError, match="eta is required for optimizer 'adamw'"):
        threshold_constant("adamw")


def test_threshold_broadcasts_arrays_against_the_formula_in_numpy():
    beta1 = np.linspace(0.0, 0.999, 7)[:, None]
    eta = np.logspace(-5, 0, 4)
    values = threshold(beta1, eta)
    assert isinstance(values, np.ndarray) and values.shape == (7, 4)
    np.testing.assert_allclose(values, (2 + 2 * beta1) / ((1 - beta1) * eta), rtol=1e-14, atol=0)
    assert threshold(np.array([0.9]), 1e-3).tolist() == [threshold(0.9, 1e-3)]
    assert threshold(0.9, np.array([1e-3, 1e-2])).tolist() == [threshold(0.9, 1e-3), threshold(0.9, 1e-2)]
    assert type(threshold(0.9, 1e-3)) is float and type(threshold(np.float64(0.9), 1e-3)) is float
    assert threshold(np.int64(0), np.array([2, 4])).tolist() == [1.0, 0.5]


@pytest.mark.parametrize(
    "beta1, eta, words",
    [
        (np.array([0.9, 1.5, 2.0]), 1e-3, "beta1 must satisfy 0 <= beta1 < 1, got 1.5 (at index (1,))"),
        (np.array([[0.9, 0.5], [-0.1, 0.2]]), 1e-3,
         "beta1 must satisfy 0 <= beta1 < 1, got -0.1 (at index (1, 0))"),
        (0.9, np.array([1e-3, np.nan]), "eta must be finite with 0 < eta, got nan (at index (1,))"),
        (0.9, np.array([1e-3, 0.0]), "eta must satisfy 0 < eta, got 0.0 (at index (1,))"),
        (np.array([0.9, 0.5]), np.array([1e-3, 1e-320]), "eta must be large enough for the threshold to fit in a "
                                                         "float64; got eta = 1e-320 (at index (1,))"),
        (np.array([0.9, 0.5, 0.1]), np.array([1e-3, 1e-2]), "beta1 and eta must broadcast together; got shapes "
                                                            "beta1 (3,), eta (2,)"),
        (np.array([True]), 1e-3, "beta1 must hold real numbers"),
        (np.array(["0.9"]), 1e-3, "beta1 must hold real numbers"),
        (np.array([0.9]), None, "eta must be a real number"),
        ([0.9, 0.5], 1e-3, "beta1 must be a real number"),  # a list is not an array: say np.array(...)
    ],
)
def test_threshold_refuses_bad_elements_naming_them(beta1, eta, words):
    with pytest.raises(ValueError) as err:
        threshold(beta1, eta)
    assert words in str(err.value)


def test_thresholds_of_any_optimizer_broadcast_like_the_scalar_calls():
    beta = np.array([0.0, 0.5, 0.9])
    eta = np.array([[1e-3], [1e-1]])
    values = stability_threshold("heavy_ball", eta=eta, beta=beta, dampening=0.1, step=3)
    expected = [[stability_threshold("heavy_ball", eta=float(e), beta=float(b), dampening=0.1, step=3)
                 for b in beta] for e in eta[:, 0]]
    assert values.shape == (2, 3) and values.tolist() == expected
    constants = threshold_constant("nadam", beta1=np.array([0.0, 0.9]), momentum_decay=0.004, step=10)
    assert constants.tolist() == [threshold_constant("nadam", beta1=b, momentum_decay=0.004, step=10)
                                  for b in (0.0, 0.9)]
    with pytest.raises(ValueError, match=r"beta must satisfy 0 <= beta < 1, got 1.0 \(at index \(1,\)\)"):
        stability_threshold("nesterov", eta=0.1, beta=np.array([0.5, 1.0]))


def _imported_modules(args: list[str]) -> set[str]:
    """Top-level names of every module a fresh ``python -X importtime`` process imports running ``args``."""
    out = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return {line.rpartition("|")[2].strip().split(".")[0] for line in out.stderr.splitlines()
            if line.startswith("import time:")}


COMMANDS = (["--help"], ["threshold", "--help"], ["threshold", "--beta1", "0.9", "--eta", "1e-3"],
            ["simulate", "--help"], ["bisect", "--help"], ["figures", "--help"], ["train", "--help"])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_aeos_help_and_threshold_import_no_heavy_library(command):
    imported = _imported_modules(["-m", "paper_figures.console", *command])
    assert "aeos_theory" in imported  # the log is read: the command's own package is in it
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_thresholds_of_every_optimizer_import_no_heavy_library():
    """In one fresh process: import the package, compute every optimizer's threshold settled and at a step,
    and run ``aeos threshold`` for each optimizer; then read ``sys.modules``."""
    script = f"""
import contextlib, io, sys
import aeos_theory
from aeos_theory import OPTIMIZERS, identify, stability_threshold, threshold, threshold_constant, validate
from paper_figures.console import main
threshold(0.9, 1e-3)
for name in OPTIMIZERS:
    stability_threshold(name, eta=1e-2)
    threshold_constant(name, step=10, eta=0.0)
    for extra in ([], ["--step", "10"]):
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["threshold", "--optimizer", name, "--eta", "0.01", *extra]) == 0
identify("Adam", {{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}})
print(",".join(m for m in {HEAVY!r} if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""


def test_the_derivation_names_still_import_lazily():
    import aeos_theory

    assert aeos_theory.LAMBDA == sp.Symbol("lambda", positive=True)
    assert aeos_theory.derive is derive and "derive" in dir(aeos_theory)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        aeos_theory.nope  # noqa: B018
    assert math.isclose(threshold(0.9, 1e-3), 38_000, rel_tol=1e-12)


def test_rerunning_a_finished_train_imports_no_heavy_library(tmp_path, capsys):
    """A finished run folder is proven and reported (config checked, summary and row hash, the last row) with no
    torch: `aeos train` into it again answers at once."""
    from paper_figures.console import main

    flags = ["train", "--dataset", "digits", "--n", "60", "--model", "mlp", "--width", "4", "--depth", "1",
             "--optimizer", "adam", "--lr", "1e-3", "--steps", "2", "--measure-every", "1", "--no-progress",
             "--out", str(tmp_path / "run")]
    assert main(flags) == 0
    first = capsys.readouterr().out
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "paper_figures.console", *flags],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == first and out.stdout.startswith("completed at step 2; 3 rows")
    imported = {line.rpartition("|")[2].strip().split(".")[0] for line in out.stderr.splitlines()
                if line.startswith("import time:")}
    assert "deep" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))
    other = subprocess.run([sys.executable, "-m", "paper_figures.console", *flags[:-3], "--lr", "2e-3",
                            "--no-progress", "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "holds a run with a different config" in other.stderr
