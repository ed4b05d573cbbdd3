"""Cost of the batch sharpness (not a test).  Run: ``.venv/bin/python benchmarks/batch_sharpness.py``.

On the figures' digits MLP (first 1000 images / 16, 64-200-200-10 tanh, MSE), trained by Adam (lr 1e-3) on
batches of 32 for ``--train`` steps, prints in one run, for batch sizes 8 to 512:

1. The reference: one minibatch gradient + HVP pair, written plainly (forward, ``autograd.grad`` with
   ``create_graph``, one double backward along g_B), median seconds.
2. Per form (raw BS, Adam's BS_P, the update ratio): the cost of ``deep.batch_sharpness`` to a 5% relative
   stderr (``tol=0.05``), over ``--seeds`` seeds: the batches it drew and its wall time in units of the
   reference pair (target: <= 30).  Under load, each seed's estimate is timed best of ``--reps`` (the same
   seed draws the same batches) and the pair best of the ``--pairs`` timed right before and after it.
3. The per-batch machinery: seconds per batch of the package's ``curvature_operator`` built on the batch
   (gradient + one product), of one batch alone (:meth:`BatchCurvature.one`) and of K batches vectorised by
   ``vmap`` (:meth:`BatchCurvature.many`), each against the reference pair.

Times are the process's CPU time (``time.process_time``, one torch thread), which other jobs on a shared
machine inflate far less than wall time; the load average is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import deep
from deep.curvature.build import curvature_operator
from deep.curvature.minibatch import BatchCurvature, Population
from deep.curvature.params import ParamLayout
from deep.measure.batch import batch_sharpness_forms


def trained(steps: int, seed: int = 0):
    data = deep.load_digits(1000)
    model = deep.build_model("mlp", (64,), 10, width=200, depth=2, act="tanh", seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(1000, generator=gen)[:32]
        opt.zero_grad()
        deep.mse(model(data.X[idx]), data.y[idx]).backward()
        opt.step()
    opt.zero_grad()
    return data, model, opt


def reference_pair(model, X, y) -> float:
    """Seconds of one plain gradient + HVP pair on the batch (X, y)."""
    params = list(model.parameters())
    start = time.process_time()
    g = torch.autograd.grad(deep.mse(model(X), y), params, create_graph=True)
    torch.autograd.grad(g, params, [gi.detach() for gi in g])
    return time.process_time() - start


def timed(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=1500, help="Adam steps at batch 32 before measuring")
    p.add_argument("--sizes", default="8,32,128,512")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--pairs", type=int, default=5, help="reference pairs timed before and after each estimate")
    p.add_argument("--reps", type=int, default=3, help="timings of each estimate (best of)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}")
    data, model, opt = trained(args.train)
    gen = torch.Generator().manual_seed(99)
    forms = ("raw", "preconditioned", "update")
    print(f"\nAdam lr 1e-3 after {args.train} steps at batch 32; tol = 0.05; one torch thread")
    print("batch  pair (ms)  form             eta*value (median)  batches (min-max)  cost in pairs: median (max)")
    print("(eta*value: lr * BS for raw, eta * BS_P, the update ratio)")
    for b in (int(s) for s in args.sizes.split(",")):
        pair_times, ratios = [], {f: [] for f in forms}
        drawn = {f: [] for f in forms}
        values = {f: [] for f in forms}

        def pairs() -> float:
            times = []
            for _ in range(args.pairs):
                idx = torch.randperm(1000, generator=gen)[:b]
                times.append(reference_pair(model, data.X[idx], data.y[idx]))
            pair_times.extend(times)
            return min(times)

        for seed in range(args.seeds):
            for f in forms:  # interleaved: pairs, the estimate (best of reps), pairs
                out = {}
                before = pairs()
                seconds = min(timed(lambda: out.update(batch_sharpness_forms(
                    model, deep.mse, data, b, opt, forms=(f,), tol=0.05, samples=2000, seed=seed)))
                    for _ in range(args.reps))
                ratios[f].append(seconds / min(before, pairs()))
                drawn[f].append(out[f].samples)
                values[f].append(out[f].eta_value if out[f].eta_value is not None else 1e-3 * out[f].value)
        pair = min(pair_times)
        for f in forms:
            print(f"{b:5d}  {pair * 1e3:9.2f}  {f:15s}  {statistics.median(values[f]):18.4g}  "
                  f"{min(drawn[f]):7d}-{max(drawn[f]):<9d}  {statistics.median(ratios[f]):8.1f} ({max(ratios[f]):.1f})")

    print("\nper-batch machinery, seconds per batch against the reference pair (best of 5)")
    layout = ParamLayout.of(model)
    population = Population(data, layout.device, layout.dtype)
    print("batch  pair (ms)  curvature_operator  one batch  vmap group (K)")
    for b in (int(s) for s in args.sizes.split(",")):
        curvature = BatchCurvature(model, deep.mse, layout)
        k = max(2, curvature.group_size(b, 1))
        rows = {"pair": [], "operator": [], "one": [], "many": []}
        for _ in range(5):
            idx = torch.randperm(1000, generator=gen)[:b]
            X, y = data.X[idx], data.y[idx]
            rows["pair"].append(reference_pair(model, X, y))

            def operator():
                op = curvature_operator(model, deep.mse, (X, y))
                op.matvec(op.start_direction())
            rows["operator"].append(timed(operator))
            rows["one"].append(timed(lambda: curvature.one((X,), y, b, b, [lambda g: g])))
            batches = torch.stack([torch.randperm(1000, generator=gen)[:b] for _ in range(k)])
            inputs, targets = population.stacked(batches)
            rows["many"].append(timed(lambda: curvature.many(inputs, targets, [lambda g: g])) / k)
        pair = min(rows["pair"])
        ratio = {key: min(v) / pair for key, v in rows.items()}
        print(f"{b:5d}  {pair * 1e3:9.2f}  {ratio['operator']:18.2f}  {ratio['one']:9.2f}  "
              f"{ratio['many']:10.2f} ({k})")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
