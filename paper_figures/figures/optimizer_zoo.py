"""Figure 15: every optimizer of the registry trained full batch on one MLP, each against its own threshold.

Every optimizer of :data:`deep.training.zoo.ZOO_ETAS` (GD, heavy ball, Nesterov, Adam, AdamW, RMSProp,
NAdam, Adagrad, Adamax, Adadelta, RAdam, ASGD, Adafactor, Muon with and without Nesterov, Shampoo, SOAP)
trains the same digits MLP (64-width-width-10 tanh, square loss) full batch at two step sizes, from the
same starts (one per seed).  Every few steps :func:`deep.training.zoo.zoo_run` reads the edge ratio
eta S_P / c_t of the update just taken (``deep.measure_edge``: S_P the top eigenvalue of P^-1/2 H P^-1/2
with P as that step used it, c_t the optimizer's own threshold constant at step t; for Muon the ratio
combines Muon on the weight matrices and AdamW on the biases, each block divided by its own constant).
A ratio of 1 is the optimizer at its own edge of stability.

Top: the edge ratio over training, one panel per optimizer, both step sizes, every seed thin and the mean
over seeds bold (a log axis where the ratio leaves [0, 3]).  Bottom: the late-training ratio (each seed's
median over the second half of its records, :func:`deep.training.zoo.zoo_summary`), its mean over seeds
with the 95% t interval, per optimizer and step size, against 1.

Shampoo and SOAP need the optional ``pytorch_optimizer`` package (``aeos[optimizers]``); without it the
figure leaves them out and its caption says so.

Seeds: 3 per (optimizer, step size) at quick (5 at full).  Quick shrinks the network to width 24 on 200
images and 300 steps, a record every 30 (full: width 200 on 1000 images, 2000 steps, a record every 50);
tiny (tests) runs three optimizers at width 12 on 60 images for 60 steps.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aeos_base import files
from aeos_theory.optimizers import get_optimizer
from deep.training.zoo import ZOO_ETAS, zoo_run, zoo_summary
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import training
from paper_figures.figures.common import by_condition
from paper_figures.registry import Context

NAME = "optimizer_zoo"
TITLE = ("Every supported optimizer trained full batch on one MLP: its edge ratio eta S_P / c_t over training, "
         "against its own threshold")

#: The optimizers of the tiny scale (tests): one plain, one adaptive, one whose edge the frozen-P threshold
#: describes only approximately.
TINY = ("gd", "adam", "muon")
#: The late window: each seed's median over this last fraction of its records.
LATE = 0.5
#: Late ratios counted as "near the edge" in the caption (the rest are below or above it).
NEAR = (0.8, 1.25)
#: A late ratio this many times the threshold is "far above" it.
FAR = 2.0
#: The lr of the AdamW that trains the biases beside Muon (zoo_run's default).
MUON_BIASES_ETA = inspect.signature(zoo_run).parameters["adamw_eta"].default
#: Panels per row of the small multiples.
COLUMNS = 6


def sizes(ctx: Context) -> dict[str, int]:
    """The network, data and run length of :func:`deep.training.zoo.zoo_run` at this scale."""
    n, width, steps, every = ctx.pick((60, 12, 60, 20), (200, 24, 300, 30), (1000, 200, 2000, 50))
    return {"n": n, "width": width, "depth": 2, "steps": steps, "measure_every": every}


def candidates(ctx: Context) -> list[tuple[str, tuple[float, float]]]:
    """(optimizer, its two step sizes) of this scale, in the order of :data:`ZOO_ETAS`."""
    return [(name, etas) for name, etas in ZOO_ETAS if ctx.scale != "tiny" or name in TINY]


def missing_package(name: str) -> str | None:
    """The module optimizer ``name`` comes from when it is not installed (None when it is)."""
    module = get_optimizer(name).torch_module
    return module if importlib.util.find_spec(module.split(".")[0]) is None else None


def _cost(config: dict) -> float:
    """Rough CPU seconds of one run: :func:`training.cost_of` of the same MLP, twice for the optimizers whose
    step or preconditioner costs matrix roots (Muon, Shampoo, SOAP)."""
    heavy = get_optimizer(config["optimizer"]).torch_class in ("Muon", "Shampoo", "SOAP")
    return training.cost_of({"model": "mlp", "dataset": "digits", **config}) * (2.0 if heavy else 1.0)


def plan(ctx: Context) -> list[Run]:
    """One :func:`deep.training.zoo.zoo_run` per (optimizer, step size, seed); optimizers whose package is
    missing are left out."""
    runs = []
    for name, etas in candidates(ctx):
        if missing_package(name):
            continue
        for eta in etas:
            for seed in ctx.seeds():
                config = {"optimizer": name, "eta": float(eta), "seed": seed, **sizes(ctx)}
                runs.append(Run("deep.training.zoo:zoo_run", config, label=f"zoo {name} eta={eta:g} seed {seed}",
                                cost=_cost(config)))
    return runs


def _late_numbers(seeds: Sequence[int], found: Sequence[dict]) -> dict[str, Any]:
    """One (optimizer, eta): the late ratio of :func:`zoo_summary` as a headline over seeds (a diverged seed
    has no value), the seeds that diverged, and each seed's last loss."""
    (row,) = zoo_summary(found, late=LATE)
    values = [None if not math.isfinite(v) else v for v in row["per_seed"]]
    return {"late_edge_ratio": intervals.over_seeds(values, seeds),
            "diverged": [int(s) for s, r in zip(seeds, found) if r["diverged"]],
            "final_loss": [float(f"{r['loss'][-1]:.4g}") if r["loss"] else None for r in found]}


