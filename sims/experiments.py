"""The experiments behind the ``python -m sims.<name>`` scripts, as functions that return data.

Each function returns plain dicts / lists of rows (JSON- and CSV-ready), so ``paper_figures`` can call
them without a subprocess.  Theory values come from :mod:`aeos_theory` and are only *compared* with,
never used to compute a simulation result.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np

#: Which hyperparameter plays "beta1" (the momentum of the threshold formula) for each optimizer.
MOMENTUM_NAME = {"gd": None, "heavy_ball": "beta", "nesterov": "beta", "adam": "beta1", "adamw": "beta1",
                 "rmsprop": "beta", "nadam": "beta1"}
ALL_OPTIMIZERS = tuple(MOMENTUM_NAME)


def _progress(iterable: Iterable, total: int, desc: str, show: bool):
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc)


def threshold_check(optimizers: Sequence[str] = ALL_OPTIMIZERS, betas: Sequence[float] = (0.0, 0.5, 0.9, 0.99),
                    eta: float = 1e-2, done: Optional[set] = None, on_row: Optional[Callable[[dict], None]] = None,
                    progress: bool = False) -> list[dict]:
    """Empirical frozen-P threshold (bisection) vs :func:`aeos_theory.stability_threshold` across beta.

    Rows: optimizer, momentum (hyperparameter name), beta, eta, empirical, theory, rel_error, and the
    normalised levels eta * lambda*.  ``done`` holds (optimizer, beta) keys to skip (resuming);
    ``on_row`` is called with each new row as soon as it is computed.
    """
    from aeos_theory import stability_threshold
    from sims.threshold import empirical_threshold

    jobs = []
    for opt in optimizers:
        name = MOMENTUM_NAME[opt]
        for beta in (betas if name else (0.0,)):
            if done is None or (opt, float(beta)) not in done:
                jobs.append((opt, name, float(beta)))
    rows = []
    for opt, name, beta in _progress(jobs, len(jobs), "thresholds", progress):
        hyper = {name: beta} if name else {}
        emp = empirical_threshold(opt, eta, **hyper)
        theo = stability_threshold(opt, eta=eta, **hyper)
        row = {"optimizer": opt, "momentum": name or "", "beta": beta, "eta": eta, "empirical": emp,
               "theory": theo, "rel_error": abs(emp - theo) / theo, "eta_empirical": eta * emp,
               "eta_theory": eta * theo}
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def phase_diagram(optimizer: str, etas: np.ndarray, lambdas: np.ndarray, steps: int = 2000,
                  **hyper: float) -> dict:
    """Stability of the frozen-P (P = 1) recurrence on L = 1/2 lambda x^2 over an eta x lambda grid.

    One :func:`sims.simulate_batch` call runs every grid point (B = len(etas) * len(lambdas), d = 1)
    from x0 = 1 for ``steps`` steps.  Returns ``log10_final`` (|x_T|, capped at the blowup scale for
    diverged runs), ``unstable`` (|x_T| > 1 or diverged), ``diverged_at`` and the theory curve
    lambda*(eta) from :func:`aeos_theory.stability_threshold` for comparison.
    """
    from aeos_theory import stability_threshold
    from sims.api import DEFAULT_BLOWUP, simulate_batch

    etas = np.asarray(etas, dtype=float)
    lambdas = np.asarray(lambdas, dtype=float)
    E, L = np.meshgrid(etas, lambdas, indexing="ij")
    res = simulate_batch(optimizer, L.reshape(-1, 1), np.ones((E.size, 1)), E.reshape(-1), steps,
                         preconditioner=1.0, **hyper)
    with np.errstate(all="ignore"):
        final = np.where(res.diverged, DEFAULT_BLOWUP, np.abs(res.x[:, 0]))
    theory = np.array([stability_threshold(optimizer, eta=float(e), **hyper) for e in etas])
    return {
        "optimizer": optimizer, "hyper": hyper, "steps": steps, "etas": etas, "lambdas": lambdas,
        "log10_final": np.log10(np.maximum(final, 1e-300)).reshape(E.shape),
        "unstable": ((final > 1.0) | res.diverged).reshape(E.shape),
        "diverged_at": res.diverged_at.reshape(E.shape), "theory": theory,
    }


#: SPEC 3.2 run lengths (steps) per eta.
SPEC32_STEPS = {1e-3: 40000, 3e-3: 20000, 1e-2: 20000}


def adam_dense_quadratic(etas: Sequence[float] = (1e-3, 3e-3, 1e-2), steps: Optional[dict] = None,
                         record_every: int = 100, seed: int = 0, level: float = 36.0,
                         progress: bool = False, **hyper: float) -> dict:
    """SPEC 3.2: Adam (beta1 0.9, beta2 0.999, eps 1e-8 unless overridden) on the d = 50 dense quadratic.

    For each eta: the recorded series (step, loss, eta * S_P), the first recorded step with
    eta * S_P > ``level``, and the median / min / max of eta * S_P over the last 40% of the run.
    """
    from sims.api import simulate
    from sims.problems import spec32_problem

    steps = dict(SPEC32_STEPS if steps is None else steps)
    prob = spec32_problem(seed)
    hyper = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, **hyper}
    out = {"seed": seed, "record_every": record_every, "hyper": hyper, "runs": []}
    for eta in _progress(list(etas), len(etas), "adam on dense quadratic", progress):
        n = int(steps.get(eta, 20000))
        r = simulate("adam", prob.H, prob.x0, eta, n, record_every, **hyper)
        level_series = r.eta_sp
        late = level_series[r.step >= 0.6 * n]
        above = np.flatnonzero(level_series > level)
        out["runs"].append({
            "eta": eta, "steps": n, "diverged_at": r.diverged_at, "step": r.step, "loss": r.loss,
            "eta_sp": level_series, "first_above_level": int(r.step[above[0]]) if above.size else None,
            "late_median": float(np.median(late)), "late_min": float(np.min(late)),
            "late_max": float(np.max(late)),
        })
    return out


def sharpening_contrast(eta: float = 0.01, steps: int = 10000, record_every: int = 50,
                        optimizers: Sequence[str] = ("gd", "adam"), seed: int = 0) -> dict:
    """GD vs Adam on :class:`sims.sharpening.SharpeningModel` (same eta): S, S_P and loss over time.

    Summary per optimizer over the second half of the run: median / max of eta * S and eta * S_P.
    """
    from sims.sharpening import SharpeningModel, simulate_sharpening

    model = SharpeningModel(seed=seed)
    out = {"eta": eta, "steps": steps, "record_every": record_every, "model": {
        "k": model.k, "c": model.c, "w_star": model.w_star, "w0": model.w0, "seed": seed}, "runs": {}}
    for opt in optimizers:
        r = simulate_sharpening(opt, eta, steps, record_every, model=model)
        half = r.step >= steps // 2
        out["runs"][opt] = {
            "step": r.step, "loss": r.loss, "sharpness": r.sharpness, "preconditioned_sharpness":
            r.preconditioned_sharpness, "diverged_at": r.diverged_at,
            "late_median_eta_s": float(np.median(eta * r.sharpness[half])),
            "late_max_eta_s": float(np.max(eta * r.sharpness[half])),
            "late_median_eta_sp": float(np.nanmedian(eta * r.preconditioned_sharpness[half])),
        }
    return out


def levels_across_momentum(cases: Sequence[tuple[str, dict]] = (
        ("adam", {"beta1": 0.0}), ("adam", {"beta1": 0.5}), ("adam", {"beta1": 0.9}), ("rmsprop", {}),
        ("adamw", {"beta1": 0.9}), ("nadam", {"beta1": 0.9})),
        eta: float = 1e-2, steps: int = 20000, record_every: int = 100, seed: int = 0) -> list[dict]:
    """SPEC 3.5 / 3.6 on the SPEC 3.2 quadratic: where eta * S_P settles for each (optimizer, hyper).

    Rows: optimizer, hyper, late_median (eta * S_P over the last 40%) and theory = eta * lambda* from
    :func:`aeos_theory.stability_threshold` (frozen P).  NAdam's settled threshold applies only once
    its schedule mu_t -> beta1 (time scale 1 / (0.004 ln(1 / 0.96)) ~ 6000 steps), so it sits lower.
    """
    from aeos_theory import stability_threshold
    from sims.api import simulate
    from sims.problems import spec32_problem

    prob = spec32_problem(seed)
    rows = []
    for opt, hyper in cases:
        r = simulate(opt, prob.H, prob.x0, eta, steps, record_every, **hyper)
        late = r.eta_sp[r.step >= 0.6 * steps]
        rows.append({"optimizer": opt, "hyper": dict(hyper), "eta": eta, "steps": steps,
                     "late_median": float(np.median(late)) if late.size else float("nan"),
                     "theory": eta * stability_threshold(opt, eta=eta, **hyper), "diverged_at": r.diverged_at})
    return rows
