"""The curvature toolkit side by side with PyHessian, curvlinops and hessian-eigenthings (not a test).

Run: ``.venv/bin/python benchmarks/peers.py`` after installing the ``peers`` extra (see
``benchmarks/README.md`` for the command that keeps the CPU torch).  A peer that is not installed is
reported and skipped.  One process, one torch thread (and one BLAS thread), float32, full batch; every
time is a median over interleaved repeats (each repeat runs every contender once) and includes building
each operator; the machine's load average is printed beside each section.

1. Top eigenvalue S of H at an Adam-trained state of three networks (digits MLP 64-200-200-10 tanh,
   digits CNN conv16-conv16-linear tanh, a character Transformer written with
   ``F.scaled_dot_product_attention``): ours at the default settings (and with the previous cold minimum
   of 12 products) against PyHessian's power iteration (tol 1e-3 and 1e-6), hessian-eigenthings' Lanczos
   at the smallest ``max_iter`` whose error is <= 1e-5 (its steps are fixed, not tested), and curvlinops'
   operator with scipy ``eigsh`` (tol 1e-3).  Accuracy against scipy ``eigsh`` (tol 1e-10) on a float64
   copy.  Attention runs on torch's math kernel for every contender (the fused CPU kernel has no second
   derivative).  Then lambda_max of the empirical Fisher and of K-FAC (cross-entropy on the digits' labels)
   against curvlinops' ``EFLinearOperator`` / ``KFACLinearOperator`` with ``eigsh``.
2. One product of each of our strategies against one gradient (the compiled one with its compilation
   time), the batched product per column, and warm-start products per measurement (``SharpnessTracker``
   every 10 Adam steps).
3. Trace on a small MLP (digits 64-20-10 tanh, 300 images): rms relative error over seeds against the exact
   trace of the dense float64 Hessian and seconds per estimate, at several budgets of products, for our
   estimators and the peers'; then each estimator's time at the error of curvlinops' ``xtrace`` at 100
   products (interpolated in the budget, error ~ budget^-a between the two budgets around it).
4. Spectral density (stochastic Lanczos quadrature, full reorthogonalisation in both): ours against
   hessian-eigenthings at equal probes and steps (the same quadrature, so equal error), on the digits MLP
   and on the small MLP of [3].  5. lambda_max of the Gauss-Newton matrix against curvlinops' GGN.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import eigsh
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import deep
import deep.curvature.hessian as hessian_module
from deep.curvature.density import density_estimate
from deep.curvature.hessian import hessian_operator
from deep.curvature.trace import ESTIMATORS, trace_estimate

#: The cold minimum of products before the first convergence test in the previous release.
PREVIOUS_COLD_MIN_ITER = 12


class HalfSquare(nn.Module):
    """The paper's square loss 1/(2n) sum ||f - y||^2 as a torch module with reduction 'mean'."""

    reduction = "mean"

    def forward(self, f, y):
        return 0.5 * ((f - y) ** 2).sum(dim=1).mean()


class TokenCE(nn.Module):
    """Cross-entropy over every token of (b, T, V) logits, reduction 'mean'."""

    reduction = "mean"

    def forward(self, f, y):
        return F.cross_entropy(f.reshape(-1, f.shape[-1]), y.reshape(-1))


class Attention(nn.Module):
    """Causal multi-head self-attention by ``F.scaled_dot_product_attention`` (as people write it)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2, self.attn = nn.LayerNorm(width), nn.LayerNorm(width), Attention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Token + position embeddings, pre-LayerNorm blocks with SDPA attention, LayerNorm, logits (b, T, vocab)."""

    def __init__(self, vocab: int, context: int, width: int = 64, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(depth)])
        self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)

    def forward(self, x):
        return self.head(self.ln(self.blocks(self.tok(x) + self.pos(torch.arange(x.shape[1], device=x.device)))))


