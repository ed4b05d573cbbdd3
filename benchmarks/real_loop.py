"""What a :class:`deep.Monitor` costs in a newcomer's own loop (not a test).

Run: ``.venv/bin/python benchmarks/real_loop.py [--steps 1000] [--every 100] [--pairs 2] [--accuracy]``.

The loop is the README's: a small GPT (``nn.Embedding``, ``nn.LayerNorm``, causal
``F.scaled_dot_product_attention``, 2 blocks of width 32 with 4 heads, tied embeddings: 29 792 parameters)
on character windows of Python's documentation (128 windows of 32 characters, full batch), AdamW (lr 3e-3,
weight decay 0.1) with a linear warmup over the first 10% of the steps and a cosine decay to 0, on one torch
thread.  The same loop runs without and with a monitor measuring S, S_P and eta * S_P every ``--every``
updates, in interleaved pairs (plain, monitored, plain, monitored, ...).  Printed:

* the overhead as the wall time of a monitored run over the plain run of its pair, minus 1 (best pair);
* the overhead the monitor counts itself (its seconds measuring over the rest of its run's seconds);
* per measurement: the products (HVPs) and the cost in training steps, for each setting of ``--settings``
  (``tol`` and ``sharpness_every``), and the overhead those products imply at the unit costs (one HVP, one
  build of the kept graph, in training steps: best of 7 timings interleaved with training steps, the number
  that holds up on a loaded machine);
* with ``--accuracy``: each row's eta * S_P against a tight solve (cold, tol 1e-7) at the same parameters.

The machine's load (``os.getloadavg``) is printed beside the numbers: other processes slow both runs alike
only on average, so compare within a pair.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import deep


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads, self.ln1, self.ln2 = heads, nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2)
                   for t in self.qkv(self.ln1(x)).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # flash kernel in training
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))

class GPT(nn.Module):
    def __init__(self, vocab, context, width=32, heads=4, layers=2):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight                           # tied: counted once

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.ln(self.blocks(x)))

def lm_loss(logits, targets):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def run(steps: int, every: int | None, seed: int = 0, accuracy: bool = False, **settings):
    """One loop of ``steps`` updates; with ``every``, a monitor measures every ``every`` updates.
    Returns (wall seconds, the monitor or None, [(row eta_S_P, tight eta_S_P)])."""
    data = deep.load_text(128, context=32)
    torch.manual_seed(seed)
    model = GPT(data.num_classes, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    warmup = max(steps // 10, 1)  # the README's schedule: 100 of 1000, then a cosine to 0 at the last update
    cosine = lambda t: 0.5 * (1 + math.cos(math.pi * (t - warmup) / max(steps - 1 - warmup, 1)))  # noqa: E731
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (t + 1) / warmup if t < warmup else cosine(t))
    monitor = deep.Monitor(model, lm_loss, (data.X, data.y), opt, every=every, **settings) if every else None
    checks, excluded = [], 0.0
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        lm_loss(model(data.X), data.y).backward()
        opt.step()
        schedule.step()
        if monitor is not None:
            row = monitor.step()
            if row is not None and accuracy:
                t0 = time.perf_counter()
                tight = deep.measure_edge(model, lm_loss, (data.X, data.y), opt, tol=1e-7, max_iter=400)
                checks.append((row["eta_S_P"], tight.eta_S_P))
                excluded += time.perf_counter() - t0
    wall = time.perf_counter() - start - excluded
    if monitor is not None:
        monitor.seconds_excluded = excluded
    return wall, monitor, checks


def unit_costs(reps: int = 7) -> tuple[float, float]:
    """(one HVP, one build of the kept graph) in training steps of the loop, each the best of ``reps`` timings
    interleaved with the steps: robust to a loaded machine, unlike the wall time of whole runs."""
    from deep.curvature.hessian import hessian_operator

    data = deep.load_text(128, context=32)
    torch.manual_seed(0)
    model = GPT(data.num_classes, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    best = {"step": math.inf, "hvp": math.inf, "build": math.inf}
    v = torch.randn(sum(p.numel() for p in model.parameters()))
    for _ in range(reps):
        start = time.perf_counter()
        opt.zero_grad()
        lm_loss(model(data.X), data.y).backward()
        opt.step()
        best["step"] = min(best["step"], time.perf_counter() - start)
        op = hessian_operator(model, lm_loss, (data.X, data.y))
        start = time.perf_counter()
        op.start_direction()  # builds the graph (and reads g off it)
        best["build"] = min(best["build"], time.perf_counter() - start)
        for _ in range(3):  # the products of one measurement, through one kept graph
            start = time.perf_counter()
            op @ v
            best["hvp"] = min(best["hvp"], time.perf_counter() - start)
    return best["hvp"] / best["step"], best["build"] / best["step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--settings", default="1e-2:1,1e-2:0",
                        help="comma-separated tol:sharpness_every settings of the monitor (default 1e-2:1,1e-2:0: "
                             "the README's monitor, and eta * S_P alone)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = [dict(tol=float(a), sharpness_every=int(b)) for a, b in (s.split(":") for s in args.settings.split(","))]
    print(f"GPT {sum(p.numel() for p in GPT(103, 32).parameters())} parameters, {args.steps} steps, measured every "
          f"{args.every}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    hvp, build = unit_costs()
    print(f"one HVP costs {hvp:.2f} training steps, one graph build {build:.2f} (best of 7, interleaved); "
          f"load {os.getloadavg()[0]:.1f}")
    for setting in settings:
        ratios, counted, per_measure, hvps = [], [], [], []
        checks = []
        for _ in range(args.pairs):
            plain, _, _ = run(args.steps, None)
            wall, monitor, check = run(args.steps, args.every, accuracy=args.accuracy, **setting)
            ratios.append(wall / plain - 1)
            counted.append(monitor.seconds / (wall - monitor.seconds))
            per_measure.append(monitor.seconds / len(monitor.rows) / (plain / args.steps))
            hvps += [r["hvps"] for r in monitor.rows]
            checks = check or checks
        estimate = (build + statistics.mean(hvps) * hvp) / args.every
        print(f"tol {setting['tol']:g}, S every {setting['sharpness_every']} measurements: from the unit costs "
              f"{estimate:.1%}; overhead "
              f"{min(ratios):.1%} (pairs: {', '.join(f'{r:.1%}' for r in ratios)}); counted by the monitor "
              f"{min(counted):.1%}; a measurement costs {min(per_measure):.1f} training steps, "
              f"{statistics.mean(hvps):.1f} HVPs (min {min(hvps)}, max {max(hvps)}); load {os.getloadavg()[0]:.1f}")
        if checks:
            errors = [abs(a - b) / abs(b) for a, b in checks if b and math.isfinite(a)]
            print(f"    eta*S_P vs a tight solve: median relative error {statistics.median(errors):.1e}, "
                  f"max {max(errors):.1e} over {len(errors)} rows; rows: "
                  + ", ".join(f"{a:.4g}/{b:.4g}" for a, b in checks))


if __name__ == "__main__":
    main()
