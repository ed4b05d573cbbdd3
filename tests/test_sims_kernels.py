"""sims kernels against two independent references: the plain-numpy reference and torch.optim (float64).

Both comparisons are on whole trajectories (every iterate of 500 steps), relative to the largest
|x| of the reference trajectory, tolerance 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest

from sims import simulate, simulate_batch
from sims.reference import reference_run

STEPS = 500
D = 8

# name -> (optimizer, eta, hyperparameters): etas chosen so that the runs reach the edge of stability
# (oscillating, non-trivial) within 500 steps without diverging.
CASES = {
    "gd-wd": ("gd", 0.19, {"weight_decay": 0.05}),
    "heavy_ball-damped-wd": ("heavy_ball", 0.03, {"beta": 0.9, "dampening": 0.2, "weight_decay": 0.05}),
    "heavy_ball": ("heavy_ball", 0.05, {"beta": 0.5}),
    "nesterov": ("nesterov", 0.1, {"beta": 0.8}),
    "adam-wd": ("adam", 0.05, {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.05}),
    "adam-beta1-0": ("adam", 0.02, {"beta1": 0.0, "beta2": 0.999}),
    "adamw": ("adamw", 0.05, {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.3}),
    "rmsprop": ("rmsprop", 0.01, {"beta2": 0.9}),
    "rmsprop-momentum-wd": ("rmsprop", 0.005, {"beta": 0.5, "beta2": 0.99, "weight_decay": 0.05}),
    "nadam-wd": ("nadam", 0.05, {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.05}),
    "adagrad-lr_decay-wd": ("adagrad", 1.0, {"lr_decay": 0.01, "weight_decay": 0.05}),
    "adamax-wd": ("adamax", 0.05, {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.05}),
    "adamax-beta1-0.2": ("adamax", 0.02, {"beta1": 0.2, "beta2": 0.999}),
    # torch's lr scale (its default lr is 1): eta S_P climbs to 2 by step 500 as the accumulators grow
    "adadelta-wd": ("adadelta", 1.0, {"beta2": 0.9, "weight_decay": 0.05}),
    # beta2 = 0.99: warm phase (P = I) for t <= 5, rectified from t = 6 (zoo.radam_rectified_from)
    "radam-wd": ("radam", 0.05, {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.05}),
    "asgd-wd": ("asgd", 0.18, {"lambd": 0.01, "decay_power": 0.75, "weight_decay": 0.05}),
}

# torch.optim's vectorised CPU kernels may round differently from a plain loop in the last bit (FMA
# contraction); in a chaotic edge-of-stability run (RMSProp and NAdam at eta S_P ~ threshold after v has
# decayed, Adadelta on the dense quadratic from step ~250) such a 1-ulp difference grows within 500 steps
# (to O(1), and to 1.2e-3 for Adadelta), for any two implementations.  The torch comparison therefore runs
# those cases at a smaller eta (still adaptive, bias-corrected and decayed; Adadelta's first 1-ulp
# difference is then at step 75 and the whole run stays within 2.2e-16); the edge-of-stability versions
# are compared bit for bit with the numpy reference.
TORCH_CASES = {**CASES,
               "rmsprop": ("rmsprop", 0.001, {"beta2": 0.99}),
               "nadam-wd": ("nadam", 0.01, CASES["nadam-wd"][2]),
               "adadelta-wd": ("adadelta", 0.3, CASES["adadelta-wd"][2])}


#: The simulated optimizers of aeos_theory.zoo (beyond the paper's seven).
ZOO = ("adagrad", "adamax", "adadelta", "radam", "asgd")


def test_radam_cases_cover_both_phases():
    """The RAdam case runs the warm phase (P = I, rho_t <= 5) and then the rectified one."""
    from aeos_theory.zoo import radam_rectified_from

    assert 2 <= radam_rectified_from(CASES["radam-wd"][2]["beta2"]) <= STEPS // 10


def _problem(dense: bool):
    rng = np.random.default_rng(1)
    h = np.logspace(0, 1, D)
    x0 = rng.standard_normal(D)
    if not dense:
        return h, x0
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    H = (q * h) @ q.T
    return 0.5 * (H + H.T), x0


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("dense", [False, True], ids=["diagonal", "dense"])
@pytest.mark.parametrize("optimizer,eta,hyper", list(CASES.values()), ids=list(CASES))
def test_kernel_matches_numpy_reference(optimizer, eta, hyper, dense):
    """Adaptive mode and frozen mode (P given), every iterate, and S_P against dense eigh of the reference P
    (of H + wd I for coupled weight decay: the curvature of the objective the optimizer descends)."""
    H, x0 = _problem(dense)
    # a frozen P on Adadelta's scale (its lr is of order 1): eta (H + wd) / P peaks at 1.26, below 2
    scale = 8.0 if optimizer == "adadelta" else 1.0
    for pre in (None, scale * np.linspace(1.0, 2.0, D)):
        res = simulate(optimizer, H, x0, eta, STEPS, record_x=True, preconditioner=pre, **hyper)
        xs, Ps = reference_run(optimizer, H, x0, eta, STEPS, preconditioner=pre, **hyper)
        assert not res.diverged
        assert _rel(res.trajectory, xs) <= 1e-10
        Hd = H if dense else np.diag(H)
        # decay is curvature: H + wd I (and ASGD's lambd, which shrinks x as a coupled decay does)
        coupled = 0.0 if optimizer == "adamw" else hyper.get("weight_decay", 0.0) + hyper.get("lambd", 0.0)
        for k in (1, 17, 250, STEPS):
            s = 1.0 / np.sqrt(Ps[k])
            expected = np.linalg.eigh((Hd + coupled * np.eye(D)) * s[:, None] * s[None, :])[0][-1]
            assert res.preconditioned_sharpness[k] == pytest.approx(expected, rel=1e-10)
        assert res.sharpness[0] == pytest.approx(np.linalg.eigh(Hd)[0][-1], rel=1e-12)


def _torch_optimizer(torch, name, params, eta, hyper):
    o = torch.optim
    if name == "gd":
        return o.SGD(params, lr=eta, weight_decay=hyper.get("weight_decay", 0.0))
    if name == "heavy_ball":
        return o.SGD(params, lr=eta, momentum=hyper["beta"], dampening=hyper.get("dampening", 0.0),
                     weight_decay=hyper.get("weight_decay", 0.0))
    if name == "nesterov":
        return o.SGD(params, lr=eta, momentum=hyper["beta"], nesterov=True, weight_decay=hyper.get("weight_decay", 0.0))
    if name in ("adam", "adamw", "nadam"):
        cls = {"adam": o.Adam, "adamw": o.AdamW, "nadam": o.NAdam}[name]
        wd = hyper.get("weight_decay", 1e-2 if name == "adamw" else 0.0)
        return cls(params, lr=eta, betas=(hyper["beta1"], hyper["beta2"]), eps=hyper.get("eps", 1e-8), weight_decay=wd)
    if name == "rmsprop":
        return o.RMSprop(params, lr=eta, alpha=hyper["beta2"], eps=hyper.get("eps", 1e-8),
                         momentum=hyper.get("beta", 0.0), weight_decay=hyper.get("weight_decay", 0.0))
    wd = hyper.get("weight_decay", 0.0)
    if name == "adagrad":
        return o.Adagrad(params, lr=eta, lr_decay=hyper.get("lr_decay", 0.0), eps=hyper.get("eps", 1e-10),
                         weight_decay=wd)
    if name in ("adamax", "radam"):
        cls = {"adamax": o.Adamax, "radam": o.RAdam}[name]
        return cls(params, lr=eta, betas=(hyper["beta1"], hyper["beta2"]), eps=hyper.get("eps", 1e-8), weight_decay=wd)
    if name == "adadelta":
        return o.Adadelta(params, lr=eta, rho=hyper["beta2"], eps=hyper.get("eps", 1e-6), weight_decay=wd)
    if name == "asgd":
        return o.ASGD(params, lr=eta, lambd=hyper["lambd"], alpha=hyper["decay_power"], weight_decay=wd)
    raise AssertionError(name)


@pytest.mark.parametrize("dense", [False, True], ids=["diagonal", "dense"])
@pytest.mark.parametrize("optimizer,eta,hyper", list(TORCH_CASES.values()), ids=list(TORCH_CASES))
def test_kernel_matches_torch_optim(optimizer, eta, hyper, dense):
    """torch.optim in float64 on 1/2 x^T H x, 500 steps."""
    torch = pytest.importorskip("torch")
    H, x0 = _problem(dense)
    Ht = torch.tensor(H, dtype=torch.float64)
    h_diag = Ht
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # NAdam keeps mu_product in the default dtype
    try:
        opt = _torch_optimizer(torch, optimizer, [x], eta, hyper)
        traj = [x.detach().numpy().copy()]
        for _ in range(STEPS):
            # The gradient of 1/2 x^T H x formed with the same arithmetic as the kernel (h * x, or one
            # BLAS gemv through numpy), so that only the optimizer update is compared: edge-of-stability
            # runs amplify even a 1-ulp difference in the gradient (e.g. torch's own gemv) over 500 steps.
            with torch.no_grad():
                x.grad = torch.from_numpy(H @ x.numpy()) if dense else h_diag * x
            opt.step()
            traj.append(x.detach().numpy().copy())
    finally:
        torch.set_default_dtype(old)
    res = simulate(optimizer, H, x0, eta, STEPS, record_x=True, **hyper)
    # the optimizers of aeos_theory.zoo are compared at 1e-12 (measured: <= 5e-16 on these cases)
    assert _rel(res.trajectory, np.array(traj)) <= (1e-12 if optimizer in ZOO else 1e-10)


#: float32 against torch: one case per family of update rules (each compiles its own float32 kernels,
#: seconds apiece; the float64 kernels of every optimizer are compared with torch above).
FLOAT32_CASES = ("gd-wd", "heavy_ball-damped-wd", "adam-wd", "rmsprop-momentum-wd", "nadam-wd", "radam-wd")


@pytest.mark.parametrize("optimizer,eta,hyper", [TORCH_CASES[k] for k in FLOAT32_CASES], ids=FLOAT32_CASES)
def test_float32_batch_matches_torch_optim_in_float32(optimizer, eta, hyper):
    """simulate_batch(dtype="float32") against torch.optim stepping float32 tensors, 300 steps: 40 runs
    with one eta (one (40, 8) tensor: the optimizers act elementwise) and, for Adam, 3 runs with their own eta
    (one optimizer each: the other batch layout).  Both round every operation to float32 and differ only where torch's vectorised
    kernels contract or reorder: by 1e-5 of max |x| at most (300 steps of float32 rounding, eps 1.2e-7).
    The etas are a quarter of the cases' and below, away from the edge, where such 1-ulp differences
    would grow chaotically over 40 random starts."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    h = np.logspace(0, 1, D)
    for etas in (np.full(40, eta / 4), np.array([eta / 4, eta / 6, eta / 10]))[:None if optimizer == "adam" else 1]:
        B = len(etas)
        x0 = rng.standard_normal((B, D))
        res = simulate_batch(optimizer, np.tile(h, (B, 1)), x0, etas if B < 40 else etas[0], 300, dtype="float32",
                             **hyper)
        assert res.x.dtype == np.float32
        groups = [slice(0, B)] if B == 40 else [slice(b, b + 1) for b in range(B)]
        ref = np.empty((B, D), dtype=np.float32)
        for rows in groups:
            x = torch.tensor(x0[rows], dtype=torch.float32, requires_grad=True)
            ht = torch.tensor(h, dtype=torch.float32)
            opt = _torch_optimizer(torch, optimizer, [x], float(etas[rows][0]), hyper)
            for _ in range(300):
                with torch.no_grad():
                    x.grad = ht * x
                opt.step()
            ref[rows] = x.detach().numpy()
        assert _rel(res.x, ref) <= 1e-5
        res64 = simulate_batch(optimizer, np.tile(h, (B, 1)), x0, etas, 300, **hyper)
        assert _rel(res.x, res64.x) > 1e-8  # the float32 run did round to float32
