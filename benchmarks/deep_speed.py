"""Speed of the sharpness measurement (not a test).  Run: ``.venv/bin/python benchmarks/deep_speed.py``.

On the digits MLP 64-200-200-10 tanh (the paper's digits network: first 1000 images / 16, MSE 1/2 ||f - onehot||^2
averaged over examples) and on a small tanh CNN on the same 8x8 images, prints in one run:

1. HVP time / gradient time: forward-over-reverse (``jvp(grad)``), reverse-over-reverse and the cached
   double backward (the default, :mod:`deep.curvature.hessian`) HVPs against a plain ``loss.backward()``
   full-batch gradient (target <= 3).
2. HVPs per measurement at tol = 1e-3, cold (random start) vs warm (``SharpnessTracker``: previous
   eigenvector) during an actual full-batch Adam run (target: warm <= 1/2 cold), for S and S_P.
3. Time to the top eigenvalue at tol = 1e-3: our Lanczos with forward-over-reverse HVPs (at least
   ``COLD_MIN_ITER`` steps before the first convergence test) vs scipy ``eigsh`` (ARPACK, same residual
   criterion, same start vector, same HVP operator), and PyHessian's power iteration (its tol = 1e-3 on
   the relative change of the eigenvalue) when ``pyhessian`` is installed; accuracy against a tight
   (tol = 1e-8) reference.  Measured at the end of the Adam run, where the top eigenvalues are close.

Every ratio is against a reference measured in the same run.  Arguments: ``--steps`` (Adam steps
for the MLP; the CNN runs half), ``--measure-every``, ``--reps`` (timing repetitions, median).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from sklearn.datasets import load_digits
from torch import nn

from deep.curvature.lanczos import lanczos
from deep.curvature import PreconditionedOperator, curvature_operator
from deep.curvature.eigen import COLD_MIN_ITER
from deep.measure import SharpnessTracker, top_eigenpairs
from deep.curvature.preconditioners import preconditioner_diagonal


def mse(outputs, targets):
    return 0.5 * ((outputs - targets) ** 2).sum(dim=1).mean()


def digits(n: int = 1000, image: bool = False):
    d = load_digits()
    x = torch.tensor(d.data[:n] / 16.0, dtype=torch.float32)
    if image:
        x = x.view(n, 1, 8, 8)
    y = nn.functional.one_hot(torch.tensor(d.target[:n]), 10).float()
    return x, y


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 10))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, padding=1), nn.Tanh(),
                         nn.Flatten(), nn.Linear(16 * 8 * 8, 10))


def median_times(fns, reps: int) -> list[float]:
    """Median wall time of each function, calls interleaved so that load changes hit all alike."""
    for fn in fns:
        fn()
        fn()  # warm-up (torch.func builds its decompositions on first use)
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def median_time(fn, reps: int) -> float:
    return median_times([fn], reps)[0]


def hvp_vs_grad(model, data, reps):
    x, y = data[0]

    def gradient():
        model.zero_grad()
        mse(model(x), y).backward()

    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0))
    fwd = curvature_operator(model, mse, data, strategy="forward_over_reverse")
    rev = curvature_operator(model, mse, data, strategy="reverse_over_reverse")
    cached = curvature_operator(model, mse, data, strategy="cached_double_backward")
    cached(v)  # builds and keeps the gradient graph
    g, t_fwd, t_rev, t_cached, t_first = median_times(
        [gradient, lambda: fwd(v), lambda: rev(v), lambda: cached(v),
         lambda: curvature_operator(model, mse, data, strategy="cached_double_backward")(v)], 4 * reps)
    t_build = t_first - t_cached
    model.zero_grad()
    print(f"  gradient (loss.backward)      {g * 1e3:8.2f} ms")
    print(f"  HVP forward-over-reverse      {t_fwd * 1e3:8.2f} ms   HVP/grad = {t_fwd / g:.2f}   (target <= 3)")
    print(f"  HVP reverse-over-reverse      {t_rev * 1e3:8.2f} ms   HVP/grad = {t_rev / g:.2f}")
    print(f"  HVP cached_double_backward    {t_cached * 1e3:8.2f} ms   HVP/grad = {t_cached / g:.2f}"
          f"   (+ {t_build * 1e3:.1f} ms once per measurement to build the graph = {t_build / g:.2f} grad)")


def adam_run(model, data, opt, first, last, every, lr, verbose=True, snapshot_at=None):
    """Adam steps first..last; at every multiple of ``every``: a warm (tracker) and a cold measurement."""
    x, y = data[0]
    tracker = SharpnessTracker(tol=1e-3)
    rows, snapshot, previous = [], None, None
    t_warm = t_cold = 0.0
    for step in range(first, last + 1):
        opt.zero_grad()
        loss = mse(model(x), y)
        loss.backward()
        opt.step()
        if step == snapshot_at:
            snapshot = (copy.deepcopy(model), copy.deepcopy(opt.state_dict()))
        if step % every:
            continue
        previous = tracker.state_dict()  # the eigenvectors of the measurement before this one
        t0 = time.perf_counter()
        warm = tracker.measure(model, mse, data, opt)
        t_warm += time.perf_counter() - t0
        t0 = time.perf_counter()
        cold_s = top_eigenpairs(model, mse, data, tol=1e-3)
        cold_p = top_eigenpairs(model, mse, data, opt, tol=1e-3)
        t_cold += time.perf_counter() - t0
        worst = max(abs(warm["sharpness"] / cold_s.top - 1), abs(warm["preconditioned_sharpness"] / cold_p.top - 1))
        note = ""
        if worst > 1e-4:  # which one is right? a tight reference decides
            ref_s = top_eigenpairs(model, mse, data, tol=1e-7, max_iter=400).top
            ref_p = top_eigenpairs(model, mse, data, opt, tol=1e-7, max_iter=400).top
            note = (f"  [warm/cold differ {worst:.1e}: rel.err warm {abs(warm['sharpness'] / ref_s - 1):.1e}/"
                    f"{abs(warm['preconditioned_sharpness'] / ref_p - 1):.1e}, cold {abs(cold_s.top / ref_s - 1):.1e}/"
                    f"{abs(cold_p.top / ref_p - 1):.1e} (S/S_P)]")
        rows.append((step, loss.item(), warm, cold_s, cold_p, worst, note))
    if verbose:
        print(f"  {'step':>5} {'loss':>9} {'S':>8} {'eta*S_P':>8} | HVPs for S: cold warm | for S_P: cold warm")
    for step, loss, warm, cs, cp, _, note in rows:
        if verbose or note:
            print(f"  {step:5d} {loss:9.2e} {warm['sharpness']:8.2f} {lr * warm['preconditioned_sharpness']:8.2f} |"
                  f"        {cs.hvps:4d} {warm['hvps_sharpness']:4d} |        {cp.hvps:4d} "
                  f"{warm['hvps_preconditioned']:4d}{note}")
    later = rows[1:]  # the first measurement has nothing to warm-start from
    if not later:
        return snapshot, previous
    cold_s = sum(r[3].hvps for r in later) / len(later)
    cold_p = sum(r[4].hvps for r in later) / len(later)
    warm_s = sum(r[2]["hvps_sharpness"] for r in later) / len(later)
    warm_p = sum(r[2]["hvps_preconditioned"] for r in later) / len(later)
    print(f"  every {every}: mean HVPs per measurement over {len(later)} warm-startable measurements: "
          f"S cold {cold_s:.1f} warm {warm_s:.1f}; S_P cold {cold_p:.1f} warm {warm_p:.1f}; "
          f"(S + S_P) warm/cold = {(warm_s + warm_p) / (cold_s + cold_p):.2f}   (target <= 0.5)")
    print(f"  every {every}: measurement time total cold {t_cold:.2f} s, warm {t_warm:.2f} s; "
          f"max |warm/cold - 1| of the eigenvalues = {max(r[5] for r in rows):.1e}")
    return snapshot, previous


def count_calls(fn):
    def wrapped(v):
        wrapped.calls += 1
        return fn(v)
    wrapped.calls = 0
    return wrapped


def eigensolvers(model, data, opt, reps, previous):
    op = curvature_operator(model, mse, data, strategy="forward_over_reverse")
    pre = PreconditionedOperator(op, preconditioner_diagonal(opt, model))
    v0 = torch.randn(op.n, generator=torch.Generator().manual_seed(1))
    for label, A, key in (("S  ", op, "sharpness"), ("S_P", pre, "preconditioned")):
        ref = lanczos(A, op.n, tol=1e-8, max_iter=300, init=v0).eigenvalues[0].item()
        ours = count_calls(A)
        res = lanczos(ours, op.n, tol=1e-3, init=v0, min_iter=COLD_MIN_ITER)
        sp = count_calls(lambda v: A(torch.as_tensor(v, dtype=torch.float32)).double().numpy())
        lin = LinearOperator((op.n, op.n), matvec=sp, dtype=np.float64)
        val = eigsh(lin, k=1, which="LA", tol=1e-3, v0=v0.double().numpy())[0][0]
        sp_calls = sp.calls
        t_ours, t_sp = median_times([lambda: lanczos(A, op.n, tol=1e-3, init=v0, min_iter=COLD_MIN_ITER),
                                     lambda: eigsh(lin, k=1, which="LA", tol=1e-3, v0=v0.double().numpy())], reps)
        print(f"  {label} reference (tol 1e-8) {ref:.6f}")
        print(f"  {label} Lanczos (ours)   {t_ours * 1e3:8.1f} ms  {ours.calls:4d} HVPs  value {res.eigenvalues[0].item():.6f}"
              f"  rel.err {abs(res.eigenvalues[0].item() / ref - 1):.1e}")
        print(f"  {label} scipy eigsh      {t_sp * 1e3:8.1f} ms  {sp_calls:4d} HVPs  value {val:.6f}"
              f"  rel.err {abs(val / ref - 1):.1e}   eigsh/ours time = {t_sp / t_ours:.2f}")
        t_cached = median_time(lambda: lanczos(  # a fresh cached operator per solve: the graph build is timed
            curvature_operator(model, mse, data, strategy="cached_double_backward") if label == "S  " else
            PreconditionedOperator(curvature_operator(model, mse, data, strategy="cached_double_backward"),
                                   preconditioner_diagonal(opt, model)),
            op.n, tol=1e-3, init=v0, min_iter=COLD_MIN_ITER), reps)
        print(f"  {label} Lanczos, cached_double_backward HVPs {t_cached * 1e3:8.1f} ms"
              f"   eigsh/this time = {t_sp / t_cached:.2f}")
        # warm start from the previous measurement's eigenvector (100 steps earlier): both solvers
        w0 = previous[key][:, 0]
        warm = count_calls(A)
        res_w = lanczos(warm, op.n, tol=1e-3, init=w0)
        sp.calls = 0
        val_w = eigsh(lin, k=1, which="LA", tol=1e-3, v0=w0.double().numpy())[0][0]
        sp_calls = sp.calls
        t_w, t_spw = median_times([lambda: lanczos(A, op.n, tol=1e-3, init=w0),
                                   lambda: eigsh(lin, k=1, which="LA", tol=1e-3, v0=w0.double().numpy())], reps)
        print(f"  {label} warm Lanczos     {t_w * 1e3:8.1f} ms  {warm.calls:4d} HVPs  value {res_w.eigenvalues[0].item():.6f}"
              f"  rel.err {abs(res_w.eigenvalues[0].item() / ref - 1):.1e}")
        print(f"  {label} warm scipy eigsh {t_spw * 1e3:8.1f} ms  {sp_calls:4d} HVPs  value {val_w:.6f}"
              f"  rel.err {abs(val_w / ref - 1):.1e}   eigsh/ours time = {t_spw / t_w:.2f}")
        if label == "S  ":
            pyhessian_column(model, data, ref, t_ours, t_cached, reps)


def pyhessian_column(model, data, ref, t_ours, t_cached, reps):
    try:
        import sys

        import pyhessian  # noqa: F401  (its package attribute `hessian` is the class; we need the module)
        ph = sys.modules["pyhessian.hessian"]
    except ImportError:
        print("  S   PyHessian: not installed (pip install pyhessian --no-deps)")
        return
    calls = {"n": 0}
    original = ph.hessian_vector_product

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    ph.hessian_vector_product = counted

    def run(tol):  # includes building its graph (one create_graph backward), as ours builds its operator
        m = copy.deepcopy(model)
        torch.manual_seed(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its backward(create_graph=True) warning
            h = ph.hessian(m, mse, data=data[0], cuda=False)
            return h.eigenvalues(maxIter=2000, tol=tol, top_n=1)[0][0]

    # tol 1e-3 is its own criterion (relative change of the estimate); 1e-6 to reach our accuracy
    for tol in (1e-3, 1e-6):
        calls["n"] = 0
        val = run(tol)
        n_calls = calls["n"]
        t = median_time(lambda: run(tol), reps)
        print(f"  S   PyHessian power  {t * 1e3:8.1f} ms  {n_calls:4d} HVPs  value {val:.6f}"
              f"  rel.err {abs(val / ref - 1):.1e}   pyhessian/ours time = {t / t_ours:.2f}, "
              f"/ours cached = {t / t_cached:.2f}   (its tol {tol:g})")
    ph.hessian_vector_product = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--measure-every", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits  # ships with scikit-learn
    threadpool_limits(args.threads)  # numpy/scipy BLAS (ARPACK) get the same number of threads as torch
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32, CPU")
    for name, build, image, steps in (("digits MLP 64-200-200-10 tanh", mlp, False, args.steps),
                                      ("digits CNN conv16-conv16-linear tanh", cnn, True, args.steps // 2)):
        torch.manual_seed(0)
        model = build()
        data = [digits(image=image)]
        n = sum(p.numel() for p in model.parameters())
        print(f"\n== {name}: {n} parameters, 1000 examples, one chunk ==")
        print("[1] HVP vs gradient")
        hvp_vs_grad(model, data, args.reps)
        print(f"[2] Adam eta = 1e-3, {steps} steps, measured every {args.measure_every} (tol 1e-3)")
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        half = steps // 2
        (snap_model, snap_state), previous = adam_run(model, data, opt, 1, steps, args.measure_every, 1e-3,
                                                      snapshot_at=half)
        dense = max(1, args.measure_every // 10)
        print(f"    the same run from step {half}, measured every {dense} for 20 measurements:")
        snap_opt = torch.optim.Adam(snap_model.parameters(), lr=1e-3)
        snap_opt.load_state_dict(snap_state)
        adam_run(snap_model, data, snap_opt, half + 1, half + 20 * dense, dense, 1e-3, verbose=False)
        print(f"[3] time to the top eigenvalue at tol 1e-3 (cold start, same v0, min {COLD_MIN_ITER} steps), "
              "at the end of the run")
        eigensolvers(model, data, opt, args.reps, previous)


if __name__ == "__main__":
    main()
