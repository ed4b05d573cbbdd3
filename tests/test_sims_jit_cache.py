"""numba's on-disk cache never serves machine code compiled from other sources than the current ones.

numba's own ``cache=True`` keys a kernel on the file of the kernel only; the kernels of
:mod:`sims.kernels` inline helpers from :mod:`sims.updates`, so an edited helper would keep running the
old code.  :mod:`sims.jit_cache` keys the cache directory on all of ``sims``' sources.  The reference
here is the arithmetic itself: one GD step on L = 1/2 x^2 from x = 1 with eta = 0.1 gives 1 - 0.1 =
0.9, two give 0.81; with the sign of the step flipped in ``sims/updates.py`` they give 1.21.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("aeos_base", "aeos_theory", "sims")


def _copy_sources(dst: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dst / package, ignore=shutil.ignore_patterns("__pycache__"))


def test_key_changes_with_every_source_file(tmp_path):
    """Editing, adding or removing any .py file of a copy of sims changes the key; undoing restores it."""
    from sims import jit_cache

    package = tmp_path / "sims"
    shutil.copytree(ROOT / "sims", package, ignore=shutil.ignore_patterns("__pycache__"))
    key0 = jit_cache.source_key(package)
    assert key0 == jit_cache.source_key(package)  # deterministic
    sources = sorted(package.glob("*.py"))
    assert {"updates.py", "kernels.py", "api.py"} <= {p.name for p in sources}
    keys = {key0}
    for source in sources:
        text = source.read_text()
        source.write_text(text + "\n# edited\n")
        keys.add(jit_cache.source_key(package))
        source.write_text(text)
        assert jit_cache.source_key(package) == key0
    assert len(keys) == len(sources) + 1  # each edit gave a key of its own
    extra = package / "new_helper.py"
    extra.write_text("X = 1\n")
    assert jit_cache.source_key(package) not in keys
    extra.unlink()
    assert jit_cache.source_key(package) == key0
    registry = tmp_path / "registry.py"
    registry.write_text("KERNEL = 1\n")
    with_registry = jit_cache.source_key(package, extra_files=(registry,))
    registry.write_text("KERNEL = 2\n")
    assert jit_cache.source_key(package, extra_files=(registry,)) not in (key0, with_registry)


def test_every_cached_kernel_lives_in_the_keyed_directory():
    """Every ``cache=True`` dispatcher of sims saves under :data:`sims.jit_cache.CACHE_DIR`, whose name
    carries the key of the sources now on disk (none slipped through plain ``numba.njit``)."""
    import importlib

    from numba.core.registry import CPUDispatcher

    from sims import jit_cache

    assert jit_cache.CACHE_DIR is not None
    assert jit_cache.CACHE_DIR.name.endswith(jit_cache.CACHE_KEY)
    from sims.kernels import batch_kernel

    dispatchers = [batch_kernel(0, True, False, layout) for layout in ("rows", "serial", "transposed")]  # ...
    for name in ("updates", "kernels", "sharpening"):  # ... and every module-level one
        module = importlib.import_module(f"sims.{name}")
        dispatchers += [obj for obj in vars(module).values() if isinstance(obj, CPUDispatcher)]
    for dispatcher in dispatchers:
        assert dispatcher.stats.cache_path is not None, dispatcher  # every sims kernel is cached ...
        assert Path(dispatcher.stats.cache_path).is_relative_to(jit_cache.CACHE_DIR), dispatcher  # ... there
    assert len(dispatchers) >= 15


_RUN = """
import json, sys
import numpy as np
import sims
from sims import simulate_batch
from sims.kernels import batch_kernel
from sims.updates import CODES, branch_flags, pack_hyper
assert sims.__file__.startswith(sys.argv[1]), sims.__file__
x = simulate_batch("gd", np.ones((1, 3)), np.ones((1, 3)), 0.1, 2).x  # one run: the serial rows kernel
stats = batch_kernel(CODES["gd"], *branch_flags(pack_hyper({})), "serial").stats
print(json.dumps({"x": x.tolist(), "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""


def _run_kernel(tree: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env["XDG_CACHE_HOME"] = str(tree / "user-cache")  # a fallback, if taken, stays inside tmp_path
    out = subprocess.run([sys.executable, "-c", _RUN, str(tree)], cwd=tree, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_an_edited_helper_is_recompiled_not_served_from_the_cache(tmp_path):
    """On a copy of the package tree: compile and cache; a new process loads the cached kernel; then
    flip the sign of GD's step in sims/updates.py (a helper sims/kernels.py inlines, kernels.py itself
    untouched): the next process must run the new code (1.21), not the cached old one (0.81)."""
    _copy_sources(tmp_path)
    first = _run_kernel(tmp_path)
    assert all(abs(v - 0.81) < 1e-15 for v in first["x"][0]), first
    again = _run_kernel(tmp_path)
    assert again["hits"] >= 1 and again["misses"] == 0, again  # the cache is in use
    updates = tmp_path / "sims" / "updates.py"
    text = updates.read_text()
    old = "xn = x[r, j] - c0 * _gradient(x, h, g, diag, r, j, decay, wd)\n"  # GD's step, adaptive mode
    assert text.count(old) == 1
    updates.write_text(text.replace(old, old.replace("x[r, j] - c0", "x[r, j] + c0")))
    edited = _run_kernel(tmp_path)
    assert all(abs(v - 1.21) < 1e-15 for v in edited["x"][0]), edited
