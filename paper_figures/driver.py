"""``python -m paper_figures`` / ``aeos figures``: every figure of the paper from one command.

Plan the runs of the chosen figures, compute the ones not in the cache (``--jobs`` processes, longest
first, tqdm progress naming the figures still running), then for each figure save its data, draw it,
and write ``summary.json`` and the ``FIGURES.md`` gallery.  A second invocation finds every run in the
cache and only redraws; an interrupted one resumes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from paper_figures.registry import FIGURES, SCALES, Context, select

#: The default output folder (inside the package, beside the committed gallery README.md).
DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m paper_figures`` and ``aeos figures``."""
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help="output folder for PNG/PDF, data/, summary.json, FIGURES.md and the run "
                             "cache runs/ (default paper_figures/out)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="scale", action="store_const", const="quick",
                      help="small nets, fewer steps, same phenomena: all ten figures in < 15 min on "
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
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def run(args: argparse.Namespace) -> int:
    """Produce the chosen figures; 0 if all of them were drawn, 1 if any failed."""
    names = select(args.only)
    jobs = args.jobs if args.jobs is not None else max(1, min(2, os.cpu_count() or 1))
    if jobs < 1 or jobs > 256:
        raise ValueError(f"--jobs must satisfy 1 <= jobs <= 256, got {jobs}")
    scale = args.scale or _default_scale()
    if args.cifar_dir is not None and not Path(args.cifar_dir).is_dir():
        raise ValueError(f"--cifar-dir must be an existing folder, got {args.cifar_dir!r}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, got the file {args.out!r}")
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(scale=scale, cifar_dir=args.cifar_dir)
    command = "python -m paper_figures" + {"quick": "", "full": " --full", "tiny": " --scale tiny"}[scale]
    command += f" --only {','.join(names)}" if args.only else ""
    from paper_figures import pipeline

    return pipeline.produce(names, ctx, out, jobs=jobs, progress=not args.no_progress, command=command)


def _default_scale() -> str:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "quick"
    return "full" if torch.cuda.is_available() else "quick"


def main(argv: Sequence[str] | None = None) -> int:
    from paper_figures.cli import _fail, _Parser

    parser = _Parser(prog="python -m paper_figures",
                     description="Every figure of the paper, summary.json and the FIGURES.md gallery, from one command.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ValueError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        print(f"interrupted: finished runs are cached in {Path(args.out) / 'runs'}; run the same command "
              "again to resume", file=sys.stderr)
        return 130
    return 2
