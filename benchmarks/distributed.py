"""Speed of full-batch work sharded over processes (not a test).  Run: ``.venv/bin/python benchmarks/distributed.py``.

On the digits MLP 64-200-200-10 tanh and the small tanh CNN of ``deep_speed.py`` (all 1797 digits, MSE, float32),
times in one run, for each layout of the machine's cores:

* one full-batch Hessian-vector product (the default cached double backward, :mod:`deep.curvature.hessian`),
* one full-batch training step (``full_batch_pass`` with backward, then ``torch.optim.Adam.step``),
* one all-reduce of a parameter-sized float32 vector: the communication an HVP adds (gloo here, NCCL on GPUs),

by default in three layouts of two cores (``--layouts``): one process on one thread (the reference), one process on two torch threads
(intra-op parallelism, what a single-process user gets for free), and two ranks of one thread each, holding
half the batch (:class:`deep.Shard`, gloo).  Every layout runs as ranks started by the package's own
launcher (:func:`deep.training.distributed.launch`, torch's elastic agent); every timing is the median over ``--reps``
repetitions (the ranks start each one together), rank 0's.  Arguments: ``--reps``, ``--chunk`` (examples per chunk).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

LAYOUTS = "1x1,1x2,2x1"  # ranks x torch threads per rank


def mse(outputs, targets):
    return 0.5 * ((outputs - targets) ** 2).sum(dim=1).mean()


def problem(name: str):
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = nn.functional.one_hot(torch.tensor(d.target), 10).float()
    torch.manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(64, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 10))
    else:
        x = x.view(-1, 1, 8, 8)
        model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, padding=1), nn.Tanh(),
                              nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    return model, x, y


def median_time(fn, reps: int, sync) -> float:
    fn()
    fn()  # warm-up
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rank_main(name: str, threads: int, reps: int, chunk: int, folder: str) -> None:
    """One rank (of however many the launcher started): time the three operations, rank 0 writes them."""
    import torch.distributed as dist

    import deep
    from deep.training.data import chunks
    from deep.curvature.reductions import reduce_sum
    from deep.training.distributed import session, shard_slice
    from deep.training.train import full_batch_pass

    torch.set_num_threads(threads)
    with session(int(os.environ["WORLD_SIZE"])) as ranks:
        group = ranks.group
        cuda = ranks.device.type == "cuda"

        def sync():  # every rank starts a repetition together, its GPU idle
            if cuda:
                torch.cuda.synchronize(ranks.device)
            if group is not None:
                dist.barrier()

        model, x, y = problem(name)
        model, x, y = model.to(ranks.device), x.to(ranks.device), y.to(ranks.device)
        mine = shard_slice(len(x), ranks.rank, ranks.world)
        parts = chunks(x[mine], y[mine], chunk)
        data = deep.Shard(parts) if group is not None else parts
        whole = deep.Dataset("digits", x, y, 10, tuple(x.shape[1:]), "classification")
        n_params = sum(p.numel() for p in model.parameters())

        op = deep.hessian_operator(model, mse, data)
        v = torch.randn(op.n, generator=torch.Generator().manual_seed(1)).to(ranks.device)
        hvp = median_time(lambda: op.matvec(v), reps, sync)

        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            full_batch_pass(model, mse, parts, whole, backward=True, group=group)
            opt.step()

        train_step = median_time(step, reps, sync)
        flat = torch.randn(n_params, device=ranks.device)
        allreduce = median_time(lambda: reduce_sum(flat, group), reps, sync) if group is not None else 0.0
        if ranks.is_writer:
            Path(folder, "result.json").write_text(json.dumps({"hvp": hvp, "step": train_step,
                                                                "allreduce": allreduce, "params": n_params}))


def measure(name: str, world: int, threads: int, reps: int, chunk: int) -> dict:
    """Start ``world`` ranks of this script through the package's launcher; rank 0's timings."""
    from deep.training.distributed import launch

    with tempfile.TemporaryDirectory() as folder:
        status = launch([__file__, "--rank-of", name, str(threads), str(reps), str(chunk), folder], world)
        if status != 0:
            raise SystemExit(f"the {world}-rank measurement of {name} failed with exit status {status}")
        return json.loads(Path(folder, "result.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--layouts", default=LAYOUTS,
                        help=f"RANKSxTHREADS,... (default {LAYOUTS}; the first is the reference; on GPUs one each)")
    parser.add_argument("--chunk", type=int, default=2048, help="examples per chunk (default: one chunk per rank)")
    parser.add_argument("--rank-of", nargs=5, help=argparse.SUPPRESS)  # internal: one rank's work
    args = parser.parse_args()
    if args.rank_of:
        name, threads, reps, chunk, folder = args.rank_of
        from deep.training.distributed import run_as_rank

        run_as_rank(lambda: rank_main(name, int(threads), int(reps), int(chunk), folder) or 0)
    print(f"torch {torch.__version__}, {args.reps} repetitions, median; ratios against the first layout")
    print(f"{'network':<5} {'layout':<22} {'HVP ms':>8} {'speed-up':>9} {'step ms':>8} {'speed-up':>9} "
          f"{'all-reduce ms':>14} {'of HVP':>7}")
    for name in ("mlp", "cnn"):
        base = None
        for world, threads in [map(int, layout.split("x")) for layout in args.layouts.split(",")]:
            r = measure(name, world, threads, args.reps, args.chunk)
            base = base or r
            layout = f"{world} proc x {threads} thread" + ("s" if threads > 1 else "")
            comm = f"{1e3 * r['allreduce']:>14.3f} {r['allreduce'] / r['hvp']:>7.1%}" if world > 1 else ""
            print(f"{name:<5} {layout:<22} {1e3 * r['hvp']:>8.2f} {base['hvp'] / r['hvp']:>8.2f}x "
                  f"{1e3 * r['step']:>8.2f} {base['step'] / r['step']:>8.2f}x {comm}")
        print(f"{name:<5} {r['params']} parameters: an HVP all-reduces {4 * r['params'] / 1e3:.0f} kB per rank")


if __name__ == "__main__":
    main()
