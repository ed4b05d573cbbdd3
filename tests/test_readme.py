"""The README's examples: doctests print what the README says, the deep tour computes the right S and
S_P (checked against scipy eigsh on Hessian-vector products written here with plain autograd), and
every ``aeos`` command line it shows is accepted by the real parser."""

from __future__ import annotations

import doctest
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples():
    text = "\n".join(block for block in _blocks("python") if ">>>" in block)
    test = doctest.DocTestParser().get_doctest(text, {}, "README.md", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 10
    assert result.failed == 0


def _independent_top_eigenvalue(model, chunks, scale: torch.Tensor) -> float:
    """lambda_max(D H D), D = diag(scale), by scipy eigsh on H v from torch.autograd (double backward)."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    params = [p for p in model.parameters()]
    n_total = sum(len(X) for X, _ in chunks)
    n = sum(p.numel() for p in params)

    def matvec(v):
        v = torch.as_tensor(np.asarray(v).reshape(-1), dtype=torch.float32) * scale
        out = torch.zeros(n)
        for X, y in chunks:
            loss = 0.5 * ((model(X) - y) ** 2).sum(dim=1).mean() * len(X) / n_total
            grads = torch.autograd.grad(loss, params, create_graph=True)
            flat = torch.cat([g.reshape(-1) for g in grads])
            hv = torch.autograd.grad(flat @ v, params)
            out += torch.cat([h.reshape(-1) for h in hv])
        return (out * scale).double().numpy()

    return float(eigsh(LinearOperator((n, n), matvec=matvec, dtype=np.float64), k=1, which="LA", tol=1e-6,
                       v0=np.ones(n))[0][0])


@pytest.mark.slow
def test_readme_deep_tour_measures_what_eigsh_measures(capsys):
    """The plain-python block runs as written; its S and S_P match eigsh on independent HVPs, with
    P = sqrt(v / (1 - beta2^t)) + eps rebuilt here from Adam's state."""
    # the other plain blocks: deep.Shard runs only under torchrun (tests/test_distributed.py makes its calls),
    # the GPT loop with deep.Monitor runs in test_readme_gpt_loop_runs_end_to_end, the callbacks need their libraries
    blocks = [b for b in _blocks("python") if ">>>" not in b and "deep.Shard" not in b and "deep.Monitor(" not in b
              and "_callback(" not in b]
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    model, opt, chunks = namespace["model"], namespace["opt"], namespace["chunks"]
    assert namespace["S"] == pytest.approx(_independent_top_eigenvalue(model, chunks, torch.ones(1)), rel=2e-3)
    state = [opt.state[p] for p in model.parameters()]
    v = torch.cat([s["exp_avg_sq"].reshape(-1) for s in state])
    t = float(state[0]["step"])
    p = torch.sqrt(v / (1 - 0.999 ** t)) + 1e-8
    expected = _independent_top_eigenvalue(model, chunks, p.rsqrt())
    assert namespace["S_P"] == pytest.approx(expected, rel=2e-3)
    edge, lr = namespace["edge"], opt.param_groups[0]["lr"]
    assert lr == pytest.approx(1e-3) and edge.step == 300  # the warmup is over: lr back at 1e-3
    assert edge.eta_S_P == pytest.approx(lr * expected, rel=2e-3)
    assert edge.constant == pytest.approx((2 + 1.8) * (1 - 0.9**300) / 0.1, rel=1e-9)
    assert f"{edge.eta_S_P:.1f}" in capsys.readouterr().out


def _gpt_block() -> str:
    (block,) = [b for b in _blocks("python") if "deep.Monitor(" in b]
    return block


def test_readme_gpt_loop_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """The README's own-loop example as written, on 16 windows for 30 updates measured every 10 (the three
    numbers substituted here; the model, the schedule to 0 and the monitor unchanged): rows at 10, 20, 30,
    the last update at lr 0 with eta * S_P = 0, the CSV written and read back, the printout."""
    block = _gpt_block()
    for old, new in (("deep.load_text(128, context=32)", "deep.load_text(16, context=32)"),
                     ("steps, warmup, every = 1000, 100, 100", "steps, warmup, every = 30, 5, 10")):
        assert old in block
        block = block.replace(old, new)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    namespace: dict = {}
    try:
        exec(compile(block, "README.md", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    rows = namespace["monitor"].rows
    assert [row["step"] for row in rows] == [10, 20, 30]
    assert sum(p.numel() for p in namespace["model"].parameters()) == 29_792
    assert rows[-1]["lr"] == 0.0 and rows[-1]["eta_S_P"] == 0.0
    assert all(np.isfinite(row["eta_S_P"]) and row["eta_S_P"] > 0 for row in rows[:-1])
    import deep

    assert [r["step"] for r in deep.read_metrics(tmp_path / "runs/gpt/edge.csv")] == [10, 20, 30]
    out = capsys.readouterr().out
    assert out.count("eta*S_P") == 3 and "measuring cost" in out


def test_the_benchmark_measures_the_readme_gpt():
    """benchmarks/real_loop.py quotes the cost of the README's loop: its model is the README's, line for line."""
    bench = (README.parent / "benchmarks" / "real_loop.py").read_text()

    def model_source(text: str) -> list[str]:
        code = text[text.index("class Block"): text.index("def lm_loss")]
        return [line.split("#")[0].rstrip() for line in code.splitlines() if line.split("#")[0].strip()]

    assert model_source(bench) == model_source(_gpt_block())


def test_every_aeos_command_in_the_readme_parses():
    """Each ``aeos ...`` line of the README's shell blocks is accepted by the real ``aeos`` parser."""
    from aeos_base.command import build_parser
    from paper_figures.console import SUBCOMMANDS

    parser = build_parser(SUBCOMMANDS, prog="aeos", description="")
    lines = [line.split("#")[0].strip() for block in _blocks("bash") for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("aeos ")]
    assert len(commands) >= 6
    for line in commands:
        args = parser.parse_args(shlex.split(line)[1:])
        assert callable(args.handler), line
