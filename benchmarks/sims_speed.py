"""Speed of the sims kernels against the machine's limit and against vectorised numpy, in one process.

Run:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/sims_speed.py

Three references for Adam on diagonal quadratics L_b = 1/2 sum_j h[b, j] x[b, j]^2, the same updates
(torch.optim's arithmetic, checked equal bit for bit to ``sims.simulate_batch`` before timing):

* **roofline**: the fastest of two plain fused numba loops written here, (a) ``prange`` over runs, each
  run's coordinates in the inner loop, and (b) ``prange`` over equal slices of the flat runs x
  coordinates array (one eta), each slice taking all its steps in turn.  No divergence check, no
  recording, bias corrections precomputed: what a hand-written loop reaches on this machine.
* **div/sqrt limit**: each Adam coordinate-step takes one square root and two divisions
  (denom = sqrt(v) / sqrt(1 - beta2^t) + eps, then (-step m) / denom), which share the CPU's divider.
  A microbenchmark measures their throughput on one core (independent elements in an L1-resident
  array, the loop vectorised by LLVM as the kernels are), and the limit is threads / (time of one
  sqrt + two divisions).  Measured, not taken from a data sheet.
* **numpy**: :func:`sims.reference.reference_batch`, vectorised over the whole batch.

Prints coordinate-steps per second (B * d * steps / wall time) at (B, d) = (1000, 10), (100, 1000),
(1, 100000) and one run at d = 10, float64, with the ratios sims / roofline and sims / numpy; then
``simulate_batch(dtype="float32")`` at the first two shapes (speed against float64 sims, relative error
of the final iterates against float64); then the dense-quadratic run and 1000 empirical thresholds.
Goals (2-core machine): sims >= 0.9x the roofline and >= 8x numpy at (1000, 10) and (100, 1000).
Timings are best-of-N with the contenders interleaved (the cores are shared with other processes).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from numba import njit, prange

HYPER = dict(beta1=0.9, beta2=0.999, eps=1e-8)


# --- the roofline: plain fused loops -------------------------------------------------------------------

@njit(error_model="numpy", parallel=True)
def _adam_rows(h, x, m, v, eta, beta1, beta2, eps, bias1, bias2_sqrt):
    """(a) prange over runs; run r takes all its steps, its d coordinates in the inner loop."""
    n_runs, d = x.shape
    w = 1.0 - beta1  # torch.lerp(m, g, w) = m + w (g - m) for w < 0.5
    a2 = 1.0 - beta2
    for r in prange(n_runs):
        for t in range(bias1.shape[0]):
            step = -(eta[r] / bias1[t])
            c1 = bias2_sqrt[t]
            for j in range(d):
                g = h[r, j] * x[r, j]
                mo = m[r, j]
                mj = mo + w * (g - mo)
                m[r, j] = mj
                vj = v[r, j] * beta2 + (a2 * g) * g
                v[r, j] = vj
                x[r, j] = x[r, j] + (step * mj) / (math.sqrt(vj) / c1 + eps)


@njit(error_model="numpy", parallel=True)
def _adam_flat(h, x, m, v, eta, beta1, beta2, eps, bias1, bias2_sqrt, slices):
    """(b) prange over ``slices`` equal slices of the flat (B * d,) arrays, one eta for all runs."""
    n = x.shape[0]
    w = 1.0 - beta1
    a2 = 1.0 - beta2
    size = (n + slices - 1) // slices
    for s in prange(slices):
        lo = s * size
        hi = min(n, lo + size)
        hs, xs, ms, vs = h[lo:hi], x[lo:hi], m[lo:hi], v[lo:hi]  # views: indices provably >= 0, so SIMD
        for t in range(bias1.shape[0]):
            step = -(eta / bias1[t])
            c1 = bias2_sqrt[t]
            for k in range(xs.shape[0]):
                g = hs[k] * xs[k]
                mo = ms[k]
                mj = mo + w * (g - mo)
                ms[k] = mj
                vj = vs[k] * beta2 + (a2 * g) * g
                vs[k] = vj
                xs[k] = xs[k] + (step * mj) / (math.sqrt(vj) / c1 + eps)


def _bias_tables(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """1 - beta1^t and sqrt(1 - beta2^t) for t = 1..steps, computed as torch computes them (Python floats)."""
    beta1, beta2 = HYPER["beta1"], HYPER["beta2"]
    bias1 = np.array([1.0 - beta1 ** float(t) for t in range(1, steps + 1)])
    bias2_sqrt = np.array([math.sqrt(1.0 - beta2 ** float(t)) for t in range(1, steps + 1)])
    return bias1, bias2_sqrt


def roofline_rows(h, x0, eta, steps):
    x, m, v = x0.copy(), np.zeros_like(x0), np.zeros_like(x0)
    _adam_rows(h, x, m, v, eta, HYPER["beta1"], HYPER["beta2"], HYPER["eps"], *_bias_tables(steps))
    return x


def roofline_flat(h, x0, eta, steps, slices):
    x, m, v = x0.ravel().copy(), np.zeros(x0.size), np.zeros(x0.size)
    _adam_flat(h.ravel(), x, m, v, float(eta[0]), HYPER["beta1"], HYPER["beta2"], HYPER["eps"],
               *_bias_tables(steps), slices)
    return x.reshape(x0.shape)


# --- the divider's throughput ---------------------------------------------------------------------------

# ``one``, ``c1``, ``eps`` are passed in the array's dtype, so that float32 runs float32 instructions.

@njit(error_model="numpy")
def _sqrt_loop(x, reps, one, c1, eps):
    for _ in range(reps):
        for j in range(x.shape[0]):
            x[j] = math.sqrt(x[j]) + one  # a fixed point near 2.6: no subnormals, no overflow


@njit(error_model="numpy")
def _div_loop(x, reps, one, c1, eps):
    for _ in range(reps):
        for j in range(x.shape[0]):
            x[j] = one / x[j] + one


@njit(error_model="numpy")
def _adam_divider_loop(x, reps, one, c1, eps):
    for _ in range(reps):
        for j in range(x.shape[0]):
            x[j] = one + one / (math.sqrt(x[j]) / c1 + eps)  # Adam's sqrt and two divisions


def divider_throughput(dtype=np.float64) -> dict[str, float]:
    """Seconds per element of sqrt, division and Adam's sqrt + 2 divisions, one core, vectorised, best of 7."""
    x = np.full(1024, 2.0, dtype=dtype)  # L1-resident, 1024 independent elements per pass
    reps = 20000
    consts = (dtype(1.0), dtype(0.7), dtype(1e-8))
    out = {}
    for name, fn in (("sqrt", _sqrt_loop), ("div", _div_loop), ("sqrt + 2 div", _adam_divider_loop)):
        fn(x, 2, *consts)
        out[name] = _best_of(lambda: fn(x, reps, *consts), 7) / (x.size * reps)
    return out


