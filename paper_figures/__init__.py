"""Every figure of the paper from one command, data first and pictures second.

What it is for: regenerating the figures (and their numbers) that show the thresholds of
:mod:`aeos_theory` in simulation (:mod:`sims`) and on real networks (:mod:`deep`).

    aeos figures                       # = python -m paper_figures; --quick (default without CUDA) / --full
    aeos figures --only quadratic_aeos --jobs 2 --out figs

Writes ``<out>/<figure>.png`` and ``.pdf``, ``<out>/data/`` (each figure's numbers as CSV/JSON, saved
before drawing), ``<out>/summary.json`` (the key measured numbers of every figure) and the gallery
``<out>/README.md`` (default out: ``./aeos_figures``).  Runs are cached in ``<out>/runs`` by a hash of
their config.

Every figure whose numbers come from training or sampling runs each condition at several seeds and
reports its headline numbers as a mean with a 95% interval over seeds; ``--check`` compares them with a
committed gallery, ``--dry-run`` estimates what a scale would cost.

Modules: :mod:`~paper_figures.cli` (the command), :mod:`~paper_figures.pipeline` (plan, compute, draw),
:mod:`~paper_figures.cache` (the run cache), :mod:`~paper_figures.report` (summary and gallery),
:mod:`~paper_figures.intervals` (headline numbers over seeds), :mod:`~paper_figures.check` (``--check``),
:mod:`~paper_figures.estimate` (``--dry-run``), :mod:`~paper_figures.style` (the one matplotlib style),
:mod:`~paper_figures.legibility` (labels over data or over each other), :mod:`~paper_figures.registry`
(the figures and their contract, seeds included), one module per figure in :mod:`paper_figures.figures`,
and :mod:`~paper_figures.console`, the ``aeos`` entry point that assembles every package's subcommands.
Nothing else imports ``paper_figures``.
"""
