"""``python -m paper_figures``: every figure, its data, summary.json and the gallery (see :mod:`paper_figures.cli`)."""

from paper_figures.cli import main

raise SystemExit(main())