# --- timing ---------------------------------------------------------------------------------------------

def _best_of(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _interleaved(contenders: dict, repeats: dict) -> dict[str, float]:
    """Best time of each contender, the contenders run in turn in every round (a load change hits all)."""
    best = {name: np.inf for name in contenders}
    for i in range(max(repeats.values())):
        for name, fn in contenders.items():
            if i < repeats[name]:
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main() -> None:
    import numba

    from sims import empirical_threshold, simulate, simulate_batch
    from sims.reference import reference_batch

    threads = numba.get_num_threads()
    print(f"numba {numba.__version__}, threads {threads}, load average {os.getloadavg()[0]:.2f} "
          f"(other processes share the cores: absolute rates scale with the free CPU, ratios less so)")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    per = divider_throughput()
    per32 = divider_throughput(np.float32)
    limit = threads / per["sqrt + 2 div"]
    for name, p in (("float64", per), ("float32", per32)):
        print(f"CPU {cpu}: measured by a microbenchmark (one core, LLVM-vectorised as the kernels), {name}: sqrt "
              f"{p['sqrt'] * 1e9:.3f} ns, division {p['div'] * 1e9:.3f} ns, sqrt + 2 div {p['sqrt + 2 div'] * 1e9:.3f} "
              f"ns per element -> Adam's div/sqrt limit on {threads} threads {threads / p['sqrt + 2 div']:.3e} "
              f"coordinate-steps/s")
    rng = np.random.default_rng(0)
    # (B, d, steps): the same steps for every contender, so all see the same trajectory.  Runs stay
    # short enough that no coordinate decays into float64 subnormals (Adam drives the flat directions
    # of a quadratic towards 0; subnormal arithmetic is ~50x slower on any implementation).
    configs = [(1000, 10, 2000), (100, 1000, 2000), (1, 100000, 2000), (1, 10, 10000)]
    simulate_batch("adam", np.ones((2, 4)), np.ones((2, 4)), 1e-3, 3, **HYPER)  # compile / load cache
    print(f"{'Adam float64 (B, d)':>22} | {'sims':>9} | {'roofline':>9} (rows / flat)  | {'numpy':>9} | "
          f"sims/roofline | sims/numpy | roofline/limit")
    for B, d, steps in configs:
        h = np.tile(np.logspace(0, 2, d), (B, 1))
        x0 = rng.standard_normal((B, d))
        eta = np.full(B, 1e-3)
        slices = max(1, min(threads, B * d // 256))
        contenders = {
            "sims": lambda: simulate_batch("adam", h, x0, eta, steps, **HYPER).x,
            "rows": lambda: roofline_rows(h, x0, eta, steps),
            "flat": lambda: roofline_flat(h, x0, eta, steps, slices),
            "numpy": lambda: reference_batch("adam", h, x0, eta, steps, **HYPER),
        }
        results = {name: fn() for name, fn in contenders.items()}  # compile; then the same-answer check
        for name in ("rows", "flat"):
            assert np.array_equal(results[name], results["sims"]), f"roofline ({name}) and sims disagree"
        assert np.allclose(results["numpy"], results["sims"], rtol=1e-10, atol=1e-300), "numba and numpy disagree"
        a = results["sims"]
        if np.abs(a[a != 0]).min() < 2.3e-308:
            print("  warning: subnormal iterates reached; this case also times subnormal arithmetic")
        fast = 7 if B * d > 100 else 30
        best = _interleaved(contenders, {"sims": fast, "rows": fast, "flat": fast, "numpy": 1 if B * d > 10000 else 2})
        rate = {name: B * d * steps / t for name, t in best.items()}
        roof = max(rate["rows"], rate["flat"])
        print(f"{f'({B}, {d})':>22} | {rate['sims']:9.3e} | {roof:9.3e} ({rate['rows']:.2e} / {rate['flat']:.2e}) | "
              f"{rate['numpy']:9.3e} | {rate['sims'] / roof:13.3f} | {rate['sims'] / rate['numpy']:9.1f}x | "
              f"{roof / limit:14.3f}")
    # float32: the same runs in float32 arithmetic, against float64 sims (speed) and its final iterates (error)
    for B, d, steps in configs[:2]:
        h = np.tile(np.logspace(0, 2, d), (B, 1))
        x0 = rng.standard_normal((B, d))
        eta = np.full(B, 1e-3)
        contenders = {"f64": lambda: simulate_batch("adam", h, x0, eta, steps, **HYPER).x,
                      "f32": lambda: simulate_batch("adam", h, x0, eta, steps, dtype="float32", **HYPER).x}
        x64, x32 = (fn() for fn in contenders.values())
        best = _interleaved(contenders, {"f64": 7, "f32": 7})
        err = np.max(np.abs(x32 - x64)) / np.max(np.abs(x64))
        coord_err = np.median(np.abs(x32 - x64)[x64 != 0] / np.abs(x64[x64 != 0]))
        print(f"adam float32 ({B}, {d}): {B * d * steps / best['f32']:9.3e} coord-steps/s, "
              f"{best['f64'] / best['f32']:.2f}x float64 sims; final x vs float64: max |dx| / max |x| "
              f"{err:.1e}, median |dx| / |x| {coord_err:.1e}")
    # per-core rate (one thread), to separate kernel speed from the machine's load
    h = np.tile(np.logspace(0, 2, 1000), (100, 1))
    x0 = rng.standard_normal((100, 1000))
    eta = np.full(100, 1e-3)
    numba.set_num_threads(1)
    best = _interleaved({"sims": lambda: simulate_batch("adam", h, x0, eta, 2000, **HYPER),
                         "rows": lambda: roofline_rows(h, x0, eta, 2000)}, {"sims": 3, "rows": 3})
    numba.set_num_threads(threads)
    print(f"adam (B, d) = (100, 1000) on ONE thread: sims {100 * 1000 * 2000 / best['sims']:9.3e} coord-steps/s, "
          f"roofline (rows) {100 * 1000 * 2000 / best['rows']:9.3e}, limit {1 / per['sqrt + 2 div']:9.3e}")
    # the dense-quadratic experiment: d = 50 dense Adam, 40k steps, S_P by LAPACK eigvalsh every 100 steps
    from sims.problems import dense_problem

    prob = dense_problem(0)
    simulate("adam", prob.H, prob.x0, 1e-3, 10, 5)
    t = _best_of(lambda: simulate("adam", prob.H, prob.x0, 1e-3, 40000, 100), 3)
    print(f"dense-quadratic Adam run (d = 50, 40000 steps, 401 S_P measurements): {t:.3f} s")
    etas = np.logspace(-3, 0, 1000)
    empirical_threshold("adam", etas[:2], beta1=0.9)  # compile / load cache
    for opt, hp in (("adam", {"beta1": 0.9}), ("heavy_ball", {"beta": 0.9}), ("gd", {})):
        t = _best_of(lambda: empirical_threshold(opt, etas, **hp), 2)
        print(f"1000 empirical thresholds ({opt} {hp}): {t:.3f} s")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
