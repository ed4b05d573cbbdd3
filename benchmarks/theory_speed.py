"""Start-up and per-call cost of the thresholds (not a test).  Run: ``.venv/bin/python benchmarks/theory_speed.py``.

Prints, with the load average beside the numbers:

1. the wall time of ``aeos threshold --beta1 0.9 --eta 1e-3``, ``aeos --help`` and ``aeos train --help``
   in fresh processes (best of 5, the commands interleaved), against ``python -c pass`` in the same run;
   ``aeos`` is run as ``python -m paper_figures.console`` from the repository root, so these packages
   are the ones timed;
2. the biggest imports of the threshold command, from ``python -X importtime`` (cumulative
   microseconds), and whether sympy, torch, numba or matplotlib is among them;
3. the per-call cost of :func:`aeos_theory.threshold` on a scalar and on a 10^6 numpy array, and of
   :func:`aeos_theory.stability_threshold` for every optimizer, each against the formula written by
   hand in the same run (plain Python for scalars, numpy for the array);
4. the one-time sympy derivation of each optimizer (:func:`aeos_theory.derive_boundary`), which the
   values no longer wait for: ``derive``, ``aeos threshold --latex`` and the tests use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this repository's packages, in this process and (cwd) in the subprocesses
AEOS = [sys.executable, "-m", "paper_figures.console"]
COMMANDS = {
    "aeos threshold --beta1 0.9 --eta 1e-3": [*AEOS, "threshold", "--beta1", "0.9", "--eta", "1e-3"],
    "aeos --help": [*AEOS, "--help"],
    "aeos train --help": [*AEOS, "train", "--help"],
    "python -c pass (the interpreter alone)": [sys.executable, "-c", "pass"],
}
HEAVY = ("sympy", "torch", "numba", "matplotlib")
HYPER = {"gd": {}, "heavy_ball": {"beta": 0.9}, "nesterov": {"beta": 0.9}, "adam": {"beta1": 0.9},
         "adamw": {"beta1": 0.9}, "rmsprop": {}, "nadam": {"beta1": 0.9}}


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def startup(repeat: int = 5) -> None:
    best = dict.fromkeys(COMMANDS, float("inf"))
    for _ in range(repeat):
        for label, command in COMMANDS.items():  # interleaved: a burst of load hits every command alike
            start = time.perf_counter()
            subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            best[label] = min(best[label], time.perf_counter() - start)
    print(f"start-up, fresh processes, best of {repeat} ({load()}):")
    for label, seconds in best.items():
        print(f"  {label:<42} {seconds:6.3f} s")


def imports(top: int = 12) -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", *COMMANDS["aeos threshold --beta1 0.9 --eta 1e-3"][1:]],
                         cwd=ROOT, check=True, capture_output=True, text=True)
    rows = []
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            rows.append((int(cumulative), name.rstrip()))
    total = sum(c for c, name in rows if not name.startswith("  "))
    print(f"python -X importtime, aeos threshold: {len(rows)} modules, {total / 1e3:.1f} ms in top-level imports; "
          f"the {top} biggest (cumulative us, nesting as printed):")
    for cumulative, name in sorted(rows, reverse=True)[:top]:
        print(f"  {cumulative:>9}  {name}")
    heavy = sorted({name.strip().split(".")[0] for _, name in rows} & set(HEAVY))
    print(f"  heavy libraries imported: {', '.join(heavy) or 'none'} (of {', '.join(HEAVY)})")


def interleaved(calls: dict[str, tuple[Callable[[], object], int]], repeat: int = 9) -> dict[str, float]:
    """Best seconds per call of each ``label: (call, number)``, the variants timed in turn in every round."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeat):
        for label, (call, number) in calls.items():
            best[label] = min(best[label], timeit.timeit(call, number=number) / number)
    return best


def per_call() -> None:
    import numpy as np

    from aeos_theory import OPTIMIZERS, stability_threshold, threshold

    hand = lambda b, eta: (2 + 2 * b) / ((1 - b) * eta)  # noqa: E731  Adam by hand, the reference
    calls = {"hand": (lambda: hand(0.9, 1e-3), 200_000), "threshold": (lambda: threshold(0.9, 1e-3), 20_000)}
    for name in OPTIMIZERS:
        calls[name] = (lambda name=name: stability_threshold(name, eta=1e-3, **HYPER[name]), 20_000)
    scalar = interleaved(calls)
    print(f"per call ({load()}):")
    print(f"  threshold(0.9, 1e-3): {scalar['threshold'] * 1e6:.2f} us; by hand in plain Python "
          f"{scalar['hand'] * 1e6:.3f} us ({scalar['threshold'] / scalar['hand']:.1f}x)")
    for name in OPTIMIZERS:
        print(f"  stability_threshold({name!r}): {scalar[name] * 1e6:5.2f} us "
              f"({scalar[name] / scalar['hand']:4.1f}x Adam by hand)")
    rng = np.random.default_rng(0)
    beta1, eta = rng.uniform(0.0, 0.999, 10**6), np.exp(rng.uniform(np.log(1e-5), 0.0, 10**6))
    array = interleaved({"hand": (lambda: hand(beta1, eta), 3), "threshold": (lambda: threshold(beta1, eta), 3)})
    print(f"  threshold on 10^6 (beta1, eta) pairs: {array['threshold'] * 1e3:.2f} ms "
          f"({array['threshold'] / 1e6 * 1e9:.1f} ns each, checks included); by hand in numpy "
          f"{array['hand'] * 1e3:.2f} ms ({array['threshold'] / array['hand']:.1f}x)")


def derivations() -> None:
    from aeos_theory import OPTIMIZERS
    from aeos_theory.stability import _derive_named, derive_boundary

    print("the sympy derivations, once per process each:")
    for name in OPTIMIZERS:
        _derive_named.cache_clear()
        start = time.perf_counter()
        derive_boundary(name, step=True)
        print(f"  derive_boundary({name!r}, step=True): {time.perf_counter() - start:6.3f} s")


def main() -> None:
    startup()
    imports()
    per_call()
    derivations()


if __name__ == "__main__":
    main()
