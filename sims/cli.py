"""``aeos simulate`` and ``aeos bisect``: one simulated run, and the empirical threshold, from the shell.

    aeos simulate --optimizer adam --eta 0.01 --steps 20000 --out series.csv   # the dense quadratic
    aeos simulate --optimizer gd --eta 0.01 --steps 10000 --problem sharpening
    aeos bisect --optimizer nadam --eta 0.01 --beta1 0.9                       # bisection vs theory
    python -m sims ...                                                          # the same, sims alone

``simulate`` prints where eta * S_P settled (median over the last 40% of the run) next to the exact
threshold constant and, with ``--out``, writes the recorded series as CSV.  The figures of the paper
come from ``aeos figures``.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from aeos_base import command
from aeos_theory.hyperparams import flag_help
from aeos_theory.optimizers import OPTIMIZERS

PROBLEMS = ("dense", "sharpening")
#: The optimizers with a numba kernel (the registry's others have thresholds, not simulations).
SIMULATED = [name for name, spec in OPTIMIZERS.items() if spec.simulated]
SERIES = ("step", "loss", "sharpness", "preconditioned_sharpness", "eta_threshold")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` and ``bisect`` subcommands."""
    p = sub.add_parser("simulate", help="one optimizer run on a quadratic or the sharpening model (numba)")
    p.add_argument("--optimizer", default="adam", choices=SIMULATED, help="optimizer (default adam)")
    p.add_argument("--eta", type=float, required=True, help="step size")
    command.add_number_flags(p, flag_help(skip=("eta",)))
    p.add_argument("--problem", default="dense", choices=PROBLEMS,
                   help="dense: 1/2 x^T H x, H a random rotation of logspace(0, 2, d); sharpening: the "
                        "progressive-sharpening model of sims.sharpening (default dense)")
    p.add_argument("--d", type=int, default=50, help="dense: dimension (default 50)")
    p.add_argument("--steps", type=int, default=20000, help="steps (default 20000)")
    p.add_argument("--record-every", type=int, default=100, help="steps between records (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the problem (default 0)")
    p.add_argument("--out", default=None, help="write the recorded series to this CSV file")
    p.set_defaults(handler=run_simulate)

    b = sub.add_parser("bisect", help="empirical frozen-P threshold by bisection, against the exact one")
    b.add_argument("--optimizer", default="adam", choices=SIMULATED, help="optimizer (default adam)")
    b.add_argument("--eta", type=float, required=True, help="step size")
    command.add_number_flags(b, flag_help(skip=("eta",)))
    b.add_argument("--rtol", type=float, default=1e-7, help="relative width of the bisection (default 1e-7)")
    b.set_defaults(handler=run_bisect)


def run_simulate(args: argparse.Namespace) -> int:
    """Run, print the settled level against the threshold, write the CSV; exit 3 if the run diverged."""
    from aeos_base import files
    from aeos_theory import stability_threshold
    from sims import experiments
    from sims.summary import late_median, late_range

    hyper = command.given(args, flag_help(skip=("eta",)))
    constant = args.eta * stability_threshold(args.optimizer, eta=args.eta, **hyper)  # validates first
    if args.out is not None and not args.out.strip():
        raise ValueError("--out must be a file path; got an empty string")
    if args.problem == "dense":
        data = experiments.dense_quadratic_run(args.optimizer, args.eta, args.steps, record_every=args.record_every,
                                               seed=args.seed, d=args.d, hyper=hyper)
    else:
        data = experiments.sharpening_run(args.optimizer, args.eta, args.steps, record_every=args.record_every,
                                          seed=args.seed, hyper=hyper)
    if args.out:
        rows = [dict(zip(SERIES, values)) for values in zip(*(data[k] for k in SERIES))]
        files.write_csv(args.out, rows, SERIES)
    level = args.eta * data["preconditioned_sharpness"]
    median, bounds = late_median(data["step"], level), late_range(data["step"], level)
    ratio = late_median(data["step"], level / data["eta_threshold"])
    name = "eta * S_P" if OPTIMIZERS[args.optimizer].adaptive else "eta * S"
    print(f"{args.optimizer} eta={args.eta:g} on the {args.problem} problem, {data['step'][-1]} steps: "
          f"late median {name} = {median:.4g} (range {bounds[0]:.4g} to {bounds[1]:.4g}); "
          f"threshold eta * lambda* = {constant:.4g} settled, {data['eta_threshold'][-1]:.4g} at the last "
          f"step; late median edge ratio {ratio:.4g}" if median is not None else "no late records")
    if data["diverged_at"] is not None:
        print(f"diverged at step {data['diverged_at']}")
        return command.EXIT_DIVERGED
    return command.EXIT_OK


def run_bisect(args: argparse.Namespace) -> int:
    """Print the bisection threshold, the exact one and their relative difference."""
    from aeos_theory import stability_threshold
    from sims.threshold import empirical_threshold

    hyper = command.given(args, flag_help(skip=("eta",)))
    theory = stability_threshold(args.optimizer, eta=args.eta, **hyper)
    empirical = float(empirical_threshold(args.optimizer, args.eta, rtol=args.rtol, **hyper))
    print(f"bisection lambda* = {empirical:.10g}")
    print(f"exact     lambda* = {theory:.10g}")
    print(f"relative difference {abs(empirical - theory) / theory:.2e}; eta * lambda* = {args.eta * theory:.10g}")
    return command.EXIT_OK


def main(argv: Sequence[str] | None = None, prog: str = "python -m sims.cli") -> int:
    """``python -m sims`` (or ``python -m sims.cli``): this package's subcommands alone."""
    return command.main([register], argv, prog=prog, description="Optimizer simulations on quadratics")


if __name__ == "__main__":
    raise SystemExit(main())
