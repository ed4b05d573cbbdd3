"""Figure 8: RMSProp at 2/eta (preconditioned) and heavy-ball GD at (2 + 2 beta)/eta.

RMSProp (torch ``RMSprop``, no momentum) is preconditioned GD: its frozen-P threshold on S_P is 2/eta.
Heavy ball (``SGD(momentum=beta)``) is not adaptive: its threshold on the raw S is (2 + 2 beta)/eta.
Both thresholds come from ``aeos_theory.stability_threshold``; the runs from ``deep.run``.

Seeds: 3 per optimizer at quick (5 at full).  Quick runs RMSProp 1000 steps and heavy ball (eta = 0.1,
which sharpens to its threshold within ~700 steps) 1500 steps; full runs 6000 steps each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from aeos_base import files
from paper_figures import intervals, report, style
from paper_figures.cache import Run
from paper_figures.figures import deep_adam, training
from paper_figures.figures.common import by_condition
from paper_figures.registry import Context

TITLE = "RMSProp's eta * S_P at 2 and heavy ball's eta * S at 2 + 2 beta"

#: label -> (optimizer, hyper, adaptive)
RUNS: dict[str, tuple[str, dict, bool]] = {
    "RMSProp": ("rmsprop", {"eta": 1e-3, "beta2": 0.999}, True),
    "heavy ball": ("heavy_ball", {"eta": 0.1, "beta": 0.5}, False),
}


def plan(ctx: Context) -> list[Run]:
    base = deep_adam.networks(ctx)["MLP"]
    runs = []
    for label, (opt, hyper, _) in RUNS.items():
        n_steps, every = ctx.pick((300, 50), (1000, 100) if opt == "rmsprop" else (1500, 100), (6000, 100))
        runs += [training.train_run(f"MLP {label}", optimizer=opt, hyper=hyper, steps=n_steps, measure_every=every,
                                    base=base, seed=seed) for seed in ctx.seeds()]
    return runs


def _threshold(opt: str, hyper: dict) -> float:
    from aeos_theory import stability_threshold

    return stability_threshold(opt, **hyper)


def finish(ctx: Context, runs: Sequence[Run], results: Sequence[dict], out: Path) -> dict:
    groups = by_condition(runs, results, lambda r: r.config["optimizer"])
    numbers, rows = {}, []
    fig, axes = style.figure(2, 1, width="page", height=2.4)
    for ax, color, (label, (opt, hyper, adaptive)) in zip(axes[0], style.colors(2), RUNS.items()):
        seeds, found = groups[opt]
        eta = hyper["eta"]
        level = eta * _threshold(opt, hyper)
        key = "late_median_eta_S_P" if adaptive else "late_median_eta_S"
        nums = training.seed_numbers(seeds, found, eta, headline=(key, "sharpness_first", "sharpness_last"))
        nums["threshold_constant"] = level
        nums["ratio_to_threshold"] = intervals.over_seeds(
            [v / level if v is not None else None for v in nums[key]["values"]], seeds)
        numbers[label] = nums
        training.plot_seeds(ax, found, "preconditioned_sharpness" if adaptive else "sharpness", scale=eta,
                            color=color, marker="o")
        name = f"{level:g}" if opt == "rmsprop" else f"2 + 2 beta\n= {level:g}"
        style.threshold_line(ax, level, f"threshold\n{name}")
        ax.set_ylim(0, level * 1.5)
        ax.set_xlabel("step")
        ax.set_ylabel(r"$\eta\,S_P$ (dimensionless)" if adaptive else r"$\eta\,S$ (dimensionless)")
        hyper_text = ", ".join(f"{k} = {v:g}" for k, v in hyper.items())
        ax.set_title(f"{label} ({hyper_text}), {len(seeds)} seeds", loc="left")
    for r, res in zip(runs, results):
        rows += training.rows_for_csv(r.label, res, optimizer=r.config["optimizer"], eta=r.config["hyper"]["eta"],
                                      seed=r.config["seed"])
    data = files.write_csv(report.data_dir(out) / "rmsprop_and_momentum.csv", rows)
    style.save(fig, out, "rmsprop_and_momentum")

    rms, hb = numbers["RMSProp"], numbers["heavy ball"]
    caption = (
        "Full-batch runs on the digits MLP (MSE), every seed thin and their mean bold; numbers are means "
        "[95% intervals] over seeds. Left: RMSProp, whose frozen-preconditioner threshold is "
        f"eta * S_P = {rms['threshold_constant']:g}; late-time median of eta * S_P: "
        f"{intervals.text(rms['late_median_eta_S_P'])}, {intervals.text(rms['ratio_to_threshold'], 3)} x the "
        f"threshold. Right: heavy-ball GD, threshold eta * S = 2 + 2 beta = {hb['threshold_constant']:g}; "
        f"late-time median of eta * S: {intervals.text(hb['late_median_eta_S'])}, "
        f"{intervals.text(hb['ratio_to_threshold'], 3)} x the threshold, after progressive sharpening from "
        f"S = {intervals.text(hb['sharpness_first'], 3)} to {intervals.text(hb['sharpness_last'], 3)}.")
    return {"numbers": numbers, "caption": caption, "data": [str(data.relative_to(out))]}
