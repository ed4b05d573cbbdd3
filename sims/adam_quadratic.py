"""``python -m sims.adam_quadratic --out DIR``: Adam on the dense quadratic of SPEC 3.2 (the AEoS).

d = 50, eigenvalues logspace(0, 2), random rotation and x0 ~ N(0, I) from ``--seed``; Adam
(beta1 0.9, beta2 0.999, eps 1e-8) at eta in {1e-3, 3e-3, 1e-2} for 40k / 20k / 20k steps, eta * S_P
recorded every 100 steps.  Writes ``series.csv`` (eta, step, loss, eta_sp), ``summary.json`` (first
step above 36, median / range of eta * S_P over the last 40%) and ``adam_quadratic.png``.
"""

from __future__ import annotations

from typing import Optional, Sequence


from sims import _script


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = _script.parser(__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="seed of the rotation and of x0 (default 0)")
    p.add_argument("--record-every", type=int, default=100, help="steps between S_P measurements (default 100)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the SPEC run lengths (default 1)")
    args = p.parse_args(argv)
    if not args.scale > 0:
        raise ValueError(f"scale must be > 0, got {args.scale}")
    from aeos_theory import threshold
    from sims.experiments import SPEC32_STEPS, adam_dense_quadratic

    out = _script.out_dir(args.out)
    steps = {eta: max(1, int(n * args.scale)) for eta, n in SPEC32_STEPS.items()}
    data = adam_dense_quadratic(steps=steps, record_every=args.record_every, seed=args.seed, progress=True)
    rows = [{"eta": r["eta"], "step": int(s), "loss": float(l), "eta_sp": float(q)}
            for r in data["runs"] for s, l, q in zip(r["step"], r["loss"], r["eta_sp"])]
    _script.write_csv(out / "series.csv", ["eta", "step", "loss", "eta_sp"], rows)
    level = threshold(0.9, 1.0)  # 38: (2 + 2 beta1)/(1 - beta1)
    summary = {k: v for k, v in data.items() if k != "runs"}
    summary["threshold_eta_sp"] = level
    summary["runs"] = [{k: v for k, v in r.items() if k not in ("step", "loss", "eta_sp")} for r in data["runs"]]
    _script.write_json(out / "summary.json", summary)
    fig, axes = _script.figure(1, 2, size=(6.0, 4.0))
    for r in data["runs"]:
        axes[0, 0].plot(r["step"], r["eta_sp"], lw=1, label=f"eta = {r['eta']:g} (late median {r['late_median']:.2f})")
        axes[0, 1].semilogy(r["step"], r["loss"], lw=1, label=f"eta = {r['eta']:g}")
    axes[0, 0].axhline(level, color="k", ls="--", lw=1, label="(2 + 2 beta1)/(1 - beta1) = 38")
    axes[0, 0].set(xlabel="step", ylabel="eta * S_P", title="Adam on the dense quadratic (SPEC 3.2)", ylim=(0, 45))
    axes[0, 1].set(xlabel="step", ylabel="loss")
    for ax in axes.flat:
        ax.legend(fontsize=8)
    _script.save(fig, out / "adam_quadratic.png")
    print("late median eta*S_P: " + ", ".join(f"eta {r['eta']:g}: {r['late_median']:.2f}" for r in data["runs"]))
    return 0


if __name__ == "__main__":
    _script.run_main(main)
