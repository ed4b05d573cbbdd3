"""``aeos figures`` (= ``python -m paper_figures``): every figure of the paper from one command.

    aeos figures                            # every figure, --quick without CUDA, into ./aeos_figures
    aeos figures --only quadratic_aeos --jobs 2 --out figs
    aeos figures --check                    # regenerate into ./aeos_figures_check, compare with the gallery
    aeos figures --full --dry-run           # what the paper-scale run would compute, and its CPU time
    make figures                            # = aeos figures (into ./aeos_figures, ignored by git)
    make gallery                            # the committed gallery: --quick --fresh --out paper_figures/out
    make check-figures                      # = aeos figures --check

Plan the runs of the chosen figures, compute the ones not in the cache (``--jobs`` processes, longest
first, a progress bar naming the figures still running), then for each figure save its data, draw it,
and write ``summary.json`` and the gallery ``README.md`` into ``--out``.  A second invocation finds
every run in the cache and only redraws; an interrupted one resumes.  ``--check``
(:mod:`paper_figures.check`) and ``--dry-run`` (:mod:`paper_figures.estimate`) read a gallery, by default
the repository's ``paper_figures/out`` (``--against``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from aeos_base import command
from paper_figures.registry import FIGURES, SCALES, Context, select

#: The default output folder, in the current directory, and that of --check (both ignored by git).
DEFAULT_OUT = "aeos_figures"
DEFAULT_CHECK_OUT = "aeos_figures_check"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``figures`` subcommand."""
    p = sub.add_parser("figures", help="every figure of the paper, summary.json and the gallery README.md")
    add_arguments(p)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``aeos figures`` and ``python -m paper_figures``."""
    parser.add_argument("--out", default=None,
                        help="output folder for PNG/PDF, data/, summary.json, the gallery README.md and the "
                             f"run cache runs/ (default ./{DEFAULT_OUT}; with --check ./{DEFAULT_CHECK_OUT})")
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
    parser.add_argument("--fresh", action="store_true",
                        help="start from an empty run cache and summary.json in --out (removes <out>/runs and "
                             "<out>/summary.json first), so the gallery's header times the whole set")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="regenerate the figures (at the scale of the --against gallery) and compare every "
                           "headline number with it; prints a table, exits 1 on a disagreement")
    mode.add_argument("--dry-run", action="store_true",
                      help="print per figure the runs, seeds and steps it would compute and the estimated CPU "
                           "time (from the --against gallery's measured costs); compute nothing")
    parser.add_argument("--against", default=None, metavar="DIR",
                        help="the gallery that --check compares with and --dry-run takes measured costs from "
                             "(default: the repository's paper_figures/out)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Produce the chosen figures; 0 if all of them were drawn, 1 if any failed (or, with --check, any
    headline number disagrees with the committed gallery)."""
    from aeos_base import checks

    names = select(args.only)
    default_jobs = 1 if args.nproc > 1 else max(1, min(2, os.cpu_count() or 1))  # ranks fill the cores already
    jobs = args.jobs if args.jobs is not None else default_jobs
    jobs = checks.integer("--jobs", jobs, low=1, high=256)
    if args.cifar_dir is not None and not Path(args.cifar_dir).is_dir():
        raise ValueError(f"--cifar-dir must be an existing folder, got {args.cifar_dir!r}")
    out_text = args.out if args.out is not None else (DEFAULT_CHECK_OUT if args.check else DEFAULT_OUT)
    if not out_text.strip():
        raise ValueError("--out must be a folder path; got an empty string")
    out = Path(out_text)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, got the file {out_text!r}")
    nproc = checks.integer("--nproc", args.nproc, low=1)
    gallery = None
    if args.check or args.dry_run:
        from paper_figures import check, report

        folder = Path(args.against) if args.against else check.COMMITTED
        # --check needs the gallery's numbers; --dry-run falls back on the cost model without its measurements
        gallery = check.committed_summary(folder) if args.check else report.load_summary(folder)
    scale = args.scale or (gallery["scale"] if args.check else _default_scale())
    if args.check and scale != gallery["scale"]:
        raise ValueError(f"--check compares at the scale of the --against gallery ({gallery['scale']}); got {scale}")
    ctx = Context(scale=scale, cifar_dir=args.cifar_dir, nproc=nproc)
    if args.dry_run:
        from paper_figures import estimate

        print(estimate.table(estimate.estimate(names, ctx, gallery), scale, gallery))
        return 0
    command_line = "aeos figures" + {"quick": "", "full": " --full", "tiny": " --scale tiny"}[scale]
    command_line += f" --only {','.join(names)}" if args.only else ""
    command_line += f" --nproc {nproc}" if nproc > 1 else ""
    command_line += f" --out {out_text}" if args.out is not None else ""
    command_line += " --fresh" if args.fresh else ""
    if args.fresh:
        _clear(out)
    from paper_figures.pipeline import Production

    production = Production(names, ctx, out, command_line)
    try:
        status = production.run(jobs=jobs, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted: finished runs are cached in {out / 'runs'}; run the same command again to resume",
              file=sys.stderr)
        return command.EXIT_INTERRUPTED
    if not args.check:
        return status
    rows = check.compare(gallery, report.load_summary(out), names)
    print(check.table(rows))
    against = args.against or check.COMMITTED
    if not any(r.committed is not None for r in rows):
        print(f"check failed: {against} holds no headline numbers for these figures (regenerate it: make gallery)",
              file=sys.stderr)
        return command.EXIT_FAILED
    bad = check.failed(rows)
    if bad or status:
        print(f"check failed: {len(bad)} number(s) disagree with {against}"
              + (" and some figures were not drawn" if status else ""), file=sys.stderr)
        return command.EXIT_FAILED
    return command.EXIT_OK


def _clear(out: Path) -> None:
    """Remove the run cache, summary.json and errors.log of the output folder ``out`` (for --fresh)."""
    import shutil

    if (out / "runs").is_dir():
        shutil.rmtree(out / "runs")
    for name in ("summary.json", "errors.log"):
        (out / name).unlink(missing_ok=True)


def _default_scale() -> str:
    import torch

    return "full" if torch.cuda.is_available() else "quick"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m paper_figures``: the figures command alone."""
    parser = command.Parser(prog="python -m paper_figures",
                            description="Every figure of the paper, summary.json and the gallery, from one command.")
    add_arguments(parser)
    return command.dispatch(parser.parse_args(argv))
