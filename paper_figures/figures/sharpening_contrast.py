"""Figure 4: the progressive-sharpening model of ``sims.sharpening``: GD blocked at 2/eta, Adam not.

Both optimizers run at the same eta on :class:`sims.sharpening.SharpeningModel` (a two-layer linear
model whose descent direction raises the curvature; see its docstring for why it sharpens).  GD's
raw sharpness S rises until eta * S = 2 and is held there.  Adam's eta * S_P is held at 38 instead,
which lets its raw S keep rising far past 2/eta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from aeos_base import files
from paper_figures import report, style
from paper_figures.cache import Run
from paper_figures.figures.common import column, fmt, rounded, threshold_constant
from paper_figures.registry import Context
from sims.summary import late_median, late_range

ETA = 0.01
OPTIMIZERS = ("gd", "adam")
GD_LEVEL = threshold_constant("gd")  # eta * S where GD is held: 2
ADAM_LEVEL = threshold_constant("adam", beta1=0.9)  # eta * S_P where Adam is held: 38

TITLE = (f"Progressive-sharpening model: GD's S blocked at {GD_LEVEL:g}/eta, Adam's S rising while "
         f"eta * S_P = {ADAM_LEVEL:.4g}")


def plan(ctx: Context) -> list[Run]:
    steps = ctx.pick(8000, 10_000, 40_000)
    return [Run("sims.experiments:sharpening_run",
                {"optimizer": opt, "eta": ETA, "steps": steps, "record_every": 50, "seed": 0},
                label=f"sharpening {opt}", cost=steps * 2e-5) for opt in OPTIMIZERS]


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    res = dict(zip(OPTIMIZERS, results))
    numbers, rows = {}, []
    for opt, r in res.items():
        steps, s, sp = column(r, "step"), column(r, "sharpness"), column(r, "preconditioned_sharpness")
        numbers[opt] = {
            "late_median_eta_S": rounded(late_median(steps, ETA * s)),
            "late_range_eta_S": [rounded(v) for v in late_range(steps, ETA * s) or []],
            "late_median_eta_S_P": rounded(late_median(steps, ETA * sp)),
            "late_range_eta_S_P": [rounded(v) for v in late_range(steps, ETA * sp) or []],
            "sharpness_first": rounded(s[0]),
            "sharpness_last": rounded(s[-1]),
            "diverged_at": r["diverged_at"],
        }
        rows += [{"optimizer": opt, "step": int(t), "loss": l, "sharpness": a, "preconditioned_sharpness": b}
                 for t, l, a, b in zip(steps, r["loss"], s, sp)]
    data = files.write_csv(report.data_dir(out) / "sharpening_contrast.csv", rows)

    c_gd, c_adam = style.colors(2)
    fig, axes = style.figure(3, 1, width="page", height=2.3)
    ax_raw, ax_gd, ax_adam = axes[0]
    gd, adam = res["gd"], res["adam"]
    ax_raw.plot(column(gd, "step"), column(gd, "sharpness"), color=c_gd, label="GD")
    ax_raw.plot(column(adam, "step"), column(adam, "sharpness"), color=c_adam, label="Adam")
    style.logscale(ax_raw, "y")
    style.threshold_line(ax_raw, GD_LEVEL / ETA, f"{GD_LEVEL:g}/eta = {GD_LEVEL / ETA:g}", va="bottom", where=0.02)
    ax_raw.set_ylabel(r"raw sharpness $S=\lambda_{max}(H)$ (1/x$^2$)")
    ax_raw.set_title(f"both at eta = {ETA:g}", loc="left")
    style.legend(ax_raw, loc="lower right")
    ax_gd.plot(column(gd, "step"), ETA * column(gd, "sharpness"), color=c_gd)
    style.threshold_line(ax_gd, GD_LEVEL, f"{GD_LEVEL:g} (GD threshold)", va="bottom", where=0.02)
    ax_gd.set_ylim(0, 3.0)
    ax_gd.set_ylabel(r"GD: $\eta\,S$ (dimensionless)")
    ax_adam.plot(column(adam, "step"), ETA * column(adam, "preconditioned_sharpness"), color=c_adam)
    style.threshold_line(ax_adam, ADAM_LEVEL, f"{ADAM_LEVEL:.4g} (Adam threshold)", va="bottom", where=0.3, pad=9)
    ax_adam.set_ylim(0, ADAM_LEVEL * 1.5)
    ax_adam.set_ylabel(r"Adam: $\eta\,S_P$ (dimensionless)")
    for ax in axes[0]:
        ax.set_xlabel("step")
    style.save(fig, out, "sharpening_contrast")

    g, a = numbers["gd"], numbers["adam"]
    caption = (
        f"GD and Adam (beta1 = 0.9) at eta = {ETA:g} on the progressive-sharpening model of "
        "`sims.sharpening` (a two-layer linear model whose descent direction raises the curvature). "
        f"GD: raw S goes from {fmt(g['sharpness_first'])} to {fmt(g['sharpness_last'])} and over the last "
        f"40% of steps eta * S has median {fmt(g['late_median_eta_S'])} (range {g['late_range_eta_S']}): "
        f"blocked at {GD_LEVEL:g}/eta. Adam: raw S goes from {fmt(a['sharpness_first'])} to {fmt(a['sharpness_last'])} "
        f"(eta * S = {fmt(ETA * a['sharpness_last'] if a['sharpness_last'] else None)}) while eta * S_P has "
        f"late median {fmt(a['late_median_eta_S_P'])} (range {a['late_range_eta_S_P']}), at the threshold "
        f"{ADAM_LEVEL:.4g}.")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
