"""``aeos train``: train a network, recording raw and preconditioned sharpness, resumable after a kill.

    aeos train --dataset digits --model mlp --optimizer adam --lr 1e-3 --steps 2000 --out runs/x
    python -m deep.cli train ...        # the same, without the other subcommands

Every flag is a field of :class:`deep.TrainConfig` (hyperparameters named as in :mod:`aeos_theory`);
the same command again resumes the run folder, after proving it holds that run (:mod:`deep.training.run_folder`).
Exit status 0 when the run completed or reached its target (the final status and the last measured row
on stdout), 3 when it diverged (one line on stderr: the step and its loss), 1 when the folder's records
cannot be trusted or the folder is locked by another writer, 2 for bad flags.  Building the parser
imports no torch.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from typing import Sequence

from aeos_base import command
from aeos_theory.hyperparams import HYPERS, flag_help
from aeos_theory.optimizers import OPTIMIZERS

from .training.names import ACTIVATIONS, DATASETS, DTYPES, LOSSES, MODELS, SCHEDULES

#: TrainConfig fields set by a flag of the same name (hyperparameters come from their own flags).
_FIELDS = ("dataset", "model", "loss", "optimizer", "steps", "measure_every", "schedule", "warmup_steps",
           "final_lr_ratio", "seed", "n", "batch_size",
           "chunk_size", "width", "depth", "activation", "context", "data_dir", "tol", "max_hvps",
           "target_loss", "device", "dtype", "threads", "nproc")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser("train", help="train a network, recording raw and preconditioned sharpness (resumable)")
    p.add_argument("--out", required=True, help="run folder (config.json, metrics.csv, checkpoint.pt); "
                   "the same folder again resumes")
    p.add_argument("--dataset", default="digits", choices=DATASETS, help="data set (default digits)")
    p.add_argument("--model", default="mlp", choices=MODELS, help="network (default mlp)")
    p.add_argument("--loss", default="mse", choices=LOSSES, help="loss (default mse)")
    p.add_argument("--optimizer", default="adam", choices=list(OPTIMIZERS), help="optimizer (default adam)")
    p.add_argument("--lr", "--eta", dest="eta", type=float, required=True, help=HYPERS["eta"].doc)
    command.add_number_flags(p, flag_help(skip=("eta",)))
    p.add_argument("--steps", type=int, default=1000,
                   help="number of updates, at most 2^24 = 16777216 (torch.optim's float32 step count) (default 1000)")
    p.add_argument("--measure-every", type=int, default=100, help="updates between measurements (default 100)")
    p.add_argument("--schedule", default="constant", choices=SCHEDULES,
                   help="learning-rate schedule: constant, or warmup_cosine (linear warmup over --warmup-steps, "
                        "then cosine decay to --final-lr-ratio * lr) (default constant)")
    p.add_argument("--warmup-steps", type=int, default=0, help="warmup_cosine: updates of linear warmup (default 0)")
    p.add_argument("--final-lr-ratio", type=float, default=0.1,
                   help="warmup_cosine: final lr / lr, in [0, 1] (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the batches (default 0)")
    p.add_argument("--n", type=int, default=None, help="examples (default: digits 1000, cifar10 5000, text 512, "
                   "synthetic 1000)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size of the optimizer's steps (default: full batch); "
                   "every measurement stays full batch")
    p.add_argument("--chunk-size", type=int, default=1000, help="physical batch for full-batch passes (default 1000)")
    p.add_argument("--width", type=int, default=None, help="hidden width / channels (default: the model's)")
    p.add_argument("--depth", type=int, default=None, help="hidden layers / blocks (default: the model's)")
    p.add_argument("--activation", default=None, choices=list(ACTIVATIONS), help="activation (default: the model's)")
    p.add_argument("--context", type=int, default=64, help="text: characters per example (default 64)")
    p.add_argument("--data-dir", default=None, help="cifar10: folder of the official python batches")
    p.add_argument("--target-loss", type=float, default=None, help="stop when the train loss is <= this")
    p.add_argument("--tol", type=float, default=1e-3, help="Lanczos relative tolerance (default 1e-3)")
    p.add_argument("--max-hvps", type=int, default=100, help="max Hessian-vector products per eigenvalue")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:i")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="float32 or float64 (default float32)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads, fixed per run so its numbers do not depend on the machine (default 1)")
    p.add_argument("--nproc", type=int, default=None,
                   help="processes sharing the full batch (torch.distributed; gloo on CPU, one GPU each on CUDA), "
                        "launched here through torch's elastic launcher (default: 1, or under torchrun its "
                        "WORLD_SIZE)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.set_defaults(handler=run)


def _command_line(args: argparse.Namespace) -> str:
    words = ["aeos", "train"]
    for key, value in vars(args).items():
        if key not in ("command", "handler") and value not in (None, False):
            words += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and print the final status and the last measured row (a diverged run: one line on
    stderr naming the step it diverged at and its loss, exit status 3).

    With ``--nproc N`` outside a distributed launch, start N ranks of this same command through torch's
    elastic launcher and return their status; inside one (``WORLD_SIZE`` > 1), this process is one rank:
    rank 0 speaks and writes for all, and the process ends through :func:`deep.training.distributed.run_as_rank`."""
    from .training.config import TrainConfig

    if not args.out.strip():  # the words of aeos figures
        raise ValueError("--out must be a folder path; got an empty string")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out must be a folder, got the file {args.out!r}")
    if args.nproc is None:  # torchrun's own --nproc-per-node takes every prefix of --nproc: infer it
        args.nproc = int(os.environ.get("WORLD_SIZE", "1"))
    config = TrainConfig(hyper=command.given(args, HYPERS), **{f: getattr(args, f) for f in _FIELDS})
    config.validate()
    if "WORLD_SIZE" not in os.environ:  # a finished run is reported at once, without torch
        finished = _finished(config, args.out)
        if finished is not None:
            return _report(finished)
    from .training.distributed import launch, run_as_rank

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch(["-m", "deep.cli", *shlex.split(_command_line(args))[1:]], args.nproc)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if int(os.environ.get("RANK", "0")) > 0:
            sys.stdout = open(os.devnull, "w")  # rank 0 reports for all; errors: see run_as_rank
        run_as_rank(lambda: _train(config, args))
    return _train(config, args)


