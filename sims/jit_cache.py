"""numba's on-disk cache for the sims kernels, keyed on all of sims' sources.

numba's ``cache=True`` stamps a kernel's cache with the source file of the kernel alone.  The drivers of
:mod:`sims.kernels` inline the update helpers of :mod:`sims.updates` (and bake in the optimizer codes of
:mod:`aeos_theory.optimizers` as constants), so an edited helper would leave numba serving the machine
code compiled from the old one.  Here every sims kernel is cached instead in a directory named after

    CACHE_KEY = SHA-256( numba version, then for each ``sims/**/*.py`` and ``aeos_theory/optimizers.py``:
                         its path and its bytes )     (the first 16 hex digits)

so any change of those sources (or of numba) starts from an empty directory, and a stale kernel is never
loaded.  The directory (:data:`CACHE_DIR`) is the first writable one of

1. ``$NUMBA_CACHE_DIR/aeos-sims-<key>`` when the user set ``NUMBA_CACHE_DIR`` (numba's own variable,
   used as the parent);
2. ``sims/__pycache__/numba-<key>`` beside the sources (a checkout's own cache, as numba's default);
3. ``$XDG_CACHE_HOME/aeos/sims-<key>`` (``~/.cache/aeos/sims-<key>``) when the package folder is read-only.

If none is writable, the kernels compile in every process (``cache=False``), never falling back to
numba's per-file cache.  In the package folder, directories of other keys untouched for an hour are
removed when a new key is first used, so edits do not pile up caches.

How: the modules that define kernels decorate them with :func:`njit` from here instead of numba's.  It
sets ``numba.config.CACHE_DIR`` only while numba builds the dispatcher's cache (numba reads it there, in
``UserProvidedCacheLocator``, when ``njit(cache=True)`` is applied, and keeps the path), so other numba
code in the same process keeps numba's own settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numba
from numba.core import config

PACKAGE_DIR = Path(__file__).resolve().parent
#: Sources outside sims that the kernels compile in: the optimizer registry's kernel codes.
EXTRA_SOURCES = (Path(importlib.util.find_spec("aeos_theory.optimizers").origin),)
#: A keyed directory in the package folder older than this (seconds since its last write) is removed.
STALE_AFTER = 3600.0


def source_key(package_dir: Path, extra_files: Iterable[Path] = ()) -> str:
    """16 hex digits of SHA-256 over numba's version and the relative path and bytes of every ``*.py``
    under ``package_dir`` (sorted), then of each of ``extra_files`` (name and bytes)."""
    digest = hashlib.sha256(f"numba {numba.__version__}\n".encode())
    package_dir = Path(package_dir)
    files = [(p.relative_to(package_dir).as_posix(), p) for p in sorted(package_dir.rglob("*.py"))]
    files += [(Path(p).name, Path(p)) for p in extra_files]
    for name, path in files:
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def _candidates(key: str) -> list[Path]:
    user = [Path(config.CACHE_DIR) / f"aeos-sims-{key}"] if config.CACHE_DIR else []
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return user + [PACKAGE_DIR / "__pycache__" / f"numba-{key}", xdg / "aeos" / f"sims-{key}"]


def _prune_stale(keep: Path) -> None:
    """Remove sibling ``numba-*`` directories of ``keep`` (other keys) not written for STALE_AFTER seconds."""
    now = time.time()
    for other in keep.parent.glob("numba-*"):
        try:
            if other != keep and other.is_dir() and now - other.stat().st_mtime > STALE_AFTER:
                shutil.rmtree(other, ignore_errors=True)
        except OSError:
            pass


def _choose_cache_dir(key: str) -> Optional[Path]:
    for folder in _candidates(key):
        existed = folder.is_dir()
        if _writable(folder):
            if not existed and folder.parent == PACKAGE_DIR / "__pycache__":
                _prune_stale(folder)
            return folder
    return None


#: The key of the sources now on disk, and the directory the kernels are cached in (None: no caching).
CACHE_KEY = source_key(PACKAGE_DIR, EXTRA_SOURCES)
CACHE_DIR = _choose_cache_dir(CACHE_KEY)


@contextlib.contextmanager
def _numba_cache_dir(folder: Path) -> Iterator[None]:
    saved = config.CACHE_DIR
    config.CACHE_DIR = str(folder)
    try:
        yield
    finally:
        config.CACHE_DIR = saved


def njit(func: Optional[Callable] = None, **options) -> Callable:
    """``numba.njit`` whose ``cache=True`` caches in :data:`CACHE_DIR` (compile per process if None)."""
    def decorate(f: Callable) -> Callable:
        if not options.get("cache"):
            return numba.njit(**options)(f)
        if CACHE_DIR is None:
            return numba.njit(**{**options, "cache": False})(f)
        with _numba_cache_dir(CACHE_DIR):
            return numba.njit(**options)(f)

    return decorate if func is None else decorate(func)
