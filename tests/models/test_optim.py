"""Layerwise optimisers against their update rules written out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.optim import LAMB, LARS, BlockNormalizedSGD, DepthScaledSGD, Fromage


def small_network() -> nn.Sequential:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    nn.init.normal_(network[0].bias)
    return network


def gradients(network: nn.Module) -> list[torch.Tensor]:
    network.zero_grad()
    torch.manual_seed(1)
    network(torch.randn(8, 6)).pow(2).sum().backward()
    return [p.grad.clone() for p in network.parameters()]


def test_fromage_step_matches_paper_update():
    network = small_network()
    before = [p.detach().clone() for p in network.parameters()]
    grads = gradients(network)
    Fromage(network.parameters(), lr=0.1).step()
    for old, grad, new in zip(before, grads, network.parameters(), strict=True):
        expected = (old - 0.1 * old.norm() / grad.norm() * grad) / (1 + 0.1**2) ** 0.5
        torch.testing.assert_close(new.detach(), expected, rtol=1e-5, atol=1e-7)


def test_fromage_zero_bias_takes_plain_step():
    layer = nn.Linear(3, 2)
    nn.init.zeros_(layer.bias)
    layer(torch.ones(4, 3)).sum().backward()
    grad = layer.bias.grad.clone()
    Fromage(layer.parameters(), lr=0.1).step()
    torch.testing.assert_close(layer.bias.detach(), -0.1 * grad)


def test_block_normalized_moves_each_tensor_by_lr():
    network = small_network()
    before = [p.detach().clone() for p in network.parameters()]
    gradients(network)
    BlockNormalizedSGD(network.parameters(), lr=0.05, momentum=0.0).step()
    for old, new in zip(before, network.parameters(), strict=True):
        assert (new.detach() - old).norm().item() == pytest.approx(0.05, rel=1e-5)


def test_depth_scaled_matches_largest_weight_step():
    network = small_network()
    before = [p.detach().clone() for p in network.parameters()]
    grads = gradients(network)
    DepthScaledSGD(network.parameters(), lr=0.01, momentum=0.0).step()
    # After one step the bias-corrected averages equal the current norms, so every tensor
    # moves by lr times the largest weight-gradient norm.
    reference = max(grad.norm() for grad in grads if grad.ndim >= 2)
    for old, new in zip(before, network.parameters(), strict=True):
        step = (new.detach() - old).norm()
        assert step.item() == pytest.approx(0.01 * reference.item(), rel=1e-5)


def test_lars_trust_ratio_on_weights_only():
    network = small_network()
    before = [p.detach().clone() for p in network.parameters()]
    grads = gradients(network)
    LARS(network.parameters(), lr=2.0, momentum=0.0, trust_coefficient=0.01).step()
    for old, grad, new in zip(before, grads, network.parameters(), strict=True):
        if old.ndim >= 2:
            ratio = 0.01 * old.norm() / (grad.norm() + 1e-8)
            expected = old - 2.0 * ratio * grad
        else:
            expected = old - 2.0 * grad
        torch.testing.assert_close(new.detach(), expected, rtol=1e-5, atol=1e-6)


def test_lamb_first_step_trust_ratio():
    network = small_network()
    before = [p.detach().clone() for p in network.parameters()]
    grads = gradients(network)
    LAMB(network.parameters(), lr=0.01, eps=1e-12).step()
    for old, grad, new in zip(before, grads, network.parameters(), strict=True):
        # Adam's bias-corrected first update is g / |g| elementwise.
        update = grad / grad.abs()
        if old.ndim >= 2:
            update = update * old.norm() / update.norm()
        torch.testing.assert_close(new.detach(), old - 0.01 * update, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("optimizer", [LARS, LAMB, Fromage, BlockNormalizedSGD, DepthScaledSGD])
def test_optimizer_rejects_nonpositive_lr(optimizer):
    with pytest.raises(ValueError, match="lr must be > 0, got -1"):
        optimizer(small_network().parameters(), lr=-1)


def test_depth_scaled_rejects_small_max_scale():
    with pytest.raises(ValueError, match="max_scale must be >= 1, got 0.5"):
        DepthScaledSGD(small_network().parameters(), max_scale=0.5)


def test_lars_rejects_parameter_groups():
    network = small_network()
    with pytest.raises(TypeError, match="flat parameter list"):
        LARS([{"params": list(network.parameters())}])
