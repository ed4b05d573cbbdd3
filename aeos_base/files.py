"""Files every layer writes: atomic writes, JSON and CSV, with errors that name the file.

* An *atomic* write goes to a temporary file in the same folder, is flushed and fsynced, then moved
  over the target with ``os.replace``: a reader (or a process that resumes after a kill) sees the old
  file or the new one, never half of one.
* JSON is strict (:func:`to_jsonable` turns numpy values into lists and floats and non-finite
  floats into ``null``).
* A file that cannot be parsed raises ValueError naming the file and what was wrong with it.
* :func:`exclusive_lock` makes one process at a time the writer of a folder; the operating system
  releases the lock when that process dies, however it dies.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Sequence


def to_jsonable(value: Any) -> Any:
    """numpy arrays / scalars -> lists / numbers, non-finite floats -> None, paths -> str (strict JSON).

    Raises TypeError for anything else that JSON cannot hold.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(value.tolist())
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(binary file)`` on a temporary file beside ``path``, fsync, then rename onto ``path``.

    An OSError names ``path`` (the file the caller asked for), not the temporary file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err  # the same subclass (FileNotFoundError, ...)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 1) -> Path:
    """``value`` (via :func:`to_jsonable`) as JSON, atomically; keys keep their order."""
    return atomic_write_text(path, json.dumps(to_jsonable(value), indent=indent, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``; ValueError naming the file when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def csv_cell(value: Any) -> str:
    """A value as a CSV cell: empty for None and non-finite floats, ``repr`` for floats (exact round trip)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):  # numpy's float64 too
        return repr(float(value)) if math.isfinite(value) else ""
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalar
        return csv_cell(value.item())
    return str(value)


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]],
              columns: Sequence[str] | None = None) -> Path:
    """``rows`` (dicts) as CSV with a header, atomically; columns default to the keys in first-seen order."""
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
    return atomic_write_text(path, buffer.getvalue())


@contextmanager
def exclusive_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``<folder>/.lock`` (the folder is created) for the ``with`` block.

    A second holder fails at once with :class:`aeos_base.command.RecordError` naming the first one's
    pid; a killed holder's lock vanishes with its process.  Stale temporary files of interrupted atomic
    writes in the folder are removed once the lock is held.
    """
    from aeos_base.command import RecordError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RecordError(f"{what} {folder} is being written by {holder}; wait for it to finish or use "
                          "another folder") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        handle.flush()
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        yield folder
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings; ValueError naming the file if a row has the wrong width."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty: expected a CSV header")
        rows = []
        for number, cells in enumerate(reader, start=2):
            if len(cells) != len(header):
                raise ValueError(f"{path} line {number} has {len(cells)} cells, expected {len(header)}")
            rows.append(dict(zip(header, cells)))
    return rows
