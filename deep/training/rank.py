"""One rank of a training run given as a config: ``python -m deep.training.rank CONFIG_JSON OUT_DIR``.

What :func:`deep.training.distributed.launch` starts for the figures' ``--nproc``: every rank runs
:func:`deep.run` on the :class:`deep.TrainConfig` written as JSON in ``CONFIG_JSON`` (its ``nproc`` the
number of ranks), rank 0 alone writing the run folder ``OUT_DIR``.  The process ends through
:func:`deep.training.distributed.run_as_rank` (errors as one line on stderr) with exit status 0, or 3 when the
run diverged.  ``aeos train --nproc N`` starts its ranks as ``python -m deep.cli train ...`` instead.
"""

from __future__ import annotations

import json
import os
import sys
from typing import NoReturn, Sequence

from aeos_base import files
from aeos_base.command import EXIT_DIVERGED, EXIT_OK

from .config import TrainConfig
from .distributed import run_as_rank
from .runlog import SUMMARY
from .train import run


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -m deep.training.rank CONFIG_JSON OUT_DIR``: train this rank's share, then end the process."""
    args = list(sys.argv[1:] if argv is None else argv)

    def work() -> int:
        if len(args) != 2:
            raise ValueError(f"arguments must be CONFIG_JSON OUT_DIR; got {len(args)} arguments")
        return train(*args)

    run_as_rank(work)


def train(config_json: str, out: str) -> int:
    """Run (or resume) the run of ``config_json`` in ``out``; exit status 3 when it diverged, else 0."""
    path = run(TrainConfig.from_dict(json.loads(config_json)), out, progress=False)
    if int(os.environ.get("RANK", "0")) > 0:
        return EXIT_OK
    return EXIT_DIVERGED if files.read_json(path.parent / SUMMARY)["status"] == "diverged" else EXIT_OK


if __name__ == "__main__":
    main()
