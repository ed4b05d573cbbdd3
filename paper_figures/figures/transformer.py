"""Figure 10: full-batch Adam on a character-level causal Transformer (Python's documentation text).

The same Adaptive Edge of Stability in a different architecture and loss: cross-entropy next-character
prediction on windows of ``pydoc_data.topics`` (``deep`` dataset ``text``), eta * S_P rising to and
hovering at 38 while the raw sharpness S grows by an order of magnitude.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from aeos_base import files
from paper_figures import report, style
from paper_figures.cache import Run
from paper_figures.figures import training
from paper_figures.figures.common import fmt, threshold_constant
from paper_figures.registry import Context

LEVEL = threshold_constant("adam", beta1=0.9)  # 38

TITLE = f"Character-level Transformer under full-batch Adam: eta * S_P at {LEVEL:.4g}"


def plan(ctx: Context) -> list[Run]:
    base = {"dataset": "text", "model": "transformer", "loss": "ce", "activation": "gelu",
            "n": ctx.pick(32, 256, 512), "context": ctx.pick(16, 16, 64), "width": ctx.pick(16, 32, 64),
            "depth": 2, "chunk_size": ctx.pick(32, 256, 128)}
    etas = ctx.pick([1e-3], [1e-3], [3e-4, 1e-3])
    n_steps, every = ctx.pick((100, 25), (500, 50), (3000, 50))
    return [training.train_run(f"transformer adam eta={eta:g}", optimizer="adam", hyper={"eta": eta},
                               steps=n_steps, measure_every=every, base=base) for eta in etas]


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    numbers, rows = {}, []
    etas = [r.config["hyper"]["eta"] for r in runs]
    for r, res, eta in zip(runs, results, etas):
        numbers[f"eta={eta:g}"] = training.run_numbers(res, eta)
        rows += training.rows_for_csv(r.label, res, eta=eta)
    data = files.write_csv(report.data_dir(out) / "transformer.csv", rows)

    fig, axes = style.figure(3, 1, width="page", height=2.3)
    training.draw_triptych(axes[0], results, etas, [f"eta = {e:g}" for e in etas], LEVEL, f"{LEVEL:.4g} (threshold)")
    axes[0, 0].set_ylabel("train loss (cross-entropy, nats)")
    cfg = runs[0].config
    axes[0, 0].set_title(f"{cfg['n']} windows x {cfg['context']} chars, width {cfg['width']}", loc="left")
    style.legend(axes[0, 0], loc="lower left")
    style.save(fig, out, "transformer")

    caption = (
        f"A {cfg['depth']}-block causal Transformer (width {cfg['width']}) trained full batch with Adam "
        f"(beta1 = 0.9) on {cfg['n']} windows of {cfg['context']} characters of Python's documentation "
        "(`pydoc_data.topics`), next-character cross-entropy. Left: loss; middle: eta * S_P with the "
        f"threshold {LEVEL:.4g}; right: raw sharpness. "
        + "; ".join(f"eta = {e:g}: late median eta * S_P {fmt(numbers[f'eta={e:g}']['late_median_eta_S_P'])}, "
                    f"raw S {fmt(numbers[f'eta={e:g}']['sharpness_first'])} -> "
                    f"{fmt(numbers[f'eta={e:g}']['sharpness_last'])}" for e in etas) + ".")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
