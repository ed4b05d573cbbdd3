"""The minibatch edge-of-stability experiment: measured mean-square boundaries against the theory's, across
batch sizes, as data.

:func:`minibatch_boundary` runs :func:`sims.minibatch.empirical_eta` at each batch size and puts the
theory's values (:func:`aeos_theory.minibatch.minibatch_edge`) beside the measured ones; the theory is
only compared with, never used to compute a measured number.  :func:`minibatch_problem` makes the
per-example Hessians (seeded).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from aeos_base import checks

PROBLEMS = ("lognormal", "rank_one")


def minibatch_problem(kind: str, n: int, d: int = 1, spread: float = 1.0, seed: int = 0) -> np.ndarray:
    """Per-example Hessians of a seeded random problem.

    ``"lognormal"``: commuting (diagonal) curvatures h_ij = exp(spread z_ij), z standard normal, shape
    (n, d) (relative variance exp(spread^2) - 1 per direction).  ``"rank_one"``: H_i = a_i a_i^T with
    a_i = exp(spread z_i) u_i, u_i standard normal in R^d, shape (n, d, d) (non-commuting, the Gauss-Newton
    matrices of a linear least-squares model with examples of varied norms).
    """
    kind = checks.choice("kind", kind, PROBLEMS)
    n = checks.integer("n", n, low=1)
    d = checks.integer("d", d, low=1)
    spread = checks.real("spread", spread, low=0.0, high=10.0)
    rng = np.random.default_rng(checks.integer("seed", seed, low=0))
    if kind == "lognormal":
        return np.exp(spread * rng.standard_normal((n, d)))
    a = np.exp(spread * rng.standard_normal((n, 1))) * rng.standard_normal((n, d))
    return np.einsum("ip,iq->ipq", a, a)


def minibatch_boundary(optimizer: str, hyper: Mapping[str, float], hessians: object, batch_sizes: Sequence[int],
                       *, runs: int = 512, steps: int = 1000, burn: int = 200, seed: int = 0,
                       almost_sure: bool = False) -> dict:
    """Theory and measurement of the mean-square boundary at each batch size b.

    Returns lists over ``batch_sizes``: ``theory_eta`` and ``measured_eta`` (eta*, 1/curvature units),
    ``relative_error`` (measured / theory - 1), the normalised levels at each boundary
    ``theory_eta_bs`` / ``measured_eta_bs`` (eta * batch sharpness), ``theory_eta_gauge`` /
    ``measured_eta_gauge`` (eta * Q), ``theory_signal`` / ``measured_signal`` (rho), ``eta_sharpness``
    (eta* times lambda_max of the full-batch Hessian, theory), ``noise`` (nu of the mode, theory);
    with ``almost_sure`` also ``typical_eta`` and ``typical_eta_bs`` (the boundary of a typical run,
    measured, and eta * batch sharpness measured there).
    """
    from aeos_theory.minibatch import minibatch_edge
    from sims.minibatch import empirical_eta

    hyper = dict(hyper)
    keys = ("theory_eta", "measured_eta", "relative_error", "theory_eta_bs", "measured_eta_bs", "theory_eta_gauge",
            "measured_eta_gauge", "theory_signal", "measured_signal", "eta_sharpness", "noise")
    out: dict = {"optimizer": optimizer, "hyper": hyper, "batch_sizes": [int(b) for b in batch_sizes],
                 "runs": runs, "steps": steps, "burn": burn, "seed": seed, **{k: [] for k in keys}}
    if almost_sure:
        out.update(typical_eta=[], typical_eta_bs=[])
    for b in out["batch_sizes"]:
        edge = minibatch_edge(optimizer, hessians, b, **hyper)
        measured = empirical_eta(optimizer, hessians, b, runs=runs, steps=steps, burn=burn, seed=seed, **hyper)
        row = {"theory_eta": edge.eta, "measured_eta": measured.eta, "relative_error": measured.eta / edge.eta - 1,
               "theory_eta_bs": edge.eta * edge.batch_sharpness,
               "measured_eta_bs": measured.eta * measured.batch_sharpness,
               "theory_eta_gauge": edge.eta * edge.gauge, "measured_eta_gauge": measured.eta * measured.gauge,
               "theory_signal": edge.signal_fraction, "measured_signal": measured.signal_fraction,
               "eta_sharpness": edge.eta * edge.sharpness, "noise": edge.noise}
        for key, value in row.items():
            out[key].append(float(value))
        if almost_sure:
            typical = empirical_eta(optimizer, hessians, b, runs=runs, steps=steps, burn=burn, seed=seed,
                                    criterion="almost_sure", scan=1.05, **hyper)
            out["typical_eta"].append(float(typical.eta))
            out["typical_eta_bs"].append(float(typical.eta * typical.batch_sharpness))
    return out
