"""``python -m sims.sharpening_contrast --out DIR``: progressive sharpening under GD vs Adam.

Both optimizers at the same eta on :class:`sims.sharpening.SharpeningModel`: GD's sharpness S rises
and is blocked at 2/eta (eta S ~ 2); Adam's raw S keeps rising far past 2/eta while eta S_P sits at
38.  Writes ``series.csv`` (optimizer, step, loss, S, S_P), ``summary.json`` and
``sharpening_contrast.png``.
"""

from __future__ import annotations

from typing import Optional, Sequence

from sims import _script


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = _script.parser(__doc__.splitlines()[0])
    p.add_argument("--eta", type=float, default=0.01, help="step size of both optimizers (default 0.01)")
    p.add_argument("--steps", type=int, default=10000, help="steps (default 10000)")
    p.add_argument("--record-every", type=int, default=20, help="steps between measurements (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's data and start (default 0)")
    args = p.parse_args(argv)
    from sims.experiments import sharpening_contrast

    out = _script.out_dir(args.out)
    data = sharpening_contrast(args.eta, args.steps, args.record_every, seed=args.seed)
    rows = [{"optimizer": opt, "step": int(s), "loss": float(l), "sharpness": float(a), "preconditioned_sharpness": float(b)}
            for opt, r in data["runs"].items()
            for s, l, a, b in zip(r["step"], r["loss"], r["sharpness"], r["preconditioned_sharpness"])]
    _script.write_csv(out / "series.csv", ["optimizer", "step", "loss", "sharpness", "preconditioned_sharpness"], rows)
    summary = {k: v for k, v in data.items() if k != "runs"}
    summary["runs"] = {opt: {k: v for k, v in r.items() if k.startswith("late") or k == "diverged_at"}
                       for opt, r in data["runs"].items()}
    _script.write_json(out / "summary.json", summary)
    eta = args.eta
    fig, axes = _script.figure(1, 3, size=(4.6, 3.8))
    for opt, r in data["runs"].items():
        axes[0, 0].plot(r["step"], eta * r["sharpness"], lw=1, label=f"{opt}: eta * S")
        if opt != "gd":
            axes[0, 1].plot(r["step"], eta * r["preconditioned_sharpness"], lw=1, label=f"{opt}: eta * S_P")
        axes[0, 2].semilogy(r["step"], r["loss"], lw=1, label=opt)
    axes[0, 0].axhline(2.0, color="k", ls="--", lw=1, label="2 (GD threshold)")
    axes[0, 1].axhline(38.0, color="k", ls="--", lw=1, label="38 (Adam threshold)")
    axes[0, 0].set(xlabel="step", ylabel="eta * S (raw)", title="raw sharpness")
    axes[0, 1].set(xlabel="step", ylabel="eta * S_P", title="preconditioned sharpness", ylim=(0, 45))
    axes[0, 2].set(xlabel="step", ylabel="loss", title="loss")
    for ax in axes.flat:
        ax.legend(fontsize=8)
    _script.save(fig, out / "sharpening_contrast.png")
    print(", ".join(f"{opt}: late median eta*S {r['late_median_eta_s']:.2f}, eta*S_P {r['late_median_eta_sp']:.2f}"
                    for opt, r in data["runs"].items()))
    return 0


if __name__ == "__main__":
    _script.run_main(main)
