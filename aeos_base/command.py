"""How every ``aeos`` subcommand behaves: one-line errors, documented exit codes, shared flags.

Each package owns its subcommands in its own ``cli`` module, which exposes ``register(subparsers)``
(adds its parsers, each with ``handler=`` set to its run function).  The ``aeos`` entry point
(:mod:`paper_figures.console`) and each package's own ``python -m <package>.cli`` assemble them with
:func:`main`.

Exit codes: 0 success, 1 a runtime failure: an operating-system error, a record that cannot be
trusted (:class:`RecordError`: a run folder or cache entry that is corrupt, incomplete or locked by
another writer) or an internal error, 2 bad input, 3 the run finished but diverged (recorded as such),
130 interrupted (Ctrl-C, or SIGTERM, which stops a command the same way: a run folder stays
resumable).  Every failure is one line on stderr, never a traceback (``AEOS_TRACEBACK=1`` shows the
traceback of an internal error, for a bug report).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Mapping, NoReturn, Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

Register = Callable[["argparse._SubParsersAction"], None]


class RecordError(RuntimeError):
    """A record that cannot be trusted: a run folder, checkpoint or cache entry that is corrupt,
    incomplete, written by another config, or locked by another writer.  The message names the file and
    what is wrong with it; the command exits with status 1."""


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    line = " ".join(str(message).split())  # never more than one line
    print(line if line.startswith("aeos") else f"error: {line}", file=sys.stderr)
    raise SystemExit(code)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        fail(f"{self.prog}: {message}")


def add_number_flags(parser: argparse.ArgumentParser, docs: Mapping[str, str]) -> None:
    """One float flag ``--<name>`` (default None: not given) per entry ``name -> help`` of ``docs``
    (underscores in a name become dashes in its flag)."""
    for name, doc in docs.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=None, help=doc)


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, float]:
    """The flags among ``names`` that the user gave (those left at None are omitted)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is (as Ctrl-C raises KeyboardInterrupt), so that it stops through
    the same cleanup (locks released, atomic writes abandoned, a run folder left resumable)."""


def _raise_terminated(signum: int, frame: object) -> NoReturn:
    raise Terminated(signal.Signals(signum).name)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread; the
    previous handler is restored after it.  Elsewhere than the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped_by_signal(err: BaseException) -> bool:
    """torch's elastic launcher turns SIGTERM / SIGINT into its own SignalException (with ``sigval``)."""
    return getattr(err, "sigval", None) in (signal.SIGTERM, signal.SIGINT)


def _interrupted(signum: int) -> int:
    print("terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def dispatch(args: argparse.Namespace) -> int:
    """Run ``args.handler(args)``: ValueError -> exit 2; RecordError, OSError and any other error -> exit 1;
    Ctrl-C or SIGTERM -> 130; one line on stderr each."""
    try:
        with sigterm_as_interrupt():
            return int(args.handler(args))
    except ValueError as err:
        fail(str(err), EXIT_BAD_INPUT)
    except RecordError as err:
        fail(str(err), EXIT_FAILED)
    except OSError as err:
        fail(f"{err.strerror or err}{f': {err.filename}' if err.filename else ''}", EXIT_FAILED)
    except KeyboardInterrupt as err:
        return _interrupted(signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)
    except Exception as err:  # a bug: still one line, unless the user asks for the traceback
        if _stopped_by_signal(err):
            return _interrupted(err.sigval)
        if os.environ.get("AEOS_TRACEBACK"):
            raise
        fail(f"internal error: {type(err).__name__}: {err} (set AEOS_TRACEBACK=1 to see the traceback)",
             EXIT_FAILED)


def build_parser(registers: Sequence[Register], *, prog: str, description: str) -> Parser:
    """A :class:`Parser` with the subcommands that ``registers`` add."""
    parser = Parser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for register in registers:
        register(sub)
    return parser


def main(registers: Sequence[Register], argv: Sequence[str] | None, *, prog: str, description: str) -> int:
    """Parse ``argv`` with the subcommands of ``registers`` and run the chosen one (see :func:`dispatch`)."""
    args = build_parser(registers, prog=prog, description=description).parse_args(argv)
    return dispatch(args)
