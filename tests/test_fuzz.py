"""Property-based fuzzing of the command line and the public API (hypothesis).

The command line: random flags and values for every subcommand; whatever happens, the exit status is one
of the documented codes (0, 1, 2, 3) and stderr holds at most one line, never a traceback.
The API: random arguments to the main entry points; each returns a valid result or raises ValueError
naming the problem, never another exception.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paper_figures.console import main
from support import run_cli

VALUES = ["-1", "0", "1", "2", "0.5", "0.999", "1e-320", "1e400", "nan", "inf", "-inf", "abc", "", "1e308",
          "adam", "gd", "nadam", "digits", "mlp", "thresholds", "--"]
FLAGS = {
    "threshold": ["--optimizer", "--eta", "--beta", "--beta1", "--beta2", "--eps", "--dampening", "--weight-decay",
                  "--momentum-decay", "--step", "--latex"],
    "simulate": ["--optimizer", "--eta", "--beta", "--beta1", "--weight-decay", "--problem", "--d", "--record-every",
                 "--seed"],
    "bisect": ["--optimizer", "--eta", "--beta", "--beta1", "--dampening", "--rtol"],
    "train": ["--dataset", "--model", "--loss", "--optimizer", "--lr", "--beta1", "--weight-decay", "--measure-every",
              "--seed", "--batch-size", "--chunk-size", "--width", "--depth", "--activation", "--schedule",
              "--warmup-steps", "--final-lr-ratio", "--tol", "--max-hvps", "--device", "--dtype", "--threads",
              "--target-loss"],
    "figures": ["--jobs", "--only", "--quick", "--full", "--cifar-dir"],
}
#: Flags every invocation carries so that a valid combination stays small (seconds, not minutes).
BOUNDED = {"simulate": ["--steps", "50"], "bisect": [], "threshold": [],
           "train": ["--steps", "2", "--n", "20", "--no-progress"], "figures": ["--only", "nope", "--no-progress"]}


@st.composite
def command_lines(draw):
    sub = draw(st.sampled_from(sorted(FLAGS)))
    pairs = draw(st.lists(st.tuples(st.sampled_from(FLAGS[sub]), st.sampled_from(VALUES)), max_size=5))
    argv = [sub] + [item for flag, value in pairs for item in (flag, value)]
    return argv + BOUNDED[sub]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=command_lines())
def test_every_failure_is_one_line_with_a_documented_exit_code(argv, tmp_path):
    if argv[0] in ("train", "figures"):
        argv = argv + ["--out", str(tmp_path / "out")]
    code, _, text = run_cli(main, argv)
    assert code in (0, 1, 2, 3), (argv, code, text)
    assert "Traceback" not in text, (argv, text)
    assert len([line for line in text.splitlines() if line.strip()]) <= 1, (argv, text)


anything = st.one_of(st.none(), st.booleans(), st.integers(-10**400, 10**400),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
                     st.lists(st.floats(-1, 1), max_size=2))


@settings(max_examples=200, deadline=None)
@given(optimizer=st.sampled_from(["adam", "gd", "nadam", "heavy_ball", "adamw", "lion", 3]),
       hyper=st.dictionaries(st.sampled_from(["eta", "beta", "beta1", "beta2", "eps", "dampening", "weight_decay",
                                              "momentum_decay", "nope"]), anything, max_size=4),
       step=st.one_of(st.none(), st.integers(-3, 30000), st.floats(0, 5), st.text(max_size=2)))
def test_thresholds_return_a_finite_number_or_raise_value_error(optimizer, hyper, step):
    from aeos_theory import stability_threshold, threshold_constant

    for function in (stability_threshold, threshold_constant):
        try:
            value = function(optimizer, step=step, **hyper)
        except ValueError:
            continue
        assert isinstance(value, float) and math.isfinite(value) and value > 0


@settings(max_examples=80, deadline=None)
@given(optimizer=st.sampled_from(["adam", "gd", "rmsprop", "nope"]),
       h=st.one_of(st.lists(st.one_of(st.floats(-10, 1e3), st.just(math.nan)), min_size=0, max_size=4), anything),
       eta=st.one_of(anything, st.lists(st.floats(1e-3, 1), min_size=1, max_size=2)),
       steps=st.one_of(st.integers(-2, 50), anything))
def test_simulate_returns_a_result_or_raises_value_error(optimizer, h, eta, steps):
    import sims

    try:
        x0 = np.ones(np.shape(h)) if isinstance(h, list) else h
        result = sims.simulate(optimizer, h, x0, eta, steps)
    except ValueError:
        return
    assert result.step.ndim == 1 and (result.diverged or np.all(np.isfinite(result.loss)))


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(["mlp", "cnn", "resnet", "transformer", "vit"]),
       input_shape=st.one_of(st.tuples(st.integers(-1, 8)), st.tuples(st.integers(-1, 4), st.integers(-1, 8),
                                                                      st.integers(-1, 8)), anything),
       num_classes=st.one_of(st.integers(-2, 12), anything), width=st.one_of(st.none(), st.integers(-1, 8)))
def test_build_model_returns_a_module_or_raises_value_error(name, input_shape, num_classes, width):
    from deep import build_model

    try:
        model = build_model(name, input_shape, num_classes, width=width, depth=1)
    except ValueError:
        return
    assert sum(p.numel() for p in model.parameters()) > 0


@settings(max_examples=120, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(["steps", "measure_every", "seed", "n", "batch_size", "chunk_size",
                                               "width", "tol", "threads", "warmup_steps", "final_lr_ratio",
                                               "target_loss", "schedule", "dtype", "device", "optimizer"]),
                              anything, max_size=3))
def test_train_config_validates_or_raises_value_error(fields):
    from deep import TrainConfig

    try:
        TrainConfig(**fields).validate()
    except ValueError:
        pass


@pytest.mark.parametrize("call, words", [
    (lambda: __import__("sims").simulate("gd", np.ones(2), np.ones(2), np.array([0.1, 0.2]), 10), "one real number"),
    (lambda: __import__("deep").build_model("mlp", "64", 10), "input_shape must be a tuple"),
    (lambda: __import__("deep").build_model("mlp", (64,), 0), "num_classes must be an integer >= 1"),
    (lambda: __import__("aeos_theory").threshold(None, 1e-3), "beta1 must be a real number"),
    (lambda: __import__("aeos_theory").threshold(0.9, 1e-320), "eta must be large enough"),
    (lambda: __import__("aeos_theory").threshold(0.9, 10**400), "eta must be finite"),
    (lambda: __import__("aeos_theory").stability_threshold("adam", eta=1e-3, eps=0.0), "eps must satisfy 0 < eps"),
    (lambda: __import__("aeos_theory").derive(__import__("sympy").Matrix([[1, 2, 3]])), "must be square"),
    (lambda: __import__("aeos_theory").derive(__import__("sympy").Rational(1, 2)), "sympy Matrix"),
])
def test_api_holes_are_value_errors(call, words):
    with pytest.raises(ValueError, match=words):
        call()
