"""The simulation experiments of the paper, as functions of JSON-ready arguments that return data.

Each function is one independent run with plain keyword arguments (numbers, strings, lists, dicts)
and returns a dict of numbers and arrays, so ``paper_figures`` caches and calls them directly and the
``aeos simulate`` / ``aeos bisect`` commands share them.  Theory values from :mod:`aeos_theory` are
only *compared* with; no simulated number is computed from them.

* :func:`threshold_sweep`: bisection vs exact frozen-P thresholds across the momentum coefficient;
* :func:`phase_diagram`: stable / divergent runs over an (eta, lambda) grid;
* :func:`dense_quadratic_run`: any optimizer on the dense quadratic (the simplest AEoS, for Adam);
* :func:`sharpening_run`: any optimizer on the progressive-sharpening model.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from aeos_base import checks
from aeos_theory.optimizers import get_optimizer


def threshold_sweep(optimizer: str, eta: float, betas: Sequence[float]) -> dict:
    """Empirical frozen-P threshold (bisection, :func:`sims.empirical_threshold`) and the exact one
    (:func:`aeos_theory.stability_threshold`) at each value of the optimizer's momentum hyperparameter.

    Returns ``optimizer``, ``momentum`` (the hyperparameter's name, None for gd, whose values are then
    all equal), ``eta``, ``betas``, ``empirical`` and ``theory`` (lambda*, units 1/x^2).
    """
    from aeos_theory import stability_threshold
    from sims.threshold import empirical_threshold

    name = get_optimizer(optimizer).momentum
    hypers = [{name: float(b)} if name else {} for b in betas]
    empirical = [float(empirical_threshold(optimizer, eta, **h)) for h in hypers]
    theory = [stability_threshold(optimizer, eta=eta, **h) for h in hypers]
    return {"optimizer": optimizer, "momentum": name, "eta": eta, "betas": list(betas), "empirical": empirical,
            "theory": theory}


def phase_diagram(optimizer: str, hyper: Mapping[str, float], n: int, steps: int,
                  eta_range: Sequence[float], frozen: bool) -> dict:
    """Stability of ``optimizer`` on L = 1/2 lambda x^2 from x0 = 1 over an n x n (eta, lambda) grid.

    eta spans ``eta_range`` geometrically; lambda spans c/eta over a decade beyond each end, with
    c = eta * lambda* the exact threshold constant (it only places the window).  One
    :func:`sims.simulate_batch` call runs every cell for ``steps`` steps (``frozen``: P = 1, so lambda is
    the preconditioned curvature).  A cell is divergent when the run overflowed or |x_T| > |x_0|.
    Returns ``etas``, ``lambdas``, ``divergent`` (rows: lambda, columns: eta), the theory's
    ``predicted_divergent`` (lambda >= lambda*(eta)), ``constant`` c and ``diverged_at``.
    """
    from aeos_theory import stability_threshold
    from sims.api import simulate_batch

    n = checks.integer("n", n, low=2)
    c = stability_threshold(optimizer, eta=1.0, **hyper)
    lo, hi = (checks.real("eta_range", e, low=0.0, low_inclusive=False) for e in eta_range)
    etas = np.geomspace(lo, hi, n)
    lambdas = np.geomspace(0.1 * c / hi, 10.0 * c / lo, n)
    E, L = np.meshgrid(etas, lambdas, indexing="xy")
    h = L.reshape(-1, 1)
    kwargs = {"preconditioner": np.ones_like(h)} if frozen else {}
    res = simulate_batch(optimizer, h, np.ones_like(h), E.reshape(-1), steps, **kwargs, **hyper)
    with np.errstate(all="ignore"):
        grew = ~(np.abs(res.x[:, 0]) <= 1.0)  # NaN / inf count as grown
    divergent = (res.diverged | grew).reshape(L.shape)
    theory = np.array([[stability_threshold(optimizer, eta=float(e), **hyper) for e in etas]])
    return {"optimizer": optimizer, "hyper": dict(hyper), "constant": c, "etas": etas, "lambdas": lambdas,
            "divergent": divergent.astype(int), "predicted_divergent": (L >= theory).astype(int),
            "diverged_at": res.diverged_at.reshape(L.shape)}


def dense_quadratic_run(optimizer: str, eta: float, steps: int, *, record_every: int = 100, seed: int = 0,
                        d: int = 50, log_lo: float = 0.0, log_hi: float = 2.0,
                        hyper: Mapping[str, float] | None = None) -> dict:
    """``optimizer`` on the dense quadratic :func:`sims.problems.dense_problem` (eigenvalues
    logspace(log_lo, log_hi, d), rotation and x0 from ``seed``), recorded every ``record_every`` steps.

    Returns the series ``step``, ``loss``, ``sharpness`` (S, constant), ``preconditioned_sharpness``
    (S_P of the step's P) and, for comparison, ``eta_threshold`` (eta * lambda* of each step's update,
    from the theory), and ``diverged_at`` (None if the run stayed finite).
    """
    from sims.api import simulate
    from sims.problems import dense_problem

    problem = dense_problem(seed=seed, d=d, low=10.0 ** log_lo, high=10.0 ** log_hi)
    res = simulate(optimizer, problem.H, problem.x0, eta, steps, record_every, **dict(hyper or {}))
    return _series(res)


def sharpening_run(optimizer: str, eta: float, steps: int, *, record_every: int = 50, seed: int = 0,
                   hyper: Mapping[str, float] | None = None) -> dict:
    """``optimizer`` on the progressive-sharpening model :class:`sims.sharpening.SharpeningModel` drawn
    from ``seed``; the same series as :func:`dense_quadratic_run`, with S now varying in time."""
    from sims.sharpening import SharpeningModel, simulate_sharpening

    res = simulate_sharpening(optimizer, eta, steps, record_every, model=SharpeningModel(seed=seed),
                              **dict(hyper or {}))
    return _series(res)


def _series(res) -> dict:
    return {"step": res.step, "loss": res.loss, "sharpness": res.sharpness,
            "preconditioned_sharpness": res.preconditioned_sharpness, "eta_threshold": res.eta_threshold,
            "diverged_at": res.diverged_at}
