"""Every figure's drawing and number extraction, on small synthetic results with planted levels.

For each figure the test takes the runs the figure plans, fabricates a result for each
(series whose late level is a planted fraction ``RATIO`` of the closed-form threshold constant written
here, times 1 -+ ``SPREAD``/2 for seeds 0 and 1, so the mean over the two seeds is the planted level),
calls the figure's ``finish`` and checks that (1) valid PNG and PDF files and the data files it lists
are written, (2) the numbers it reports recover the planted values, each seeded headline with the t
interval written here by hand (t_{0.975, 1} = 12.706 from a t table), and (3) the drawn artists: every
threshold line at the closed-form value written here, on the panel whose y label names the right
quantity, each labelled with its value; every axis labelled; the legend's entries; and no label over
data or over another label (:mod:`paper_figures.legibility`).  No simulation or training runs: this
isolates the figure code.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from paper_figures import intervals, legibility, style
from paper_figures.registry import FIGURES, Context, load

RATIO = 0.97  # planted late level / threshold constant
SPREAD = 0.01  # planted relative difference between seed 1 and seed 0
CTX = Context(scale="tiny")
T_975_DF1 = 12.7062047361747  # Student t quantile 0.975 at 1 degree of freedom, from a t table


def _seeded(seed: int) -> float:
    """The factor of seed 0 and 1 (tiny scale): 1 - SPREAD/2 and 1 + SPREAD/2, mean 1."""
    return 1 + SPREAD * (seed - 0.5)


def closed_form(optimizer: str, hyper: dict) -> float:
    """eta * lambda* from the paper's threshold table, written here (not from aeos_theory)."""
    b1 = hyper.get("beta1", 0.9)
    b = hyper.get("beta", {"heavy_ball": 0.9, "nesterov": 0.9}.get(optimizer, 0.0))
    if optimizer == "adamw":  # decoupled decay multiplies w by rho = 1 - eta wd each step
        rho = 1 - hyper["eta"] * hyper.get("weight_decay", 0.01)
        return (1 + b1) * (1 + rho) / (1 - b1)
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
    level = RATIO * _seeded(config["seed"]) * closed_form(config["optimizer"], config["hyper"])
    s = _series(config["steps"], config["measure_every"], eta, level, adaptive)
    n = len(s["step"])
    constant = closed_form(config["optimizer"], config["hyper"])
    eta_s_p = eta * s["preconditioned_sharpness"]
    metrics = {"step": s["step"].tolist(), "train_loss": s["loss"].tolist(), "train_accuracy": [0.5] * n,
               "lr": [eta * (0.5 + 0.5 * np.cos(t / max(config["steps"], 1))) for t in s["step"]],
               "sharpness": s["sharpness"].tolist(), "preconditioned_sharpness": s["preconditioned_sharpness"].tolist(),
               "threshold": [constant / eta] * n, "eta_S_P": eta_s_p.tolist(), "eta_threshold": [constant] * n,
               "edge_ratio": (eta_s_p / constant).tolist(), "hvps": [20] * n, "converged": [1] * n,
               "wall_time": list(range(n)), "oscillation": [OSCILLATION] * n,
               "oscillation_total": [2 * OSCILLATION] * n,
               "eta_BS_P": eta_s_p.tolist(), "batch_update_ratio": [RATIO * _seeded(config["seed"]) * 2.0] * n}
    return {"status": "completed", "last_step": config["steps"], "metrics": metrics}


CURVATURE_SPREAD = 0.5  # planted per-example curvatures: mu (1 -+ CURVATURE_SPREAD), alternating


def fake_edge_train(**config) -> dict:
    """fake_train, and per-example curvatures alternating mu (1 -+ CURVATURE_SPREAD) around the planted
    S_P = mu: var(h)/mu^2 = CURVATURE_SPREAD^2 and no skew."""
    out = fake_train(**config)
    mu = out["metrics"]["preconditioned_sharpness"][-1]
    signs = np.where(np.arange(config["n"]) % 2 == 0, -1.0, 1.0)
    return {**out, "curvatures": (mu * (1 + CURVATURE_SPREAD * signs)).tolist()}


