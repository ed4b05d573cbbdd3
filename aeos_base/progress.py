"""Progress on stderr: a redrawn bar on a terminal, plain lines in a log file.

A tqdm bar redraws its line with carriage returns many times a second: on a terminal that is one live line,
in a file (``aeos train ... 2> log``, a batch job's output, CI) it is kilobytes of partial lines.  So the
rule is explicit rather than left to tqdm's version: :func:`progress` gives a tqdm bar when the stream is a
terminal, and otherwise a :class:`LineProgress` that writes one whole line (no carriage return) each time the
count passes another tenth of the total or ``interval`` seconds have gone by since its last line, and a last
line when it closes.  Both take ``update``, ``set_description``, ``set_postfix_str`` and ``close``.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class LineProgress:
    """Progress as whole lines: ``desc: count/total unit (percent), elapsed s[, postfix]``."""

    def __init__(self, total: int, *, initial: int = 0, desc: str = "", unit: str = "it", interval: float = 30.0,
                 file: TextIO | None = None) -> None:
        self.total, self.n, self.desc, self.unit, self.interval = total, initial, desc, unit, interval
        self.file = file if file is not None else sys.stderr
        self.postfix = ""
        self.start = self.last_time = time.monotonic()
        self.last_n = initial
        self.step = max(total // 10, 1)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.n // self.step > self.last_n // self.step or now - self.last_time >= self.interval:
            self._line(now)

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def set_postfix_str(self, postfix: str = "", refresh: bool = True) -> None:
        self.postfix = postfix

    def close(self) -> None:
        if self.n != self.last_n:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        head = f"{self.desc}: " if self.desc else ""
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{head}{self.n}/{self.total} {self.unit}{share}, {now - self.start:.0f} s{tail}", file=self.file,
              flush=True)
        self.last_n, self.last_time = self.n, now


def progress(total: int, *, initial: int = 0, desc: str = "", unit: str = "it", enabled: bool = True,
             interval: float = 30.0, file: TextIO | None = None) -> Any:
    """A progress reporter on ``file`` (default stderr): a tqdm bar on a terminal, a :class:`LineProgress`
    otherwise, a silent one when ``enabled`` is False (module docstring)."""
    file = file if file is not None else sys.stderr
    if not enabled:
        return LineProgress(total, initial=initial, desc=desc, unit=unit, interval=float("inf"), file=_Silent())
    if getattr(file, "isatty", lambda: False)():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=file, dynamic_ncols=True)
    return LineProgress(total, initial=initial, desc=desc, unit=unit, interval=interval, file=file)


class _Silent:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
