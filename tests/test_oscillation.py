"""The period-2 amplitude of a run's iterates, against sequences built by hand and a replayed training run.

References: w_t = c + v t + a (-1)^t u/|u| written out (its second difference is exactly 4 a (-1)^t u/|u|,
the linear drift cancels), and a full-batch GD run replayed here with plain torch, whose amplitudes are
computed at every step with numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deep import TrainConfig, read_metrics, run
from deep.measure.oscillation import OscillationMeter, period_two_amplitude


def _sequence(steps: int, a: float, seed: int = 0, n: int = 7):
    g = torch.Generator().manual_seed(seed)
    c, v, u = (torch.randn(n, generator=g, dtype=torch.float64) for _ in range(3))
    return [c + v * t + a * (-1) ** t * u / torch.linalg.vector_norm(u) for t in range(steps)], u


def test_period_two_amplitude_of_an_oscillation_on_a_linear_drift_is_exact():
    """a (-1)^t + drift: the amplitude is a along u (and any rescaling of u), and the whole length is a too;
    along a direction orthogonal to u it is 0."""
    w, u = _sequence(3, a=0.37)
    assert period_two_amplitude(w[2], w[1], w[0], u) == pytest.approx(0.37, rel=1e-12)
    assert period_two_amplitude(w[2], w[1], w[0], -5.0 * u) == pytest.approx(0.37, rel=1e-12)
    assert period_two_amplitude(w[2], w[1], w[0]) == pytest.approx(0.37, rel=1e-12)
    other = torch.randn(7, dtype=torch.float64)
    other = other - torch.dot(other, u) / torch.dot(u, u) * u
    assert period_two_amplitude(w[2], w[1], w[0], other) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(period_two_amplitude(w[2], w[1], w[0], torch.zeros(7, dtype=torch.float64)))


def test_the_meter_takes_the_rms_over_every_step_of_a_window():
    """Amplitude a_t = t/10 changing every step: each read is the rms of exactly its window's steps (from
    t = 2 on), along u once aimed; its state carries a window across a checkpoint."""
    meter, resumed = OscillationMeter(), None
    g = torch.Generator().manual_seed(1)
    u = torch.randn(5, generator=g, dtype=torch.float64)
    drift = torch.randn(5, generator=g, dtype=torch.float64)
    amplitude = [t / 10 for t in range(12)]
    # w_t with second difference 4 (-1)^t a_t u/|u|: built by summing the second differences
    w = [torch.zeros(5, dtype=torch.float64), drift.clone()]
    for t in range(2, 12):
        w.append(2 * w[-1] - w[-2] + 4 * (-1) ** t * amplitude[t] * u / torch.linalg.vector_norm(u))
    for t in range(6):
        meter.observe(w[t])
    along, total = meter.read()
    assert math.isnan(along)  # not aimed yet
    assert total == pytest.approx(math.sqrt(np.mean(np.square(amplitude[2:6]))), rel=1e-12)
    meter.aim(u)
    meter.observe(w[6])
    resumed = OscillationMeter()
    resumed.load_state_dict(meter.state_dict())
    for m in (meter, resumed):
        for t in range(7, 12):
            m.observe(w[t])
        along, total = m.read()
        expected = math.sqrt(np.mean(np.square(amplitude[6:12])))
        assert along == pytest.approx(expected, rel=1e-12) and total == pytest.approx(expected, rel=1e-12)
        assert all(math.isnan(x) for x in m.read())  # an empty window


def test_a_training_run_reports_the_rms_amplitude_of_every_step(tmp_path):
    """GD at the edge on a small digits MLP in float64: each row's oscillation_total equals the rms over
    every step since the previous row of |w_t - 2 w_(t-1) + w_(t-2)| / 4, replayed here with plain torch."""
    cfg = TrainConfig(dataset="digits", n=100, model="mlp", width=8, depth=1, loss="mse", optimizer="gd",
                      hyper={"eta": 0.15}, steps=30, measure_every=10, dtype="float64", chunk_size=None, seed=2)
    rows = read_metrics(run(cfg, tmp_path / "r", progress=False))
    import deep

    data = deep.load_digits(100).to("cpu", torch.float64)
    model = deep.build_model("mlp", data.input_shape, 10, width=8, depth=1, seed=2).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.15)
    iterates = [torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()]
    for _ in range(30):
        opt.zero_grad()
        deep.mse(model(data.X), data.y).backward()
        opt.step()
        iterates.append(torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone())
    a = [float(torch.linalg.vector_norm(iterates[t] - 2 * iterates[t - 1] + iterates[t - 2])) / 4
         for t in range(2, 31)]  # a[t - 2] is the amplitude at step t
    assert max(a) > 1e-2  # the run starts above the edge (eta S = 2.14) and oscillates
    for row in rows:
        t = row["step"]
        window = [a[s - 2] for s in range(max(t - 9, 2), t + 1)]
        if t == 0:
            assert math.isnan(row["oscillation_total"])
        else:
            assert row["oscillation_total"] == pytest.approx(math.sqrt(np.mean(np.square(window))), rel=1e-9)
