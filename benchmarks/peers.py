"""The curvature toolkit side by side with PyHessian, curvlinops and hessian-eigenthings (not a test).

Run: ``.venv/bin/python benchmarks/peers.py`` after installing the ``peers`` extra (see
``benchmarks/README.md`` for the command that keeps the CPU torch).  A peer that is not installed is
reported and skipped.  One process, one torch thread (and one BLAS thread), float32, full batch.

1. Top eigenvalue S of H at an Adam-trained state of three networks (digits MLP 64-200-200-10 tanh,
   digits CNN conv16-conv16-linear tanh, a character Transformer on Python's docs): ours at the default
   settings against PyHessian's power iteration (tol 1e-3 and 1e-6), hessian-eigenthings' Lanczos at the
   smallest ``max_iter`` whose error is <= 1e-5 (its steps are fixed, not tested), and curvlinops'
   operator with scipy ``eigsh`` (tol 1e-3).  Accuracy against scipy ``eigsh`` (tol 1e-10) on a float64
   copy.  Times are medians over interleaved repeats, each including operator construction.
2. HVP cost of each of our strategies against one gradient, and warm-start HVPs per measurement
   (``SharpnessTracker`` every 10 Adam steps).
3. Trace on a small MLP (digits 64-20-10 tanh, 300 images) with a budget of 100 products: rms relative
   error over seeds against the exact trace of the dense float64 Hessian, for our three estimators and the
   peers'.  4. Spectral density: whether each peer's SLQ runs, and its time against ours.  5. lambda_max of
   the Gauss-Newton matrix against curvlinops' GGN.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import numpy as np
import torch
from scipy.sparse.linalg import eigsh
from torch import nn

import deep
from deep.curvature.hessian import hessian_operator
from deep.curvature.trace import ESTIMATORS


class HalfSquare(nn.Module):
    """The paper's square loss 1/(2n) sum ||f - y||^2 as a torch module with reduction 'mean'."""

    reduction = "mean"

    def forward(self, f, y):
        return 0.5 * ((f - y) ** 2).sum(dim=1).mean()


class TokenCE(nn.Module):
    """Cross-entropy over every token of (b, T, V) logits, reduction 'mean'."""

    reduction = "mean"

    def forward(self, f, y):
        return nn.functional.cross_entropy(f.reshape(-1, f.shape[-1]), y.reshape(-1))


def networks(steps: int):
    """name -> (model after Adam training, [(X, y)], loss module)."""
    digits = deep.load_digits(1000)
    text = deep.load_text(64, 32)
    specs = {
        "MLP": (deep.build_model("mlp", (64,), 10, width=200, depth=2, act="tanh", seed=0), digits.X, digits.y,
                HalfSquare(), steps),
        "CNN": (nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, padding=1), nn.Tanh(),
                              nn.Flatten(), nn.Linear(16 * 8 * 8, 10)), digits.X.view(-1, 1, 8, 8), digits.y,
                HalfSquare(), steps // 2),
        "Transformer": (deep.build_model("transformer", (32,), text.num_classes, width=64, depth=2, seed=0),
                        text.X, text.y, TokenCE(), steps // 2),
    }
    out = {}
    for name, (model, X, y, loss, n_steps) in specs.items():
        torch.manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(n_steps):
            opt.zero_grad()
            loss(model(X), y).backward()
            opt.step()
        out[name] = (model, [(X, y)], loss, opt)
    return out


