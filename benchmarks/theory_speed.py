"""Cost of the symbolic engine (not a test).  Run: ``.venv/bin/python benchmarks/theory_speed.py``.

Prints, for every optimizer, the one-time sympy derivation (characteristic polynomial, Schur-Cohn
resultant, branch selection) and the per-call cost of ``stability_threshold`` afterwards (validation
plus the cached, lambdified expression), with the ratio to evaluating the closed form by hand in
plain Python in the same run.
"""

from __future__ import annotations

import time
import timeit

from aeos_theory import OPTIMIZERS, stability_threshold
from aeos_theory.stability import _derive_named, _threshold_function

HYPER = {"gd": {}, "heavy_ball": {"beta": 0.9}, "nesterov": {"beta": 0.9}, "adam": {"beta1": 0.9},
         "adamw": {"beta1": 0.9}, "rmsprop": {}, "nadam": {"beta1": 0.9}}


def main() -> None:
    closed = lambda eta, b: (2 + 2 * b) / ((1 - b) * eta)  # noqa: E731  Adam by hand, the reference
    per_hand = min(timeit.repeat(lambda: closed(1e-3, 0.9), number=100_000, repeat=5)) / 100_000
    print(f"closed form by hand (plain Python): {per_hand * 1e6:.3f} us per call")
    for name in OPTIMIZERS:
        _derive_named.cache_clear()
        _threshold_function.cache_clear()
        start = time.perf_counter()
        stability_threshold(name, eta=1e-3, **HYPER[name])
        first = time.perf_counter() - start
        call = lambda: stability_threshold(name, eta=1e-3, **HYPER[name])  # noqa: E731
        per_call = min(timeit.repeat(call, number=20_000, repeat=5)) / 20_000
        print(f"{name:>10}: first call (derivation) {first:6.3f} s; then {per_call * 1e6:6.2f} us per call "
              f"({per_call / per_hand:5.1f}x the hand-written closed form)")


if __name__ == "__main__":
    main()
