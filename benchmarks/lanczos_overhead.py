"""The eigensolver's own cost: Lanczos on operators whose products are nearly free, against scipy's eigsh.

Run:  .venv/bin/python benchmarks/lanczos_overhead.py

On a network a Lanczos step is dominated by its Hessian-vector product; what the solver adds (the
three-term recurrence, full reorthogonalisation against the basis, the small tridiagonal eigenproblem,
the convergence test) is measured here with diagonal operators, whose product is one multiplication:
n = 2000 and 100 000, k = 1 and 5, tolerances 1e-3 and 1e-8, a planted spectrum with a small top gap.
Prints milliseconds per solve and per step (best of 5), the products used, and scipy's ``eigsh`` (ARPACK)
on the same operator and start vector at the same tolerance.  Every solve is checked against the
planted eigenvalues.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from deep.curvature.lanczos import lanczos


def _best_of(fn, repeats: int = 5) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.1f}")
    print("| n | k | tol | ours ms (steps) | ms / step | eigsh ms (products) | eigsh / ours |")
    print("|---|---|---|---|---|---|---|")
    for n in (2000, 100_000):
        spectrum = np.concatenate([[10.0, 9.99, 9.9, 9.5, 9.0], np.linspace(0.0, 8.0, n - 5)])
        d = torch.tensor(spectrum, dtype=torch.float64)
        start = torch.ones(n, dtype=torch.float64)
        for k in (1, 5):
            for tol in (1e-3, 1e-8):
                ours_t, res = _best_of(lambda: lanczos(lambda v: d * v, n, k=k, tol=tol, max_iter=300, init=start,
                                                       dtype=torch.float64, warn=False))
                assert np.allclose(res.eigenvalues.numpy(), spectrum[:k], rtol=max(tol, 1e-6)), res.eigenvalues
                op = LinearOperator((n, n), matvec=lambda x: spectrum * x.ravel(), dtype=np.float64)
                ref_t, ref = _best_of(lambda: eigsh(op, k=k, which="LA", tol=tol, v0=start.numpy(),
                                                    return_eigenvectors=False))
                ncv = min(n, max(2 * k + 1, 20))
                print(f"| {n} | {k} | {tol:g} | {1e3 * ours_t:.2f} ({res.matvecs}) | {1e3 * ours_t / res.matvecs:.3f} | "
                      f"{1e3 * ref_t:.2f} (ncv {ncv}) | {ref_t / ours_t:.2f} |")


if __name__ == "__main__":
    main()
