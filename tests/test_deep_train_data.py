"""deep.training.data, deep.training.models, deep.training.losses: checked against plain numpy / sklearn / a hand-written fake.

References: scikit-learn's arrays, the stdlib corpus, numpy standardisation of a fake CIFAR-10 folder
written here in the official pickle format, numpy formulas for the losses, and one-chunk autograd for
chunked gradient accumulation.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from support import write_fake_cifar

from deep.training.data import chunks, load, load_cifar10, load_digits, load_synthetic, load_text, text_corpus
from deep.training.losses import correct, cross_entropy, mse
from deep.training.models import build_model


def test_digits_are_sklearn_first_n_over_16():
    from sklearn.datasets import load_digits as sk

    raw = sk()
    X, y = load_digits(300)
    np.testing.assert_array_equal(X.numpy(), (raw.data[:300] / 16).astype(np.float32))
    np.testing.assert_array_equal(y.argmax(1).numpy(), raw.target[:300])
    assert y.shape == (300, 10) and float(y.sum()) == 300.0


def test_cifar10_fake_matches_numpy_standardisation(tmp_path):
    data, labels = write_fake_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_cifar10(tmp_path, n=7)  # the parent folder works as well as the batches folder
    x = data.astype(np.float64) / 255
    x = (x - x.mean(0)) / x.std(0)
    expected = x[:7].reshape(7, 3, 32, 32)  # rows: 1024 red, 1024 green, 1024 blue
    np.testing.assert_allclose(ds.X.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.y.argmax(1).numpy(), labels[:7])
    assert ds.X.shape == (7, 3, 32, 32) and ds.input_shape == (3, 32, 32)
    # red channel of image 0 is the first 1024 bytes, row-major
    red = (data[:, :1024].astype(np.float64) / 255)
    red = (red - red.mean(0)) / red.std(0)
    np.testing.assert_allclose(ds.X[0, 0].numpy(), red[0].reshape(32, 32), rtol=1e-5, atol=1e-5)


def test_cifar10_errors_say_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match="not a directory.*data_batch_1"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="needs data_dir"):
        load_cifar10(None)
    folder = tmp_path / "c"
    write_fake_cifar(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="missing: data_batch_3"):
        load_cifar10(folder)
    write_fake_cifar(folder)
    with open(folder / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, fh)
    with pytest.raises(ValueError, match=r"data_batch_2.*\(N, 3072\)"):
        load_cifar10(folder)
    (folder / "data_batch_2").write_text("not a pickle")
    with pytest.raises(ValueError, match="data_batch_2.*not readable"):
        load_cifar10(folder)
    write_fake_cifar(folder)
    with pytest.raises(ValueError, match="n must be an integer with 1 <= n <= 20"):
        load_cifar10(folder, n=21)


class _Hostile:
    """What a crafted batch carries: unpickling it calls a function of its choice (here, it writes a file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import builtins

        return builtins.exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_cifar10_batches_are_read_by_a_restricted_unpickler(tmp_path):
    """A batch whose pickle asks to call builtins.exec is refused with one ValueError naming the file, and the
    code never runs (the marker file is not written); a real batch with a numpy array still loads."""
    folder = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(folder)
    marker = tmp_path / "marker"
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": _Hostile(str(marker)), b"labels": [0]}, fh)
    with pytest.raises(ValueError, match=r"data_batch_3.*refused.*builtins\.exec"):
        load_cifar10(folder, n=4)
    assert not marker.exists()
    write_fake_cifar(folder)
    assert load_cifar10(folder, n=4).X.shape == (4, 3, 32, 32)


def test_text_windows_are_the_corpus_shifted_by_one():
    ds = load_text(n=5, context=16)
    corpus = text_corpus()
    decode = lambda ids: "".join(ds.vocab[i] for i in ids.tolist())  # noqa: E731
    assert decode(ds.X[2]) == corpus[32:48] and decode(ds.y[2]) == corpus[33:49]
    assert ds.num_classes == len(set(corpus)) and ds.X.dtype == torch.long


def test_synthetic_is_a_function_of_the_seed():
    a, b, c = load_synthetic(50, seed=3), load_synthetic(50, seed=3), load_synthetic(50, seed=4)
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y) and not torch.equal(a.X, c.X)
    assert load_synthetic(10, task="regression").y.shape == (10, 10)


def test_bad_data_arguments():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load("mnist")
    with pytest.raises(ValueError, match="n must be an integer with 1 <= n <= 1797"):
        load_digits(5000)
    with pytest.raises(ValueError, match="chunk size"):
        chunks(torch.zeros(3, 2), torch.zeros(3), 0)


def test_losses_against_numpy():
    rng = np.random.default_rng(0)
    f, labels = rng.normal(size=(7, 4)), rng.integers(0, 4, size=7)
    onehot = np.eye(4)[labels]
    ref_mse = 0.5 * ((f - onehot) ** 2).sum(1).mean()
    ref_ce = -(f[np.arange(7), labels] - np.log(np.exp(f).sum(1))).mean()
    tf = torch.tensor(f)
    assert math.isclose(float(mse(tf, torch.tensor(onehot))), ref_mse, rel_tol=1e-12)
    assert math.isclose(float(mse(tf, torch.tensor(labels))), ref_mse, rel_tol=1e-12)
    assert math.isclose(float(cross_entropy(tf, torch.tensor(labels))), ref_ce, rel_tol=1e-12)
    assert math.isclose(float(cross_entropy(tf, torch.tensor(onehot))), ref_ce, rel_tol=1e-12)
    assert correct(tf, torch.tensor(labels)) == int((f.argmax(1) == labels).sum())


def test_models_seeded_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model("mlp", (64,), 10, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    b, c = build_model("mlp", (64,), 10, seed=5), build_model("mlp", (64,), 10, seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.net[0].weight, c.net[0].weight)
    assert [tuple(p.shape) for p in a.parameters()] == [(200, 64), (200,), (200, 200), (200,), (10, 200), (10,)]


@pytest.mark.parametrize("name,shape,k,x", [
    ("cnn", (1, 8, 8), 10, (3, 64)),
    ("resnet", (3, 32, 32), 10, (3, 3, 32, 32)),
    ("transformer", (16,), 30, (3, 16)),
])
def test_models_forward_and_transformer_is_causal(name, shape, k, x):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 30, x, generator=gen) if name == "transformer" else torch.randn(x, generator=gen)
    model = build_model(name, shape, k, width=8, seed=0)
    out = model(x)
    assert out.shape == ((3, 16, 30) if name == "transformer" else (3, 10))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if name == "transformer":  # changing token 10 leaves the outputs at positions < 10 unchanged
        x2 = x.clone()
        x2[:, 10] = (x2[:, 10] + 1) % 30
        out2 = model(x2)
        torch.testing.assert_close(out[:, :10], out2[:, :10])
        assert not torch.allclose(out[:, 10:], out2[:, 10:])


def test_chunked_gradient_equals_one_chunk():
    """Gradient accumulated as sum_i (n_i/N) grad L_i (deep.training.train.full_batch_pass) equals autograd on the full batch."""
    from deep.training.train import full_batch_pass

    ds = load_digits(130).to("cpu", torch.float64)
    model = build_model("mlp", (64,), 10, width=16, seed=0).double()
    mse(model(ds.X), ds.y).backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss, acc = full_batch_pass(model, mse, ds.chunks(40), ds, backward=True)
    for p, g in zip(model.parameters(), ref):
        torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        assert math.isclose(loss, float(mse(model(ds.X), ds.y)), rel_tol=1e-12)
        assert acc == correct(model(ds.X), ds.y) / 130
