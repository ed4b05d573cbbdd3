"""paper_figures: every figure of the paper from one command, data first and pictures second.

    python -m paper_figures            # or: aeos figures; --quick (default without CUDA) / --full
    python -m paper_figures --only quadratic_aeos --jobs 2

Writes ``<out>/<figure>.png`` and ``.pdf``, ``<out>/data/`` (each figure's numbers as CSV/JSON, saved
before drawing), ``<out>/summary.json`` (the key measured numbers of every figure) and the gallery
``<out>/FIGURES.md`` (default out: ``paper_figures/out``, whose gallery is also written to
``paper_figures/README.md``).  Runs are cached in ``<out>/runs`` by a hash of their config.

Modules: :mod:`~paper_figures.driver` (options), :mod:`~paper_figures.pipeline` (plan, compute, draw),
:mod:`~paper_figures.cache` (the run cache), :mod:`~paper_figures.report` (data files, summary,
gallery), :mod:`~paper_figures.style` (the one matplotlib style), :mod:`~paper_figures.registry`
(the ten figures and their contract), and one module per figure in :mod:`paper_figures.figures`.
No other package imports ``paper_figures`` (the ``aeos`` console script, ``paper_figures.cli``, lives here).
"""
