"""``python -m paper_figures``: every figure, its data, summary.json and the FIGURES.md gallery."""

from paper_figures.driver import main

raise SystemExit(main())