def rows_for_csv(results: Sequence[dict]) -> list[dict[str, Any]]:
    """data/optimizer_zoo.csv: one row per record of every run."""
    rows = []
    for r in results:
        for i, step in enumerate(r["step"]):
            rows.append({"optimizer": r["optimizer"], "eta": r["eta"], "seed": r["seed"], "step": int(step),
                         "loss": r["loss"][i], "edge_ratio": r["edge_ratio"][i], "eta_S_P": r["eta_S_P"][i],
                         "edge_constant": r["edge_constant"][i], "diverged": int(r["diverged"])})
    return rows


def _short(label: str) -> str:
    """A registry label on two lines when it is long ("Muon (nesterov=False)")."""
    head, _, tail = label.partition(" (")
    return f"{head}\n({tail}" if tail and len(label) > 12 else label


def _draw_panel(ax, name: str, by_eta: Sequence[tuple[float, Sequence[dict]]], colors: Sequence[str],
                first: bool) -> None:
    """The edge ratio of ``name`` over training: every seed thin, the mean bold, one colour per step size."""
    top = 0.0
    for color, (eta, found) in zip(colors, by_eta):
        ratios = [np.asarray(r["edge_ratio"], dtype=float) for r in found]
        top = max([top, *(float(np.nanmax(v)) for v in ratios if v.size and np.isfinite(v).any())])
        label = f"{'smaller' if color == colors[0] else 'larger'} step size (thin: seeds, bold: mean)" if first else None
        style.seeds_and_mean(ax, [r["step"] for r in found], ratios, color=color, marker="o", ms=1.8, label=label)
    if top > 3.0:
        style.logscale(ax, decades_only=True)
    else:
        ax.set_ylim(0, max(1.5, 1.1 * top))
    style.threshold_line(ax, 1.0, "1")
    steps = max(int(r["step"][-1]) for _, found in by_eta for r in found if r["step"])
    ax.set_xlim(0, steps)
    ax.set_xticks([0, steps // 2, steps])
    ax.set_title(_short(get_optimizer(name).label))
    ax.set_xlabel("step")
    ax.set_ylabel("edge ratio")


def _draw_summary(ax, names: Sequence[str], numbers: dict, colors: Sequence[str]) -> None:
    """Per optimizer and step size: the late ratio's mean over seeds with its 95% interval, seeds as dots."""
    points = [(i + (j - 0.5) * 0.32, colors[j], entry["late_edge_ratio"])
              for i, name in enumerate(names) for j, entry in enumerate(numbers[name].values())]
    values = [v for _, _, h in points for v in h["values"] if v is not None and v > 0]
    log = max(values + [1.0]) > 3.0
    bottom = min(values + [1.0]) / 2 if log else 0.0
    for x, color, headline in points:
        seeds = [v for v in headline["values"] if v is not None]
        ax.plot([x] * len(seeds), seeds, ls="none", marker="o", ms=2, color=color, alpha=0.4)
        if headline["mean"] is None:
            continue
        mean = headline["mean"]
        low, high = headline["interval"] or (mean, mean)
        # an interval reaching below the axis (at or below 0 on a log axis) runs off its bottom
        ax.errorbar([x], [mean], yerr=[[mean - max(low, bottom)], [high - mean]], fmt="o", ms=3.5, color=color,
                    capsize=2, lw=1.0)
    style.threshold_line(ax, 1.0, "edge\n1")
    if log:
        ax.set_yscale("log")
        highs = [h["interval"][1] for _, _, h in points if h["interval"] is not None]
        ax.set_ylim(bottom, 1.5 * max(values + highs))
        style.logscale(ax, decades_only=True)
        ax.yaxis.grid(True, which="minor", alpha=0.15, lw=0.4)
    else:
        ax.set_ylim(0, 1.5 * max(values + [1.0]))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([_short(get_optimizer(n).label) for n in names], rotation=90, fontsize=6.5)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xlabel("optimizer (left: smaller step size, right: larger)")
    ax.set_ylabel("late edge ratio\n(mean, 95% interval)")


def _quote(name: str, numbers: dict) -> str:
    """"Adam (eta 0.004: 0.93 [0.9, 0.96] over 3 seeds; eta 0.008: ...)", with the seeds that diverged."""
    parts = []
    for key, entry in numbers[name].items():
        text = intervals.text(entry["late_edge_ratio"], 3)
        if entry["diverged"]:
            text += f", diverged at seed(s) {', '.join(map(str, entry['diverged']))}"
        parts.append(f"eta {key.removeprefix('eta=')}: {text}")
    return f"{get_optimizer(name).label} ({'; '.join(parts)})"


def _kind(mean: float | None) -> str:
    """Where a late ratio lies: "near" the edge (within :data:`NEAR`), "below" or "above" it, "far" above
    (beyond :data:`FAR`), or "none" (no seed gave a value)."""
    if mean is None:
        return "none"
    if mean > FAR:
        return "far"
    return "below" if mean < NEAR[0] else "above" if mean > NEAR[1] else "near"


def _caption(names: Sequence[str], numbers: dict, skipped: dict[str, str], size: dict[str, int], n_seeds: int) -> str:
    groups: dict[str, list[str]] = {group: [] for group in ("near", "above", "below", "far", "one", "rest")}
    for name in names:
        kinds = {_kind(e["late_edge_ratio"]["mean"]) for e in numbers[name].values()}
        if len(kinds) == 1 and "none" not in kinds:
            groups[kinds.pop()].append(name)
        else:
            groups["one" if "near" in kinds and "none" not in kinds else "rest"].append(name)
    quote = lambda group: "; ".join(_quote(n, numbers) for n in group)  # noqa: E731
    text = (f"Every optimizer trained full batch on the digits MLP (64-{size['width']}-{size['width']}-10 tanh, "
            f"square loss, {size['n']} images), {size['steps']} steps at two step sizes each, {n_seeds} seeds per "
            f"step size (the same starts for every optimizer); every {size['measure_every']} steps the edge ratio "
            "eta S_P / c_t of the update just taken (deep.measure_edge; c_t the optimizer's own threshold, so 1, "
            "dashed, is its edge of stability). Top: the ratio over training (thin: seeds, bold: their mean). "
            "Bottom: the late ratio, each seed's median over the second half of its records; numbers are means "
            "[95% t intervals] over seeds. ")
    if groups["near"]:
        text += f"Near their edge (late ratio between {NEAR[0]:g} and {NEAR[1]:g}): {quote(groups['near'])}. "
    if groups["one"]:
        text += f"Near it at one of the two step sizes: {quote(groups['one'])}. "
    if groups["above"]:
        text += f"Above it (between {NEAR[1]:g} and {FAR:g}): {quote(groups['above'])}. "
    if groups["below"]:
        text += (f"Below {NEAR[0]:g} of their threshold in the late window (not at the edge within "
                 f"{size['steps']} steps): {quote(groups['below'])}. ")
    if groups["far"]:
        muon = [n for n in groups["far"] if get_optimizer(n).torch_class == "Muon"]
        text += f"Far above 1 (more than {FAR:g} times the threshold): {quote(groups['far'])}"
        text += (". Muon's ratio combines Muon on the weight matrices with AdamW "
                 f"(lr {MUON_BIASES_ETA:g}) on the biases, and "
                 "Muon's threshold freezes its orthogonalisation (an approximation): on an MLP the "
                 "orthogonalisation renormalises the step faster than a frozen P describes, so this ratio is a "
                 "measurement, not a prediction of instability. " if muon else ". ")
    if groups["rest"]:
        text += f"The others (in different groups at the two step sizes, or without a value): {quote(groups['rest'])}. "
    if skipped:
        text += ("Not run: " + ", ".join(f"{get_optimizer(n).label} (needs {m}, not installed)"
                                         for n, m in skipped.items()) + ".")
    return text.strip()


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    size = sizes(ctx)
    groups = by_condition(runs, results, lambda r: (r.config["optimizer"], r.config["eta"]))
    names = list(dict.fromkeys(name for name, _ in groups))
    skipped = {n: m for n, _ in candidates(ctx) if n not in names and (m := missing_package(n))}
    numbers: dict[str, Any] = {**size, "late_fraction": LATE}
    for (name, eta), (seeds, found) in groups.items():
        numbers.setdefault(name, {})[f"eta={eta:g}"] = _late_numbers(seeds, found)
    numbers["skipped"] = skipped
    summary_rows = [{"optimizer": name, "eta": key.removeprefix("eta="), "seed": seed, "late_edge_ratio": value,
                     "mean": e["late_edge_ratio"]["mean"], "low": (e["late_edge_ratio"]["interval"] or [None])[0],
                     "high": (e["late_edge_ratio"]["interval"] or [None, None])[1]}
                    for name in names for key, e in numbers[name].items()
                    for seed, value in zip(e["late_edge_ratio"]["seeds"], e["late_edge_ratio"]["values"])]
    data = [files.write_csv(report.data_dir(out) / f"{NAME}.csv", rows_for_csv(results)),
            files.write_csv(report.data_dir(out) / f"{NAME}_late.csv", summary_rows)]

    ncols = min(COLUMNS, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = style.figure(ncols, nrows + 1, width="page", height=1.55 * nrows + 2.9,
                             gridspec_kw={"height_ratios": [1.0] * nrows + [1.7]})
    grid = axes[0, 0].get_gridspec()
    for ax in [*axes[nrows], *axes.flat[len(names):nrows * ncols]]:
        ax.remove()
    colors = style.colors(2)
    for index, name in enumerate(names):
        by_eta = [(eta, groups[(name, eta)][1]) for (n, eta) in groups if n == name]
        _draw_panel(axes.flat[index], name, by_eta, colors, first=index == 0)
    _draw_summary(fig.add_subplot(grid[nrows, :]), names, numbers, colors)
    style.legend(fig, [axes[0, 0]], ncols=2)
    style.save(fig, out, NAME)

    n_seeds = len(next(iter(groups.values()))[0])
    caption = _caption(names, numbers, skipped, size, n_seeds)
    return {"numbers": numbers, "caption": caption, "data": [str(d.relative_to(out)) for d in data]}

