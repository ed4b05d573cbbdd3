"""How often a cold eigensolver returns lambda_2 instead of lambda_1 at the Edge of Stability (not a test).

Run: ``.venv/bin/python benchmarks/cold_start.py`` (the peers extra adds PyHessian and hessian-eigenthings;
a missing peer is reported and skipped).

The gallery's digits MLP (64-200-200-10 tanh, 1000 images, square loss ``deep.mse``, seed 0) is trained by
full-batch Adam (eta = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8), as the ``deep_adam`` figure does,
until eta * S_P sits at the threshold (2 + 2 beta1)/(1 - beta1) = 38; there the top two eigenvalues of H
and of P^-1/2 H P^-1/2 are close.  Reference eigenvalues: scipy ``eigsh`` (tol 1e-10) on a float64 copy.

Of the states every 25 steps from step 250 to 2000 (the gallery's run), the study takes the one at the edge
whose top two eigenvalues of P^-1/2 H P^-1/2 are closest.  For each operator (H, and P^-1/2 H P^-1/2) and each of ``--seeds`` seeds, each method solves for the top
eigenvalue from a start drawn from that seed (float32 products).  A result counts as lambda_2 when it is
closer to lambda_2 than to lambda_1.  Printed per method: how many seeds returned lambda_2, the median and
largest relative error against lambda_1, and the median and largest number of products.

Methods: ours (``deep.curvature.eigenpairs_of``, tol 1e-3) from the gradient-mixed start z/|z| + g/|g|
with several minimum numbers of products before the first convergence test, and from a random start z;
PyHessian's power iteration (H only: it builds its own Hessian); hessian-eigenthings' Lanczos (fixed
``max_iter``, no convergence test); scipy ``eigsh`` (ARPACK, tol 1e-3, v0 from the seed).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import warnings

import numpy as np
import torch
from scipy.sparse.linalg import eigsh

import deep
from deep.curvature import PreconditionedOperator, curvature_operator
from deep.curvature.build import preconditioner_of
from deep.curvature.eigen import eigenpairs_of
from deep.curvature.operators import CurvatureOperator

THRESHOLD = 38.0  # (2 + 2 beta1) / (1 - beta1) at beta1 = 0.9


def edge_state(first: int, last: int, every: int = 25, eta: float = 1e-3, band: float = 0.03):
    """The gallery MLP after full-batch Adam at ``eta``, at the step of [first, last] (every ``every`` steps)
    where eta * S_P is within ``band`` (relative) of 38 and the top two eigenvalues of P^-1/2 H P^-1/2 are
    closest; returns (model, data, optimizer, step, eta * S_P, relative gap), the optimizer's state that of
    the chosen step (the run is replayed to it)."""
    data = deep.load_digits(1000)
    X, y = data.X, data.y

    def run(steps: int | None):
        model = deep.build_model("mlp", (64,), 10, width=200, depth=2, act="tanh", seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=eta)
        for step in range(1, (steps or last) + 1):
            opt.zero_grad()
            deep.mse(model(X), y).backward()
            opt.step()
            if steps is None and step >= first and step % every == 0:
                yield step, model, opt
        if steps is not None:
            yield steps, model, opt

    best = None
    for step, model, opt in run(None):
        top = deep.preconditioned_sharpness(model, deep.mse, (X, y), opt, k=2, tol=1e-6, max_iter=200)
        gap = (top[0] - top[1]) / top[0]
        if abs(eta * top[0] / THRESHOLD - 1) <= band and (best is None or gap < best[2]):
            best = (step, eta * top[0], gap)
    if best is None:
        raise SystemExit(f"eta * S_P never came within {band:.0%} of {THRESHOLD:g} in steps {first}..{last}")
    step, model, opt = next(run(best[0]))
    return model, (X, y), opt, step, best[1], best[2]


def float64_operators(model, data, opt) -> dict[str, CurvatureOperator]:
    m64 = copy.deepcopy(model).double()
    X, y = data
    h64 = curvature_operator(m64, deep.mse, (X.double(), y.double()))
    p_diag = preconditioner_of(opt, model, h64.layout).diagonal()  # diag(P), float64 (Adam: diagonal)
    return {"H": h64, "P^-1/2 H P^-1/2": PreconditionedOperator(h64, p_diag)}


def top_two(op: CurvatureOperator) -> tuple[float, float, float, float]:
    """lambda_1, lambda_2 and the overlaps |cos| of the operator's start direction (the gradient, mapped like
    the vectors) with u_1 and u_2."""
    vals, vecs = eigsh(op.to_scipy(), k=2, which="LA", tol=1e-10, v0=np.ones(op.n))
    order = np.argsort(vals)[::-1]
    d = op.start_direction().double().numpy()
    d /= np.linalg.norm(d)
    return (float(vals[order[0]]), float(vals[order[1]]), abs(float(d @ vecs[:, order[0]])),
            abs(float(d @ vecs[:, order[1]])))


def methods(op: CurvatureOperator, model, data, name: str):
    """label -> function(seed) -> (value, products) for every method that applies to this operator."""
    out = {}
    for min_iter in (1, 4, 6, 8, 10, 12):
        def ours(seed, m=min_iter):
            res = eigenpairs_of(op, tol=1e-3, seed=seed, min_iter=m, warn=False)
            return res.top, res.hvps
        out[f"ours, z/|z| + g/|g| start, min {min_iter}"] = ours
    for min_iter in (1, 12):
        def ours_random(seed, m=min_iter):
            z = torch.randn(op.n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            res = eigenpairs_of(op, tol=1e-3, seed=seed, init=z.float(), min_iter=m, warn=False)
            return res.top, res.hvps
        out[f"ours, random start z, min {min_iter}"] = ours_random

    def scipy_eigsh(seed):
        start = op.matvecs
        v0 = np.random.default_rng(seed).standard_normal(op.n)
        value = float(eigsh(op.to_scipy(), k=1, which="LA", tol=1e-3, v0=v0)[0][0])
        return value, op.matvecs - start
    out["scipy eigsh (ARPACK), tol 1e-3"] = scipy_eigsh
    try:
        import hessian_eigenthings as he

        lam = he.LambdaOperator(lambda v: op.matvec(v), op.n, dtype=op.dtype)
        for steps in (8, 12, 20):
            def he_lanczos(seed, m=steps):
                return float(he.lanczos(lam, k=1, max_iter=m, which="LA", seed=seed).eigenvalues[0]), m
            out[f"hessian-eigenthings Lanczos, max_iter {steps}"] = he_lanczos
    except ImportError:
        print("  hessian-eigenthings: not installed")
    if name == "H":
        try:
            import sys

            import pyhessian  # noqa: F401
            ph = sys.modules["pyhessian.hessian"]
            for tol in (1e-3, 1e-6):
                def power(seed, tol=tol):
                    calls = {"n": 0}
                    original = ph.hessian_vector_product

                    def counting(*a, **k):
                        calls["n"] += 1
                        return original(*a, **k)
                    ph.hessian_vector_product = counting
                    try:
                        torch.manual_seed(seed)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            h = ph.hessian(copy.deepcopy(model), deep.mse, data=data, cuda=False)
                            value = h.eigenvalues(maxIter=2000, tol=tol, top_n=1)[0][0]
                    finally:
                        ph.hessian_vector_product = original
                    return float(value), calls["n"]
                out[f"PyHessian power iteration, tol {tol:g}"] = power
        except ImportError:
            print("  PyHessian: not installed")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--first", type=int, default=250, help="first Adam step searched for the edge (the gallery's "
                    "eta * S_P sits at 38 from about step 250 to its end at 2000)")
    ap.add_argument("--last", type=int, default=2000, help="last Adam step searched")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.1f}")
    model, data, opt, steps, eta_s_p, gap = edge_state(args.first, args.last)
    print(f"digits MLP after {steps} Adam steps (eta 1e-3; of steps {args.first}..{args.last} at the edge, the one "
          f"whose top two eigenvalues of P^-1/2 H P^-1/2 are closest, {gap:.2%} apart): eta * S_P = {eta_s_p:.2f} "
          f"(threshold {THRESHOLD:g})")
    ops64 = float64_operators(model, data, opt)
    h32 = curvature_operator(model, deep.mse, data)
    ops32 = {"H": h32, "P^-1/2 H P^-1/2": curvature_operator(model, deep.mse, data, opt)}
    for name, op in ops32.items():
        lam1, lam2, c1, c2 = top_two(ops64[name])
        print(f"\n{name}: lambda_1 = {lam1:.6g}, lambda_2 = {lam2:.6g}, gap (lambda_1 - lambda_2)/lambda_1 = "
              f"{(lam1 - lam2) / lam1:.2%}; the gradient's |cos| with u_1 {c1:.3f}, with u_2 {c2:.3f}")
        print("| method | returned lambda_2 | median rel. error | max rel. error | median products | max products |")
        print("|---|---|---|---|---|---|")
        for label, fn in methods(op, model, data, name).items():
            values, products = [], []
            for seed in range(args.seeds):
                value, count = fn(seed)
                values.append(value)
                products.append(count)
            errors = [abs(v / lam1 - 1) for v in values]
            second = sum(abs(v - lam2) < abs(v - lam1) for v in values)
            print(f"| {label} | {second} of {args.seeds} | {statistics.median(errors):.1e} | {max(errors):.1e} | "
                  f"{statistics.median(products):g} | {max(products)} |", flush=True)


if __name__ == "__main__":
    main()