def networks(steps: int):
    """name -> (model after Adam training, [(X, y)], loss module, optimizer)."""
    digits = deep.load_digits(1000)
    text = deep.load_text(64, 32)
    torch.manual_seed(0)
    gpt = Transformer(text.num_classes, 32)
    specs = {
        "MLP": (deep.build_model("mlp", (64,), 10, width=200, depth=2, act="tanh", seed=0), digits.X, digits.y,
                HalfSquare(), steps),
        "CNN": (nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, padding=1), nn.Tanh(),
                              nn.Flatten(), nn.Linear(16 * 8 * 8, 10)), digits.X.view(-1, 1, 8, 8), digits.y,
                HalfSquare(), steps // 2),
        "Transformer": (gpt, text.X, text.y, TokenCE(), steps // 2),
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


def math_attention(name: str):
    """Attention on the math kernel for the Transformer (every contender needs its second derivative)."""
    return sdpa_kernel(SDPBackend.MATH) if name == "Transformer" else contextlib.nullcontext()


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


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


def peer_top_eigenvalue(model, data, loss, ref, results):
    """Append (label, function, HVPs, value) rows for each installed peer."""
    try:
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


def print_rows(rows, times, reference_value=None):
    t_ours = times[0]
    for (label, _, hvps, value), t in zip(rows, times):
        err = f"rel.err {abs(value / reference_value - 1):.1e}" if reference_value else f"value {value:.7g}"
        print(f"    {label:56s} {t * 1e3:8.1f} ms {hvps:5d} products  {err}   ours / this = {t_ours / t:.2f}")


def top_eigenvalue(nets, reps):
    print(f"\n[1] top eigenvalue of H, cold start (time includes building the operator); {load()}")
    for name, (model, data, loss, _) in nets.items():
        with math_attention(name):
            ref = reference(model, data, loss)
            n = sum(p.numel() for p in model.parameters())
            print(f"\n  {name} ({n} parameters), reference lambda_max = {ref:.7g}")
            ours = deep.top_eigenpairs(model, loss, data)
            before = deep.top_eigenpairs(model, loss, data, min_iter=PREVIOUS_COLD_MIN_ITER)
            rows = [(f"ours, defaults ({ours.strategy})", lambda: deep.top_eigenpairs(model, loss, data), ours.hvps,
                     ours.top),
                    (f"ours, before (cold minimum {PREVIOUS_COLD_MIN_ITER} products)",
                     lambda: deep.top_eigenpairs(model, loss, data, min_iter=PREVIOUS_COLD_MIN_ITER), before.hvps,
                     before.top)]
            peer_top_eigenvalue(model, data, loss, ref, rows)
            times = medians([r[1] for r in rows], reps)
            print_rows(rows, times, ref)
        print(f"    ({load()})")


def fisher_rows(nets, reps):
    print(f"\n[1b] lambda_max of the empirical Fisher and of K-FAC (type-2: of G), cross-entropy on the digits' labels,"
          f" tol 1e-3; {load()}")
    try:
        import curvlinops
    except ImportError:
        curvlinops = None
        print("  curvlinops: not installed")
    ce = nn.CrossEntropyLoss()
    for name in ("MLP", "CNN"):
        model, [(X, y)], _, _ = nets[name]
        data = [(X, y.argmax(dim=1))]
        params = list(model.parameters())
        for curvature, theirs in (("empirical_fisher", "EFLinearOperator"), ("kfac", "KFACLinearOperator")):
            res = deep.top_eigenpairs(model, ce, data, curvature=curvature)
            rows = [(f"{name}: ours, curvature='{curvature}'",
                     lambda c=curvature: deep.top_eigenpairs(model, ce, data, curvature=c), res.hvps, res.top)]
            if curvlinops is not None:
                extra = {"fisher_type": "type-2"} if curvature == "kfac" else {}

                def cl_run(cls=getattr(curvlinops, theirs), extra=extra):
                    op = cls(model, ce, params, data, check_deterministic=False, **extra).to_scipy()
                    return float(eigsh(op, k=1, which="LA", tol=1e-3, v0=np.ones(op.shape[0]))[0][0])
                op = counted(getattr(curvlinops, theirs)(model, ce, params, data, check_deterministic=False, **extra)
                             .to_scipy())
                value = float(eigsh(op, k=1, which="LA", tol=1e-3, v0=np.ones(op.shape[0]))[0][0])
                rows.append((f"{name}: curvlinops {theirs} + eigsh", cl_run, op.count, value))
            print_rows(rows, medians([r[1] for r in rows], reps))


def compiled_cost(model, data, loss, v, cached_time):
    """(compile seconds, ms per compiled product) with inductor, or a reason it failed."""
    hessian_module._COMPILED.pop(model, None)
    op = hessian_operator(model, loss, data, strategy="compiled")
    t0 = time.perf_counter()
    op(v)
    compile_s = time.perf_counter() - t0
    if op.strategy != "compiled":
        return f"compiled: {op.strategy}"
    t = medians([lambda: op(v)], 5)[0]
    gain = cached_time - t
    pays = f"pays after {compile_s / gain:.0f} products" if gain > 0 else "never pays"
    return f"compiled {t * 1e3:7.1f} ms (compilation {compile_s:.0f} s; against cached: {pays})"


def hvp_costs(nets, reps, compiled):
    print(f"\n[2] one HVP against one gradient (ms), and warm-start HVPs per measurement; {load()}")
    for name, (model, data, loss, opt) in nets.items():
        with math_attention(name):
            X, y = data[0]
            n = sum(p.numel() for p in model.parameters())
            v = torch.randn(n, generator=torch.Generator().manual_seed(0))
            ops = {s: hessian_operator(model, loss, data, strategy=s)
                   for s in ("forward_over_reverse", "reverse_over_reverse", "cached_double_backward")}
            cached = ops["cached_double_backward"]
            cached(v)  # builds the kept graph
            block = max(cached.block_size(), 4)
            V = torch.randn(n, block, generator=torch.Generator().manual_seed(1))
            batched = hessian_operator(model, loss, data)
            batched(v)
            batched.block_size = lambda b=block: b  # the batched pass, whatever the default rule says

            def gradient():
                model.zero_grad()
                loss(model(X), y).backward()
            t = medians([gradient] + [lambda op=op: op(v) for op in ops.values()] + [lambda: batched.matmat(V)],
                        3 * reps)
            model.zero_grad()
            print(f"    {name:12s} gradient {t[0] * 1e3:7.1f} | " + " | ".join(
                f"{s} {ti * 1e3:7.1f} ({ti / t[0]:.2f}x)" for s, ti in zip(ops, t[1:4]))
                + f" | batched {block} columns: {t[4] / block * 1e3:7.1f} per column ({t[4] / block / t[0]:.2f}x;"
                  f" default block here {cached.block_size()})")
            if compiled:
                print(f"    {name:12s} " + compiled_cost(model, data, loss, v, t[3]))
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
            print(f"    {name:12s} warm start every 10 Adam steps, 19 measurements: median HVPs S {np.median(s_hvps):.0f}"
                  f", S_P {np.median(p_hvps):.0f} (max {max(s_hvps)}, {max(p_hvps)}; cold at the end: S {cold_s}, "
                  f"S_P {cold_p})")


def trace_problem():
    """The small digits MLP of the trace comparison (float64), trained 200 Adam steps, and its exact trace."""
    d = deep.load_digits(300)
    model = deep.build_model("mlp", (64,), 10, width=20, depth=1, act="tanh", seed=0).double()
    X, y, loss = d.X.double(), d.y.double(), HalfSquare()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        loss(model(X), y).backward()
        opt.step()
    exact = float(torch.trace(hessian_operator(model, loss, (X, y)).to_dense()))
    return copy.deepcopy(model).float(), [(X.float(), y.float())], loss, exact


class OneAtATime:
    """The operator with its batched products switched off (the previous release's behaviour)."""

    def __init__(self, op) -> None:
        self.op = op

    def __enter__(self):
        self.saved = self.op.block_size
        self.saved()  # the real block_size builds a lazily kept graph, which _matmat then reads
        self.op.block_size = lambda: 1
        return self.op

    def __exit__(self, *exc):
        self.op.block_size = self.saved


def trace_estimators(model_f, data_f, loss):
    """label -> function(seed, budget) -> estimate."""
    estimators = {}
    for m in ESTIMATORS:
        estimators[f"ours {m}"] = lambda s, b, m=m: deep.hessian_trace(model_f, loss, data_f, hvps=b, estimator=m,
                                                                       seed=s).estimate

    def before(s, b):
        op = hessian_operator(model_f, loss, data_f)
        with OneAtATime(op):
            return trace_estimate(op, hvps=b, seed=s).estimate
    estimators["ours lanczos_hutch++, one product at a time (before)"] = before
    try:
        import pyhessian

        def ph_trace(s, b):
            torch.manual_seed(s)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return float(np.mean(pyhessian.hessian(copy.deepcopy(model_f), loss, data=data_f[0], cuda=False)
                                     .trace(maxIter=b, tol=0.0)))
        estimators["PyHessian trace (Hutchinson)"] = ph_trace
    except ImportError:
        pass
    try:
        from curvlinops import HessianLinearOperator, hutchpp_trace, xtrace
        params = list(model_f.parameters())

        def cl(fn, s, budget):
            torch.manual_seed(s)
            return float(fn(HessianLinearOperator(model_f, loss, params, data_f, check_deterministic=False), budget))
        estimators["curvlinops hutchpp_trace (budget rounded to a multiple of 3)"] = \
            lambda s, b: cl(hutchpp_trace, s, 3 * (b // 3))
        estimators["curvlinops xtrace (budget rounded to even)"] = lambda s, b: cl(xtrace, s, 2 * (b // 2))
    except ImportError:
        pass
    try:
        import hessian_eigenthings as he
        for m in ("hutch++", "hutchinson"):
            estimators[f"hessian-eigenthings {m}"] = (lambda s, b, m=m: he.trace(
                he.HessianOperator(model_f, data_f, he.supervised_loss(loss)), num_matvecs=b, method=m,
                seed=s).estimate)
    except ImportError:
        pass
    return estimators


def time_at_error(budgets, errors, seconds, target):
    """(seconds per estimate at rms error ``target``, how it was read): interpolated between the two budgets
    around it (error ~ budget^-a, time ~ budget); at the smallest budget when that one is already below the
    target (an upper bound); None when even the largest budget misses it."""
    if errors[0] <= target:
        return seconds[0], f"<= (rms {errors[0]:.4f} at {budgets[0]} products)"
    for (b0, e0, t0), (b1, e1, t1) in zip(zip(budgets, errors, seconds), list(zip(budgets, errors, seconds))[1:]):
        if e1 <= target <= e0 and e0 > e1 > 0:
            a = math.log(e0 / e1) / math.log(b1 / b0)
            b = b0 * (e0 / target) ** (1 / a)
            return t0 + (t1 - t0) * (b - b0) / (b1 - b0), f"(about {b:.0f} products)"
    return None, f"(rms {errors[-1]:.4f} at {budgets[-1]} products: not reached)"


def trace_comparison(seeds, budgets=(25, 50, 100, 200)):
    model_f, data_f, loss, exact = trace_problem()
    print(f"\n[3] trace, digits MLP 64-20-10 tanh (1510 parameters, 300 images) after 200 Adam steps: rms relative "
          f"error over {seeds} seeds against the dense float64 trace ({exact:.6g}); {load()}")
    table = {}
    for label, fn in trace_estimators(model_f, data_f, loss).items():
        row = []
        for b in budgets:
            t0 = time.perf_counter()
            errors = np.array([fn(s, b) / exact - 1 for s in range(seeds)])
            row.append((float(np.sqrt(np.mean(errors ** 2))), (time.perf_counter() - t0) / seeds))
        table[label] = row
        print(f"    {label:58s} " + " | ".join(f"{b}: rms {e:.4f} {t * 1e3:6.1f} ms" for b, (e, t) in zip(budgets, row)),
              flush=True)
    xtrace_label = "curvlinops xtrace (budget rounded to even)"
    if xtrace_label in table:
        target = table[xtrace_label][budgets.index(100)][0]
        print(f"    at the error of curvlinops xtrace with 100 products (rms {target:.4f}): seconds per estimate")
        for label, row in table.items():
            t, how = time_at_error(budgets, [e for e, _ in row], [s for _, s in row], target)
            print(f"    {label:58s} " + (how if t is None else f"{t * 1e3:6.1f} ms {how}"))
    print(f"    ({load()})")


def density_comparison(nets, reps):
    print(f"\n[4] spectral density (stochastic Lanczos quadrature, 60 steps per probe, full reorthogonalisation in "
          f"both); {load()}")
    try:
        import hessian_eigenthings as he
    except ImportError:
        print("    hessian-eigenthings: not installed")
        return
    small, small_data, small_loss, _ = trace_problem()
    cases = {"digits MLP (55210 parameters)": nets["MLP"][:3], "small MLP of [3] (1510 parameters)":
             (small, small_data, small_loss)}
    for label, (model, data, loss) in cases.items():
        for probes in (1, 4):
            def before(model=model, data=data, loss=loss, probes=probes):
                op = hessian_operator(model, loss, data)
                with OneAtATime(op):
                    return density_estimate(op, steps=60, probes=probes)
            rows = [("ours spectral_density", lambda: deep.spectral_density(model, loss, data, steps=60, probes=probes)),
                    ("hessian-eigenthings spectral_density", lambda: he.spectral_density(
                        he.HessianOperator(model, data, he.supervised_loss(loss)), num_runs=probes, lanczos_steps=60,
                        num_grid_points=1000, seed=0)),
                    ("ours, one product at a time (before)", before)]
            times = medians([r[1] for r in rows], reps)
            print(f"    {label}, {probes} probe(s): ours {times[0] * 1e3:8.1f} ms, hessian-eigenthings "
                  f"{times[1] * 1e3:8.1f} ms, ours / this = {times[0] / times[1]:.2f}; ours one product at a time "
                  f"(before) {times[2] * 1e3:8.1f} ms")
    try:
        import pyhessian
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, data, loss = nets["MLP"][:3]
            pyhessian.hessian(copy.deepcopy(model), loss, data=data[0], cuda=False).density(iter=60, n_v=1)
    except ImportError:
        pass
    except Exception as err:  # noqa: BLE001 - report why the peer fails
        print(f"    PyHessian density fails on torch {torch.__version__}: {type(err).__name__}: "
              f"{str(err).splitlines()[0][:90]}")


def ggn_comparison(nets, reps):
    print(f"\n[5] lambda_max of the Gauss-Newton matrix G, digits MLP, loss torch.nn.MSELoss() (curvlinops' GGN needs "
          f"it); {load()}")
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


SECTIONS = ("top", "fisher", "hvp", "trace", "density", "ggn")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="Adam steps of the MLP (CNN, Transformer: half)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=30, help="seeds per trace estimator and budget")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled strategy (compilation takes minutes)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits  # ships with scikit-learn
    threadpool_limits(1)
    print(f"torch {torch.__version__}, 1 thread, float32, CPU ({os.cpu_count()} cores); {load()}")
    nets = networks(args.steps) if only - {"trace"} else {}
    if "top" in only:
        top_eigenvalue(nets, args.reps)
    if "fisher" in only:
        fisher_rows(nets, args.reps)
    if "hvp" in only:
        hvp_costs(nets, args.reps, not args.no_compile)
    if "trace" in only:
        trace_comparison(args.seeds)
    if "density" in only:
        density_comparison(nets, args.reps)
    if "ggn" in only:
        ggn_comparison(nets, args.reps)
    print(f"\n{load()}")


if __name__ == "__main__":
    main()
