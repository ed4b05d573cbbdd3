"""Input checks at the package's boundary: every bad argument gets a ValueError that names it and its range.

One helper per kind of value, used by every layer (``aeos_theory``, ``sims``, ``deep``,
``paper_figures``), so the same mistake reads the same everywhere::

    >>> integer("steps", 10, low=0)
    10
    >>> integer("steps", -1, low=0)
    Traceback (most recent call last):
    ...
    ValueError: steps must be an integer >= 0, got -1
    >>> real("tol", 1e-3, low=0.0, low_inclusive=False, high=1.0, high_inclusive=False)
    0.001
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable


def shown(value: object) -> str:
    """``value`` as an error message shows it: ``repr``, but an int of more than 20 digits in scientific
    notation (``10**400`` -> ``1e+400 (an int)``), never hundreds of digits."""
    if _huge(value):
        return f"{_int_text(value)} (an int)"
    return repr(value)


def _huge(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and abs(value) >= 10**20


def _int_text(value: int) -> str:
    if not _huge(value):
        return str(value)
    exponent = int(math.log10(abs(value)))
    return f"{value / 10**exponent:.3g}e+{exponent}"


def _range_text(name: str, low: float, high: float, low_inclusive: bool, high_inclusive: bool) -> str:
    parts = []
    if low > -math.inf:
        parts.append(f"{low:g} {'<=' if low_inclusive else '<'} ")
    parts.append(name)
    if high < math.inf:
        parts.append(f" {'<=' if high_inclusive else '<'} {high:g}")
    return "".join(parts)


def integer(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int when it is an integer (bool excluded) with ``low <= value <= high``.

    The message names the argument and its allowed range.
    """
    low_text, high_text = (None if v is None else _int_text(v) for v in (low, high))
    bounds = (f" with {low_text} <= {name} <= {high_text}" if low is not None and high is not None
              else f" >= {low_text}" if low is not None else f" <= {high_text}" if high is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer{bounds}, got {shown(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer{bounds}, got {shown(value)}")
    return int(value)


def real(name: str, value: object, *, low: float = -math.inf, high: float = math.inf,
         low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    """``value`` as a finite float inside the range; bools, strings, arrays and non-finite values are refused."""
    text = _range_text(name, low, high, low_inclusive, high_inclusive)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number with {text}, got {shown(value)}")
    try:
        x = float(value)
    except OverflowError:  # a huge int such as 10**400
        raise ValueError(f"{name} must be finite with {text}, got {shown(value)}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite with {text}, got {x!r}")
    above = x >= low if low_inclusive else x > low
    below = x <= high if high_inclusive else x < high
    if not (above and below):
        raise ValueError(f"{name} must satisfy {text}, got {x!r}")
    return x


def choice(name: str, value: object, allowed: Iterable[str]) -> str:
    """``value`` when it is one of ``allowed`` (the message lists them)."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {shown(value)}")
    return value
