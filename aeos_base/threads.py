"""torch's intra-op thread count, fixed for the length of a block, without importing torch here."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` inside the block and restored after: a run's numbers
    are the same whatever the machine or ``--jobs`` (reductions round differently on other thread counts).

    Does nothing when torch has not been imported (a ``sims`` run never loads it), so that the figures'
    runner can wrap every run without importing torch itself."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
