"""``aeos figures`` (= ``python -m paper_figures``): every figure of the paper from one command.

    aeos figures                            # every figure, --quick without CUDA, into ./aeos_figures
    aeos figures --only quadratic_aeos --jobs 2 --out figs
    make figures                            # the repository's gallery: --out paper_figures/out

Plan the runs of the chosen figures, compute the ones not in the cache (``--jobs`` processes, longest
first, a progress bar naming the figures still running), then for each figure save its data, draw it,
and write ``summary.json`` and the gallery ``README.md`` into ``--out``.  A second invocation finds
every run in the cache and only redraws; an interrupted one resumes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from aeos_base import command
from paper_figures.registry import FIGURES, SCALES, Context, select

#: The default output folder, in the current directory.
DEFAULT_OUT = "aeos_figures"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``figures`` subcommand."""
    p = sub.add_parser("figures", help="every figure of the paper, summary.json and the gallery README.md")
    add_arguments(p)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``aeos figures`` and ``python -m paper_figures``."""
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="output folder for PNG/PDF, data/, summary.json, the gallery README.md and the "
                             f"run cache runs/ (default ./{DEFAULT_OUT})")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="scale", action="store_const", const="quick",
                      help="small nets, fewer steps, same phenomena: every figure in minutes on "
                           "2 CPU cores (the default without CUDA)")
    size.add_argument("--full", dest="scale", action="store_const", const="full",
                      help="paper scale, for a GPU (the default with CUDA)")
    size.add_argument("--scale", dest="scale", choices=SCALES, help=argparse.SUPPRESS)  # tests: tiny
    parser.add_argument("--only", default=None, metavar="NAME[,NAME]",
                        help=f"only these figures, among: {', '.join(FIGURES)}")
    parser.add_argument("--jobs", type=int, default=None,
                        help="processes for independent runs, >= 1 (default: number of CPU cores, max 2)")
    parser.add_argument("--cifar-dir", default=None,
                        help="with --full: folder of the official CIFAR-10 python batches")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes (GPUs) each training run shards its full batch over, through "
                             "torch.distributed (default 1; --jobs runs are then started one after another)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Produce the chosen figures; 0 if all of them were drawn, 1 if any failed."""
    from aeos_base import checks
    from paper_figures.pipeline import Production

    names = select(args.only)
    default_jobs = 1 if args.nproc > 1 else max(1, min(2, os.cpu_count() or 1))  # ranks fill the cores already
    jobs = args.jobs if args.jobs is not None else default_jobs
    jobs = checks.integer("--jobs", jobs, low=1, high=256)
    scale = args.scale or _default_scale()
    if args.cifar_dir is not None and not Path(args.cifar_dir).is_dir():
        raise ValueError(f"--cifar-dir must be an existing folder, got {args.cifar_dir!r}")
    if not args.out.strip():
        raise ValueError("--out must be a folder path; got an empty string")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, got the file {args.out!r}")
    command_line = "aeos figures" + {"quick": "", "full": " --full", "tiny": " --scale tiny"}[scale]
    command_line += f" --only {','.join(names)}" if args.only else ""
    nproc = checks.integer("--nproc", args.nproc, low=1)
    command_line += f" --nproc {nproc}" if nproc > 1 else ""
    production = Production(names, Context(scale=scale, cifar_dir=args.cifar_dir, nproc=nproc), out, command_line)
    try:
        return production.run(jobs=jobs, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted: finished runs are cached in {out / 'runs'}; run the same command again to resume",
              file=sys.stderr)
        return command.EXIT_INTERRUPTED


def _default_scale() -> str:
    import torch

    return "full" if torch.cuda.is_available() else "quick"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m paper_figures``: the figures command alone."""
    parser = command.Parser(prog="python -m paper_figures",
                            description="Every figure of the paper, summary.json and the gallery, from one command.")
    add_arguments(parser)
    return command.dispatch(parser.parse_args(argv))
