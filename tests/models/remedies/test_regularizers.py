"""Regularisers against closed forms, explicit Jacobians from autograd, and timm's AGC rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.networks import DeepMLP
from models.remedies.regularizers import (
    Regularizer,
    hidden_features,
    jacobian_isometry_penalty,
    orthogonality_penalty,
)


def network(depth: int = 4, width: int = 12, input_dim: int = 6) -> DeepMLP:
    torch.manual_seed(0)
    return DeepMLP(input_dim, 3, depth=depth, width=width, activation="tanh")


def test_orthogonality_penalty_zero_for_orthonormal_columns_and_rows():
    tall = torch.linalg.qr(torch.randn(8, 5)).Q  # [out 8, in 5], orthonormal columns
    wide = tall.T.contiguous()  # [out 5, in 8], orthonormal rows
    assert orthogonality_penalty([tall, wide]).item() == pytest.approx(0.0, abs=1e-10)


def test_orthogonality_penalty_matches_singular_values():
    # ||W^T W - I||_F^2 = sum_i (s_i^2 - 1)^2 over the min(out, in) singular values.
    torch.manual_seed(0)
    weights = [torch.randn(7, 4), torch.randn(3, 9)]
    expected = sum(((torch.linalg.svdvals(w) ** 2 - 1) ** 2).sum() for w in weights)
    assert orthogonality_penalty(weights).item() == pytest.approx(expected.item(), rel=1e-5)


def test_jacobian_penalty_expectation_matches_frobenius_norm():
    net = network()
    x = torch.randn(4, 6)

    def features(inputs):
        return hidden_features(net, inputs)

    jacobians = torch.stack(
        [torch.autograd.functional.jacobian(features, row[None])[0, :, 0] for row in x]
    )
    gram = jacobians.transpose(1, 2) @ jacobians - torch.eye(6)
    expected = gram.pow(2).sum(dim=(1, 2)).mean().item()
    torch.manual_seed(3)
    with torch.no_grad():
        estimates = torch.stack(
            [jacobian_isometry_penalty(features, x.repeat(50, 1)) for _ in range(40)]
        )
    # 2000 Gaussian probes per example, so the Monte Carlo error is a few percent at most.
    assert estimates.mean().item() == pytest.approx(expected, rel=0.03)


def test_jacobian_penalty_gradient_matches_autograd():
    net = network()
    x = torch.randn(3, 6)
    torch.manual_seed(5)
    penalty = jacobian_isometry_penalty(lambda z: hidden_features(net, z), x)
    grads = torch.autograd.grad(penalty, list(net.hidden.parameters()))

    torch.manual_seed(5)
    v = torch.randn_like(x)
    rows = [
        torch.autograd.functional.jacobian(
            lambda z: hidden_features(net, z[None])[0], row, create_graph=True
        )
        for row in x
    ]
    jacobians = torch.stack(rows)
    gram_v = torch.einsum("boi,bo->bi", jacobians, torch.einsum("boi,bi->bo", jacobians, v))
    reference = (gram_v - v).pow(2).sum(dim=1).mean()
    expected = torch.autograd.grad(reference, list(net.hidden.parameters()))
    assert penalty.item() == pytest.approx(reference.item(), rel=1e-5)
    for grad, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6)


def test_regularizer_orthogonality_covers_hidden_layers_only():
    net = network(depth=4)
    weights = [layer.linear.weight for layer in net.hidden]
    expected = 0.5 * orthogonality_penalty(weights)
    penalty = Regularizer("orthogonality", 0.5).penalty(net, torch.randn(2, 6))
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)


def test_regularizer_agc_clips_units_except_readout():
    net = network()
    for parameter in net.parameters():
        parameter.grad = torch.full_like(parameter, 10.0)
    Regularizer("agc", 0.01).clip_gradients(net)
    weight, grad = net.hidden[1].linear.weight, net.hidden[1].linear.weight.grad
    # AGC rule: each unit's (row's) gradient norm is at most 0.01 times its weight norm.
    allowed = 0.01 * weight.norm(dim=1).clamp(min=1e-3)
    torch.testing.assert_close(grad.norm(dim=1), allowed, rtol=1e-5, atol=0)
    assert torch.all(net.readout.weight.grad == 10.0)
    assert torch.all(net.readout.bias.grad == 10.0)


def test_regularizer_none_adds_nothing():
    regularizer = Regularizer()
    assert regularizer.penalty(network(), torch.randn(2, 6)) is None


def test_regularizer_rejects_unknown_name():
    with pytest.raises(ValueError, match="regularizer must be one of none, orthogonality"):
        Regularizer("l2")


def test_regularizer_rejects_negative_weight():
    with pytest.raises(ValueError, match="regularizer_weight must be >= 0, got -1.0"):
        Regularizer("jacobian", -1.0)


def test_regularizer_rejects_zero_agc_factor():
    with pytest.raises(ValueError, match="AGC clipping factor and must be > 0"):
        Regularizer("agc", 0.0)


def test_hidden_features_rejects_plain_module():
    with pytest.raises(TypeError, match="neither features"):
        hidden_features(nn.Linear(2, 2), torch.randn(1, 2))


def test_regularizer_orthogonality_rejects_rbf_network():
    network = DeepMLP(input_dim=6, num_classes=3, depth=3, width=5, activation="rbf")
    with pytest.raises(ValueError, match="needs hidden linear layers"):
        Regularizer("orthogonality").check_network(network)
