"""The ground floor every package of aeos stands on: argument checks, files that are never half written,
and the command-line contract.

What it is for: the conventions that ``aeos_theory``, ``sims``, ``deep`` and ``paper_figures`` share, kept in
one place so that the same mistake reads the same everywhere and every command fails the same way.  It
imports nothing of the other packages (and neither torch, numba nor sympy), so any of them can use it.

Main entry points:

* :mod:`aeos_base.checks`: one helper per kind of argument (:func:`~aeos_base.checks.integer`,
  :func:`~aeos_base.checks.real`, :func:`~aeos_base.checks.choice`), each raising a ValueError that names
  the argument and its allowed range;
* :mod:`aeos_base.files`: atomic writes (a reader sees the old file or the new one, never half of one),
  strict JSON and CSV, and :func:`~aeos_base.files.exclusive_lock`, one writer per folder;
* :mod:`aeos_base.command`: how every ``aeos`` subcommand behaves: one-line errors on stderr, documented
  exit codes (0 ok, 1 failed, 2 bad input, 3 diverged, 130 interrupted), SIGTERM handled as Ctrl-C, and
  :class:`~aeos_base.command.RecordError` for a record that cannot be trusted;
* :mod:`aeos_base.threads`: :func:`~aeos_base.threads.torch_threads`, torch's thread count fixed for a run
  (the trainer, the flows and the figures' runner share it; it never imports torch itself).

>>> from aeos_base import checks
>>> checks.integer("steps", 10, low=0)
10
"""
