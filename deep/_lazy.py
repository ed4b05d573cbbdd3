"""Lazy attributes of a package: ``package.name`` imports the module that defines ``name`` on first use.

``deep`` and its sub-packages name their public objects in a table {name: module}; importing a package
then costs nothing (no torch), so ``aeos --help`` and ``aeos train --help`` stay fast, and the first use
of a name imports what it needs.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_attributes(package: str, table: Mapping[str, str], moved: Mapping[str, str] | None = None,
                    submodules: tuple[str, ...] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``table`` maps each public name to the module defining it
    (relative to ``package`` when it starts with a dot); ``moved`` maps a name that left to a sentence
    saying where it went (an AttributeError quotes it); ``submodules`` are imported as attributes on use."""
    moved = dict(moved or {})

    def getattr_(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in table:
            module = table[name]
            return getattr(importlib.import_module(module, package) if module.startswith(".")
                           else importlib.import_module(module), name)
        if name in moved:
            raise AttributeError(f"module {package!r} has no attribute {name!r}: {moved[name]}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(table)

    return getattr_, dir_
