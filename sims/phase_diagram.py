"""``python -m sims.phase_diagram --out DIR``: stability phase diagram (eta x lambda) per optimizer.

For each optimizer, every (eta, lambda) grid point runs the frozen-P (P = 1) recurrence on
L = 1/2 lambda x^2 from x0 = 1 (one batched numba call); the figure shows log10 |x_T| with the
theory boundary lambda*(eta) of :func:`aeos_theory.stability_threshold` drawn on top.  Writes
``phase_<optimizer>.csv`` (one row per grid point; optimizers already written are skipped on a
rerun), ``summary.json`` (fraction of grid points whose stability disagrees with the theory) and
``phase_diagram.png``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from sims import _script


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = _script.parser(__doc__.splitlines()[0])
    p.add_argument("--optimizers", nargs="+", default=None, help="subset (default: all)")
    p.add_argument("--n", type=int, default=120, help="grid points per axis (default 120)")
    p.add_argument("--steps", type=int, default=2000, help="steps per run (default 2000)")
    p.add_argument("--beta", type=float, default=0.9, help="momentum (beta or beta1) for momentum methods")
    args = p.parse_args(argv)
    if args.n < 2:
        raise ValueError(f"n must be an integer >= 2, got {args.n}")
    from tqdm.auto import tqdm

    from sims.experiments import ALL_OPTIMIZERS, MOMENTUM_NAME, phase_diagram

    optimizers = args.optimizers or list(ALL_OPTIMIZERS)
    from aeos_theory import validate

    for opt in optimizers:  # fail before any output or progress bar
        name = MOMENTUM_NAME.get(opt)
        validate(opt, {"eta": 1.0, **({name: args.beta} if name else {})})
    if args.steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {args.steps}")
    out = _script.out_dir(args.out)
    etas = np.logspace(-3, 0, args.n)
    summary = {}
    fig, axes = _script.figure(2, (len(optimizers) + 1) // 2, size=(4.0, 3.4))
    for k, opt in enumerate(tqdm(optimizers, desc="phase diagrams")):
        name = MOMENTUM_NAME.get(opt, "")
        hyper = {name: args.beta} if name else {}
        path = out / f"phase_{opt}.csv"
        lam = np.logspace(0, 6, args.n)  # wide enough for 2/eta .. 398/eta over eta in [1e-3, 1]
        if path.exists():
            rows = _read(path)
            data = _from_rows(rows, etas, lam)
        else:
            d = phase_diagram(opt, etas, lam, args.steps, **hyper)
            data = {"log10_final": d["log10_final"], "unstable": d["unstable"]}
            rows = [{"eta": e, "lambda": l, "log10_final": d["log10_final"][i, j], "unstable": int(d["unstable"][i, j]),
                     "diverged_at": int(d["diverged_at"][i, j])}
                    for i, e in enumerate(etas) for j, l in enumerate(lam)]
            _script.write_csv(path, ["eta", "lambda", "log10_final", "unstable", "diverged_at"], rows)
        from aeos_theory import stability_threshold

        theory = np.array([stability_threshold(opt, eta=float(e), **hyper) for e in etas])
        predicted = lam[None, :] > theory[:, None]
        summary[opt] = {"hyper": hyper, "disagreement_fraction": float(np.mean(predicted != data["unstable"])),
                        "grid": [args.n, args.n], "steps": args.steps}
        ax = axes.flat[k]
        mesh = ax.pcolormesh(etas, lam, np.clip(data["log10_final"].T, -20, 20), cmap="coolwarm", shading="auto",
                             vmin=-20, vmax=20)
        ax.plot(etas, theory, "k--", lw=1, label="theory")
        ax.set(xscale="log", yscale="log", xlabel="eta", ylabel="lambda", title=f"{opt} {hyper or ''}")
        ax.set_ylim(lam[0], lam[-1])
    for ax in list(axes.flat)[len(optimizers):]:
        ax.axis("off")
    fig.colorbar(mesh, ax=list(axes.flat), label="log10 |x_T| (clipped)")
    _script.write_json(out / "summary.json", summary)
    fig.savefig(out / "phase_diagram.png", dpi=110)
    print("disagreement with theory: " + ", ".join(f"{k} {v['disagreement_fraction']:.4f}" for k, v in summary.items()))
    return 0


def _read(path):
    import csv

    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _from_rows(rows, etas, lam):
    n_e, n_l = len(etas), len(lam)
    if len(rows) != n_e * n_l:
        raise ValueError(f"existing file has {len(rows)} rows, expected {n_e * n_l}; use a fresh --out folder")
    fin = np.array([float(r["log10_final"]) for r in rows]).reshape(n_e, n_l)
    uns = np.array([int(r["unstable"]) for r in rows], dtype=bool).reshape(n_e, n_l)
    return {"log10_final": fin, "unstable": uns}


if __name__ == "__main__":
    _script.run_main(main)
