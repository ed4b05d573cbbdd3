"""``python -m sims``: the simulation subcommands (``simulate``, ``bisect``; see :mod:`sims.cli`)."""

from sims.cli import main

raise SystemExit(main(prog="python -m sims"))
