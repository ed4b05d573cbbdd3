"""What the door of the measurements costs (deep.curvature.door.check_measurement_inputs), against a measurement.

On the digits MLP of ``aeos train`` (1000 images, 64-200-200-10 tanh, float32, the trainer's default
network), for the whole batch as one chunk and as ten chunks of 100, best of ``--reps`` timings,
interleaved:

* the door on fresh data (one pass over the data, a forward and loss on the first chunk, the parameters);
* the door on data it has already checked (a tracker's later operators: the parameters only);
* one Hessian-vector product on a built operator (its gradient graph kept: the cached strategy);
* a cold ``deep.sharpness`` (door included) and a warm ``SharpnessTracker.measure`` with Adam (door
  included, S and S_P and the edge).

    .venv/bin/python benchmarks/door_cost.py
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import deep
from deep.curvature.door import check_measurement_inputs
from deep.training.data import load
from deep.training.models import build_model


def best(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def timings(model, loss_fn, chunks, opt, reps: int) -> dict[str, float]:
    """Best-of-``reps`` seconds of each variant (module docstring), the variants interleaved."""
    checked = check_measurement_inputs(model, loss_fn, chunks)
    op = deep.curvature_operator(model, loss_fn, checked)
    v = torch.randn(op.n)
    op @ v  # builds the kept graph
    tracker = deep.SharpnessTracker()
    tracker.measure(model, loss_fn, chunks, opt)  # the next ones are warm
    variants = {
        "door": lambda: check_measurement_inputs(model, loss_fn, chunks),
        "door again": lambda: check_measurement_inputs(model, loss_fn, checked),
        "hvp": lambda: op @ v,
        "sharpness": lambda: deep.sharpness(model, loss_fn, chunks),
        "tracker": lambda: tracker.measure(model, loss_fn, chunks, opt),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):  # interleaved: each round times every variant once
        for name, call in variants.items():
            times[name].append(best(call, 1))
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load("digits", 1000)
    model = build_model("mlp", data.input_shape, data.num_classes, seed=0)
    loss_fn = deep.mse
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(data.X), data.y).backward()
        opt.step()
    print(f"digits MLP {sum(p.numel() for p in model.parameters())} parameters, {len(data)} examples, "
          f"load average {os.getloadavg()[0]:.2f} before")
    labels = {"door": "door, fresh data", "door again": "door, data already checked",
              "hvp": "one HVP (kept graph)", "sharpness": "deep.sharpness, cold",
              "tracker": "tracker.measure, warm, Adam"}
    for chunk in (1000, 100):
        chunks = data.chunks(chunk)
        t = timings(model, loss_fn, chunks, opt, args.reps)
        print(f"\n{len(chunks)} chunk(s) of {chunk}: best of {args.reps}")
        for name, label in labels.items():
            print(f"  {label:30s} {1e3 * t[name]:8.2f} ms   door / this = {t['door'] / t[name]:.3f}")
    print(f"\nload average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
