"""Measurement half of deep/: HVPs, Lanczos, raw sharpness, chunking, warm starts, error cases.

Independent references: dense Hessians from ``torch.autograd.functional.hessian`` + numpy ``eigh``,
central finite differences of plain-autograd gradients, scipy's ``eigsh`` (ARPACK).
The preconditioned half is in ``test_deep_measure_precond.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import eigsh
from support import autograd_gradient, dense_hessian, digits_problem, mse, tiny_problem

import deep
from deep.curvature import ParamLayout, curvature_operator
from deep.curvature.lanczos import LanczosConvergenceWarning, lanczos
from deep.curvature.eigen import COLD_MIN_ITER
from deep.measure import SharpnessTracker, gradient_overlap, layer_mass, top_eigenpairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_raw_sharpness_equals_dense_eigh():
    model, x, y = tiny_problem()
    ev = np.linalg.eigh(dense_hessian(model, x, y))[0]
    s = deep.sharpness(model, mse, [(x, y)], tol=1e-10, max_iter=203)
    assert isinstance(s, float)
    assert s == pytest.approx(ev[-1], rel=1e-6)
    top3 = deep.sharpness(model, mse, [(x, y)], k=3, tol=1e-10, max_iter=203)
    assert len(top3) == 3 and top3[0] >= top3[1] >= top3[2]
    np.testing.assert_allclose(top3, ev[::-1][:3], rtol=1e-6)


def test_top_eigenpairs_returns_eigenvector_count_and_flag():
    model, x, y = tiny_problem()
    H = dense_hessian(model, x, y)
    res = top_eigenpairs(model, mse, [(x, y)], k=2, tol=1e-10, max_iter=203)
    assert res.converged and not res.preconditioned and 2 <= res.hvps <= 203
    vecs = res.eigenvectors.numpy()
    assert vecs.shape == (203, 2)
    for i in range(2):  # H u = lambda u with the dense Hessian
        np.testing.assert_allclose(H @ vecs[:, i], res.eigenvalues[i] * vecs[:, i], atol=1e-7 * abs(res.top))
    assert res.top == res.eigenvalues[0]


def test_hvp_equals_finite_difference_of_gradients():
    model, x, y = tiny_problem(seed=1)
    v = torch.randn(203, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    hv = curvature_operator(model, mse, [(x, y)]) @ v
    h = 1e-5
    flat0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    grads = []
    for sign in (1, -1):
        torch.nn.utils.vector_to_parameters(flat0 + sign * h * v, model.parameters())
        grads.append(autograd_gradient(model, x, y))
    torch.nn.utils.vector_to_parameters(flat0, model.parameters())
    fd = (grads[0] - grads[1]) / (2 * h)
    torch.testing.assert_close(hv, fd, rtol=1e-6, atol=1e-8)
    # reverse-over-reverse and the cached double backward agree with forward-over-reverse
    chunks = [(x[:11], y[:11]), (x[11:], y[11:])]
    for strategy in ("reverse_over_reverse", "cached_double_backward"):
        torch.testing.assert_close(curvature_operator(model, mse, chunks, strategy=strategy) @ v, hv, rtol=1e-10,
                                   atol=1e-12)
    op = curvature_operator(model, mse, chunks, strategy="cached_double_backward")
    for _ in range(2):  # the kept graph serves many products
        torch.testing.assert_close(op(v), hv, rtol=1e-10, atol=1e-12)
    assert op.matvecs == 2 and all(p.grad is None for p in model.parameters())
    s = deep.sharpness(model, mse, chunks, tol=1e-10, max_iter=203, strategy="cached_double_backward")
    assert s == pytest.approx(np.linalg.eigvalsh(dense_hessian(model, x, y))[-1], rel=1e-6)


def test_gradient_and_loss_helpers_match_autograd():
    model, x, y = tiny_problem(seed=2)
    chunks = [(x[:15], y[:15]), (x[15:], y[15:])]
    op = curvature_operator(model, mse, chunks)
    torch.testing.assert_close(op.gradient(), autograd_gradient(model, x, y))
    assert op.loss() == pytest.approx(float(mse(model(x), y).detach()), rel=1e-12)


def test_chunked_data_equals_one_chunk():
    model, x, y = tiny_problem(seed=4, n=40)
    one = [(x, y)]
    uneven = [(x[:7], y[:7]), (x[7:20], y[7:20]), (x[20:], y[20:])]
    v = torch.randn(203, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(curvature_operator(model, mse, uneven) @ v, curvature_operator(model, mse, one) @ v,
                               rtol=1e-12, atol=1e-13)
    a = deep.sharpness(model, mse, one, tol=1e-10, max_iter=203)
    b = deep.sharpness(model, mse, uneven, tol=1e-10, max_iter=203)
    assert b == pytest.approx(a, rel=1e-10)
    # a DataLoader is a valid (re-iterable) data argument too
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    assert deep.sharpness(model, mse, loader, tol=1e-10, max_iter=203) == pytest.approx(a, rel=1e-10)


def test_measurement_leaves_model_untouched_and_is_deterministic():
    model, x, y = tiny_problem(seed=6)
    mse(model(x), y).backward()  # the caller's .grad must survive too
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    a = deep.sharpness(model, mse, [(x, y)], k=2)
    b = deep.sharpness(model, mse, [(x, y)], k=2)
    assert a == b  # same seed -> identical
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and torch.equal(p.grad, grads[n])


def test_medium_net_matches_scipy_eigsh():
    model, x, y = digits_problem()  # 3010 parameters, float32
    data = [(x[i:i + 100], y[i:i + 100]) for i in range(0, 300, 100)]
    op = curvature_operator(model, mse, data)
    ref = eigsh(op.to_scipy(), k=2, which="LA", tol=1e-6, v0=np.ones(op.n))[0][::-1]
    res = top_eigenpairs(model, mse, data, k=2, tol=1e-3)
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, ref, rtol=1e-3)


def test_warm_start_uses_fewer_hvps_and_tracker():
    model, x, y = digits_problem(seed=1)
    data = [(x, y)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    tracker = SharpnessTracker(tol=1e-3, k=2)
    first = tracker.measure(model, mse, data, opt_step(model, opt, x, y))
    for _ in range(3):
        opt_step(model, opt, x, y)
    cold = top_eigenpairs(model, mse, data, tol=1e-3)
    warm = top_eigenpairs(model, mse, data, tol=1e-3, init=first_vector(tracker))
    assert warm.top == pytest.approx(cold.top, rel=1e-3)
    assert warm.hvps < cold.hvps
    second = tracker.measure(model, mse, data, opt)
    assert second["hvps_sharpness"] < first["hvps_sharpness"]
    assert second["hvps"] == second["hvps_sharpness"] + second["hvps_preconditioned"]
    assert second["sharpness"] == pytest.approx(cold.top, rel=1e-3)
    assert 0 < second["eigenvalue_ratio"] <= 1 and 0 < second["preconditioned_eigenvalue_ratio"] <= 1
    assert second["converged"] is True
    # the warm-start vectors survive a checkpoint round trip
    clone = SharpnessTracker(tol=1e-3, k=2)
    clone.load_state_dict(tracker.state_dict())
    for key, v in tracker.state_dict().items():
        assert torch.equal(clone.state_dict()[key], v)


def opt_step(model, opt, x, y):
    opt.zero_grad()
    mse(model(x), y).backward()
    opt.step()
    return opt


def first_vector(tracker):
    return tracker.state_dict()["sharpness"][:, 0]


def test_tracker_sgd_reuses_raw_and_diagnostics():
    model, x, y = tiny_problem(seed=7)
    H = dense_hessian(model, x, y)
    w, V = np.linalg.eigh(H)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tracker = SharpnessTracker(tol=1e-10, max_iter=203, diagnostics=True)
    out = tracker.measure(model, mse, [(x, y)], opt)
    assert out["preconditioned_sharpness"] == out["sharpness"] == pytest.approx(w[-1], rel=1e-6)
    assert out["hvps_preconditioned"] == 0
    g = autograd_gradient(model, x, y).numpy()
    cos = abs(g @ V[:, -1]) / np.linalg.norm(g)
    assert out["gradient_overlap"] == pytest.approx(cos, rel=1e-5)
    mass = layer_mass(model, tracker.last_sharpness.eigenvectors[:, 0])
    assert list(mass) == [n for n, _ in model.named_parameters()]
    assert sum(mass.values()) == pytest.approx(1.0)
    raw_only = SharpnessTracker(tol=1e-6).measure(model, mse, [(x, y)])
    assert np.isnan(raw_only["preconditioned_sharpness"])
    assert gradient_overlap(model, mse, [(x, y)], torch.tensor(V[:, -1])) == pytest.approx(cos, rel=1e-8)


def test_lanczos_known_spectrum_restart_and_nonconvergence():
    d = torch.arange(1.0, 51.0, dtype=torch.float64)
    res = lanczos(lambda v: d * v, 50, k=3, tol=1e-12, max_iter=50, dtype=torch.float64)
    np.testing.assert_allclose(res.eigenvalues.numpy(), [50, 49, 48], rtol=1e-10)
    # start in an invariant subspace (an exact eigenvector): restarts and still finds the top two
    e = torch.zeros(50, dtype=torch.float64)
    e[10] = 1.0
    res = lanczos(lambda v: d * v, 50, k=2, tol=1e-10, max_iter=50, init=e, dtype=torch.float64)
    np.testing.assert_allclose(res.eigenvalues.numpy(), [50, 49], rtol=1e-10)
    # too few iterations: flagged and warned, not hidden
    with pytest.warns(LanczosConvergenceWarning):
        bad = lanczos(lambda v: d * v, 50, k=1, tol=1e-12, max_iter=3, dtype=torch.float64)
    assert bad.converged is False and bad.matvecs == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = lanczos(lambda v: d * v, 50, tol=1e-12, max_iter=3, dtype=torch.float64, warn=False)
    assert not quiet.converged


def test_min_iter_guards_against_stopping_at_lambda_2():
    # closed form: bulk in [0, 0.3], lambda_2 = 0.98, lambda_1 = 1; a start vector almost orthogonal to
    # the top eigenvector passes the residual test at lambda_2 after 4 products if tested at once
    d = torch.cat([torch.linspace(0, 0.3, 398, dtype=torch.float64), torch.tensor([0.98, 1.0], dtype=torch.float64)])
    init = torch.full((400,), 0.05, dtype=torch.float64)
    init[-2], init[-1] = 1.0, 1e-3
    trapped = lanczos(lambda v: d * v, 400, tol=1e-3, min_iter=1, init=init, dtype=torch.float64)
    assert trapped.converged and trapped.eigenvalues[0].item() == pytest.approx(0.98, rel=1e-3)
    guarded = lanczos(lambda v: d * v, 400, tol=1e-3, min_iter=20, init=init, dtype=torch.float64)
    assert guarded.eigenvalues[0].item() == pytest.approx(1.0, rel=1e-6) and guarded.matvecs >= 20
    with pytest.raises(ValueError, match="min_iter must be"):
        lanczos(lambda v: d * v, 400, min_iter=101, max_iter=100)
    # cold measurements take at least COLD_MIN_ITER products, warm ones may stop earlier
    model, x, y = tiny_problem()
    cold = top_eigenpairs(model, mse, [(x, y)], tol=1e-3)
    assert cold.hvps >= COLD_MIN_ITER == 6
    warm = top_eigenpairs(model, mse, [(x, y)], tol=1e-3, init=cold.eigenvectors[:, 0])
    assert warm.hvps < cold.hvps and warm.top == pytest.approx(cold.top, rel=1e-3)


def test_one_public_way_to_build_an_operator_and_old_names_say_where_they_went():
    """deep.curvature_operator is the one builder; deep.hessian_operator (the first releases' name) still
    works with a DeprecationWarning; names that moved say where to."""
    model, x, y = tiny_problem()
    v = torch.ones(203, dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="curvature_operator"):
        old = deep.hessian_operator(model, mse, [(x, y)], strategy="reverse_over_reverse")
    torch.testing.assert_close(old @ v, curvature_operator(model, mse, [(x, y)]) @ v, rtol=1e-10, atol=1e-12)
    with pytest.raises(AttributeError, match="curvature_operator"):
        deep.operator_for
    assert deep.SharpnessResult is deep.curvature.SharpnessResult and deep.Shard is deep.curvature.Shard
    for package in (deep, deep.curvature, deep.measure, deep.training, deep.flows):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)
    assert len(deep.__all__) <= 30


def test_non_finite_products_give_nan_not_a_crash():
    """sqrt(z^2) at z = 0: finite outputs and loss, so the inputs pass the door, but NaN gradients (a NaN in
    the inputs or a weight is refused at the door: tests/test_refusals.py)."""
    class Root(torch.nn.Module):
        def forward(self, z):
            return torch.sqrt(z * z)

    model = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False), Root()).double()
    x, y = torch.zeros(4, 3, dtype=torch.float64), torch.ones(4, 2, dtype=torch.float64)
    with pytest.warns(LanczosConvergenceWarning, match="non-finite"):
        res = top_eigenpairs(model, mse, [(x, y)])
    assert np.isnan(res.top) and res.converged is False and res.hvps == 1
    tracker = SharpnessTracker()
    with pytest.warns(LanczosConvergenceWarning):
        out = tracker.measure(model, mse, [(x, y)])
    assert np.isnan(out["sharpness"]) and out["converged"] is False
    assert tracker.state_dict()["sharpness"] is None  # no nan warm start is kept


def test_sharpness_nonconvergence_is_reported():
    model, x, y = tiny_problem()
    with pytest.warns(LanczosConvergenceWarning):
        res = top_eigenpairs(model, mse, [(x, y)], tol=1e-12, max_iter=2)
    assert res.converged is False and res.hvps == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be"), ({"k": 204}, "k must be"), ({"tol": 0.0}, "tol must satisfy"),
    ({"tol": float("nan")}, "tol must be finite"), ({"max_iter": 0}, "max_iter must be"),
    ({"init": torch.zeros(203, dtype=torch.float64)}, "init must be"),
    ({"init": torch.ones(5)}, "init must be"), ({"strategy": "finite_difference"}, "strategy must be"),
])
def test_bad_arguments_raise_valueerror(kwargs, match):
    model, x, y = tiny_problem()
    with pytest.raises(ValueError, match=match):
        deep.sharpness(model, mse, [(x, y)], **kwargs)


def test_bad_data_raise_valueerror():
    model, x, y = tiny_problem()
    with pytest.raises(ValueError, match="re-iterable"):
        deep.sharpness(model, mse, ((x, y) for _ in range(1)))
    with pytest.raises(ValueError, match="at least one"):
        deep.sharpness(model, mse, [])
    with pytest.raises(ValueError, match=r"\(inputs, targets\)"):
        deep.sharpness(model, mse, [x])
    with pytest.raises(ValueError, match="model must be"):
        deep.sharpness(lambda t: t, mse, [(x, y)])
    with pytest.raises(ValueError, match="flat vector"):
        curvature_operator(model, mse, [(x, y)])(torch.ones(3, dtype=torch.float64))
    assert ParamLayout.of(model).n == 203
