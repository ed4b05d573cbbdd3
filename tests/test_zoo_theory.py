"""The thresholds of the optimizers beyond the paper's seven against torch's own one-step maps.

* ``support.zoo_step_map``: the t-th update of each optimizer on L = 1/2 h x^2 with P frozen, written in numpy
  from the sources (``_single_tensor_adagrad``, ``_adamax``, ``_adadelta``, ``_radam``, ``_asgd``,
  ``_adafactor``, ``_muon`` of torch.optim 2.13; ``Shampoo.step`` and ``SOAP.step`` of pytorch_optimizer).
  The registry's threshold at step t must be where its spectral radius crosses 1 (0.999 and 1.001 times
  lambda*, at random hyperparameters and P), and bisection of the map must find it to 1e-9.
* Those maps are checked against one real optimizer step from a prepared state (x, buffer, accumulators),
  with the P that step used computed here from the state by the textbook formula (for Adafactor the step
  factor, for Muon the ratio of its momentum matrix to the orthogonalised update, both folded into P).
* RAdam's switch step, the refusals' one-line messages.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from aeos_theory import OPTIMIZERS, identify, stability_threshold, threshold_constant
from aeos_theory.zoo import radam_rectified_from
from support import ZOO_MAPS, bisect_threshold, radam_rectification, spectral_radius, step_map

STEPS = (1, 2, 7, 100, 5000)
DECOUPLED = ("adafactor", "muon", "muon_plain", "soap")


def _hyper(name: str, rng: np.random.Generator) -> dict:
    """Random hyperparameters of ``name`` inside torch's ranges (written here, not read from the registry)."""
    hyper = {"eta": float(10 ** rng.uniform(-4, 0))}
    hyper["weight_decay"] = float(rng.uniform(0, 0.9) / hyper["eta"]) if rng.random() < 0.5 else 0.0
    if name == "adagrad":
        hyper["lr_decay"] = float(rng.choice([0.0, rng.uniform(0, 0.5)]))
    if name in ("adamax", "radam", "soap"):
        hyper["beta1"] = float(rng.uniform(0, 0.999))
        hyper["beta2"] = float(rng.choice([0.5, 0.9, 0.999, rng.uniform(0.6, 0.9999)]))
    if name == "adadelta":
        hyper["beta2"] = float(rng.uniform(0, 0.999))
    if name == "asgd":
        hyper["lambd"] = float(rng.choice([0.0, 1e-4, rng.uniform(0, 10)]))
        hyper["decay_power"] = float(rng.uniform(0, 1))
    if name in ("muon", "muon_plain"):
        hyper["beta"] = float(rng.choice([0.0, 0.95, rng.uniform(0, 0.999)]))
    return hyper


def _coupled(name: str, hyper: dict) -> float:
    """The part of the curvature a coupled decay adds: wd (not for decoupled decay), plus ASGD's lambd."""
    return (0.0 if name in DECOUPLED else hyper.get("weight_decay", 0.0)) + hyper.get("lambd", 0.0)


@pytest.mark.parametrize("name", ZOO_MAPS)
@pytest.mark.parametrize("t", STEPS)
def test_step_threshold_is_the_edge_of_torchs_update(name, t):
    """25 random draws each: the spectral radius of the t-th map crosses 1 at lambda* (lambda = (h + W)/P)."""
    rng = np.random.default_rng(zlib.crc32(f"zoo {name} {t}".encode()))
    for _ in range(25):
        hyper = _hyper(name, rng)
        p = float(10 ** rng.uniform(-3, 1)) if name not in ("asgd",) else 1.0
        if name == "radam" and radam_rectification(t, hyper["beta2"]) is None:
            p = 1.0  # the warm phase divides by nothing: P = I
        lam = stability_threshold(name, step=t, **hyper)
        for factor, stable in ((0.999, True), (1.001, False)):
            h = factor * lam * p - _coupled(name, hyper)
            assert (spectral_radius(step_map(name, h, p, hyper, t)) < 1) == stable, (hyper, p, factor)


@pytest.mark.parametrize("name", ZOO_MAPS)
def test_bisection_of_torchs_map_finds_the_threshold(name):
    rng = np.random.default_rng(zlib.crc32(f"bisect {name}".encode()))
    for t in (1, 30):
        hyper = _hyper(name, rng)
        assert stability_threshold(name, step=t, **hyper) == pytest.approx(bisect_threshold(name, hyper, t), rel=1e-9)


