"""Speed of the sims kernels against vectorised numpy (the same Adam updates, in the same process).

Run:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/sims_speed.py

Prints coordinate-steps per second (B * d * steps / wall time) for Adam on diagonal quadratics at
(B, d) = (1000, 10), (100, 1000), (1, 100000) and one single run at d = 10, the ratio to the numpy
reference (:func:`sims.reference.reference_batch`), and the wall time of 1000 empirical thresholds.
Targets (2-core machine): >= 1e9 coord-steps/s at (100, 1000); >= 4x numpy at (1000, 10); >= 20x at
(100, 1000); >= 100x for the single d = 10 run; 1000 thresholds in < 2 s.
"""

from __future__ import annotations

import os
import time

import numpy as np


def _best_of(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    import numba

    from sims import empirical_threshold, simulate, simulate_batch
    from sims.reference import reference_batch

    print(f"numba {numba.__version__}, threads {numba.get_num_threads()}, load average {os.getloadavg()[0]:.1f} "
          f"(other processes share the cores: absolute rates scale with the free CPU, ratios less so)")
    hyper = dict(beta1=0.9, beta2=0.999, eps=1e-8)
    rng = np.random.default_rng(0)
    # (B, d, steps): the same steps for numba and numpy, so both see the same trajectory.  Runs stay
    # short enough that no coordinate decays into float64 subnormals (Adam drives the flat directions
    # of a quadratic towards 0; subnormal arithmetic is ~50x slower on any implementation).
    configs = [(1000, 10, 2000), (100, 1000, 2000), (1, 100000, 2000), (1, 10, 10000)]
    simulate_batch("adam", np.ones((2, 4)), np.ones((2, 4)), 1e-3, 3, **hyper)  # compile / load cache
    for B, d, steps in configs:
        np_steps = steps
        h = np.tile(np.logspace(0, 2, d), (B, 1))
        x0 = rng.standard_normal((B, d))
        eta = np.full(B, 1e-3)
        t_nb = _best_of(lambda: simulate_batch("adam", h, x0, eta, steps, **hyper), 5 if B * d > 100 else 50)
        t_np = _best_of(lambda: reference_batch("adam", h, x0, eta, np_steps, **hyper), 1 if B * d > 10000 else 2)
        # same answer as the reference (a check, not a timing)
        a = simulate_batch("adam", h, x0, eta, np_steps, **hyper).x
        b = reference_batch("adam", h, x0, eta, np_steps, **hyper)
        assert np.allclose(a, b, rtol=1e-10, atol=1e-300), "numba and numpy disagree"
        if np.abs(a[a != 0]).min() < 2.3e-308:
            print("  warning: subnormal iterates reached; this case also times subnormal arithmetic")
        rate_nb = B * d * steps / t_nb
        rate_np = B * d * np_steps / t_np
        print(f"adam (B, d) = ({B:>4}, {d:>6}): numba {rate_nb:9.3e} coord-steps/s, numpy {rate_np:9.3e}, "
              f"ratio {rate_nb / rate_np:7.1f}x")
    # per-core rate of the row kernel (one thread), to separate kernel speed from the machine's load
    h = np.tile(np.logspace(0, 2, 1000), (100, 1))
    x0 = rng.standard_normal((100, 1000))
    numba.set_num_threads(1)
    t1 = _best_of(lambda: simulate_batch("adam", h, x0, 1e-3, 2000, **hyper), 3)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    print(f"adam (B, d) = ( 100,   1000) on ONE thread: {100 * 1000 * 2000 / t1:9.3e} coord-steps/s")
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


if __name__ == "__main__":
    main()
