"""GradientFlowMonitor against quantities computed independently with autograd and closed forms."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch

from bench.monitors import GradientFlowMonitor
from datamodules import DigitsDataModule
from models.module import Classifier


def tanh_saturation(h: torch.Tensor, threshold: float = 0.05) -> float:
    # tanh'(h) = 1 - tanh(h)^2, maximum 1 at h = 0.
    return ((1 - torch.tanh(h) ** 2) < threshold).float().mean().item()


def independent_snapshot(model: Classifier, x: torch.Tensor, y: torch.Tensor):
    network = model.network
    h = x
    q, saturation = [], []
    for layer in network.hidden:
        pre = layer.linear(h)
        q.append(pre.pow(2).mean().item())
        saturation.append(tanh_saturation(pre))
        h = torch.tanh(pre)
    loss = torch.nn.functional.cross_entropy(network.readout(h), y)
    weights = [layer.weight for _, layer in network.weight_layers()]
    grads = torch.autograd.grad(loss, weights)
    return [g.norm().item() for g in grads], q, saturation


@pytest.fixture
def trained():
    torch.manual_seed(0)
    # A large init gain drives tanh into saturation, so the saturation check is not vacuous.
    model = Classifier(activation="tanh", depth=5, width=32, init="kaiming", input_dim=64)
    initial = copy.deepcopy(model)
    data = DigitsDataModule(batch_size=50, seed=0)
    monitor = GradientFlowMonitor(every_n_steps=3)
    trainer = pl.Trainer(
        max_steps=7,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor],
        num_sanity_val_steps=0,
    )
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.1)
    trainer.fit(model, datamodule=data)
    x, y = next(iter(data.val_dataloader()))
    return monitor, initial, model, x, y


def test_monitor_probe_matches_autograd_at_init_and_end(trained):
    monitor, initial, final, x, y = trained
    for snapshot, model in ((monitor.init, initial), (monitor.end, final)):
        grad_norms, q, saturation = independent_snapshot(model, x, y)
        assert list(snapshot.grad_norm.values()) == pytest.approx(grad_norms, rel=1e-5)
        assert list(snapshot.q.values()) == pytest.approx(q, rel=1e-5)
        assert list(snapshot.saturation.values()) == pytest.approx(saturation, abs=1e-6)
        assert snapshot.grad_ratio == pytest.approx(grad_norms[0] / grad_norms[-1], rel=1e-5)
    assert monitor.init.mean_saturation > 0.01


def test_monitor_samples_every_n_steps(trained):
    monitor, *_ = trained
    assert [snapshot.step for snapshot in monitor.series] == [0, 3, 6]
    assert list(monitor.series[0].grad_norm) == [f"layer_0{i}" for i in range(1, 6)]
    assert list(monitor.series[0].q) == [f"layer_0{i}" for i in range(1, 5)]


def test_monitor_probe_leaves_training_state(trained):
    monitor, _, model, x, y = trained
    trainer = model.trainer
    for parameter in model.parameters():
        parameter.grad = None
    before = {name: value.clone() for name, value in model.state_dict().items()}
    monitor.measure_probe(trainer, model)
    assert all(parameter.grad is None for parameter in model.parameters())
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name])


def test_monitor_rejects_bad_settings():
    with pytest.raises(ValueError, match="every_n_steps must be >= 1, got 0"):
        GradientFlowMonitor(every_n_steps=0)
    with pytest.raises(ValueError, match=r"saturation_threshold must lie in \(0, 1\), got 1.5"):
        GradientFlowMonitor(saturation_threshold=1.5)
