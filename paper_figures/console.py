"""The ``aeos`` command: assembles the subcommands that each package owns beside its code.

    aeos threshold ...   exact thresholds          (aeos_theory.cli)
    aeos simulate ...    a simulated run           (sims.cli)
    aeos bisect ...      the empirical threshold   (sims.cli)
    aeos train ...       a measured training run   (deep.cli)
    aeos figures ...     every figure of the paper (paper_figures.cli)

It lives in the top layer because it is the one place that knows all four packages.  Building the
parser imports no sympy, torch, numba or matplotlib (each package's ``cli`` imports those inside its
run function), so ``aeos --help`` and ``aeos threshold`` answer in a fraction of a second.
"""

from __future__ import annotations

from typing import Sequence

import aeos_theory.cli
import deep.cli
import paper_figures.cli
import sims.cli
from aeos_base import command

SUBCOMMANDS = (aeos_theory.cli.register, sims.cli.register, deep.cli.register, paper_figures.cli.register)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``aeos <subcommand> ...``; exit codes as :mod:`aeos_base.command` documents them."""
    return command.main(SUBCOMMANDS, argv, prog="aeos", description="Optimizers at the (Adaptive) Edge of Stability")


if __name__ == "__main__":
    raise SystemExit(main())
