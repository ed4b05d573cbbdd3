"""Checkpoints prove their own bytes: a flipped byte or a truncation is refused, naming the file, never resumed
and never reported as a divergence.

References: the checkpoint's own tensors (their bytes found in the file and flipped here by hand), and an
uninterrupted run of the same config (deleting a corrupted checkpoint, as the message advises, restarts
from step 0 and gives the same rows).
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import torch

from aeos_base.command import RecordError
from deep import TrainConfig, read_metrics, run
from deep.cli import main as train_main
from deep.training.runlog import load_checkpoint, save_checkpoint
from support import run_cli, same_rows, train_args

SMALL = dict(dataset="digits", n=200, model="mlp", width=32, loss="mse", optimizer="adam", hyper={"eta": 0.01},
             steps=60, measure_every=10, seed=3)
RECOVER = "delete it to restart the run from step 0, or restore a copy of it"


def _interrupted(tmp_path: Path, monkeypatch) -> Path:
    """A run folder whose run died right after its third checkpoint (step 20)."""
    import deep.training.runlog

    save, calls = deep.training.runlog.save_checkpoint, []

    def crash(path, state):
        save(path, state)
        calls.append(state["step"])
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(deep.training.runlog, "save_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        run(TrainConfig(**SMALL), tmp_path / "r", progress=False)
    monkeypatch.undo()
    return tmp_path / "r"


def _flip_four_bytes(path: Path, tensor: torch.Tensor, entry: int) -> None:
    """XOR the 4 bytes of entry ``entry`` of ``tensor`` (float32) where the file stores them: low mantissa bits
    and the sign (a weight stays finite and of the same size; a second moment v turns negative)."""
    blob = bytearray(path.read_bytes())
    raw = tensor.contiguous().numpy().tobytes()
    start = blob.find(raw)
    assert start > 0  # its first copy: the model's state (the oscillation meter's flat iterates come later)
    for i, mask in enumerate((0x01, 0x02, 0x03, 0x80)):
        blob[start + 4 * entry + i] ^= mask
    path.write_bytes(bytes(blob))


def _resume(out: Path) -> tuple[int, str]:
    code, _, err = run_cli(train_main, train_args(SMALL, out))
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return code, lines[0]


def test_a_flipped_weight_is_refused_and_deleting_the_checkpoint_restarts_from_step_0(tmp_path, monkeypatch):
    """4 flipped bytes in a weight used to resume to 'completed' with a final loss 7.5x too high."""
    out = _interrupted(tmp_path, monkeypatch)
    checkpoint = out / "checkpoint.pt"
    _flip_four_bytes(checkpoint, load_checkpoint(checkpoint)["model"]["net.0.weight"], entry=17)
    code, line = _resume(out)
    assert code == 1 and line == (f"error: {checkpoint} is corrupted (its bytes do not match the SHA-256 written "
                                  f"with them); {RECOVER}")
    assert not (out / "summary.json").exists()
    checkpoint.unlink()  # as the message says
    assert run_cli(train_main, train_args(SMALL, out))[0] == 0
    reference = read_metrics(run(TrainConfig(**SMALL), tmp_path / "reference", progress=False))
    assert same_rows(read_metrics(out), reference)


def test_a_flipped_second_moment_is_corruption_not_divergence(tmp_path, monkeypatch):
    """Flipped bytes in Adam's exp_avg_sq used to be reported as 'diverged at step ...' (exit 3)."""
    out = _interrupted(tmp_path, monkeypatch)
    checkpoint = out / "checkpoint.pt"
    _flip_four_bytes(checkpoint, load_checkpoint(checkpoint)["optimizer"]["state"][0]["exp_avg_sq"], entry=5)
    code, line = _resume(out)
    assert code == 1 and "is corrupted" in line and "diverged" not in line and str(checkpoint) in line
    assert not (out / "summary.json").exists()


def test_a_truncated_checkpoint_names_the_file(tmp_path, monkeypatch):
    """Truncated to half, it used to say 'error: Invalid argument'."""
    out = _interrupted(tmp_path, monkeypatch)
    checkpoint = out / "checkpoint.pt"
    blob = checkpoint.read_bytes()
    checkpoint.write_bytes(blob[: len(blob) // 2])
    code, line = _resume(out)
    assert code == 1 and line.startswith(f"error: {checkpoint} is corrupted (truncated or extended: ")
    assert line.endswith(RECOVER)


def test_every_byte_of_a_checkpoint_is_covered(tmp_path):
    """A change of any one byte, header or payload, is refused; the header states the payload's SHA-256."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 3, "w": torch.linspace(0, 1, 50), "note": "x"})
    blob = path.read_bytes()
    header, payload = blob.split(b"\n", 1)
    assert header == f"aeos-checkpoint 1 bytes={len(payload)} sha256={hashlib.sha256(payload).hexdigest()}".encode()
    assert torch.equal(load_checkpoint(path)["w"], torch.linspace(0, 1, 50))
    rng = random.Random(0)
    for where in [0, 20, len(header), len(header) + 1, len(blob) - 1] + rng.sample(range(len(blob)), 40):
        damaged = bytearray(blob)
        damaged[where] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(damaged))
        with pytest.raises(RecordError, match=str(path)):
            load_checkpoint(path)
    path.write_bytes(blob + b"\0")
    with pytest.raises(RecordError, match="corrupted"):
        load_checkpoint(path)
