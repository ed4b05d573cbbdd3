"""One module per figure; see :mod:`paper_figures.registry` for the contract."""