OSCILLATION = 1e-3  # planted oscillation of a discrete run (parameter units)
FLOW_LOSS = {True: 1.02, False: 1.2}  # planted flow loss / the run's time-averaged loss
FLOW_EDGE = 1.01  # planted central-flow edge ratio
FLOW_OSCILLATION = 1.5  # planted predicted / measured oscillation


def fake_discrete_every_step(config: dict) -> dict:
    """A run measured at every step (loss exp(-3 t / T), oscillation 2 OSCILLATION from step 2 on) whose edge
    on its grid is fake_train's."""
    metrics = fake_train(**config)["metrics"]
    t = np.arange(config["steps"] + 1)
    oscillation = np.where(t >= 2, 2 * OSCILLATION, np.nan)
    return {"discrete": {"step": t.tolist(), "train_loss": np.exp(-3 * t / config["steps"]).tolist(),
                         "lr": [config["hyper"]["eta"]] * t.size, "oscillation_total": oscillation.tolist()},
            "edge": {k: metrics[k] for k in ("step", "eta_S_P", "eta_threshold", "edge_ratio", "oscillation")},
            "wall_time": 1.0}


def fake_flow_experiment(run: dict, central: bool, dtype: str = "float64") -> dict:
    """A flow over the run's grid whose loss is a planted multiple of the run's time-averaged loss (the mean
    over each record's window, :func:`deep.flows.experiments.window_mean`)."""
    from deep.flows.experiments import window_mean

    discrete = fake_discrete_every_step(run)
    grid = np.asarray(discrete["edge"]["step"], float)
    n = grid.size
    constant = discrete["edge"]["eta_threshold"][0]
    ratio = FLOW_EDGE if central else 1.5
    averaged = window_mean(np.asarray(discrete["discrete"]["train_loss"]), grid, run["measure_every"])
    records = {"step": grid.tolist(), "train_loss": list(FLOW_LOSS[central] * averaged),
               "eta_S_P": [ratio * constant] * n, "edge_ratio": [ratio] * n, "directions": [int(central)] * n,
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


def fake_quadratic(optimizer: str, eta: float, steps: int, record_every: int = 100, hyper=None, seed: int = 0,
                   **_) -> dict:
    s = _series(steps, record_every, eta, RATIO * _seeded(seed) * closed_form(optimizer, hyper or {}), adaptive=True)
    s["sharpness"] = np.full(s["step"].shape, 100.0)
    return {**s, "diverged_at": None}


def fake_sharpening(optimizer: str, eta: float, steps: int, record_every: int = 50, seed: int = 0, **_) -> dict:
    adaptive = optimizer != "gd"
    return {**_series(steps, record_every, eta, RATIO * _seeded(seed) * closed_form(optimizer, {}), adaptive),
            "diverged_at": None}


def fake_density_run(train: dict, lanczos_steps: int, probes: int) -> dict:
    """SLQ output whose top Ritz value of P^-1/2 H P^-1/2 is planted at RATIO * 38 / eta (of H at 70), with
    a planted 2% of the mass in the top node and the rest in a bulk near zero."""
    eta = train["hyper"]["eta"]
    level = RATIO * _seeded(train["seed"]) * closed_form("adam", {})
    out = {"step": train["steps"], "eta": eta, "trainer_eta_S_P": level}
    for key, top in (("H", 70.0 * _seeded(train["seed"])), ("P", level / eta)):
        nodes = np.tile(np.append(np.linspace(-0.01 * top, 0.05 * top, lanczos_steps - 1), top), (probes, 1))
        weights = np.tile(np.append(np.full(lanczos_steps - 1, 0.98 / (lanczos_steps - 1)), 0.02), (probes, 1))
        grid = np.linspace(-0.1 * top, 1.1 * top, 200)
        density = np.exp(-0.5 * (grid / (0.02 * top)) ** 2) + 0.02 * np.exp(-0.5 * ((grid - top) / (0.02 * top)) ** 2)
        out[key] = {"grid": grid, "density": density, "nodes": nodes, "weights": weights, "sigma": 0.02 * top}
    return out


def fake_zoo_run(optimizer: str, eta: float, seed: int = 0, *, steps: int, measure_every: int, **_) -> dict:
    """A zoo run whose edge ratio sits at RATIO (times the seed's factor) from its first record on."""
    step = list(range(measure_every, steps + 1, measure_every))
    ratio = RATIO * _seeded(seed)
    return {"optimizer": optimizer, "eta": eta, "seed": seed, "step": step, "loss": [0.1] * len(step),
            "edge_ratio": [ratio] * len(step), "eta_S_P": [2 * ratio] * len(step), "edge_constant": [2.0] * len(step),
            "diverged": False}


FAKES = {"train": fake_train, "edge_train": fake_edge_train, "zoo_run": fake_zoo_run, "flow_experiment": fake_flow_experiment,
         "discrete_every_step": fake_discrete_every_step, "density_run": fake_density_run, "threshold_sweep": fake_threshold_sweep, "phase_diagram": fake_phase_diagram,
         "dense_quadratic_run": fake_quadratic, "sharpening_run": fake_sharpening}


def _close(value: float, expected: float) -> bool:
    return value is not None and math.isclose(value, expected, rel_tol=1e-3)


def _mean(headline: dict) -> float:
    assert intervals.is_headline(headline), headline
    return headline["mean"]


def check_numbers(name: str, numbers: dict) -> None:
    """The reported numbers recover the planted levels (4 significant digits are kept in the summary): the
    means over seeds for the seeded figures."""
    adam, gd = RATIO * closed_form("adam", {}), RATIO * closed_form("gd", {})
    if name == "thresholds":
        assert math.isclose(_mean(numbers["max_relative_error"]), 1e-6, rel_tol=1e-3)
    elif name == "phase_diagrams":
        for panel in numbers.values():
            cells = panel["cells"]
            assert _mean(panel["cells_agreeing_with_theory"]) == pytest.approx(1 - 1 / cells)
    elif name in ("sharpening_contrast", "deep_gd_vs_adam"):
        assert _close(_mean(numbers["gd"]["late_median_eta_S"]), gd)
        assert _close(_mean(numbers["adam"]["late_median_eta_S_P"]), adam)
    elif name == "beta1_sweep":
        assert all(_close(_mean(v["ratio_to_theory"]), RATIO) for v in numbers.values())
    elif name == "spectral_density":
        assert _close(_mean(numbers["eta_S_P"]), adam) and _close(_mean(numbers["S"]), 70.0)
        assert _close(_mean(numbers["mass_above_half_top_P"]), 0.02) and _close(numbers["threshold"], adam / RATIO)
    elif name == "rmsprop_and_momentum":
        assert all(_close(_mean(v["ratio_to_threshold"]), RATIO) for v in numbers.values())
    elif name == "nadam_schedule":
        assert _close(_mean(numbers["late_median_edge_ratio"]), RATIO)
        assert _close(_mean(numbers["late_median_eta_S_P"]), RATIO * closed_form("nadam", {}))
    elif name == "lr_schedule":
        for run in (v for k, v in numbers.items() if k.startswith("beta2=")):
            assert all(_close(_mean(run[f"{phase}_median_edge_ratio"]), RATIO)
                       for phase in ("warmup", "first_half_of_decay", "second_half_of_decay"))
    elif name == "optimizer_zoo":
        entries = [e for v in numbers.values() if isinstance(v, dict) for e in v.values()]
        assert len(entries) == 6 and all(_close(_mean(e["late_edge_ratio"]), RATIO) for e in entries)
    elif name == "central_flows":
        assert list(numbers) == ["gd", "rmsprop", "adam", "adamw", "adamw_transformer"]
        for numbers_of in numbers.values():
            assert _close(_mean(numbers_of["central_median_relative_error"]), FLOW_LOSS[True] - 1)
            assert _close(_mean(numbers_of["stable_median_relative_error"]), FLOW_LOSS[False] - 1)
            assert _close(_mean(numbers_of["stable_over_central_error"]), (FLOW_LOSS[False] - 1) / (FLOW_LOSS[True] - 1))
            assert _close(_mean(numbers_of["central_median_edge_deviation"]), FLOW_EDGE - 1)
            assert _close(_mean(numbers_of["central_max_edge_deviation"]), FLOW_EDGE - 1)
            assert _close(_mean(numbers_of["discrete_median_edge_ratio"]), RATIO)
            assert _mean(numbers_of["discrete_share_at_edge"]) == 1.0  # the planted runs stay at 0.97 c
            assert _close(_mean(numbers_of["oscillation_predicted_over_measured"]), FLOW_OSCILLATION)
    elif name == "minibatch_edge":
        check_minibatch_edge(numbers)
    else:  # quadratic_aeos, deep_adam, transformer: Adam at beta1 = 0.9
        assert all(_close(_mean(v["late_median_eta_S_P"]), adam) for v in numbers.values()), numbers


def check_minibatch_edge(numbers: dict) -> None:
    """Late medians of eta S_P and eta BS_P at RATIO times 38 (Adam), 2 (SGD) and 2 (1 + beta) (heavy ball), the
    update ratio at RATIO * 2, no drift; the theory at b = 16 of n = 128 the paper-form mean-square edge
    2 (1 + beta1)/((1 - beta1) + (1 + beta1) nu), nu = (n - b)/(b (n - 1)) CURVATURE_SPREAD^2, written here."""
    controls = {"adam": closed_form("adam", {}), "SGD": 2.0, "SGD momentum": 2 + 2 * 0.5}
    for group, level in controls.items():
        for by_size in numbers[group].values():
            assert _close(_mean(by_size["late_median_eta_S_P"]), RATIO * level)
            assert _close(_mean(by_size["late_median_eta_BS_P"]), RATIO * level)
            assert _close(_mean(by_size["late_median_batch_update_ratio"]), RATIO * 2.0)
            assert abs(_mean(by_size["drift_eta_S_P"])) < 1e-9
    theory = numbers["theory"]
    assert _close(_mean(theory["nu_at_b1"]), CURVATURE_SPREAD**2)
    nu = (128 - 16) / (16 * 127) * CURVATURE_SPREAD**2
    assert _close(_mean(theory["batch=16"]["eta_S_P"]), 2 * 1.9 / (0.1 + 1.9 * nu))
    assert _close(_mean(theory["batch=128"]["eta_S_P"]), 38.0) and _close(_mean(theory["batch=128"]["eta_BS_P"]), 38.0)


def check_intervals(numbers: dict) -> None:
    """Every seeded headline is over the two tiny seeds, and its interval is mean -+ t s / sqrt(2) with s the
    sample standard deviation of its per-seed values, computed here by hand."""
    seeded = [h for _, h in intervals.headlines(numbers) if h["method"] == intervals.T_INTERVAL]
    for h in seeded:
        assert h["seeds"] == [0, 1] and h["n"] == 2
        a, b = h["values"]
        mean, s = (a + b) / 2, abs(a - b) / math.sqrt(2)
        assert h["mean"] == pytest.approx(mean, rel=1e-3, abs=1e-12)
        half = T_975_DF1 * s / math.sqrt(2)
        assert h["interval"] == pytest.approx([mean - half, mean + half], rel=2e-3, abs=1e-3 * abs(mean) + 1e-12)


#: Per figure (tiny scale): panel index -> (its threshold lines' values, written here from the closed forms
#: of the paper's table, and a piece of that panel's y label naming the quantity they bound).  A vertical
#: threshold line is marked by "x" in place of the y label.
GD_ETA, SHARPENING_ETA = 0.1, 0.01  # the step sizes of deep_gd_vs_adam's GD and of sharpening_contrast
ADAM = (2 + 2 * 0.9) / (1 - 0.9)  # 38
ADAMW = (1 + 0.9) * (2 - 1e-2 * 0.1) / (1 - 0.9)  # AdamW at the peak lr 1e-2, weight decay 0.1: 37.981
THRESHOLDS: dict[str, dict[int, tuple[list[float], str]]] = {
    "thresholds": {0: ([2.0], "threshold constant")},
    "phase_diagrams": {},
    "quadratic_aeos": {1: ([ADAM], "S_P")},
    "sharpening_contrast": {0: ([2 / SHARPENING_ETA], "raw sharpness"), 1: ([2.0], r"\eta\,S$"), 2: ([ADAM], "S_P")},
    "deep_adam": {1: ([ADAM], "S_P"), 4: ([ADAM], "S_P")},
    "deep_gd_vs_adam": {0: ([2 / GD_ETA], "sharpness"), 1: ([2.0], r"\eta\,S$"), 2: ([ADAM], "S_P")},
    "beta1_sweep": {0: ([(2 + 2 * 0.5) / (1 - 0.5), ADAM], "S_P")},
    "rmsprop_and_momentum": {0: ([2.0], "S_P"), 1: ([2 + 2 * 0.5], r"\eta\,S$")},
    "minibatch_edge": {0: ([2.0, ADAM], "S_P"), 1: ([2.0, ADAM], "BS_P"), 2: ([2.0], "update ratio"),
                       3: ([2.0, ADAM], "late median"), 4: ([2 * (1 - 0.5), 2.0, 2 * (1 + 0.5)], r"\eta\,S$"),
                       5: ([2 * (1 - 0.5), 2.0, 2 * (1 + 0.5)], r"\eta\,BS$"), 6: ([2.0], "update ratio"),
                       7: ([2 * (1 - 0.5), 2.0, 2 * (1 + 0.5)], "late median")},
    "transformer": {1: ([ADAM], "S_P")},
    "nadam_schedule": {0: ([(2 + 2 * 0.9) / ((1 - 0.9) * (1 + 2 * 0.9))], "S_P"), 1: ([1.0], "edge ratio")},
    "lr_schedule": {2: ([1.0], "edge ratio")},
    "optimizer_zoo": {i: ([1.0], "edge ratio") for i in range(4)},  # 3 optimizers at tiny, then the summary
    "spectral_density": {1: ([ADAM], "x")},
    "central_flows": {1: ([2.0], "S_P"), 4: ([2.0], "S_P"), 7: ([ADAM], "S_P"), 10: ([ADAMW], "S_P"),
                      13: ([ADAMW], "S_P")},
}

#: Per figure (tiny scale): the entries of the figure's legend.
LEGENDS: dict[str, list[str]] = {
    "thresholds": ["Adam", "NAdam", "heavy ball", "Nesterov", "bisection (sims)"],
    "phase_diagrams": ["stable", "divergent", r"exact boundary $\lambda^* = c/\eta$"],
    "quadratic_aeos": ["eta = 0.01"],
    "sharpening_contrast": ["GD", "Adam"],
    "deep_adam": ["eta = 0.0005", "eta = 0.001", "eta = 0.002"],
    "deep_gd_vs_adam": ["GD, eta = 0.1", "Adam, eta = 0.001"],
    "beta1_sweep": ["beta1 = 0.5", "beta1 = 0.9", r"theory $(2+2\beta_1)/(1-\beta_1)$",
                    "late median: mean over seeds, 95% interval (dots: seeds)"],
    "rmsprop_and_momentum": [],
    "minibatch_edge": ["Adam, batch 16", "Adam, batch 128 (full)", r"theory: full-batch $\eta\,S_P$",
                       r"theory: batch $\eta\,BS_P$", r"late median: full-batch $\eta\,S_P$",
                       r"late median: batch $\eta\,BS_P$", "late median: update ratio", "SGD, batch 32",
                       "SGD momentum, batch 32"],
    "transformer": ["eta = 0.001"],
    "nadam_schedule": ["threshold of step t (theory)", r"$\eta\,S_P$ (measured; thin: seeds, bold: mean)"],
    "lr_schedule": ["threshold c_t", "beta2 = 0.999", "beta2 = 0.99"],
    "optimizer_zoo": ["smaller step size (thin: seeds, bold: mean)", "larger step size (thin: seeds, bold: mean)"],
    "spectral_density": ["SLQ density: seeds (thin), mean (bold)", "top Ritz value of each seed"],
    "central_flows": ["run, time-averaged", "stable flow", "central flow",
                      "oscillation measured at every step (iterates)", "oscillation predicted (central flow)"],
}


def check_artists(name: str, fig) -> None:
    """Threshold lines, their labels, axis labels and legend entries as drawn; no label covers anything."""
    expected = THRESHOLDS[name]
    for index, ax in enumerate(fig.axes):
        lines = [line for line in ax.lines if line.get_gid() == "threshold"]
        vertical = [ln for ln in lines if np.ptp(ln.get_xdata()) == 0 and np.ptp(ln.get_ydata()) != 0]
        values = sorted(float(ln.get_xdata()[0]) if ln in vertical else float(ln.get_ydata()[0]) for ln in lines)
        want, quantity = expected.get(index, ([], ""))
        assert values == pytest.approx(sorted(want), rel=1e-9), f"{name} panel {index}: thresholds {values}"
        if quantity == "x":
            assert len(vertical) == len(lines)
        elif lines:
            assert not vertical and quantity in ax.get_ylabel(), f"{name} panel {index}: {ax.get_ylabel()!r}"
        labels = [t for t in ax.texts if t.get_gid() == "threshold-label"]
        assert len(labels) == len(lines), f"{name} panel {index}: {len(labels)} labels for {len(lines)} lines"
        for value, label in zip(values, sorted(labels, key=lambda t: t.get_position()[0 if vertical else 1])):
            assert label.get_position()[0 if vertical else 1] == pytest.approx(value, rel=1e-9)
            assert f"{value:.4g}" in label.get_text(), label.get_text()
        assert ax.get_xlabel(), f"{name} panel {index} has no x label"
        assert ax.get_ylabel() or (name == "phase_diagrams" and index > 0), f"{name} panel {index} has no y label"
    entries = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    entries += [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert entries == LEGENDS[name]
    assert legibility.problems(fig) == []


@pytest.mark.parametrize("name", FIGURES)
def test_figure_draws_and_reports_the_planted_levels(name: str, tmp_path: Path, monkeypatch) -> None:
    drawn = []
    save = style.save
    monkeypatch.setattr(style, "save", lambda fig, out, stem: drawn.append(fig) or save(fig, out, stem))
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
    check_intervals(made["numbers"])
    (fig,) = drawn
    check_artists(name, fig)


def test_every_headline_of_the_caption_is_quoted_with_its_interval(monkeypatch, tmp_path: Path) -> None:
    """deep_adam's caption quotes each late median as intervals.text of its headline, never a bare number."""
    module = load("deep_adam")
    runs = module.plan(CTX)
    made = module.finish(CTX, runs, [FAKES["train"](**r.config) for r in runs], tmp_path)
    for key, numbers in made["numbers"].items():
        assert f"{key}: {intervals.text(numbers['late_median_eta_S_P'])}" in made["caption"]
        assert "over 2 seeds" in intervals.text(numbers["late_median_eta_S_P"])


def test_a_threshold_line_at_the_wrong_level_fails(monkeypatch, tmp_path: Path) -> None:
    """The artist check is not vacuous: a figure whose threshold line is drawn at 36 instead of 38 fails it."""
    module = load("quadratic_aeos")
    drawn = []
    save = style.save
    monkeypatch.setattr(style, "save", lambda fig, out, stem: drawn.append(fig) or save(fig, out, stem))
    monkeypatch.setattr(module, "LEVEL", 36.0)
    runs = module.plan(CTX)
    module.finish(CTX, runs, [FAKES["dense_quadratic_run"](**r.config) for r in runs], tmp_path)
    with pytest.raises(AssertionError, match="thresholds"):
        check_artists("quadratic_aeos", drawn[0])


def test_legibility_finds_a_label_over_data_and_two_labels_over_each_other() -> None:
    """The overlap finder is not vacuous: a text on a line, and two texts on one spot, are reported; the same
    figure with the text in the margin is clean."""
    fig, axes = style.figure(1, 1, width="column")
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], label="data")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    style.threshold_line(ax, 0.5, "threshold\n0.5")
    assert legibility.problems(fig) == []
    ax.text(0.5, 0.5, "over the line", ha="center", va="center")
    assert any("'over the line' covers data of panel 1" in p for p in legibility.problems(fig))
    ax.texts[-1].remove()
    ax.text(1.0, 0.5, "on the label", transform=ax.get_yaxis_transform(), clip_on=False)
    assert any("overlaps" in p and "on the label" in p for p in legibility.problems(fig))
