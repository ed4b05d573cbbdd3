"""What the central flows cost, and the two routines they use instead of library ones, measured side by side.

1. The complementarity solve (aeos_theory.complementarity) against CVXPY (the authors' choice, with the
   Clarabel solver) on the problems a flow meets: random k x k problems with a PSD map B (a Gram matrix)
   and the same with B of rank k (the degenerate case of several directions at the edge); time per solve
   and the largest difference of the solutions.  CVXPY is optional (`pip install cvxpy`); missing, it is
   skipped.
2. The damped Chebyshev step (aeos_theory.chebyshev) against scipy.integrate.solve_ivp (RK45, and LSODA,
   which switches to an implicit method) on a stiff flow of the kind GD's and RMSProp's are: dw/dt =
   -eta P^-1 H w on a dense quadratic with eta * lambda_max(P^-1 H) = 38, to t = 200 steps; gradient
   evaluations and the error against the exact solution expm(-eta P^-1 H t) w0.
3. A flow against the discrete run it predicts over the same T steps, on the digits MLP of the
   central_flows figure (300 images, 64-32-32-10 tanh; GD, RMSProp, Adam, and AdamW with weight decay
   0.1 under a warmup then cosine) and on the gallery's Transformer (32.7k parameters, AdamW): wall time
   of the whole call (data, model and every step), its ratio to the discrete run (``deep.run``,
   measuring S and S_P every 25 steps as the figure's runs do), gradients and Hessian-vector products
   per optimizer step; float64 flows, and float32 for AdamW.  Interleaved, best of ``--repeats``; the
   load average is printed beside the numbers.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/central_flow.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import scipy.linalg
from scipy.integrate import solve_ivp

from aeos_theory.chebyshev import chebyshev_step, stages_for
from aeos_theory.complementarity import solve_complementarity


def _problems(k: int, rank: int, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Problems with a known solution: B a Gram matrix of ``rank`` symmetric matrices, X* a rank-1 PSD
    matrix, A* PSD on the orthogonal complement of X*'s range, and alpha = A* - B[X*] (so X* and A* = A(X*)
    are complementary)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        mats = rng.standard_normal((rank, k, k))
        mats = mats + mats.transpose(0, 2, 1)
        flat = mats.reshape(rank, -1)
        beta = (flat.T @ flat).reshape(k, k, k, k) / rank
        x = rng.standard_normal(k)
        complement = np.eye(k) - np.outer(x, x) / (x @ x)
        a_star = complement @ (lambda m: m @ m.T)(rng.standard_normal((k, k))) @ complement
        out.append((a_star - (beta.reshape(k * k, k * k) @ np.outer(x, x).reshape(-1)).reshape(k, k), beta))
    return out


def _kkt(alpha: np.ndarray, beta: np.ndarray, x: np.ndarray | None) -> float:
    """max(-lambda_min(X), -lambda_min(A(X)), |<X, A(X)>|) / |alpha|: 0 for an exact solution."""
    if x is None:
        return np.inf
    k = alpha.shape[0]
    a = alpha + (beta.reshape(k * k, k * k) @ x.reshape(-1)).reshape(k, k)
    return max(-np.linalg.eigvalsh(x)[0], -np.linalg.eigvalsh(0.5 * (a + a.T))[0], abs(np.sum(x * a)), 0.0) / np.abs(alpha).max()


def _cvxpy_solver(k: int):
    import cvxpy as cp

    A = cp.Parameter((k, k), symmetric=True)
    L = cp.Parameter((k * k, k * k))
    X = cp.Variable((k, k), PSD=True)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L.T @ cp.vec(X, order="F")) + cp.sum(cp.multiply(A, X))))

    def solve(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
        b = beta.reshape(k * k, k * k)
        values, vectors = np.linalg.eigh(0.5 * (b + b.T))
        A.value, L.value = 0.5 * (alpha + alpha.T), vectors @ np.diag(np.sqrt(np.maximum(values, 0))) @ vectors.T
        try:
            problem.solve(solver="CLARABEL")
        except Exception:  # cvxpy.error.SolverError
            return None
        return X.value

    return solve


def complementarity(count: int) -> None:
    try:
        import cvxpy  # noqa: F401
        have_cvxpy = True
    except ImportError:
        have_cvxpy = False
        print("cvxpy is not installed: only our solver is timed (pip install cvxpy)")
    print(f"{'k':>2} {'B':>10} {'ours ms':>9} {'cvxpy ms':>9} {'cvxpy/ours':>10} {'KKT residual: ours':>19} "
          f"{'cvxpy':>9}")
    for k in (1, 2, 3, 4):
        for rank, kind in ((k * (k + 1) // 2 + 2, "definite"), (k, f"rank {k}")):
            problems = _problems(k, rank, count, seed=k)
            start = time.perf_counter()
            ours = [solve_complementarity(a, b) for a, b in problems]
            t_ours = (time.perf_counter() - start) / count * 1e3
            line = f"{k:>2} {kind:>10} {t_ours:9.3f}"
            residual = max(_kkt(a, b, x) for (a, b), x in zip(problems, ours))
            if have_cvxpy:
                solver = _cvxpy_solver(k)
                solver(*problems[0])  # compile once
                start = time.perf_counter()
                theirs = [solver(a, b) for a, b in problems]
                t_theirs = (time.perf_counter() - start) / count * 1e3
                failed = sum(y is None for y in theirs)
                theirs_residual = max(_kkt(a, b, y) for (a, b), y in zip(problems, theirs) if y is not None)
                line += (f" {t_theirs:9.3f} {t_theirs / t_ours:10.1f} {residual:19.1e} {theirs_residual:9.1e}"
                         + (f"  (cvxpy failed on {failed} of {count})" if failed else ""))
            else:
                line += f" {'':9} {'':10} {residual:19.1e}"
            print(line)


def stiff_flow() -> None:
    rng = np.random.default_rng(0)
    d = 50
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    H = (q * np.logspace(0, 2, d)) @ q.T
    p = np.exp(rng.uniform(-1, 1, d))
    eta = 38.0 / np.linalg.eigvalsh(H / np.sqrt(p)[:, None] / np.sqrt(p)[None, :])[-1]
    A = -eta * H / p[:, None]  # dw/dt = A w: eigenvalues of eta P^-1 H in [.., 38]
    w0, T = rng.standard_normal(d), 200.0
    exact = scipy.linalg.expm(A * T) @ w0
    scale = np.linalg.norm(scipy.linalg.expm(A * 20.0) @ w0)  # the slow part that is left

    counted = {"n": 0}

    def f(t, w):
        counted["n"] += 1
        return A @ w

    print(f"\nstiff flow dw/dt = -eta P^-1 H w, d = {d}, eta lambda_max = 38, t = 0..{T:g}")
    print(f"{'integrator':>28} {'gradients':>10} {'ms':>8} {'error / |w(20)|':>16}")
    for dt in (1.0, 0.5):
        counted["n"] = 0
        start = time.perf_counter()
        w = w0.copy()
        for _ in range(int(T / dt)):
            w = chebyshev_step(w, lambda v: f(0, v), dt, stages_for(dt * 38.0))
        ms = (time.perf_counter() - start) * 1e3
        print(f"{f'ours, dt = {dt:g} ({stages_for(dt * 38.0)} stages)':>28} {counted['n']:10d} {ms:8.1f} "
              f"{np.linalg.norm(w - exact) / scale:16.2e}")
    for method in ("RK45", "LSODA"):
        counted["n"] = 0
        start = time.perf_counter()
        sol = solve_ivp(f, (0, T), w0, method=method, rtol=1e-3, atol=1e-6 * scale)
        ms = (time.perf_counter() - start) * 1e3
        extra = " (+ Jacobians by differences)" if method == "LSODA" else ""
        print(f"{f'scipy {method}, rtol 1e-3':>28} {counted['n']:10d} {ms:8.1f} "
              f"{np.linalg.norm(sol.y[:, -1] - exact) / scale:16.2e}{extra}")


#: The gallery's MLP (the central_flows figure at quick scale) and its runs: (label, optimizer, hyper, steps, extra).
MLP = dict(dataset="digits", n=300, model="mlp", width=32, depth=2, activation="tanh", loss="mse", seed=0, threads=1)
MLP_RUNS = (("GD (eta 0.2)", "gd", {"eta": 0.2}, 600, {}),
            ("RMSProp (eta 1e-3, beta2 0.99)", "rmsprop", {"eta": 1e-3, "beta2": 0.99}, 600, {}),
            ("Adam (eta 3e-3)", "adam", {"eta": 3e-3}, 1000, {}),
            ("AdamW (eta 1e-2, wd 0.1, warmup 100 + cosine)", "adamw", {"eta": 1e-2, "weight_decay": 0.1}, 1000,
             {"schedule": "warmup_cosine", "warmup_steps": 100}))

#: The gallery's Transformer (the transformer figure at quick scale), under AdamW with a warmup and a cosine.
TRANSFORMER = dict(dataset="text", model="transformer", loss="ce", activation="gelu", n=256, context=16, width=32,
                   depth=2, chunk_size=256, seed=0, threads=1, optimizer="adamw",
                   hyper={"eta": 1e-3, "weight_decay": 0.1}, schedule="warmup_cosine")


def _timed(work) -> tuple[float, object]:
    start = time.perf_counter()
    out = work()
    return time.perf_counter() - start, out


def _compare(label: str, config: dict, repeats: int, float32: bool) -> None:
    """Discrete run (deep.run, measuring S and S_P on its grid) against its stable and central flows over
    the same steps, interleaved, best of ``repeats``; the central flow in float32 too when asked."""
    import deep
    from deep.flows.network import flow_of_run

    def discrete():
        with tempfile.TemporaryDirectory() as folder:
            return deep.read_metrics(deep.run(deep.TrainConfig(**config), folder + "/r", progress=False))

    kinds = {"discrete run": discrete, "stable flow": lambda: flow_of_run(config, central=False),
             "central flow": lambda: flow_of_run(config)}
    if float32:
        kinds["central flow, float32"] = lambda: flow_of_run(config, dtype="float32")
    best: dict[str, tuple[float, object]] = {}
    for _ in range(repeats):
        for kind, work in kinds.items():
            seconds, out = _timed(work)
            if kind not in best or seconds < best[kind][0]:
                best[kind] = (seconds, out)
    steps = config["steps"]
    reference = best["discrete run"][0]
    for kind, (seconds, out) in best.items():
        if kind == "discrete run":
            gradients, hvps, note = 1.0, sum(r["hvps"] for r in out) / steps, ""
        else:
            taken = max(out.step, 1)
            gradients, hvps = out.records["gradients"][-1] / taken, out.records["hvps"][-1] / taken
            note = "" if out.status == "completed" else f"  ({out.status} at step {out.step:g})"
        print(f"{label:>46} {kind:>22} {seconds:8.1f} {seconds / steps * 1e3:8.1f} {gradients:6.1f} {hvps:6.1f} "
              f"{seconds / reference:7.2f}{note}")
        label = ""


def network_cost(repeats: int, transformer_steps: int) -> None:
    import torch

    torch.set_num_threads(1)
    print(f"\nflows against their discrete runs over the same steps, 1 thread, best of {repeats} interleaved; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'run':>46} {'process':>22} {'s':>8} {'ms/step':>8} {'grad/':>6} {'HVP/':>6} {'x run':>7}")
    for label, optimizer, hyper, steps, extra in MLP_RUNS:
        config = dict(MLP, optimizer=optimizer, hyper=hyper, steps=steps, measure_every=25, **extra)
        _compare(f"MLP, {label}, {steps} steps", config, repeats, float32=optimizer == "adamw")
    if transformer_steps:
        config = dict(TRANSFORMER, steps=transformer_steps, measure_every=max(1, transformer_steps // 4),
                      warmup_steps=max(1, transformer_steps // 10))
        _compare(f"Transformer (32.7k parameters), AdamW, {transformer_steps} steps", config, 1, float32=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="complementarity problems per case (default 40)")
    parser.add_argument("--skip-network", action="store_true", help="only the two small benchmarks")
    parser.add_argument("--repeats", type=int, default=2, help="timings per MLP process, best kept (default 2)")
    parser.add_argument("--transformer-steps", type=int, default=40,
                        help="optimizer steps of the Transformer comparison (0: skip; default 40)")
    parser.add_argument("--only-network", action="store_true", help="skip the two small benchmarks")
    args = parser.parse_args()
    if not args.only_network:
        complementarity(args.count)
        stiff_flow()
    if not args.skip_network:
        network_cost(args.repeats, args.transformer_steps)


if __name__ == "__main__":
    main()
