"""The README's Python examples run and print what the README says (doctest on its python blocks)."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    text = "\n".join(block for block in blocks if ">>>" in block)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, {}, "README.md", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 10
    assert result.failed == 0


def test_readme_opens_with_the_two_commands_ci_uses():
    lines = [line for line in README.read_text().splitlines() if line.strip()]
    assert lines[2].startswith("make figures") and lines[3].startswith("make test")
    assert "make test" in (README.parent / ".ci" / "run").read_text()


def test_readme_plain_python_blocks_run(capsys):
    """Blocks without >>> are scripts: they must run as written (the deep tour trains 300 Adam steps)."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if ">>>" not in b]
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "eta * S_P" in out