def test_settled_thresholds_and_the_decayed_lr():
    """Settled: Adam's 38/eta for Adamax and RAdam (beta2 > 2/3), Muon's (1 + mu)(2 - eta wd)/((1 - mu)(1 + 2 mu))
    = 26.9 at torch's defaults; an lr decaying to 0 (Adagrad's lr_decay, ASGD's lambd) has no settled
    threshold: inf, while at step t it is 2 (1 + (t - 1) lr_decay)."""
    assert threshold_constant("adamax", beta1=0.9) == pytest.approx(38, rel=1e-14)
    assert threshold_constant("radam", beta1=0.9) == pytest.approx(38, rel=1e-14)
    assert threshold_constant("muon", eta=0.02, beta=0.95, weight_decay=0.1) == pytest.approx(
        1.95 * (2 - 0.002) / (0.05 * 2.9), rel=1e-14)
    assert threshold_constant("muon_plain", eta=0.0, beta=0.95) == pytest.approx(78, rel=1e-14)
    assert stability_threshold("adagrad", eta=0.1, lr_decay=0.01) == math.inf
    assert stability_threshold("asgd", eta=0.1) == math.inf  # torch's default lambd = 1e-4
    assert threshold_constant("adagrad", lr_decay=0.01, step=101) == pytest.approx(4.0, rel=1e-14)
    assert threshold_constant("asgd", eta=0.1, lambd=0.0, step=101) == 2.0
    with pytest.raises(ValueError, match="eta is required for optimizer 'asgd'"):
        threshold_constant("asgd", step=3)


def test_radam_switches_phase_where_rho_t_first_exceeds_5():
    """beta2 = 0.999: rho_t <= 5 for t <= 5 (P = I, r_t = 1), rectified from t = 6 (written from torch's formula)."""
    assert radam_rectified_from(0.999) == 6
    assert radam_rectification(5, 0.999) is None and radam_rectification(6, 0.999) is not None
    assert radam_rectified_from(0.6) is None  # rho_inf = 4: the warm phase for ever
    hyper = {"eta": 1.0, "beta1": 0.9, "beta2": 0.999}
    for t in (5, 6, 50):
        rect = radam_rectification(t, 0.999) or 1.0
        assert threshold_constant("radam", step=t, **hyper) == pytest.approx(3.8 * (1 - 0.9**t) / (0.1 * rect),
                                                                             rel=1e-12)


@pytest.mark.parametrize("cls, words", [
    ("Rprop", "optimizer Rprop has no edge of stability to measure: its step is -lr_i sign(g_i)"),
    ("SparseAdam", "optimizer SparseAdam has no edge of stability to measure: it updates only the rows"),
    ("Lion", "optimizer Lion has no edge of stability to measure: its step is the sign"),
    ("LBFGS", "optimizer LBFGS has no edge of stability to measure: its step comes from a line search"),
])
def test_refusals_are_one_line_naming_the_optimizer_and_the_reason(cls, words):
    with pytest.raises(ValueError) as err:
        identify(cls, {"lr": 1e-3})
    assert str(err.value).startswith(words) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the numpy maps against real steps
def _param(x0: float, shape=(1,)) -> torch.Tensor:
    return torch.full(shape, x0, dtype=torch.float64, requires_grad=True)


