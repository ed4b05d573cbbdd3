"""The ``aeos`` command line: one module, one subcommand per job.

    aeos threshold --beta1 0.9 --eta 0.001          # 38000 and the formula
    aeos threshold --optimizer nesterov --eta 0.01 --beta 0.9 [--latex]

Each subcommand is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args)``; heavy imports (torch,
numba) happen inside ``_run_<name>`` so that ``aeos threshold`` stays fast.  Bad input exits with
status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


class _Parser(argparse.ArgumentParser):
    """argparse, but every usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(f"{self.prog}: {message}")


def _fail(message: str) -> None:
    print(f"error: {message}" if not message.startswith("aeos") else message, file=sys.stderr)
    raise SystemExit(2)


# --------------------------------------------------------------------------- threshold
def _add_threshold(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from aeos_theory.hyperparams import HYPERS
    from aeos_theory.optimizers import OPTIMIZERS

    p = sub.add_parser("threshold", help="exact stability threshold on lambda (frozen preconditioner)")
    p.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS),
                   help="optimizer name (default adam)")
    for name, hyper in HYPERS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=None,
                       help=f"{hyper.doc} ({hyper.range_text()})")
    p.add_argument("--step", type=int, default=None,
                   help="Adam only: quasi-static threshold at step t >= 1 with bias correction")
    p.add_argument("--latex", action="store_true", help="print the expression as LaTeX")
    return _run_threshold


def _run_threshold(args: argparse.Namespace) -> int:
    import sympy as sp

    from aeos_theory.hyperparams import HYPERS, validate
    from aeos_theory.stability import derive_boundary, stability_threshold, threshold_at_step

    given = {name: getattr(args, name) for name in HYPERS if getattr(args, name) is not None}
    hyper = validate(args.optimizer, given)
    if args.step is not None:
        if args.optimizer != "adam":
            raise ValueError("--step (bias-corrected threshold) applies to --optimizer adam only")
        value = threshold_at_step(args.step, hyper["beta1"], hyper["eta"])
        formula = "(2 + 2 beta1) (1 - beta1^t) / ((1 - beta1) eta)"
    else:
        value = stability_threshold(args.optimizer, **hyper)
        boundary = derive_boundary(args.optimizer)
        formula = sp.latex(boundary.expression) if args.latex else str(boundary.expression)
        formula = f"{formula}   [{args.optimizer}; crossing at {boundary.kind}]"
    print(f"{value:.10g}")
    print(f"lambda_max < {formula}")
    print(f"eta * threshold = {value * hyper['eta']:.10g}")
    return 0


# --------------------------------------------------------------------------- main
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], Callable[[argparse.Namespace], int]], ...] = (
    _add_threshold,
)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    parser = _Parser(prog="aeos", description="Optimizers at the (Adaptive) Edge of Stability")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    runners = {}
    for add in _SUBCOMMANDS:
        runner = add(sub)
        runners[runner.__name__.removeprefix("_run_")] = runner
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    try:
        return runners[args.command](args)
    except ValueError as err:  # bad input from the library: one line, status 2
        _fail(str(err))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
