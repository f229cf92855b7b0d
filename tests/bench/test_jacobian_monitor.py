"""JacobianSpectrumMonitor against Jacobians from autograd, and the randomised estimate
against the exact spectrum."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from bench.monitors import JacobianSpectrumMonitor
from bench.monitors.jacobian import exact_singular_values
from datamodules import DigitsDataModule
from models.module import Classifier
from models.networks import DeepMLP


def network(init: str = "xavier") -> DeepMLP:
    torch.manual_seed(0)
    return DeepMLP(40, 10, depth=6, width=64, activation="tanh", init=init)


def autograd_singular_values(net: DeepMLP, x: torch.Tensor) -> torch.Tensor:
    def features(row):
        for layer in net.hidden:
            row = layer(row)
        return row

    jacobians = [torch.autograd.functional.jacobian(features, row) for row in x]
    return torch.cat([torch.linalg.svdvals(jacobian) for jacobian in jacobians])


def test_monitor_exact_spectrum_matches_autograd():
    net = network()
    x = torch.randn(8, 40)
    snapshot = JacobianSpectrumMonitor().measure(net, x)
    expected = autograd_singular_values(net, x)
    assert snapshot.method == "exact"
    torch.testing.assert_close(
        torch.tensor(snapshot.singular_values), expected, rtol=1e-4, atol=1e-6
    )
    assert snapshot.sv_mean == pytest.approx(expected.mean().item(), rel=1e-5)
    assert snapshot.sv_std == pytest.approx(expected.std(correction=0).item(), rel=1e-4)
    assert snapshot.sv_max == pytest.approx(expected.max().item(), rel=1e-5)


def test_monitor_batch_norm_uses_probe_statistics():
    torch.manual_seed(0)
    net = DeepMLP(
        40, 10, depth=6, width=64, activation="tanh", norm="agnostic_batch", norm_target=1.5
    )
    x = torch.randn(16, 40)

    def hidden_layer(layer, h, mean, variance):
        z = (layer.linear(h) - mean) / torch.sqrt(variance + layer.norm.eps)
        return layer.activation(z * layer.norm.target_std + layer.norm.target_mean)

    # Each layer's batch mean and biased variance on x, as a training-mode pass computes them.
    statistics = []
    h = x
    with torch.no_grad():
        for layer in net.hidden:
            z = layer.linear(h)
            statistics.append((z.mean(0), z.var(0, unbiased=False)))
            h = hidden_layer(layer, h, *statistics[-1])

    def features(row):
        for layer, (mean, variance) in zip(net.hidden, statistics, strict=True):
            row = hidden_layer(layer, row, mean, variance)
        return row

    running = [layer.norm.running_var.clone() for layer in net.hidden]
    snapshot = JacobianSpectrumMonitor().measure(net, x)
    jacobians = [torch.autograd.functional.jacobian(features, row) for row in x]
    expected = torch.cat([torch.linalg.svdvals(jacobian) for jacobian in jacobians])
    torch.testing.assert_close(
        torch.tensor(snapshot.singular_values), expected, rtol=1e-4, atol=1e-6
    )
    # The measurement leaves the running statistics and the training flag as they were.
    for layer, before in zip(net.hidden, running, strict=True):
        assert torch.equal(layer.norm.running_var, before)
    assert net.training


def test_monitor_batch_norm_single_example_probe(caplog):
    torch.manual_seed(0)
    net = DeepMLP(40, 10, depth=4, width=16, norm="batch")
    snapshot = JacobianSpectrumMonitor().measure(net, torch.randn(1, 40))
    assert torch.isfinite(torch.tensor(snapshot.singular_values)).all()
    assert "need 2 or more probe examples" in caplog.text
    assert net.training


@pytest.mark.parametrize("init", ["xavier", "orthogonal"])
def test_monitor_lanczos_estimate_matches_exact(init):
    net = network(init)
    x = torch.randn(64, 40)
    exact = JacobianSpectrumMonitor().measure(net, x)
    torch.manual_seed(1)
    # 20 Lanczos steps on a 40 x 40 Gram matrix: a real estimate, not the full basis.
    estimate = JacobianSpectrumMonitor(exact_max_width=0, lanczos_steps=20).measure(net, x)
    assert estimate.method == "lanczos"
    assert estimate.singular_values is None
    assert estimate.sv_mean == pytest.approx(exact.sv_mean, rel=0.05)
    assert estimate.sv_std == pytest.approx(exact.sv_std, rel=0.15)
    # The largest Ritz value approaches the largest singular value from below.
    assert estimate.sv_max <= exact.sv_max * (1 + 1e-4)
    assert estimate.sv_max == pytest.approx(exact.sv_max, rel=0.05)


def test_monitor_samples_init_every_n_and_end():
    torch.manual_seed(0)
    model = Classifier(activation="tanh", depth=4, width=16, input_dim=64)
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = JacobianSpectrumMonitor(every_n_steps=3, probe_size=5)
    trainer = pl.Trainer(
        max_steps=7,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[monitor],
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=50, seed=0))
    assert [snapshot.step for snapshot in monitor.series] == [0, 3, 6, 7]
    assert monitor.init is monitor.series[0]
    assert monitor.end is monitor.series[-1]
    assert len(monitor.init.singular_values) == 5 * 16
    assert model.training


def test_monitor_rejects_bad_settings():
    with pytest.raises(ValueError, match="every_n_steps must be >= 1, got 0"):
        JacobianSpectrumMonitor(every_n_steps=0)
    with pytest.raises(ValueError, match="probe_size must be >= 1, got 0"):
        JacobianSpectrumMonitor(probe_size=0)


def test_exact_singular_values_non_finite_jacobian():
    def overflowing(x):
        return torch.exp(1e4 * x)

    values = exact_singular_values(overflowing, torch.ones(3, 4))
    assert values.shape == (3, 4)
    assert torch.isnan(values).all()
