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
    return 0


# --------------------------------------------------------------------------- figures
def _add_figures(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from paper_figures.driver import add_arguments

    p = sub.add_parser("figures", help="every figure of the paper, summary.json and the FIGURES.md gallery")
    add_arguments(p)
    return _run_figures


def _run_figures(args: argparse.Namespace) -> int:
    from paper_figures.driver import run

    return run(args)


# --------------------------------------------------------------------------- train
# Names are listed literally here (deep imports torch; the parser must stay light); a test checks
# they match deep.data.DATASETS, deep.models.MODELS/ACTIVATIONS and deep.losses.LOSSES.
_TRAIN_NAMES = {"dataset": "digits, cifar10, text, synthetic", "model": "mlp, cnn, resnet, transformer",
                "loss": "mse, ce", "activation": "tanh, relu, elu, gelu, softplus, identity"}


def _add_train(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from aeos_theory.hyperparams import HYPERS
    from aeos_theory.optimizers import OPTIMIZERS

    p = sub.add_parser("train", help="train a network, recording raw and preconditioned sharpness (resumable)")
    p.add_argument("--out", required=True, help="run folder (config.json, metrics.csv, checkpoint.pt); "
                   "the same folder again resumes")
    for name, default in (("dataset", "digits"), ("model", "mlp"), ("loss", "mse")):
        p.add_argument(f"--{name}", default=default, help=f"{_TRAIN_NAMES[name]} (default {default})")
    p.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS), help="optimizer (default adam)")
    p.add_argument("--lr", "--eta", dest="eta", type=float, required=True, help=HYPERS["eta"].doc)
    for name, hyper in HYPERS.items():
        if name != "eta":
            p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=None,
                           help=f"{hyper.doc} ({hyper.range_text()}; default: the optimizer's)")
    p.add_argument("--steps", type=int, default=1000, help="number of updates (default 1000)")
    p.add_argument("--measure-every", type=int, default=100, help="updates between measurements (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the batches (default 0)")
    p.add_argument("--n", type=int, default=None, help="examples (default: digits 1000, cifar10 5000, text 512, "
                   "synthetic 1000)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default: full batch)")
    p.add_argument("--chunk-size", type=int, default=1000, help="physical batch for full-batch passes (default 1000)")
    p.add_argument("--width", type=int, default=None, help="hidden width / channels (default: the model's)")
    p.add_argument("--depth", type=int, default=None, help="hidden layers / blocks (default: the model's)")
    p.add_argument("--activation", default=None, help=f"{_TRAIN_NAMES['activation']} (default: the model's)")
    p.add_argument("--context", type=int, default=64, help="text: characters per example (default 64)")
    p.add_argument("--data-dir", default=None, help="cifar10: folder of the official python batches")
    p.add_argument("--target-loss", type=float, default=None, help="stop when the train loss is <= this")
    p.add_argument("--tol", type=float, default=1e-3, help="Lanczos relative tolerance (default 1e-3)")
    p.add_argument("--max-hvps", type=int, default=100, help="max Hessian-vector products per eigenvalue")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:i")
    p.add_argument("--dtype", default="float32", help="float32 or float64 (default float32)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return _run_train


def _run_train(args: argparse.Namespace) -> int:
    import math
    import shlex

    from aeos_theory.hyperparams import HYPERS
    from deep.config import TrainConfig
    from deep.runlog import SUMMARY, read_json, read_metrics
    from deep.train import run

    hyper = {name: getattr(args, name) for name in HYPERS if getattr(args, name) is not None}
    fields = ("dataset", "model", "loss", "optimizer", "steps", "measure_every", "seed", "n", "batch_size",
              "chunk_size", "width", "depth", "activation", "context", "data_dir", "tol", "max_hvps",
              "target_loss", "device", "dtype")
    config = TrainConfig(hyper=hyper, **{f: getattr(args, f) for f in fields})
    words = ["aeos", "train"]
    for key, value in vars(args).items():
        if key != "command" and value not in (None, False):
            words += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    path = run(config, args.out, progress=not args.no_progress, command=shlex.join(words))
    summary = read_json(path.parent / SUMMARY)
    rows = read_metrics(path)
    last = next((r for r in reversed(rows) if not math.isnan(r["sharpness"])), rows[-1] if rows else None)
    print(f"{summary['status']} at step {summary['step']}; {len(rows)} rows in {path}")
    if last is not None:
        print(f"step {last['step']}: train_loss {last['train_loss']:.6g}, sharpness {last['sharpness']:.6g}, "
              f"eta*S_P {last['eta_S_P']:.6g} (eta*threshold {last['eta_threshold']:.6g})")
    return 0


# --------------------------------------------------------------------------- main
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], Callable[[argparse.Namespace], int]], ...] = (
    _add_threshold,
    _add_figures,
    _add_train,
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
