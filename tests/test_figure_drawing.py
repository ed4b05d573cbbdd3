"""Every figure's drawing and number extraction, on small synthetic results with planted levels.

For each figure the test takes the runs the figure plans, fabricates a result for each
(series whose late level is a planted fraction ``RATIO`` of the closed-form threshold constant written
here), calls the figure's ``finish`` and checks that (1) valid PNG and PDF files and the data files it
lists are written, and (2) the numbers it reports recover the planted values.  No simulation or
training runs: this isolates the figure code.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from paper_figures.registry import FIGURES, Context, load

RATIO = 0.97  # planted late level / threshold constant
CTX = Context(scale="tiny")


def closed_form(optimizer: str, hyper: dict) -> float:
    """eta * lambda* from the paper's threshold table, written here (not from aeos_theory)."""
    b1 = hyper.get("beta1", 0.9)
    b = hyper.get("beta", {"heavy_ball": 0.9, "nesterov": 0.9}.get(optimizer, 0.0))
    return {"gd": 2.0, "heavy_ball": 2 + 2 * b, "rmsprop": 2 + 2 * b, "adam": (2 + 2 * b1) / (1 - b1),
            "nadam": (2 + 2 * b1) / ((1 - b1) * (1 + 2 * b1)), "nesterov": (2 + 2 * b) / (1 + 2 * b)}[optimizer]


def _series(steps: int, every: int, eta: float, level: float, adaptive: bool) -> dict:
    """A run whose eta * S_P (eta * S when not adaptive) sits at ``level``, with raw S rising."""
    step = np.arange(0, steps + 1, every)
    t = step / max(steps, 1)
    raw = (10 + 70 * t) if adaptive else np.full(step.shape, level / eta)
    pre = np.full(step.shape, level / eta)
    if adaptive:
        pre[0] = np.nan  # no P before the first step
    return {"step": step, "loss": np.exp(-3 * t), "sharpness": raw, "preconditioned_sharpness": pre}


def fake_train(**config) -> dict:
    adaptive = config["optimizer"] in ("adam", "adamw", "nadam", "rmsprop")
    eta = config["hyper"]["eta"]
    s = _series(config["steps"], config["measure_every"], eta, RATIO * closed_form(config["optimizer"],
                                                                                  config["hyper"]), adaptive)
    n = len(s["step"])
    constant = closed_form(config["optimizer"], config["hyper"])
    eta_s_p = eta * s["preconditioned_sharpness"]
    metrics = {"step": s["step"].tolist(), "train_loss": s["loss"].tolist(), "train_accuracy": [0.5] * n,
               "lr": [eta * (0.5 + 0.5 * np.cos(t / max(config["steps"], 1))) for t in s["step"]],
               "sharpness": s["sharpness"].tolist(), "preconditioned_sharpness": s["preconditioned_sharpness"].tolist(),
               "threshold": [constant / eta] * n, "eta_S_P": eta_s_p.tolist(), "eta_threshold": [constant] * n,
               "edge_ratio": (eta_s_p / constant).tolist(), "hvps": [20] * n, "converged": [1] * n,
               "wall_time": list(range(n)), "oscillation": [OSCILLATION] * n,
               "oscillation_total": [2 * OSCILLATION] * n}
    return {"status": "completed", "last_step": config["steps"], "metrics": metrics}


OSCILLATION = 1e-3  # planted oscillation of a discrete run (parameter units)
FLOW_LOSS = {True: 1.02, False: 1.2}  # planted flow loss / the run's 3-record moving average
FLOW_EDGE = 1.01  # planted central-flow edge ratio
FLOW_OSCILLATION = 1.5  # planted predicted / measured oscillation


def fake_flow_experiment(run: dict, central: bool) -> dict:
    """A flow over the run's grid whose loss is a planted multiple of the run's 3-record moving average."""
    from aeos_theory.flow_rules import moving_average

    discrete = fake_train(**run)["metrics"]
    n = len(discrete["step"])
    constant = discrete["eta_threshold"][0]
    ratio = FLOW_EDGE if central else 1.5
    records = {"step": discrete["step"], "train_loss": list(FLOW_LOSS[central] * moving_average(discrete["train_loss"])),
               "eta_S_P": [ratio * constant] * n, "edge_ratio": [ratio] * n,
               "oscillation": [FLOW_OSCILLATION * OSCILLATION if central else 0.0] * n,
               "oscillation_total": [2 * FLOW_OSCILLATION * OSCILLATION if central else 0.0] * n,
               "wall_time": list(range(n))}
    return {"status": "completed", "reason": "", "step": float(run["steps"]), "records": records}


def fake_threshold_sweep(optimizer: str, eta: float, betas: list) -> dict:
    name = "beta1" if optimizer in ("adam", "nadam") else "beta"
    theory = [closed_form(optimizer, {name: b}) / eta for b in betas]
    return {"optimizer": optimizer, "momentum": name, "eta": eta, "betas": betas,
            "empirical": [t * (1 + 1e-6) for t in theory], "theory": theory}


def fake_phase_diagram(optimizer: str, hyper: dict, n: int, steps: int, eta_range: list, frozen: bool) -> dict:
    c = closed_form(optimizer, hyper)
    etas = np.geomspace(eta_range[0], eta_range[1], n)
    lambdas = np.geomspace(0.1 * c / eta_range[1], 10 * c / eta_range[0], n)
    predicted = lambdas[:, None] >= c / etas[None, :]
    divergent = predicted.copy()
    divergent[0, 0] = not divergent[0, 0]  # one planted disagreement
    return {"optimizer": optimizer, "hyper": hyper, "constant": c, "etas": etas, "lambdas": lambdas,
            "divergent": divergent.astype(int), "predicted_divergent": predicted.astype(int),
            "diverged_at": np.where(divergent, 10, -1)}


