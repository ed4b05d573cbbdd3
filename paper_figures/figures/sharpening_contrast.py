"""Figure 4: the progressive-sharpening model of ``sims.sharpening``: GD blocked at 2/eta, Adam not.

Both optimizers run at the same eta on :class:`sims.sharpening.SharpeningModel` (a two-layer linear
model whose descent direction raises the curvature; see its docstring for why it sharpens).  GD's
raw sharpness S rises until eta * S = 2 and is held there.  Adam's eta * S_P is held at 38 instead,
which lets its raw S keep rising far past 2/eta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence


from paper_figures import report, style
from paper_figures.cache import Run
from paper_figures.figures.common import column, fmt, late_median, late_range, rounded
from paper_figures.registry import Context

TITLE = "Progressive-sharpening model: GD's S blocked at 2/eta, Adam's S rising while eta * S_P = 38"

ETA = 0.01
OPTIMIZERS = ("gd", "adam")


def plan(ctx: Context) -> list[Run]:
    steps = ctx.pick(8000, 10_000, 40_000)
    return [Run("paper_figures.figures.sharpening_contrast:compute",
                {"optimizer": opt, "eta": ETA, "steps": steps, "record_every": 50, "seed": 0},
                label=f"sharpening {opt}", cost=steps * 2e-5) for opt in OPTIMIZERS]


def compute(config: Mapping, run_dir: Path) -> dict:
    """One run of ``sims.sharpening.simulate_sharpening`` on the default model drawn from ``seed``."""
    from sims.sharpening import SharpeningModel, simulate_sharpening

    res = simulate_sharpening(config["optimizer"], config["eta"], config["steps"], config["record_every"],
                              model=SharpeningModel(seed=config["seed"]))
    return {"step": res.step, "loss": res.loss, "sharpness": res.sharpness,
            "preconditioned_sharpness": res.preconditioned_sharpness, "diverged_at": res.diverged_at}


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
    data = report.write_csv(report.data_dir(out) / "sharpening_contrast.csv", rows)

    c_gd, c_adam = style.colors(2)
    fig, axes = style.figure(3, 1, width="page", height=2.3)
    ax_raw, ax_gd, ax_adam = axes[0]
    gd, adam = res["gd"], res["adam"]
    ax_raw.plot(column(gd, "step"), column(gd, "sharpness"), color=c_gd, label="GD")
    ax_raw.plot(column(adam, "step"), column(adam, "sharpness"), color=c_adam, label="Adam")
    style.logscale(ax_raw, "y")
    style.threshold_line(ax_raw, 2.0 / ETA, f"2/eta = {2 / ETA:g}", va="bottom", where=0.02)
    ax_raw.set_ylabel(r"raw sharpness $S=\lambda_{max}(H)$ (1/x$^2$)")
    ax_raw.set_title(f"both at eta = {ETA:g}", loc="left")
    style.legend(ax_raw, loc="lower right")
    ax_gd.plot(column(gd, "step"), ETA * column(gd, "sharpness"), color=c_gd)
    style.threshold_line(ax_gd, 2.0, "2 (GD threshold)", va="bottom", where=0.02)
    ax_gd.set_ylim(0, 3.0)
    ax_gd.set_ylabel(r"GD: $\eta\,S$ (dimensionless)")
    ax_adam.plot(column(adam, "step"), ETA * column(adam, "preconditioned_sharpness"), color=c_adam)
    style.threshold_line(ax_adam, 38.0, "38 (Adam threshold)", va="bottom", where=0.3, pad=9)
    ax_adam.set_ylim(0, 38 * 1.5)
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
        f"blocked at 2/eta. Adam: raw S goes from {fmt(a['sharpness_first'])} to {fmt(a['sharpness_last'])} "
        f"(eta * S = {fmt(ETA * a['sharpness_last'] if a['sharpness_last'] else None)}) while eta * S_P has "
        f"late median {fmt(a['late_median_eta_S_P'])} (range {a['late_range_eta_S_P']}), at the threshold 38.")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
