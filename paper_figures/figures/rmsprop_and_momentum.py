"""Figure 8: RMSProp at 2/eta (preconditioned) and heavy-ball GD at (2 + 2 beta)/eta.

RMSProp (torch ``RMSprop``, no momentum) is preconditioned GD: its frozen-P threshold on S_P is 2/eta.
Heavy ball (``SGD(momentum=beta)``) is not adaptive: its threshold on the raw S is (2 + 2 beta)/eta.
Both thresholds come from ``aeos_theory.stability_threshold``; the runs from ``deep.run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from aeos_base import files
from paper_figures import report, style
from paper_figures.cache import Run
from paper_figures.figures import deep_adam, training
from paper_figures.figures.common import fmt
from paper_figures.registry import Context

TITLE = "RMSProp's eta * S_P at 2 and heavy ball's eta * S at 2 + 2 beta"

#: label -> (optimizer, hyper, adaptive)
RUNS: dict[str, tuple[str, dict, bool]] = {
    "RMSProp": ("rmsprop", {"eta": 1e-3, "beta2": 0.999}, True),
    "heavy ball": ("heavy_ball", {"eta": 0.05, "beta": 0.5}, False),
}


def plan(ctx: Context) -> list[Run]:
    base = deep_adam.networks(ctx)["MLP"]
    runs = []
    for label, (opt, hyper, _) in RUNS.items():
        n_steps, every = ctx.pick((300, 50), (2000, 200) if opt == "rmsprop" else (3000, 200), (6000, 100))
        runs.append(training.train_run(f"MLP {label}", optimizer=opt, hyper=hyper, steps=n_steps,
                                       measure_every=every, base=base))
    return runs


def _threshold(opt: str, hyper: dict) -> float:
    from aeos_theory import stability_threshold

    return stability_threshold(opt, **hyper)


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    numbers, rows = {}, []
    fig, axes = style.figure(2, 1, width="page", height=2.3)
    for ax, color, (label, (opt, hyper, adaptive)), r, res in zip(axes[0], style.colors(2), RUNS.items(),
                                                                   runs, results):
        eta = hyper["eta"]
        level = eta * _threshold(opt, hyper)
        nums = training.run_numbers(res, eta)
        key = "late_median_eta_S_P" if adaptive else "late_median_eta_S"
        nums["threshold_constant"] = level
        nums["ratio_to_threshold"] = nums[key] / level if nums[key] is not None else None
        numbers[label] = nums
        rows += training.rows_for_csv(r.label, res, optimizer=opt, eta=eta)
        training.plot_metric(ax, res, "preconditioned_sharpness" if adaptive else "sharpness", scale=eta,
                             color=color, marker="o", ms=2.5)
        name = f"{level:g}" if opt == "rmsprop" else f"2 + 2 beta = {level:g}"
        style.threshold_line(ax, level, f"threshold {name}", va="bottom", where=0.3, pad=9)
        ax.set_ylim(0, level * 1.5)
        ax.set_xlabel("step")
        ax.set_ylabel(r"$\eta\,S_P$ (dimensionless)" if adaptive else r"$\eta\,S$ (dimensionless)")
        hyper_text = ", ".join(f"{k} = {v:g}" for k, v in hyper.items())
        ax.set_title(f"{label} ({hyper_text})", loc="left")
    data = files.write_csv(report.data_dir(out) / "rmsprop_and_momentum.csv", rows)
    style.save(fig, out, "rmsprop_and_momentum")

    rms, hb = numbers["RMSProp"], numbers["heavy ball"]
    caption = (
        "Full-batch runs on the digits MLP (MSE). Left: RMSProp, whose frozen-preconditioner threshold is "
        f"eta * S_P = {rms['threshold_constant']:g}; late-time median of eta * S_P: {rms['late_median_eta_S_P']} "
        f"(range {rms['late_range_eta_S_P']}), {fmt(rms['ratio_to_threshold'], 3)} x the threshold. Right: "
        f"heavy-ball GD, threshold eta * S = 2 + 2 beta = {hb['threshold_constant']:g}; late-time median of "
        f"eta * S: {hb['late_median_eta_S']}, {fmt(hb['ratio_to_threshold'], 3)} x the threshold, after "
        f"progressive sharpening from S = {hb['sharpness_first']} to {hb['sharpness_last']}.")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