def medians(fns, reps):
    """Median wall time of each function, calls interleaved so that load changes hit all alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def reference(model, data, loss) -> float:
    """lambda_max(H) by scipy eigsh (tol 1e-10) on a float64 copy of model and data."""
    m64 = copy.deepcopy(model).double()
    d64 = [(X.double() if X.is_floating_point() else X, y.double() if y.is_floating_point() else y) for X, y in data]
    op = hessian_operator(m64, loss, d64, strategy="reverse_over_reverse")
    return float(eigsh(op.to_scipy(), k=1, which="LA", tol=1e-10, v0=np.ones(op.n))[0][0])


def counted(op):
    op.count = 0
    inner = op.matvec

    def mv(v):
        op.count += 1
        return inner(v)
    op.matvec = mv
    return op


def peer_top_eigenvalue(model, data, loss, ref, reps, results):
    """Append (label, seconds, HVPs, value) rows for each installed peer."""
    try:
        import sys

        import pyhessian  # noqa: F401
        ph = sys.modules["pyhessian.hessian"]
        for tol in (1e-3, 1e-6):
            calls = {"n": 0}
            original = ph.hessian_vector_product

            def hvp_counted(*a, **k):
                calls["n"] += 1
                return original(*a, **k)

            def run(tol=tol):
                torch.manual_seed(1)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    h = ph.hessian(copy.deepcopy(model), loss, data=data[0], cuda=False)
                    return h.eigenvalues(maxIter=2000, tol=tol, top_n=1)[0][0]
            ph.hessian_vector_product = hvp_counted
            value = run()
            ph.hessian_vector_product = original
            results.append((f"PyHessian power iteration, tol {tol:g}", run, calls["n"], value))
    except ImportError:
        print("  PyHessian: not installed")
    try:
        import hessian_eigenthings as he

        def he_run(m):
            op = he.HessianOperator(model, data, he.supervised_loss(loss))
            return float(he.lanczos(op, k=1, max_iter=m, which="LA", seed=0).eigenvalues[0])
        steps = next((m for m in range(4, 61, 2) if abs(he_run(m) / ref - 1) <= 1e-5), 60)
        results.append((f"hessian-eigenthings Lanczos, max_iter {steps}", lambda: he_run(steps), steps, he_run(steps)))
    except ImportError:
        print("  hessian-eigenthings: not installed")
    try:
        from curvlinops import HessianLinearOperator

        params = [p for p in model.parameters() if p.requires_grad]

        def cl_run():
            op = HessianLinearOperator(model, loss, params, data, check_deterministic=False).to_scipy()
            return float(eigsh(op, k=1, which="LA", tol=1e-3, v0=np.ones(op.shape[0]))[0][0])
        op = counted(HessianLinearOperator(model, loss, params, data, check_deterministic=False).to_scipy())
        value = float(eigsh(op, k=1, which="LA", tol=1e-3, v0=np.ones(op.shape[0]))[0][0])
        results.append(("curvlinops + scipy eigsh, tol 1e-3", cl_run, op.count, value))
    except ImportError:
        print("  curvlinops: not installed")


def top_eigenvalue(nets, reps):
    print("\n[1] top eigenvalue of H, cold start (time includes building the operator)")
    for name, (model, data, loss, _) in nets.items():
        ref = reference(model, data, loss)
        n = sum(p.numel() for p in model.parameters())
        print(f"\n  {name} ({n} parameters), reference lambda_max = {ref:.7g}")
        ours = deep.top_eigenpairs(model, loss, data)
        fwd = deep.top_eigenpairs(model, loss, data, strategy="forward_over_reverse", min_iter=20)
        rows = [("ours, defaults (" + ours.strategy + ")", lambda: deep.top_eigenpairs(model, loss, data),
                 ours.hvps, ours.top),
                ("ours, before: forward-over-reverse, >= 20 HVPs",
                 lambda: deep.top_eigenpairs(model, loss, data, strategy="forward_over_reverse", min_iter=20),
                 fwd.hvps, fwd.top)]
        peer_top_eigenvalue(model, data, loss, ref, reps, rows)
        times = medians([r[1] for r in rows], reps)
        t_ours = times[0]
        for (label, _, hvps, value), t in zip(rows, times):
            print(f"    {label:52s} {t * 1e3:8.1f} ms {hvps:5d} HVPs  rel.err {abs(value / ref - 1):.1e}"
                  f"   ours / this = {t_ours / t:.2f}")


def hvp_costs(nets, reps):
    print("\n[2] one HVP against one gradient (ms), and warm-start HVPs per measurement")
    for name, (model, data, loss, opt) in nets.items():
        X, y = data[0]
        n = sum(p.numel() for p in model.parameters())
        v = torch.randn(n, generator=torch.Generator().manual_seed(0))
        ops = {s: hessian_operator(model, loss, data, strategy=s)
               for s in ("forward_over_reverse", "reverse_over_reverse", "cached_double_backward")}
        ops["cached_double_backward"](v)  # builds the kept graph

        def gradient():
            model.zero_grad()
            loss(model(X), y).backward()
        t = medians([gradient] + [lambda op=op: op(v) for op in ops.values()], 3 * reps)
        model.zero_grad()
        print(f"    {name:12s} gradient {t[0] * 1e3:7.1f} | " + " | ".join(
            f"{s} {ti * 1e3:7.1f} ({ti / t[0]:.2f}x)" for s, ti in zip(ops, t[1:])))
        tracker = deep.SharpnessTracker()
        model2 = copy.deepcopy(model)
        opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
        opt2.load_state_dict(opt.state_dict())
        s_hvps, p_hvps = [], []
        for step in range(1, 201):
            opt2.zero_grad()
            loss(model2(X), y).backward()
            opt2.step()
            if step % 10 == 0:
                m = tracker.measure(model2, loss, data, opt2)
                if step > 10:
                    s_hvps.append(m["hvps_sharpness"])
                    p_hvps.append(m["hvps_preconditioned"])
        cold_s = deep.top_eigenpairs(model2, loss, data).hvps
        cold_p = deep.top_eigenpairs(model2, loss, data, opt2).hvps
        print(f"    {name:12s} warm start every 10 Adam steps, 19 measurements: median HVPs S {np.median(s_hvps):.0f}, "
              f"S_P {np.median(p_hvps):.0f} (cold at the end: S {cold_s}, S_P {cold_p})")


def trace_comparison(seeds):
    print("\n[3] trace, 100 HVPs, digits MLP 64-20-10 tanh (1510 parameters) after 200 Adam steps: rms relative"
          f" error over {seeds} seeds against the dense float64 trace")
    d = deep.load_digits(300)
    model = deep.build_model("mlp", (64,), 10, width=20, depth=1, act="tanh", seed=0).double()
    X, y, loss = d.X.double(), d.y.double(), HalfSquare()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        loss(model(X), y).backward()
        opt.step()
    exact = float(torch.trace(hessian_operator(model, loss, (X, y)).to_dense()))
    model_f, data_f = copy.deepcopy(model).float(), [(X.float(), y.float())]
    estimators = {f"ours {m}": (lambda s, m=m: deep.hessian_trace(model_f, loss, data_f, hvps=100, estimator=m, seed=s).estimate)
                  for m in ESTIMATORS}
    try:
        import pyhessian

        def ph_trace(s):
            torch.manual_seed(s)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return float(np.mean(pyhessian.hessian(copy.deepcopy(model_f), loss, data=data_f[0], cuda=False)
                                     .trace(maxIter=100, tol=0.0)))
        estimators["PyHessian trace (Hutchinson)"] = ph_trace
    except ImportError:
        pass
    try:
        from curvlinops import HessianLinearOperator, hutchpp_trace, xtrace
        params = list(model_f.parameters())

        def cl(fn, s, budget):
            torch.manual_seed(s)
            return float(fn(HessianLinearOperator(model_f, loss, params, data_f, check_deterministic=False), budget))
        estimators["curvlinops hutchpp_trace (99: a multiple of 3)"] = lambda s: cl(hutchpp_trace, s, 99)
        estimators["curvlinops xtrace"] = lambda s: cl(xtrace, s, 100)
    except ImportError:
        pass
    try:
        import hessian_eigenthings as he
        for m in ("hutch++", "hutchinson"):
            estimators[f"hessian-eigenthings {m}"] = (lambda s, m=m: he.trace(
                he.HessianOperator(model_f, data_f, he.supervised_loss(loss)), num_matvecs=100, method=m,
                seed=s).estimate)
    except ImportError:
        pass
    print(f"    exact trace {exact:.6g}")
    for label, fn in estimators.items():
        t0 = time.perf_counter()
        errors = np.array([fn(s) / exact - 1 for s in range(seeds)])
        seconds = (time.perf_counter() - t0) / seeds
        print(f"    {label:48s} rms rel.err {np.sqrt(np.mean(errors ** 2)):.4f}  max {np.abs(errors).max():.4f}"
              f"  {seconds:.2f} s per estimate")


def density_comparison(nets, reps):
    print("\n[4] spectral density (stochastic Lanczos quadrature), digits MLP, 1 probe of 60 Lanczos steps")
    model, data, loss, _ = nets["MLP"]
    rows = [("ours spectral_density", lambda: deep.spectral_density(model, loss, data, steps=60, probes=1))]
    try:
        import pyhessian
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pyhessian.hessian(copy.deepcopy(model), loss, data=data[0], cuda=False).density(iter=60, n_v=1)
            rows.append(("PyHessian density", lambda: pyhessian.hessian(copy.deepcopy(model), loss, data=data[0],
                                                                        cuda=False).density(iter=60, n_v=1)))
        except Exception as err:  # noqa: BLE001 - report why the peer fails
            print(f"    PyHessian density fails on torch {torch.__version__}: {type(err).__name__}: "
                  f"{str(err).splitlines()[0][:90]}")
    except ImportError:
        pass
    try:
        import hessian_eigenthings as he
        rows.append(("hessian-eigenthings spectral_density", lambda: he.spectral_density(
            he.HessianOperator(model, data, he.supervised_loss(loss)), num_runs=1, lanczos_steps=60, num_grid_points=1000, seed=0)))
    except ImportError:
        pass
    times = medians([r[1] for r in rows], reps)
    for (label, _), t in zip(rows, times):
        print(f"    {label:40s} {t * 1e3:8.1f} ms   ours / this = {times[0] / t:.2f}")


def ggn_comparison(nets, reps):
    print("\n[5] lambda_max of the Gauss-Newton matrix G, digits MLP, loss torch.nn.MSELoss() (curvlinops' GGN needs it)")
    model, data, _, _ = nets["MLP"]
    loss = nn.MSELoss()
    rows = [("ours sharpness(curvature='ggn')", lambda: deep.sharpness(model, loss, data, curvature="ggn"))]
    try:
        from curvlinops import GGNLinearOperator
        params = list(model.parameters())

        def cl_run():
            op = GGNLinearOperator(model, loss, params, data, check_deterministic=False).to_scipy()
            return float(eigsh(op, k=1, which="LA", tol=1e-3, v0=np.ones(op.shape[0]))[0][0])
        rows.append(("curvlinops GGNLinearOperator + eigsh, tol 1e-3", cl_run))
    except ImportError:
        pass
    values = [fn() for _, fn in rows]
    times = medians([r[1] for r in rows], reps)
    for (label, _), value, t in zip(rows, values, times):
        print(f"    {label:48s} {value:.7g}  {t * 1e3:8.1f} ms   ours / this = {times[0] / t:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="Adam steps of the MLP (CNN, Transformer: half)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=10, help="seeds per trace estimator")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits  # ships with scikit-learn
    threadpool_limits(1)
    print(f"torch {torch.__version__}, 1 thread, float32, CPU")
    nets = networks(args.steps)
    top_eigenvalue(nets, args.reps)
    hvp_costs(nets, args.reps)
    trace_comparison(args.seeds)
    density_comparison(nets, args.reps)
    ggn_comparison(nets, args.reps)


if __name__ == "__main__":
    main()
