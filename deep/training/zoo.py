"""Every optimizer of the registry at its edge: the experiments behind the ``optimizer_zoo`` figure, as data.

* :func:`zoo_run`: one optimizer, one step size, one seed, trained full batch on the same MLP and data (digits
  by default), its edge ratio eta_S_P / c_t measured every ``measure_every`` steps (the update just taken, as
  :func:`deep.measure_edge` reads it; Muon paired with AdamW for the biases, their combined ratio);
* :func:`zoo_summary`: one row per (optimizer, step size): the late-training ratio of each seed (the median
  over the last half of the measurements), their mean and a 95% Student-t interval over the seeds;
* :func:`muon_on_quadratic`: how well Muon's frozen-orthogonalisation threshold predicts where the real
  ``torch.optim.Muon`` step stands on a quadratic, L(W) = 1/2 vec(W)^T H vec(W): the run's edge ratio
  over time, for both frozen P (``"polar"``: (M M^T)^1/2; ``"newton_schulz"``: what torch's quintic applies).

Runs are deterministic for a seed (one torch thread is the caller's choice, as in ``aeos train``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from aeos_base import checks
from aeos_theory.optimizers import OPTIMIZERS, get_optimizer

from ..curvature.block_preconditioners import preconditioner_of, step_sizes
from ..curvature.params import ParamLayout
from ..measure.edge import measure_edge
from ..measure.tracker import SharpnessTracker
from .data import load_digits
from .losses import mse
from .models import build_model
from .optim import make_optimizer

#: The experiment's step sizes, two per optimizer (torch's own scale for each: Adadelta's lr is 1, Adafactor's
#: lr caps its relative step); every run reaches its edge within a few hundred full-batch steps on digits.
ZOO_ETAS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("gd", (0.2, 0.4)), ("heavy_ball", (0.1, 0.2)), ("nesterov", (0.05, 0.1)), ("adam", (4e-3, 8e-3)),
    ("adamw", (4e-3, 8e-3)), ("rmsprop", (1e-3, 2e-3)), ("nadam", (1e-3, 2e-3)), ("adagrad", (0.02, 0.05)),
    ("adamax", (0.02, 0.04)), ("adadelta", (1.0, 2.0)), ("radam", (0.01, 0.02)), ("asgd", (0.2, 0.4)),
    ("adafactor", (0.01, 0.02)), ("muon", (0.01, 0.02)), ("muon_plain", (0.01, 0.02)), ("shampoo", (0.01, 0.02)),
    ("soap", (2e-3, 4e-3)),
)


def zoo_optimizers(name: str, model: nn.Module, hyper: dict, adamw_eta: float = 1e-3) -> list[torch.optim.Optimizer]:
    """The optimizers that train ``model`` with package optimizer ``name``: one, or for Muon (matrices only) Muon
    on the 2-D weights and AdamW (lr ``adamw_eta``, torch's defaults) on the rest, the usual recipe."""
    spec = get_optimizer(name)
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.torch_class != "Muon":
        return [make_optimizer(name, params, hyper)]
    matrices, rest = [p for p in params if p.ndim == 2], [p for p in params if p.ndim != 2]
    optimizers = [make_optimizer(name, matrices, hyper)]
    if rest:
        optimizers.append(make_optimizer("adamw", rest, {"eta": adamw_eta}))
    return optimizers


def zoo_run(optimizer: str, eta: float, seed: int = 0, *, n: int = 300, width: int = 32, depth: int = 2,
            steps: int = 300, measure_every: int = 25, adamw_eta: float = 1e-3, tol: float = 1e-3,
            max_hvps: int = 100) -> dict[str, Any]:
    """Train the digits MLP (64-width^depth-10 tanh, square loss, the first ``n`` images) full batch with
    ``optimizer`` at step size ``eta`` from ``seed``; every ``measure_every`` steps the edge of the update just
    taken.  Returns {"optimizer", "eta", "seed", "step", "loss", "edge_ratio", "eta_S_P", "edge_constant",
    "diverged"} (series as lists; eta_S_P and edge_constant nan for Muon + AdamW, whose ratio is combined).
    A loss that is not finite or exceeds 10^4 times its start ends the run as diverged."""
    checks.integer("steps", steps, low=1)
    checks.integer("measure_every", measure_every, low=1)
    data = load_digits(n)
    chunks = data.chunks(None)
    model = build_model("mlp", (64,), 10, width=width, depth=depth, act="tanh", seed=seed)
    optimizers = zoo_optimizers(optimizer, model, {"eta": eta}, adamw_eta)
    measured = optimizers if len(optimizers) > 1 else optimizers[0]
    tracker = SharpnessTracker(tol=tol, max_iter=max_hvps, seed=seed)
    out: dict[str, Any] = {"optimizer": optimizer, "eta": eta, "seed": seed, "step": [], "loss": [], "edge_ratio": [],
                           "eta_S_P": [], "edge_constant": [], "diverged": False}
    start = None
    for step in range(1, steps + 1):
        for opt in optimizers:
            opt.zero_grad()
        loss = sum(mse(model(X), y) * len(X) / len(data.X) for X, y in chunks)
        value = loss.item()
        start = value if start is None else start
        if not math.isfinite(value) or value > 1e4 * start:
            out["diverged"] = True
            break
        loss.backward()
        for opt in optimizers:
            opt.step()
        if step % measure_every == 0 or step == steps:
            row = tracker.measure(model, mse, chunks, measured)
            for key, column in (("step", step), ("loss", value), ("edge_ratio", row["edge_ratio"]),
                                ("eta_S_P", row["eta_S_P"]), ("edge_constant", row["edge_constant"])):
                out[key].append(float(column))
    return out


def zoo_summary(runs: Sequence[dict[str, Any]], late: float = 0.5) -> list[dict[str, Any]]:
    """One row per (optimizer, eta): each seed's late ratio (the median of edge_ratio over the last ``late``
    fraction of its measurements; nan for a diverged run), their mean over seeds and a 95% Student-t interval
    (``low``, ``high``; the mean alone for one seed), in the order of first appearance."""
    import numpy as np
    from scipy import stats

    checks.real("late", late, low=0.0, high=1.0, low_inclusive=False)
    groups: dict[tuple[str, float], list[float]] = {}
    for run in runs:
        ratios = np.asarray(run["edge_ratio"], dtype=float)
        keep = ratios[len(ratios) - max(1, int(round(late * len(ratios)))):]
        value = float(np.median(keep)) if keep.size and not run["diverged"] else math.nan
        groups.setdefault((run["optimizer"], float(run["eta"])), []).append(value)
    rows = []
    for (name, eta), values in groups.items():
        arr = np.asarray(values)
        mean = float(arr.mean())
        half = float(stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0
        rows.append({"optimizer": name, "label": OPTIMIZERS[name].label, "eta": eta, "seeds": len(arr),
                     "late_ratio": mean, "low": mean - half, "high": mean + half, "per_seed": values})
    return rows


class _Quadratic(nn.Module):
    """A weight matrix W whose forward is vec(W) (row-major): the 'model' of L(W) = 1/2 vec(W)^T H vec(W)."""

    def __init__(self, w0: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(w0.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.reshape(1, -1)


def muon_on_quadratic(eta: float = 0.01, *, shape: tuple[int, int] = (6, 10), momentum: float = 0.95,
                      nesterov: bool = True, steps: int = 1500, measure_every: int = 10, seed: int = 0,
                      rules: Sequence[str] = ("polar", "newton_schulz")) -> dict[str, Any]:
    """The real ``torch.optim.Muon`` (float64 weights; its Newton-Schulz runs in bfloat16) on
    L(W) = 1/2 vec(W)^T H vec(W), H = Q diag(logspace(0, 2)) Q^T with Q a random rotation (``seed``), from
    W_0 ~ N(0, 1).  Every ``measure_every`` steps, for each frozen P of ``rules``
    (:func:`deep.curvature.block_preconditioners.preconditioner_of`), the edge ratio
    lambda_max(D^1/2 H D^1/2) / c with D = eta k P^-1 (k torch's shape adjustment) and c Muon's constant.
    The frozen-P threshold predicts the edge of the real step where the run, which P adapts to, settles at
    ratio 1.  Returns {"step", "loss", rule: ratios, "constant", ...}."""
    g = torch.Generator().manual_seed(seed)
    d = shape[0] * shape[1]
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    H = (q * torch.logspace(0, 2, d, dtype=torch.float64)) @ q.T
    H = 0.5 * (H + H.T)
    model = _Quadratic(torch.randn(shape, generator=g, dtype=torch.float64))
    opt = torch.optim.Muon(model.parameters(), lr=eta, momentum=momentum, nesterov=nesterov, weight_decay=0.0)
    loss_fn = lambda out, y: 0.5 * (out @ H @ out.T).sum()  # noqa: E731
    data = [(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64))]
    layout = ParamLayout.of(model)
    out: dict[str, Any] = {"step": [], "loss": [], **{rule: [] for rule in rules}}
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = loss_fn(model(None), None)
        loss.backward()
        opt.step()
        if step % measure_every == 0:
            out["step"].append(step)
            out["loss"].append(loss.item())
            sizes = step_sizes(opt, model, layout, lambda o, group: float(group["lr"]))
            for rule in rules:
                half = preconditioner_of(opt, model, layout, muon=rule).scaled(sizes).to_dense()
                top = float(torch.linalg.eigvalsh(half @ H @ half.T)[-1])
                out[rule].append(top)
    edge = measure_edge(model, loss_fn, data, opt, tol=1e-10, max_iter=d)
    out["constant"] = edge.constant
    for rule in rules:
        out[rule] = [value / edge.constant for value in out[rule]]
    out.update(eta=eta, shape=shape, momentum=momentum, nesterov=nesterov, seed=seed,
               last_measured_ratio=edge.ratio)
    return out