def _finished(config, out: str):
    """The path of ``metrics.csv`` when the folder ``out`` holds this config's finished run, proven as a resume
    would prove it (:meth:`deep.training.run_folder.RunFolder.check`: ValueError for another config,
    RecordError for records that cannot be trusted); None when there is training to do."""
    from .training.run_folder import RunFolder

    folder = RunFolder(out)
    if not folder.summary.exists():
        return None
    return folder.metrics if folder.check(config.to_dict()).finished else None


def _train(config, args: argparse.Namespace) -> int:
    from .training.train import run as train

    path = train(config, args.out, progress=not args.no_progress, command=_command_line(args))
    if int(os.environ.get("RANK", "0")) > 0:
        return command.EXIT_OK
    return _report(path)


def _report(path) -> int:
    """Print the final status and the last measured row of the finished run whose ``metrics.csv`` is ``path``."""
    from aeos_base import files

    from .training.config import DIVERGENCE_FACTOR
    from .training.runlog import SUMMARY, read_metrics

    summary = files.read_json(path.parent / SUMMARY)
    rows = read_metrics(path)
    if summary["status"] == "diverged":  # its last row is the diverged step's, with the loss that stopped it
        loss = next((r["train_loss"] for r in reversed(rows) if r["step"] == summary["step"]), math.nan)
        print(f"diverged at step {summary['step']}: train_loss {loss:.6g} (a run stops at a loss that is not "
              f"finite or above {DIVERGENCE_FACTOR:g} times its loss at step 0); {len(rows)} rows in {path}",
              file=sys.stderr)
        return command.EXIT_DIVERGED
    last = next((r for r in reversed(rows) if not math.isnan(r["sharpness"])), rows[-1] if rows else None)
    print(f"{summary['status']} at step {summary['step']}; {len(rows)} rows in {path}")
    if last is not None:
        print(f"step {last['step']}: train_loss {last['train_loss']:.6g}, sharpness {last['sharpness']:.6g}, "
              f"eta*S_P {last['eta_S_P']:.6g} (eta*threshold {last['eta_threshold']:.6g})")
    return command.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deep.cli``: this package's subcommands alone."""
    return command.main([register], argv, prog="python -m deep.cli",
                        description="Sharpness of real networks: training runs")


if __name__ == "__main__":
    raise SystemExit(main())
