"""``aeos threshold``: the exact stability threshold of an optimizer, its formula and eta * threshold.

    aeos threshold --beta1 0.9 --eta 0.001          # 38000 and the formula
    aeos threshold --optimizer nesterov --eta 0.01 --beta 0.9 [--latex]
    python -m aeos_theory.cli threshold ...          # the same, without the other subcommands
"""

from __future__ import annotations

import argparse
from typing import Sequence

from aeos_theory import command
from aeos_theory.optimizers import OPTIMIZERS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``threshold`` subcommand."""
    p = sub.add_parser("threshold", help="exact stability threshold on lambda (frozen preconditioner)")
    p.add_argument("--optimizer", default="adam", choices=list(OPTIMIZERS), help="optimizer name (default adam)")
    command.add_hyperparameter_flags(p)
    p.add_argument("--step", type=int, default=None,
                   help="Adam only: quasi-static threshold at step t >= 1 with bias correction")
    p.add_argument("--latex", action="store_true", help="print the expression as LaTeX")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print lambda*, the formula it comes from, and eta * lambda*."""
    import sympy as sp

    from aeos_theory.optimizers import validate
    from aeos_theory.stability import derive_boundary, stability_threshold, threshold_at_step

    hyper = validate(args.optimizer, command.hyperparameters(args))
    if args.step is not None:
        if args.optimizer != "adam":
            raise ValueError("--step (bias-corrected threshold) applies to --optimizer adam only")
        value = threshold_at_step(args.step, hyper["beta1"], hyper["eta"], hyper["weight_decay"])
        formula = "(2 + 2 beta1) (1 - beta1^t) / ((1 - beta1) eta) - weight_decay"
    else:
        value = stability_threshold(args.optimizer, **hyper)
        boundary = derive_boundary(args.optimizer)
        formula = sp.latex(boundary.expression) if args.latex else str(boundary.expression)
        formula = f"{formula}   [{args.optimizer}; crossing at {boundary.kind}]"
    print(f"{value:.10g}")
    print(f"lambda_max < {formula}")
    print(f"eta * threshold = {value * hyper['eta']:.10g}")
    return command.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aeos_theory.cli``: this package's subcommands alone."""
    return command.main([register], argv, prog="python -m aeos_theory.cli",
                        description="Exact stability thresholds of optimizers")


if __name__ == "__main__":
    raise SystemExit(main())
