"""Figure 10: full-batch Adam on a character-level causal Transformer (Python's documentation text).

The same Adaptive Edge of Stability in a different architecture and loss: cross-entropy next-character
prediction on windows of ``pydoc_data.topics`` (``deep`` dataset ``text``), eta * S_P rising to the
threshold 38 and hovering around it while the raw sharpness S grows by an order of magnitude.

Seeds: 3 at quick (5 at full).  Quick trains 128 windows of 16 characters at width 32 for 500 steps
(full: 512 windows of 64 characters, width 64, 3000 steps, two step sizes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from aeos_base import files
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import training
from paper_figures.figures.common import by_condition, threshold_constant
from paper_figures.registry import Context

LEVEL = threshold_constant("adam", beta1=0.9)  # 38

TITLE = f"Character-level Transformer under full-batch Adam: eta * S_P hovers around the threshold {LEVEL:.4g}"


def plan(ctx: Context) -> list[Run]:
    base = {"dataset": "text", "model": "transformer", "loss": "ce", "activation": "gelu",
            "n": ctx.pick(32, 128, 512), "context": ctx.pick(16, 16, 64), "width": ctx.pick(16, 32, 64),
            "depth": 2, "chunk_size": ctx.pick(32, 128, 128)}
    etas = ctx.pick([1e-3], [1e-3], [3e-4, 1e-3])
    n_steps, every = ctx.pick((100, 25), (500, 50), (3000, 50))
    return [training.train_run(f"transformer adam eta={eta:g}", optimizer="adam", hyper={"eta": eta},
                               steps=n_steps, measure_every=every, base=base, seed=seed)
            for eta in etas for seed in ctx.seeds()]


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    groups = by_condition(runs, results, lambda r: r.config["hyper"]["eta"])
    numbers, rows = {}, []
    for eta, (seeds, found) in groups.items():
        numbers[f"eta={eta:g}"] = training.seed_numbers(seeds, found, eta,
                                                        headline=("late_median_eta_S_P", "sharpness_first",
                                                                  "sharpness_last"))
    for r, res in zip(runs, results):
        rows += training.rows_for_csv(r.label, res, eta=r.config["hyper"]["eta"], seed=r.config["seed"])
    data = files.write_csv(report.data_dir(out) / "transformer.csv", rows)

    etas = list(groups)
    fig, axes = style.figure(3, 1, width="page", height=2.5)
    training.draw_triptych(axes[0], [groups[e][1] for e in etas], etas, [f"eta = {e:g}" for e in etas], LEVEL,
                           f"threshold\n{LEVEL:.4g}")
    axes[0, 0].set_ylabel("train loss (cross-entropy, nats)")
    cfg = runs[0].config
    axes[0, 0].set_title(f"{cfg['n']} windows x {cfg['context']} chars, width {cfg['width']}", loc="left")
    style.legend(fig, [axes[0, 0]])
    style.save(fig, out, "transformer")

    n_seeds = len(groups[etas[0]][0])
    caption = (
        f"A {cfg['depth']}-block causal Transformer (width {cfg['width']}) trained full batch with Adam "
        f"(beta1 = 0.9) on {cfg['n']} windows of {cfg['context']} characters of Python's documentation "
        f"(`pydoc_data.topics`), next-character cross-entropy, {n_seeds} seeds (thin: every seed; bold: their "
        "mean). Left: loss; middle: eta * S_P with the "
        f"threshold {LEVEL:.4g}; right: raw sharpness. Means [95% intervals] over seeds: "
        + "; ".join(f"eta = {e:g}: late median eta * S_P {intervals.text(n['late_median_eta_S_P'])}, raw S "
                    f"{intervals.text(n['sharpness_first'], 3)} at the first record -> "
                    f"{intervals.text(n['sharpness_last'], 3)} at the last"
                    for e, n in ((e, numbers[f"eta={e:g}"]) for e in etas)) + ".")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