def _real_step(name: str, hyper: dict, t: int, x0: float, buf0: float, h: float) -> tuple[float, float, float]:
    """One real step t of ``name`` from a prepared state; returns (x1, buffer after, the P that step used)."""
    spec = OPTIMIZERS[name]
    args = spec.torch_arguments(spec.validate(hyper))
    g = h * x0
    seen = g + (0.0 if name in DECOUPLED else hyper.get("weight_decay", 0.0) * x0)
    shape = (1, 1) if name.startswith("muon") else (1,)
    x = _param(x0, shape)
    if spec.torch_module == "pytorch_optimizer":
        pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
        opt = getattr(pytorch_optimizer, spec.torch_class)([x], **args)
    else:
        opt = getattr(torch.optim, spec.torch_class)([x], **args)
    tensor = lambda v: torch.full(shape, float(v), dtype=torch.float64)  # noqa: E731
    step = torch.tensor(float(t - 1), dtype=torch.float64)
    state, p, buf1 = {}, 1.0, 0.0
    if name == "adagrad":
        state = {"sum": tensor(0.3), "step": step}
        p = math.sqrt(0.3 + seen**2) + args["eps"]
    elif name == "adamax":
        u = 2.0 * abs(seen) + 1.0
        state = {"exp_avg": tensor(buf0), "exp_inf": tensor(u), "step": step}
        p = max(hyper["beta2"] * u, abs(seen) + args["eps"])
    elif name == "adadelta":
        state = {"square_avg": tensor(0.4), "acc_delta": tensor(0.2), "step": step}
        p = math.sqrt(hyper["beta2"] * 0.4 + (1 - hyper["beta2"]) * seen**2 + args["eps"]) / math.sqrt(0.2 + args["eps"])
    elif name == "radam":
        b2 = hyper["beta2"]
        v = 4.0 * seen**2 + 1.0
        state = {"exp_avg": tensor(buf0), "exp_avg_sq": tensor((v - (1 - b2) * seen**2) / b2), "step": step}
        p = (math.sqrt(v) + args["eps"]) / math.sqrt(1 - b2**t)
    elif name == "asgd":
        lr, lambd, alpha = hyper["eta"], hyper["lambd"], hyper["decay_power"]
        eta_t = lr if t == 1 else lr / (1 + lambd * lr * (t - 1)) ** alpha  # what step t - 1 left in the state
        state = {"step": step, "eta": torch.tensor(eta_t, dtype=torch.float64),
                 "mu": torch.tensor(1.0, dtype=torch.float64), "ax": tensor(0.0)}
    elif name == "adafactor":
        v0, beta2_t = 0.5, 1 - t**-0.8
        state = {"step": step, "variance": tensor(v0)}
        variance = v0 + (1 - beta2_t) * (seen**2 - v0)
        p_root = math.sqrt(max(variance, torch.finfo(torch.float64).eps ** 2))
        alpha = max(1e-3, abs(x0)) * min(hyper["eta"], t**-0.5)
        denom = max(1.0, abs(seen / p_root) / 1.0)
        p = p_root * hyper["eta"] * denom / alpha  # the step factor k = alpha / (eta denom) folded into P
    elif name.startswith("muon"):
        state = {"momentum_buffer": tensor(buf0)}
    elif name == "shampoo":
        state = {"pre_cond_0": torch.full((1, 1), 0.7, dtype=torch.float64),
                 "inv_pre_cond_0": torch.zeros((1, 1), dtype=torch.float64)}
        opt.param_groups[0]["step"] = t - 1
        p = math.sqrt(0.7 + seen**2)
    elif name == "soap":
        b2 = hyper["beta2"]
        v = 4.0 * g**2 + 1.0
        state = {"exp_avg": tensor(buf0), "exp_avg_sq": tensor((v - (1 - b2) * g**2) / b2), "GG": [[]], "Q": [[]],
                 "precondition_frequency": 10, "shampoo_beta": b2}
        opt.param_groups[0]["step"] = t  # its t-th Adam update is its step t + 1
        p = (math.sqrt(v) + args["eps"]) / math.sqrt(1 - b2**t)
    if state:
        opt.state[x] = state
    x.grad = torch.full(shape, g, dtype=torch.float64)
    opt.step()
    x1 = float(x.detach().reshape(-1)[0])
    new = opt.state[x]
    for key in ("exp_avg", "momentum_buffer"):
        if key in new:
            buf1 = float(new[key].reshape(-1)[0])
    if name.startswith("muon"):  # the frozen P of this step: M / NS(M), NS(M) read back from the update
        mu = hyper["beta"]
        m = (1 - mu) * g + mu * buf1 if name == "muon" else buf1
        update = ((1 - hyper["eta"] * hyper["weight_decay"]) * x0 - x1) / hyper["eta"]
        p = m / update
    return x1, buf1, p


ZOO_CASES = {
    "adagrad": {"eta": 0.05, "lr_decay": 0.1, "weight_decay": 0.2},
    "adamax": {"eta": 0.01, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.3},
    "adadelta": {"eta": 1.0, "beta2": 0.9, "weight_decay": 0.1},
    "radam": {"eta": 0.01, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.2},
    "asgd": {"eta": 0.05, "lambd": 0.5, "decay_power": 0.75, "weight_decay": 0.1},
    "adafactor": {"eta": 0.05, "weight_decay": 0.5},
    "muon": {"eta": 0.02, "beta": 0.9, "weight_decay": 0.1},
    "muon_plain": {"eta": 0.02, "beta": 0.9, "weight_decay": 0.1},
    "shampoo": {"eta": 0.05, "weight_decay": 0.1},
    "soap": {"eta": 0.01, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.2},
}


@pytest.mark.parametrize("name", ZOO_MAPS)
@pytest.mark.parametrize("t", [1, 3, 10, 1000])
def test_the_numpy_maps_are_the_real_step(name, t):
    assert set(ZOO_CASES) == set(ZOO_MAPS)
    hyper = OPTIMIZERS[name].validate(ZOO_CASES[name])
    x0, buf0, h = 0.7, -0.3, 3.0
    x1, buf1, p = _real_step(name, hyper, t, x0, buf0, h)
    expected = step_map(name, h, p, hyper, t) @ np.array([x0, buf0])
    assert x1 == pytest.approx(expected[0], rel=1e-10, abs=1e-14)
    if name in ("adamax", "radam", "muon", "muon_plain", "soap"):
        assert buf1 == pytest.approx(expected[1], rel=1e-10, abs=1e-14)
