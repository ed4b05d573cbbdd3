"""No silently wrong number: bad inputs are refused at the door of every measurement, in one message that
names the argument and the shapes, and the smaller inconsistencies of the API and the commands are gone.

The inputs are those a new user was seen to pass to the digits MLP (outputs (100, 10)): each used to give a
wrong number, a nan or a raw torch error from inside the package.  References: the shapes themselves
(the message must name the argument and both shapes), a dense float64 Hessian
(``torch.autograd.functional.hessian``, ``support.dense_hessian``) for the inputs that are accepted
(numpy arrays, integer token ids), and ``tests/refusals.md``, the table of every refusal and its message,
checked against the messages raised here.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import dense_hessian, digits_problem, run_cli, tiny_problem
from torch import nn

import deep
import sims
from deep.curvature.ggn import GGNOperator
from deep.curvature.hessian import CachedDoubleBackward, ReverseOverReverse
from deep.measure.sharpness import gradient_overlap

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "refusals.md"


def _digits():
    """The digits MLP (64-40-10 tanh, outputs (100, 10)) on 100 images, and Adam after one step."""
    model, X, Y = digits_problem(n=100)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad()
    deep.mse(model(X), Y).backward()
    opt.step()
    return model, X, Y, opt


def _labels(Y: torch.Tensor, bad: int) -> torch.Tensor:
    labels = Y.argmax(dim=1)
    labels[7] = bad
    return labels


def _nan_weight(model, X, Y):
    with torch.no_grad():
        model[0].weight[3, 5] = float("nan")
    return model, deep.mse, (X, Y)


def _at(t: torch.Tensor, index: tuple, value: float) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


#: name -> ((model, X, Y) -> (model, loss_fn, data), the message expected, as a regular expression; the
#: central flow works on a float64 copy of the model, so its messages say float64)
BAD_INPUTS = {
    "targets transposed to (10, 100)": (
        lambda m, X, Y: (m, deep.mse, [(X, Y.T)]),
        r"^data: inputs and targets must have the same first dimension \(one row per example\); got inputs of "
        r"shape \(100, 64\) and targets of shape \(10, 100\)$"),
    "targets one row short, in a list of chunks": (
        lambda m, X, Y: (m, deep.mse, [(X, Y[:99])]),
        r"^data: inputs and targets must have the same first dimension .* inputs of shape \(100, 64\) and "
        r"targets of shape \(99, 10\)$"),
    "targets one row short, as a pair": (
        lambda m, X, Y: (m, deep.mse, (X, Y[:99])),
        r"^data: inputs and targets must have the same first dimension .*\(100, 64\) .*\(99, 10\)$"),
    "targets one row short, in the second of two chunks": (
        lambda m, X, Y: (m, deep.mse, [(X[:50], Y[:50]), (X[50:], Y[50:99])]),
        r"^data chunk 1: inputs and targets must have the same first dimension .*\(50, 64\) .*\(49, 10\)$"),
    "targets with 3 of 10 columns, deep.mse": (
        lambda m, X, Y: (m, deep.mse, (X, Y[:, :3])),
        r"^data: loss_fn\(outputs, targets\) fails for outputs of shape \(100, 10\) float(?:32|64) and targets of shape "
        r"\(100, 3\) float(?:32|64): targets must have the outputs' shape \(100, 10\) \(floats\) or \(100,\) \(class "
        r"indices\); got float targets of shape \(100, 3\)$"),
    "targets with 3 of 10 columns, F.mse_loss": (
        lambda m, X, Y: (m, F.mse_loss, (X, Y[:, :3])),
        r"^data: loss_fn\(outputs, targets\) fails for outputs of shape \(100, 10\) float(?:32|64) and targets of shape "
        r"\(100, 3\) float(?:32|64): The size of tensor a \(10\) must match the size of tensor b \(3\)"),
    "targets with 1 of 10 columns, nn.MSELoss (would broadcast)": (
        lambda m, X, Y: (m, nn.MSELoss(), (X, Y[:, :1])),
        r"^data: loss_fn would broadcast targets of shape \(100, 1\) against outputs of shape \(100, 10\); "
        r"targets must have the outputs' shape \(100, 10\)$"),
    "inputs with 5 of 64 features": (
        lambda m, X, Y: (m, deep.mse, (X[:, :5], Y)),
        r"^data: the model cannot take the inputs \(shape \(100, 5\) float(?:32|64)\): mat1 and mat2 shapes cannot be "
        r"multiplied \(100x5 and 64x40\)$"),
    "integer inputs for a float model": (
        lambda m, X, Y: (m, deep.mse, ((16 * X).long(), Y)),
        r"^data: the model cannot take the inputs \(shape \(100, 64\) int64\): .*; integer inputs are passed as "
        r"they are \(token ids for an embedding\): for a float(?:32|64) model convert them, e.g. X.float\(\)$"),
    "a loss returning a vector": (
        lambda m, X, Y: (m, lambda f, y: 0.5 * ((f - y) ** 2).sum(dim=1), (X, Y)),
        r"^loss_fn must return one number, the mean loss over its chunk; got \(100,\) float(?:32|64) for outputs of "
        r"shape \(100, 10\) float(?:32|64) and targets of shape \(100, 10\) float(?:32|64) \(data\)$"),
    "a loss that is not finite": (
        lambda m, X, Y: (m, lambda f, y: torch.log((f - f).abs()).mean(), (X, Y)),
        r"^data: loss_fn returned -inf for outputs of shape \(100, 10\) float(?:32|64) and targets of shape \(100, 10\) "
        r"float(?:32|64), with finite inputs, targets and parameters; the loss must be finite where it is measured$"),
    "class label 10 of 10 classes, deep.cross_entropy": (
        lambda m, X, Y: (m, deep.cross_entropy, (X, _labels(Y, 10))),
        r"^data: targets hold class indices outside \[0, 10\) \(the outputs' last axis has 10 classes\): 10$"),
    "class label -1, deep.mse": (
        lambda m, X, Y: (m, deep.mse, (X, _labels(Y, -1))),
        r"^data: targets hold class indices outside \[0, 10\) \(the outputs' last axis has 10 classes\): -1$"),
    "NaN in the inputs": (
        lambda m, X, Y: (m, deep.mse, (_at(X, (3, 5), float("nan")), Y)),
        r"^data: inputs are not finite \(1 nan and 0 inf of its 6400 entries, shape \(100, 64\) as float(?:32|64)\); "
        r"a measurement on them would be nan$"),
    "inf in the targets": (
        lambda m, X, Y: (m, deep.mse, (X, _at(Y, (2, 2), float("inf")))),
        r"^data: targets are not finite \(0 nan and 1 inf of its 1000 entries, shape \(100, 10\) as float(?:32|64)\); "
        r"a measurement on them would be nan$"),
    "NaN in a weight": (
        _nan_weight,
        r"^model parameter '0.weight' is not finite \(1 nan and 0 inf of its 2560 entries\); a measurement at "
        r"this point would be nan$"),
    "data that is one tensor": (
        lambda m, X, Y: (m, deep.mse, [X]),
        r"^data must yield \(inputs, targets\) pairs; got a Tensor of shape \(100, 64\) \(pass one pair as "
        r"\(X, y\), several as \[\(X1, y1\), \(X2, y2\)\]\)$"),
}

#: Every public measurement, called as a user would: name -> (model, loss_fn, data, optimizer) -> anything.
MEASUREMENTS = {
    "sharpness": lambda m, loss, data, opt: deep.sharpness(m, loss, data),
    "preconditioned_sharpness": lambda m, loss, data, opt: deep.preconditioned_sharpness(m, loss, data, opt),
    "top_eigenpairs (ggn)": lambda m, loss, data, opt: deep.top_eigenpairs(m, loss, data, curvature="ggn"),
    "measure_edge": lambda m, loss, data, opt: deep.measure_edge(m, loss, data, opt),
    "SharpnessTracker.measure": lambda m, loss, data, opt: deep.SharpnessTracker().measure(m, loss, data, opt),
    "hessian_trace": lambda m, loss, data, opt: deep.hessian_trace(m, loss, data, hvps=6),
    "spectral_density": lambda m, loss, data, opt: deep.spectral_density(m, loss, data, steps=3, probes=1),
    "curvature_operator": lambda m, loss, data, opt: deep.curvature_operator(m, loss, data, opt),
    "gradient_overlap": lambda m, loss, data, opt: gradient_overlap(m, loss, data, torch.ones(3010)),
    "central_flow": lambda m, loss, data, opt: deep.central_flow(m, loss, data, "gd", steps=1, eta=0.1),
}


@pytest.mark.parametrize("measurement", list(MEASUREMENTS))
@pytest.mark.parametrize("bad", list(BAD_INPUTS))
def test_bad_inputs_are_refused_at_the_door_of_every_measurement(bad, measurement):
    """Each used to return a number (the transposed targets: a sharpness 0.2% off), nan, or a raw torch error."""
    model, X, Y, opt = _digits()
    make, expected = BAD_INPUTS[bad]
    model, loss_fn, data = make(model, X, Y)
    with pytest.raises(ValueError, match=expected):
        MEASUREMENTS[measurement](model, loss_fn, data, opt)


def test_numpy_arrays_are_converted():
    """numpy (X, y) as a pair or in chunks, float64 data for a float32 model, int64 class labels: the same
    numbers as tensors; S against the dense Hessian."""
    model, x, y = tiny_problem(seed=4)
    expected = float(np.linalg.eigvalsh(dense_hessian(model, x, y))[-1])
    for data in ((x.numpy(), y.numpy()), [(x[:25].numpy(), y[:25].numpy()), (x[25:].numpy(), y[25:].numpy())],
                 [x.numpy(), y.numpy()]):
        assert deep.sharpness(model, lambda f, t: 0.5 * ((f - t) ** 2).sum(1).mean(), data, tol=1e-10,
                              max_iter=203) == pytest.approx(expected, rel=1e-8)
    model, X, Y, _ = _digits()
    labels = Y.argmax(dim=1)
    assert deep.sharpness(model, deep.cross_entropy, (X.double().numpy(), labels.numpy()), seed=1) == \
        deep.sharpness(model, deep.cross_entropy, (X, labels), seed=1)


def test_integer_inputs_are_token_ids_passed_unchanged():
    """The rule for integer inputs: never converted (an embedding takes them); S against the dense Hessian."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(7, 3), nn.Flatten(), nn.Linear(12, 2)).double()
    tokens = torch.randint(0, 7, (30, 4), generator=torch.Generator().manual_seed(1))
    y = torch.randn(30, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = float(np.linalg.eigvalsh(dense_hessian(model, tokens, y))[-1])
    assert deep.sharpness(model, lambda f, t: 0.5 * ((f - t) ** 2).sum(1).mean(), (tokens, y), tol=1e-10,
                          max_iter=47) == pytest.approx(expected, rel=1e-8)


def test_the_ignore_index_of_a_loss_module_is_a_valid_label():
    model, X, Y, _ = _digits()
    labels = _labels(Y, -100)
    assert np.isfinite(deep.sharpness(model, nn.CrossEntropyLoss(), (X, labels)))  # ignore_index=-100
    with pytest.raises(ValueError, match=r"outside \[0, 10\) .*: -100$"):
        deep.sharpness(model, nn.CrossEntropyLoss(ignore_index=-1), (X, labels))


# ------------------------------------------------------------------ the door is passed once per measurement
@pytest.fixture
def door_passes(monkeypatch):
    """Counts the door's passes over the data (the whole check, not the parameters-only one)."""
    from deep.curvature import door

    calls = []
    full = door._check_data

    def counted(*args):
        calls.append(args[2])
        return full(*args)

    monkeypatch.setattr(door, "_check_data", counted)
    return calls


def test_every_measurement_passes_the_door_exactly_once(door_passes):
    model, X, Y, opt = _digits()
    for name, measure in MEASUREMENTS.items():
        door_passes.clear()
        measure(model, deep.mse, (X, Y), opt)
        assert len(door_passes) == 1, name
    for build in (lambda d: ReverseOverReverse(model, deep.mse, d), lambda d: CachedDoubleBackward(model, deep.mse, d),
                  lambda d: GGNOperator(model, deep.mse, d)):
        door_passes.clear()
        build((X, Y))
        assert len(door_passes) == 1


def test_a_tracker_checks_a_data_object_once_and_the_parameters_at_every_call(door_passes):
    model, X, Y, opt = _digits()
    tracker, data = deep.SharpnessTracker(), [(X, Y)]
    for _ in range(3):
        tracker.measure(model, deep.mse, data, opt)
    assert len(door_passes) == 1
    tracker.measure(model, deep.mse, [(X, Y)], opt)  # another data object: checked again
    assert len(door_passes) == 2
    with torch.no_grad():
        model[2].bias[4] = float("inf")
    with pytest.raises(ValueError, match=r"model parameter '2.bias' is not finite \(0 nan and 1 inf"):
        tracker.measure(model, deep.mse, [(X, Y)], opt)
    with pytest.raises(ValueError, match=r"model parameter '2.bias' is not finite"):
        tracker.measure(model, deep.mse, data, opt)  # a data object already checked: the parameters are


def test_a_bad_shard_stops_every_rank(tmp_path):
    """Rank 1's shard holds a NaN: both ranks raise (rank 0 without waiting forever for rank 1's products)."""
    import torch.multiprocessing as mp

    context = mp.start_processes(_rank_with_a_nan, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2,
                                 start_method="spawn", join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("a rank was left waiting for the other")
    messages = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert messages[0] == ("data of another rank of the process group failed the input checks (that rank "
                           "names it)")
    assert messages[1].startswith("data chunk 0: inputs are not finite (1 nan and 0 inf")


def _rank_with_a_nan(rank: int, rendezvous: str, out: str) -> None:
    """One rank; the process ends through run_as_rank (os._exit: gloo's threads can abort a normal exit)."""
    from deep.training.distributed import run_as_rank

    run_as_rank(lambda: _measure_a_shard_with_a_nan(rank, rendezvous, out))


def _measure_a_shard_with_a_nan(rank: int, rendezvous: str, out: str) -> int:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        model, x, y = tiny_problem(seed=2, n=40)
        mine = slice(20 * rank, 20 * rank + 20)
        x = x[mine].clone()
        if rank == 1:
            x[3, 1] = float("nan")
        try:
            deep.sharpness(model, lambda f, t: 0.5 * ((f - t) ** 2).sum(1).mean(), deep.Shard([(x, y[mine])]))
            message = "no refusal"
        except ValueError as err:
            message = str(err)
        Path(out, f"rank{rank}.txt").write_text(message)
    finally:
        dist.destroy_process_group()
    return 0


# ------------------------------------------------------------------ the smaller inconsistencies
def _no_trainable(m, X, Y):
    return m.requires_grad_(False)


def _maximize(opt):
    for group in opt.param_groups:
        group["maximize"] = True
    return opt


#: name -> (() -> anything, the message expected): the API's smaller inconsistencies.
API_CASES = {
    "measure_edge(None, ...)": (
        lambda m, X, Y, opt: deep.measure_edge(None, deep.mse, (X, Y), opt),
        r"^model must be a torch.nn.Module; got NoneType$"),
    "measure_edge on a model with no trainable parameter": (
        lambda m, X, Y, opt: deep.measure_edge(_no_trainable(m, X, Y), deep.mse, (X, Y), opt),
        r"^params must select at least one parameter with requires_grad=True; got none$"),
    "preconditioned_sharpness with Adam(maximize=True)": (
        lambda m, X, Y, opt: deep.preconditioned_sharpness(m, deep.mse, (X, Y), _maximize(opt)),
        r"^optimizer param group has maximize=True; the thresholds assume descent$"),
    "measure_edge with Adam(maximize=True)": (
        lambda m, X, Y, opt: deep.measure_edge(m, deep.mse, (X, Y), _maximize(opt)),
        r"^optimizer param group has maximize=True; the thresholds assume descent$"),
    "sims.simulate_batch with an eta of 0 in its array": (
        lambda *_: sims.simulate_batch("adam", np.ones((3, 2)), np.ones((3, 2)), np.array([0.1, 0.0, 0.2]), 10),
        r"^eta must satisfy 0 < eta, got 0.0$"),
    "sims.simulate(blowup='x')": (
        lambda *_: sims.simulate("adam", np.ones(2), np.ones(2), 0.1, 10, blowup="x"),
        r"^blowup must be a real number with 0 < blowup, got 'x'$"),
    "sims.empirical_threshold(rtol='x')": (
        lambda *_: sims.empirical_threshold("adam", 0.1, rtol="x"),
        r"^rtol must be a real number with 1e-15 <= rtol <= 0.1, got 'x'$"),
    "sims.simulate_sharpening(model='x')": (
        lambda *_: sims.simulate_sharpening("adam", 0.1, 10, model="x"),
        r"^model must be a sims.SharpeningModel or None; got str$"),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_the_api_refuses_in_one_voice(case):
    call, expected = API_CASES[case]
    model, X, Y, opt = _digits()
    with pytest.raises(ValueError, match=expected):
        call(model, X, Y, opt)


def _commands(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {
        "aeos train --out FILE": (["train", "--out", str(a_file), "--lr", "0.01"],
                                  f"error: --out must be a folder, got the file '{a_file}'"),
        "aeos figures --out FILE": (["figures", "--out", str(a_file)],
                                    f"error: --out must be a folder, got the file '{a_file}'"),
        "aeos train --steps 10**30": (["train", "--out", str(tmp_path / "run"), "--lr", "0.01", "--steps", str(10**30)],
                                      "error: steps must be an integer with 0 <= steps <= 16777216, got 1e+30 (an int)"),
    }


@pytest.mark.parametrize("case", ["aeos train --out FILE", "aeos figures --out FILE", "aeos train --steps 10**30"])
def test_the_commands_refuse_in_one_voice(tmp_path, case):
    """train and figures say the same of an --out that is a file (exit 2); --steps has an upper bound,
    2^24, where torch.optim's float32 step count stops being exact."""
    from paper_figures.console import main

    argv, expected = _commands(tmp_path)[case]
    code, _, err = run_cli(main, argv)
    assert (code, err.strip()) == (2, expected)
    assert not (tmp_path / "run").exists()


def test_python_m_sims_runs_the_simulation_commands():
    done = subprocess.run([sys.executable, "-m", "sims", "bisect", "--eta", "0.01", "--rtol", "1e-4"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "exact     lambda* = 3800" in done.stdout, done.stderr
    done = subprocess.run([sys.executable, "-m", "sims", "simulate"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: python -m sims simulate: ")


# ------------------------------------------------------------------ the table of refusals
def _message(call) -> str:
    try:
        call()
    except ValueError as err:
        return str(err)
    raise AssertionError("no refusal")


def refusal_table(tmp_path: Path) -> str:
    """tests/refusals.md as the code says it now: every refusal of this module and its message."""
    from paper_figures.console import main

    lines = ["# Refusals", "",
             "Every refusal that `tests/test_refusals.py` checks, with its message (`deep.sharpness` on the digits",
             "MLP, outputs (100, 10), for the inputs; every other measurement gives the same message, the central",
             "flow with float64 for float32: it measures a float64 copy of the model).",
             "`AEOS_WRITE_REFUSALS=1 pytest tests/test_refusals.py` rewrites this file.", "",
             "| input | error |", "|---|---|"]
    for name, (make, _) in BAD_INPUTS.items():
        model, X, Y, opt = _digits()
        lines.append(f"| {name} | ValueError: {_message(lambda: deep.sharpness(*make(model, X, Y)))} |")
    for name, (call, _) in API_CASES.items():
        model, X, Y, opt = _digits()
        lines.append(f"| `{name}` | ValueError: {_message(lambda: call(model, X, Y, opt))} |")
    for name, (argv, _) in _commands(tmp_path).items():
        code, _, err = run_cli(main, argv)
        lines.append(f"| `{name}` | exit {code}: {err.strip().replace(str(tmp_path), '<tmp>')} |")
    return "\n".join(lines) + "\n"


def test_the_table_of_refusals_is_current(tmp_path):
    table = refusal_table(tmp_path)
    if os.environ.get("AEOS_WRITE_REFUSALS"):
        TABLE.write_text(table)
    assert TABLE.read_text() == table, "tests/refusals.md is stale: AEOS_WRITE_REFUSALS=1 rewrites it"


def test_a_measurement_does_not_change_the_models_it_checks():
    """The door's forward runs in eval mode and under no_grad: modes, grads and buffers are left alone."""
    from deep.curvature import door

    model, X, Y, _ = _digits()
    model = nn.Sequential(model, nn.BatchNorm1d(10))
    model.train()
    before = copy.deepcopy(model.state_dict())
    door.check_measurement_inputs(model, deep.mse, (X, Y))
    assert model.training and all(p.grad is None for p in model[1].parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
