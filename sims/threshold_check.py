"""``python -m sims.threshold_check --out DIR``: empirical frozen-P thresholds vs theory across beta.

Writes ``thresholds.csv`` (row by row: an interrupted run resumes without losing or repeating rows),
``summary.json`` and ``thresholds.png`` (eta * lambda* against beta, empirical points on theory lines).
"""

from __future__ import annotations

from typing import Optional, Sequence

from sims import _script

FIELDS = ["optimizer", "momentum", "beta", "eta", "empirical", "theory", "rel_error", "eta_empirical", "eta_theory"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = _script.parser(__doc__.splitlines()[0])
    p.add_argument("--eta", type=float, default=1e-2, help="step size (default 1e-2)")
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.5, 0.9, 0.99], help="momentum values")
    p.add_argument("--optimizers", nargs="+", default=None, help="subset of optimizers (default: all)")
    args = p.parse_args(argv)
    from aeos_theory import validate
    from sims.experiments import ALL_OPTIMIZERS, MOMENTUM_NAME, threshold_check

    for opt in args.optimizers or ALL_OPTIMIZERS:  # fail before any output or progress bar
        name = MOMENTUM_NAME.get(opt)
        for beta in args.betas:
            validate(opt, {"eta": args.eta, **({name: beta} if name else {})})
    out = _script.out_dir(args.out)
    log = _script.RowLog(out / "thresholds.csv", FIELDS)
    done = log.keys(lambda r: (r["optimizer"], float(r["beta"])))
    threshold_check(args.optimizers or ALL_OPTIMIZERS, args.betas, args.eta, done=done, on_row=log.append,
                    progress=True)
    rows = [{k: (float(v) if k not in ("optimizer", "momentum") else v) for k, v in r.items()} for r in log.rows]
    worst = max(rows, key=lambda r: r["rel_error"])
    _script.write_json(out / "summary.json", {"eta": args.eta, "rows": len(rows), "max_rel_error": worst["rel_error"],
                                              "worst": worst})
    fig, axes = _script.figure()
    ax = axes[0, 0]
    markers = "os^vDx+"
    for k, opt in enumerate(dict.fromkeys(r["optimizer"] for r in rows)):
        sel = sorted((r for r in rows if r["optimizer"] == opt), key=lambda r: r["beta"])
        b = [1.0 - r["beta"] for r in sel]
        line, = ax.plot(b, [r["eta_theory"] for r in sel], "-", alpha=0.6)
        # overlapping optimizers (heavy_ball = rmsprop, adam ~ adamw) stay visible: shrinking markers
        ax.plot(b, [r["eta_empirical"] for r in sel], markers[k % 7], color=line.get_color(), label=opt,
                ms=10 - k, mfc="none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("1 - beta (momentum of the optimizer)")
    ax.set_ylabel("eta * lambda*  (lines: theory, dots: bisection)")
    ax.set_title(f"frozen-P stability thresholds, max rel. error {worst['rel_error']:.1e}")
    ax.legend(fontsize=8)
    _script.save(fig, out / "thresholds.png")
    print(f"{len(rows)} thresholds, max relative error {worst['rel_error']:.2e} -> {out}")
    return 0


if __name__ == "__main__":
    _script.run_main(main)
