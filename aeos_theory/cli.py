"""``aeos threshold``: the exact stability threshold of an optimizer, its formula and eta * threshold.

    aeos threshold --beta1 0.9 --eta 0.001          # 38000 and the formula
    aeos threshold --optimizer nesterov --eta 0.01 --beta 0.9 [--latex]
    aeos threshold --optimizer nadam --eta 1e-3 --step 1000   # the 1000th update, as torch applies it
    python -m aeos_theory.cli threshold ...          # the same, without the other subcommands
"""

from __future__ import annotations

import argparse
from typing import Sequence

from aeos_base import command
from aeos_theory.hyperparams import HYPERS, flag_help
from aeos_theory.optimizers import OPTIMIZERS, get_optimizer


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``threshold`` subcommand."""
    p = sub.add_parser("threshold", help="exact stability threshold on lambda (frozen preconditioner)")
    p.add_argument("--optimizer", default="adam", choices=list(OPTIMIZERS), help="optimizer name (default adam)")
    command.add_number_flags(p, flag_help())
    p.add_argument("--step", type=int, default=None,
                   help="the threshold of the t-th update (t >= 1) as torch applies it: bias corrections, "
                        "NAdam's momentum schedule, SGD's first step (default: the settled update)")
    p.add_argument("--latex", action="store_true", help="print the expression as LaTeX")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print lambda*, the formula it comes from (with the step coefficients at t), and eta * lambda*.

    The value is the registry's closed form and the formula its stored text (both checked against the
    sympy derivation by the tests), so only ``--latex`` imports sympy, to derive the expression it prints."""
    from aeos_theory.thresholds import stability_threshold

    spec = get_optimizer(args.optimizer)
    hyper = spec.validate(command.given(args, HYPERS))
    value = stability_threshold(args.optimizer, step=args.step, **hyper)
    formula = spec.formula(hyper) if args.step is None else spec.step_formula
    if args.latex:
        import sympy as sp

        from aeos_theory.stability import derive

        zero = [name for name in spec.hypers if name != "eta" and hyper.get(name) == 0]
        formula = sp.latex(derive(args.optimizer, zero=zero) if args.step is None else
                           derive(args.optimizer, step=True))
    print(f"{value:.10g}")
    print(f"lambda_max < {formula}   [{args.optimizer}; crossing at {spec.crossing}]")
    if args.step is not None:
        coefficients = spec.step_coefficients(args.step, hyper)
        shown = ", ".join(f"{k}_t = {v:.10g}" for k, v in coefficients.items()) or "none"
        print(f"at step t = {args.step}: {shown}")
    print(f"eta * threshold = {value * hyper['eta']:.10g}")
    return command.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aeos_theory.cli``: this package's subcommands alone."""
    return command.main([register], argv, prog="python -m aeos_theory.cli",
                        description="Exact stability thresholds of optimizers")


if __name__ == "__main__":
    raise SystemExit(main())
