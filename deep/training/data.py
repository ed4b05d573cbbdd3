"""Data sets that work offline, as tensors, plus the full batch split into chunks.

Every loader returns a :class:`Dataset` holding ``X`` (inputs) and ``y`` (targets) as torch tensors
(float32 inputs; one-hot float targets for classification, token indices for the language model).
A ``Dataset`` unpacks as ``X, y = load_digits()`` and :meth:`Dataset.chunks` (or :func:`chunks`)
splits the full batch into an iterable of ``(X, y)`` chunks, the ``data`` convention of
:mod:`deep.measure` and of full-batch training (gradients accumulated over chunks, each weighted by
its size, so the result equals the full-batch value).

==========  ==================================================================================
name        what
==========  ==================================================================================
digits      scikit-learn's 8x8 digits: the first n images, pixels / 16 in [0, 1]; one-hot targets
cifar10     the first n images of the official python batches in a local directory, standardised
            per pixel (mean and std over the 50k training images, as locuslab/edge-of-stability)
text        characters of ``pydoc_data.topics.topics``: n non-overlapping windows of ``context``
            characters; targets are the next characters (token ids), vocabulary = sorted set
synthetic   Gaussian inputs labelled by a random tanh teacher, from a seed
==========  ==================================================================================
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from aeos_base import checks

from .names import DATASETS

#: File names of the official CIFAR-10 python release (``cifar-10-python.tar.gz``, unpacked).
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


@dataclass
class Dataset:
    """Inputs ``X`` (n, ...) and targets ``y``; ``num_classes`` outputs; ``input_shape`` of one example.

    ``y`` is float one-hot (n, num_classes) for classification, float (n, k) for regression, and
    long token ids (n, context) for the language model (``vocab`` then lists the characters).
    """

    name: str
    X: torch.Tensor
    y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    task: str  # "classification", "regression" or "language_model"
    vocab: str | None = None
    info: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.X, self.y))

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Dataset":
        """A copy on ``device``; floating inputs and targets cast to ``dtype`` if given."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return Dataset(self.name, move(self.X), move(self.y), self.num_classes, self.input_shape,
                       self.task, self.vocab, dict(self.info))

    def chunks(self, size: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The full batch as a list of ``(X, y)`` chunks of at most ``size`` examples (all if None)."""
        return chunks(self.X, self.y, size)


def chunks(X: torch.Tensor, y: torch.Tensor, size: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split ``(X, y)`` into consecutive chunks of at most ``size`` examples; ``None`` = one chunk.

    The chunks are views in order, so they cover the full batch exactly once.
    """
    n = int(X.shape[0])
    if int(y.shape[0]) != n:
        raise ValueError(f"X and y must have the same number of examples, got {n} and {int(y.shape[0])}")
    if size is None:
        return [(X, y)]
    size = checks.integer("chunk size", size, low=1)
    return [(X[i:i + size], y[i:i + size]) for i in range(0, n, size)]


def _check_n(n: int, available: int, what: str) -> int:
    try:
        return checks.integer("n", n, low=1, high=available)
    except ValueError as err:
        raise ValueError(f"{err} ({what})") from None


def _onehot(labels: np.ndarray, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.long), k).float()


def load_digits(n: int = 1000) -> Dataset:
    """The first ``n`` of scikit-learn's 1797 8x8 digit images, pixels / 16; one-hot targets (n, 10)."""
    from sklearn.datasets import load_digits as sk_load

    raw = sk_load()
    n = _check_n(n, len(raw.target), "scikit-learn digits has 1797 images")
    X = torch.as_tensor(raw.data[:n] / 16.0, dtype=torch.float32)
    return Dataset("digits", X, _onehot(raw.target[:n], 10), 10, (1, 8, 8), "classification")


def _cifar_dir(root: str | os.PathLike) -> str:
    root = os.fspath(root)
    inner = os.path.join(root, "cifar-10-batches-py")
    if os.path.isdir(inner):
        return inner
    return root


