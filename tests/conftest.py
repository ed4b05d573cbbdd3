"""Shared fixtures.  Helpers that are plain functions (independent references) live in ``support.py``.

The ``slow`` marker tags the long physics runs; ``make test`` (and CI) runs them, ``-m 'not slow'``
skips them while iterating.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# The property-based tests draw the same examples on every run (a test suite gives the same verdict for
# the same code); HYPOTHESIS_PROFILE=explore draws new ones, to hunt for bugs.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

sys.path.insert(0, str(Path(__file__).resolve().parent))  # makes ``support`` importable from any rootdir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_torch_thread():
    """Tiny problems run fastest on one thread, and do not stall when the cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fake_cifar(tmp_path: Path) -> Path:
    """A folder holding a tiny CIFAR-10 in the official python-batch format (5 batches of 4 images)."""
    from support import write_fake_cifar

    folder = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(folder)
    return folder


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder."""
    return ROOT