def fake_quadratic(optimizer: str, eta: float, steps: int, record_every: int = 100, hyper=None, **_) -> dict:
    s = _series(steps, record_every, eta, RATIO * closed_form(optimizer, hyper or {}), adaptive=True)
    s["sharpness"] = np.full(s["step"].shape, 100.0)
    return {**s, "diverged_at": None}


def fake_sharpening(optimizer: str, eta: float, steps: int, record_every: int = 50, **_) -> dict:
    adaptive = optimizer != "gd"
    return {**_series(steps, record_every, eta, RATIO * closed_form(optimizer, {}), adaptive), "diverged_at": None}


def fake_density_run(train: dict, lanczos_steps: int, probes: int) -> dict:
    """SLQ output whose top Ritz value of P^-1/2 H P^-1/2 is planted at RATIO * 38 / eta (of H at 70), with
    a planted 2% of the mass in the top node and the rest in a bulk near zero."""
    eta = train["hyper"]["eta"]
    out = {"step": train["steps"], "eta": eta, "trainer_eta_S_P": RATIO * closed_form("adam", {})}
    for key, top in (("H", 70.0), ("P", RATIO * closed_form("adam", {}) / eta)):
        nodes = np.tile(np.append(np.linspace(-0.01 * top, 0.05 * top, lanczos_steps - 1), top), (probes, 1))
        weights = np.tile(np.append(np.full(lanczos_steps - 1, 0.98 / (lanczos_steps - 1)), 0.02), (probes, 1))
        grid = np.linspace(-0.1 * top, 1.1 * top, 200)
        density = np.exp(-0.5 * (grid / (0.02 * top)) ** 2) + 0.02 * np.exp(-0.5 * ((grid - top) / (0.02 * top)) ** 2)
        out[key] = {"grid": grid, "density": density, "nodes": nodes, "weights": weights, "sigma": 0.02 * top}
    return out


FAKES = {"train": fake_train, "flow_experiment": fake_flow_experiment, "density_run": fake_density_run, "threshold_sweep": fake_threshold_sweep, "phase_diagram": fake_phase_diagram,
         "dense_quadratic_run": fake_quadratic, "sharpening_run": fake_sharpening}


def _close(value: float, expected: float) -> bool:
    return value is not None and math.isclose(value, expected, rel_tol=1e-3)


def check_numbers(name: str, numbers: dict) -> None:
    """The reported numbers recover the planted levels (4 significant digits are kept in the summary)."""
    adam, gd = RATIO * closed_form("adam", {}), RATIO * closed_form("gd", {})
    if name == "thresholds":
        assert math.isclose(numbers["max_relative_error"], 1e-6, rel_tol=1e-3)
    elif name == "phase_diagrams":
        for panel in numbers.values():
            cells = panel["cells"]
            assert panel["cells_agreeing_with_theory"] == pytest.approx(1 - 1 / cells)
    elif name in ("sharpening_contrast", "deep_gd_vs_adam"):
        assert _close(numbers["gd"]["late_median_eta_S"], gd) and _close(numbers["adam"]["late_median_eta_S_P"], adam)
    elif name == "beta1_sweep":
        assert all(_close(v["ratio_to_theory"], RATIO) for v in numbers.values())
    elif name == "spectral_density":
        assert _close(numbers["eta_S_P"], adam) and _close(numbers["S"], 70.0)
        assert _close(numbers["mass_above_half_top_P"], 0.02) and _close(numbers["threshold"], adam / RATIO)
    elif name == "rmsprop_and_momentum":
        assert all(_close(v["ratio_to_threshold"], RATIO) for v in numbers.values())
    elif name == "nadam_schedule":
        assert _close(numbers["late_median_edge_ratio"], RATIO)
        assert _close(numbers["late_median_eta_S_P"], RATIO * closed_form("nadam", {}))
    elif name == "lr_schedule":
        for run in (v for k, v in numbers.items() if k.startswith("beta2=")):
            assert all(_close(run[phase]["median_edge_ratio"], RATIO)
                       for phase in ("warmup", "first_half_of_decay", "second_half_of_decay"))
    elif name == "central_flows":
        for numbers_of in numbers.values():
            assert _close(numbers_of["central_median_relative_error"], FLOW_LOSS[True] - 1)
            assert _close(numbers_of["stable_median_relative_error"], FLOW_LOSS[False] - 1)
            assert _close(numbers_of["central_max_edge_deviation"], FLOW_EDGE - 1)
            assert _close(numbers_of["oscillation_predicted_over_measured"], FLOW_OSCILLATION)
            assert _close(numbers_of["oscillation_total_predicted_over_measured"], FLOW_OSCILLATION)
    else:  # quadratic_aeos, deep_adam, minibatch, transformer: Adam at beta1 = 0.9
        assert all(_close(v["late_median_eta_S_P"], adam) for v in numbers.values()), numbers


@pytest.mark.parametrize("name", FIGURES)
def test_figure_draws_and_reports_the_planted_levels(name: str, tmp_path: Path) -> None:
    module = load(name)
    runs = module.plan(CTX)
    results = [FAKES[run.fn.split(":")[1]](**run.config) for run in runs]
    made = module.finish(CTX, runs, results, tmp_path)
    png, pdf = (tmp_path / f"{name}.png").read_bytes(), (tmp_path / f"{name}.pdf").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and pdf.startswith(b"%PDF-")
    for data in made.get("data", []):
        assert (tmp_path / data).stat().st_size > 0
    assert made["caption"] and "n/a" not in made["caption"]
    check_numbers(name, made["numbers"])