class _Refused(pickle.UnpicklingError):
    """A pickle asked for something no CIFAR-10 batch contains."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles what the official CIFAR-10 python batches hold and nothing else: dicts, lists, bytes, str,
    ints and numpy arrays (through numpy's own array reconstruction).  Any other global a pickle asks for
    (``os.system``, ``builtins.eval``, a class with ``__reduce__``...) is refused before it is looked up,
    so a hostile file in the folder a user points at cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise _Refused(f"it asks for {module}.{name}, which no CIFAR-10 batch contains")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return super().find_class(module, name)


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    expected = ("a pickled dict with b'data' (uint8, shape (N, 3072), rows = 1024 red, 1024 green, "
                "1024 blue values of a 32x32 image) and b'labels' (N ints in 0..9)")
    try:
        with open(path, "rb") as fh:
            batch = _BatchUnpickler(fh, encoding="bytes").load()
    except _Refused as err:
        raise ValueError(f"cifar10 batch {path!r} was refused: {err}; only the official CIFAR-10 python batches "
                         "are read") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is a malformed batch
        raise ValueError(f"cifar10 batch {path!r} is not readable as {expected}: {err}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"cifar10 batch {path!r} must be {expected}; got a {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"cifar10 batch {path!r} must be {expected}; keys found: {sorted(map(str, batch))}")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise ValueError(f"cifar10 batch {path!r} must be {expected}; got data {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"cifar10 batch {path!r} must be {expected}; got labels of shape {labels.shape}")
    return data, labels.astype(np.int64)


def load_cifar10(root: str | os.PathLike | None, n: int = 5000) -> Dataset:
    """The first ``n`` CIFAR-10 training images from a local copy of the official python batches.

    ``root`` is the ``cifar-10-batches-py`` folder (or its parent) holding ``data_batch_1`` ...
    ``data_batch_5``, read by a restricted unpickler that refuses anything but arrays, lists, bytes and numbers
    (a hostile file cannot run code).  As in locuslab/edge-of-stability: x = pixel / 255, centred and divided by the
    per-pixel mean and standard deviation over all training images, then the first ``n`` kept.
    Inputs (n, 3, 32, 32) float32, one-hot targets (n, 10).  Nothing is downloaded.
    """
    if root is None:
        raise ValueError("cifar10 needs data_dir: a local folder holding the official CIFAR-10 python "
                         "batches (data_batch_1 ... data_batch_5 from cifar-10-python.tar.gz)")
    folder = _cifar_dir(root)
    if not os.path.isdir(folder):
        raise ValueError(f"cifar10 data_dir {os.fspath(root)!r} is not a directory; expected a folder holding "
                         "the official CIFAR-10 python batches data_batch_1 ... data_batch_5")
    missing = [f for f in CIFAR_TRAIN_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise ValueError(f"cifar10 data_dir {folder!r} must hold the official CIFAR-10 python batches "
                         f"data_batch_1 ... data_batch_5 (cifar-10-python.tar.gz, unpacked); missing: "
                         f"{', '.join(missing)}")
    parts = [_read_cifar_batch(os.path.join(folder, f)) for f in CIFAR_TRAIN_FILES]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    n = _check_n(n, len(labels), f"the CIFAR-10 batches in {folder!r} hold {len(labels)} training images")
    x = data.astype(np.float64) / 255.0  # statistics over all training images, in float64
    mean, std = x.mean(axis=0), x.std(axis=0)
    x = (x[:n] - mean) / np.where(std > 0, std, 1.0)  # a constant pixel (only in tiny fakes) stays 0
    X = torch.as_tensor(x.reshape(n, 3, 32, 32), dtype=torch.float32)
    return Dataset("cifar10", X, _onehot(labels[:n], 10), 10, (3, 32, 32), "classification",
                   info={"folder": folder})


def text_corpus() -> str:
    """The stdlib's documentation text: ``pydoc_data.topics.topics`` values joined in key order."""
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


def load_text(n: int = 512, context: int = 64) -> Dataset:
    """A character-level language-model set from :func:`text_corpus`.

    Example i is the window c[i T : (i + 1) T] of the corpus c (T = ``context``) and its target is
    the same window shifted by one character (the next character at every position).  Inputs and
    targets are long token ids (n, T) into ``vocab`` (the sorted set of the corpus' characters).
    """
    corpus = text_corpus()
    context = checks.integer("context", context, low=1)
    available = (len(corpus) - 1) // context
    n = _check_n(n, available, f"the corpus has {len(corpus)} characters, i.e. {available} windows of "
                               f"context {context}")
    vocab = "".join(sorted(set(corpus)))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in corpus[: n * context + 1]], dtype=torch.long)
    X = ids[:-1].view(n, context)
    y = ids[1:].view(n, context)
    return Dataset("text", X, y, len(vocab), (context,), "language_model", vocab=vocab)


def load_synthetic(n: int = 1000, d: int = 20, k: int = 10, seed: int = 0,
                   task: str = "classification") -> Dataset:
    """Gaussian inputs x ~ N(0, I_d) and a random teacher f(x) = W2 tanh(W1 x / sqrt(d)) (width 32).

    Classification: one-hot of argmax f(x) over ``k`` classes.  Regression: targets f(x) (n, k).
    Everything is drawn from a ``torch.Generator`` seeded with ``seed``.
    """
    for name, value in (("n", n), ("d", d), ("k", k)):
        checks.integer(name, value, low=1)
    checks.choice("task", task, ("classification", "regression"))
    gen = torch.Generator().manual_seed(int(seed))
    X = torch.randn(n, d, generator=gen)
    w1 = torch.randn(d, 32, generator=gen) / d ** 0.5
    w2 = torch.randn(32, k, generator=gen) / 32 ** 0.5
    f = torch.tanh(X @ w1) @ w2
    if task == "regression":
        return Dataset("synthetic", X, f, k, (d,), "regression")
    return Dataset("synthetic", X, _onehot(f.argmax(1).numpy(), k), k, (d,), "classification")


def load(name: str, n: int | None = None, *, data_dir: str | None = None, context: int = 64,
         seed: int = 0) -> Dataset:
    """Load data set ``name`` (one of :data:`DATASETS`) with ``n`` examples (None = its default)."""
    if name == "digits":
        return load_digits(1000 if n is None else n)
    if name == "cifar10":
        return load_cifar10(data_dir, 5000 if n is None else n)
    if name == "text":
        return load_text(512 if n is None else n, context)
    if name == "synthetic":
        return load_synthetic(1000 if n is None else n, seed=seed)
    checks.choice("dataset", name, DATASETS)
    raise AssertionError(name)  # every name of DATASETS is handled above
