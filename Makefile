# `make figures` and `make test` work on a fresh machine: they build .venv themselves.
# torch is pinned to the CPU build first so that nothing pulls a multi-GB CUDA build;
# the project itself only asks for torch>=2.2.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: figures gallery check-figures test install peers clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c benchmarks/constraints.txt -e '.[test,optimizers]'
	touch $(STAMP)

install: $(STAMP)

# The peers of benchmarks/peers.py (PyHessian, curvlinops, hessian-eigenthings), keeping the CPU torch:
# the packages that would pull torchvision or another torch are installed without their dependencies.
peers: $(STAMP)
	$(PY) -m pip install --quiet --no-deps pyhessian==0.1 curvlinops-for-pytorch==3.0.1 \
		hessian-eigenthings==1.0.0a5 backpack-for-pytorch==1.7.1 einconv==0.1.0 unfoldNd==0.2.3
	$(PY) -m pip install --quiet -c benchmarks/constraints.txt einops opt-einsum linear_operator

# `make figures` writes to ./aeos_figures (ignored by git): it never changes a tracked file.
# Extra flags pass through: make figures ARGS='--only thresholds --jobs 2', make test ARGS='-x tests/test_theory.py'.
ARGS ?=
figures: $(STAMP)
	$(PY) -m paper_figures $(ARGS)

# The committed gallery, regenerated on purpose: quick scale from an empty cache, so its header (written
# from summary.json) records the machine, versions, threads and the whole set's wall and CPU time.
gallery: $(STAMP)
	$(PY) -m paper_figures --quick --fresh --out paper_figures/out $(ARGS)

# Regenerate into ./aeos_figures_check (ignored) and compare every headline number with the committed
# gallery; exits non-zero on a disagreement.
check-figures: $(STAMP)
	$(PY) -m paper_figures --check $(ARGS)

# Two pytest-xdist workers (CI has 2 cores), each taking whole files so that a module's fixtures are computed
# once: the suite took 592 s in one process and 394-481 s in two on a clean clone. ARGS='-n 0' runs it in one
# process (for -s or --pdb); a later -n in ARGS overrides this one.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile $(ARGS)

clean-venv:
	rm -rf $(VENV)
