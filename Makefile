# `make figures` and `make test` work on a fresh machine: they build .venv themselves.
# torch is pinned to the CPU build first so that nothing pulls a multi-GB CUDA build;
# the project itself only asks for torch>=2.2.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: figures test install clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The repository's gallery lives in paper_figures/out (aeos figures alone writes to ./aeos_figures).
figures: $(STAMP)
	$(PY) -m paper_figures --out paper_figures/out

test: $(STAMP)
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
