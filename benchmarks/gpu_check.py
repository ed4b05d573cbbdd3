"""What a GPU changes, checked in one command (not a test): ``.venv/bin/python benchmarks/gpu_check.py``.

On a machine with CUDA it runs each check at a useful size and prints one Markdown table to paste into the
README; without CUDA it says so and runs every check small on the CPU (the checks that need GPUs say
"skipped" and why).

1. **float64 HVPs against eigsh**: S of an MLP in float64 by the package's Lanczos (tol 1e-10) and by scipy's
   ``eigsh`` (ARPACK, tol 1e-12) on the same operator's products; their relative difference.
2. **TF32 and bfloat16**: S of the same MLP in float32 with TF32 matmuls allowed (CUDA only) and with the model
   in bfloat16, against the float64 S.
3. **SDPA under the user's flash kernel**: a GPT with causal ``F.scaled_dot_product_attention``, measured inside
   ``sdpa_kernel(SDPBackend.FLASH_ATTENTION)`` (the fused kernel has no second derivative; the package runs
   attention on the math backend during its products): S against the same measurement outside the context.
4. **``aeos train --nproc 2`` over NCCL** when two GPUs exist: the rows against one process (``--chunk-size
   N/2`` so both add the same two shards): the largest relative difference of eta * S_P.
5. **The figures' timings**: ``aeos figures --full`` per figure on CUDA (``--figures`` picks them; every figure
   by default), ``--quick --only deep_adam`` on the CPU; wall seconds of each.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.sparse.linalg import eigsh
from torch import nn

import deep
from deep.curvature import curvature_operator

ROOT = Path(__file__).resolve().parents[1]


def _mlp(width: int, dtype: torch.dtype, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                         nn.Linear(width, 10)).to(device=device, dtype=dtype)


def _digits(n: int, device: torch.device):
    data = deep.load_digits(n)
    return data.X.to(device), data.y.to(device)


def check_eigsh(device, width, n) -> tuple[str, str, bool]:
    X, y = _digits(n, device)
    model = _mlp(width, torch.float64, device)
    ours = deep.sharpness(model, deep.mse, (X.double(), y.double()), tol=1e-10, max_iter=300)
    op = curvature_operator(model, deep.mse, (X.double(), y.double()))
    theirs = float(eigsh(op.to_scipy(), k=1, which="LA", tol=1e-12, v0=np.ones(op.n))[0][0])
    gap = abs(ours - theirs) / abs(theirs)
    return f"S = {ours:.10g}", f"eigsh {theirs:.10g}; relative difference {gap:.1e}", gap < 1e-8


def check_precision(device, width, n) -> list[tuple[str, str, str, bool]]:
    X, y = _digits(n, device)
    reference = deep.sharpness(_mlp(width, torch.float64, device), deep.mse, (X.double(), y.double()), tol=1e-8)
    rows = []
    settings = [("float32", torch.float32, False), ("bfloat16", torch.bfloat16, False)]
    if device.type == "cuda":
        settings.insert(1, ("float32 + TF32", torch.float32, True))
    for label, dtype, tf32 in settings:
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            model = _mlp(width, torch.float64, device).to(dtype)
            value = deep.sharpness(model, deep.mse, (X.to(dtype), y.to(dtype)), tol=1e-3, max_iter=100)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
        error = abs(value - reference) / abs(reference)
        rows.append((f"S in {label}", f"{value:.6g}", f"float64 {reference:.6g}; relative error {error:.1e}",
                     error < (5e-2 if dtype == torch.bfloat16 else 1e-3)))
    if device.type != "cuda":
        rows.insert(1, ("S in float32 + TF32", "skipped", "TF32 exists on CUDA (Ampere and later) only", True))
    return rows


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads, self.ln = heads, nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.qkv(self.ln(x)).split(C, 2))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.proj(y.transpose(1, 2).reshape(B, T, C))


def check_flash(device, width, n) -> tuple[str, str, bool]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    vocab, context = 32, 16
    dtype = torch.float16 if device.type == "cuda" else torch.float32  # flash attention runs in half on CUDA
    model = nn.Sequential(nn.Embedding(vocab, width), _Block(width, 4), nn.Linear(width, vocab)).to(device, dtype)
    ids = torch.randint(0, vocab, (n, context + 1), device=device)

    def loss(logits, targets):
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    data = (ids[:, :-1], ids[:, 1:])
    outside = deep.sharpness(model, loss, data, tol=1e-4)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        inside = deep.sharpness(model, loss, data, tol=1e-4)
        still_flash = torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.math_sdp_enabled()
    gap = abs(inside - outside) / abs(outside)
    return (f"S = {inside:.6g} ({dtype})", f"outside the context {outside:.6g}; relative difference {gap:.1e}; "
            f"user's kernel choice kept: {still_flash}", gap < 1e-3 and still_flash)


def check_nccl(steps: int) -> tuple[str, str, bool]:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 2:
        return "skipped", f"{gpus} CUDA devices (needs 2)", True
    with tempfile.TemporaryDirectory() as tmp:
        common = ["train", "--dataset", "digits", "--model", "mlp", "--optimizer", "adam", "--lr", "1e-3",
                  "--steps", str(steps), "--measure-every", str(max(steps // 10, 1)), "--no-progress"]
        for name, extra in (("one", ["--chunk-size", "500"]), ("two", ["--nproc", "2"])):
            subprocess.run([sys.executable, "-m", "paper_figures.console", *common, *extra, "--out", f"{tmp}/{name}"],
                           check=True, cwd=ROOT, capture_output=True)
        one, two = deep.read_metrics(f"{tmp}/one"), deep.read_metrics(f"{tmp}/two")
    gaps = [abs(a["eta_S_P"] - b["eta_S_P"]) / abs(a["eta_S_P"]) for a, b in zip(one, two)
            if math.isfinite(a["eta_S_P"]) and a["eta_S_P"]]
    return f"{len(two)} rows", f"largest relative difference of eta*S_P against one process: {max(gaps):.1e}", \
        max(gaps) < 1e-4


def figure_timings(device, figures: list[str]) -> list[tuple[str, str, str, bool]]:
    rows = []
    scale = "--full" if device.type == "cuda" else "--quick"
    for name in figures:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "paper_figures.console", "figures", scale, "--only", name,
                                   "--no-progress", "--out", tmp], cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - start
        ok = done.returncode == 0
        rows.append((f"aeos figures {scale} --only {name}", f"{seconds:.0f} s",
                     "" if ok else done.stderr.strip().splitlines()[-1][:120], ok))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--figures", default=None, help="comma-separated figures to time (default: every figure on "
                                                        "CUDA, deep_adam on the CPU)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        where = f"CUDA: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
        width, n, steps = 512, 5000, 200
    else:
        torch.set_num_threads(min(os.cpu_count() or 1, 4))
        where = f"no CUDA: the CPU, small sizes ({os.cpu_count()} cores)"
        width, n, steps = 32, 300, 20
    print(f"gpu_check on {where}; torch {torch.__version__}", file=sys.stderr)
    if cuda:
        from paper_figures.registry import FIGURES
        figures = args.figures.split(",") if args.figures else list(FIGURES)
    else:
        figures = args.figures.split(",") if args.figures else ["deep_adam"]

    rows: list[tuple[str, str, str, bool]] = [("float64 HVPs vs eigsh", *check_eigsh(device, width, n))]
    rows += check_precision(device, width, n)
    rows.append(("SDPA inside the user's sdpa_kernel(FLASH_ATTENTION)", *check_flash(device, 32, min(n, 64))))
    rows.append(("aeos train --nproc 2 (NCCL)", *check_nccl(steps)))
    rows += figure_timings(device, figures)
    print(f"\n{where}, torch {torch.__version__}\n")
    print("| check | result | against | ok |")
    print("|---|---|---|---|")
    for check, result, against, ok in rows:
        print(f"| {check} | {result} | {against} | {'yes' if ok else '**no**'} |")


if __name__ == "__main__":
    main()
