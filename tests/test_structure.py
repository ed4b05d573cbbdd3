"""The shape of the house, checked on the source: layers, import cycles, one registry, docs that stand alone.

* Layers: ``aeos_base`` (checks, files, commands) <- ``aeos_theory`` (no torch, no numba) <- ``sims`` (numba)
  and ``deep`` (torch) <-
  ``paper_figures``; nothing imports ``paper_figures``; ``sims`` and ``deep`` never import each other.
* No cycle among the modules' imports, top level or inside a function (a function-level import only
  postpones a cycle to the first call).
* Optimizer facts live in the registry: no other module holds a table keyed by optimizer names, and no
  figure writes the Adam constant 38 as a number.
* Code and docs cite the paper and the repository, never an outside spec or an issue number; the
  docstring examples run (doctest).
"""

from __future__ import annotations

import ast
import doctest
import importlib
import re
from pathlib import Path

import pytest

from aeos_theory import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("aeos_base", "aeos_theory", "sims", "deep", "paper_figures")

#: package -> top-level names it must never import (anywhere, top level or inside a function)
FORBIDDEN = {
    "aeos_base": {"aeos_theory", "sims", "deep", "paper_figures", "torch", "numba", "sympy", "matplotlib"},
    "aeos_theory": {"sims", "deep", "paper_figures", "torch", "numba", "matplotlib"},
    "sims": {"deep", "paper_figures", "torch", "matplotlib"},
    "deep": {"sims", "paper_figures", "numba", "matplotlib"},
    "paper_figures": set(),
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path, top_level_only: bool) -> set[str]:
    """Absolute names of what ``name`` imports (relative imports resolved): ``from pkg import sub`` of a
    submodule counts as importing ``pkg.sub`` only, ``from pkg import name`` as importing ``pkg``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module)
    return found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_respects_the_layers(name: str) -> None:
    package = name.split(".")[0]
    imported = {m.split(".")[0] for m in _imports(name, MODULES[name], top_level_only=False)}
    bad = imported & FORBIDDEN[package]
    assert not bad, f"{name} imports {sorted(bad)}, above or beside its layer"


def test_no_import_cycles() -> None:
    """Every import counts, at the top of a module or inside a function; none may close a loop."""
    graph = {name: {m for m in _imports(name, path, top_level_only=False) if m in MODULES and m != name}
             for name, path in MODULES.items()}
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, stack + [node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])


def test_optimizer_tables_live_only_in_the_registry() -> None:
    """A dict literal keyed by three or more optimizer names outside the registry is a second table."""
    names = set(OPTIMIZERS)
    offenders = []
    for name, path in MODULES.items():
        if name == "aeos_theory.optimizers":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                if len(keys & names) >= 3:
                    offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"tables keyed by optimizer names outside aeos_theory.optimizers: {offenders}"


def test_figures_ask_the_theory_for_threshold_constants() -> None:
    offenders = [f"{name}:{node.lineno}" for name, path in MODULES.items() if name.startswith("paper_figures")
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == 38]
    assert not offenders, f"the constant 38 typed in: {offenders}"


def test_docs_stand_alone() -> None:
    """No reference to an outside spec or an issue number in code, docs or benchmarks."""
    pattern = re.compile(r"\bSPEC\b|\bissue\s*#?\d+|\bIssue\s*#?\d+")
    texts = [p for p in MODULES.values()] + [ROOT / "README.md"] + sorted((ROOT / "benchmarks").glob("*"))
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in texts if p.is_file()
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


@pytest.mark.parametrize("package", PACKAGES)
def test_package_docstring_says_what_it_is_for(package: str) -> None:
    doc = importlib.import_module(package).__doc__ or ""
    assert len(doc) > 400 and "entry point" in doc.lower(), package


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.endswith("__main__")))
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
