"""Normalisations: scaled WS gain by an independent quadrature, agnostic batch norm targets."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate

from models.activations import resolve
from models.networks import DeepMLP
from models.remedies.normalization import critical_moments, scaled_ws_gain


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gaussian"])
def test_scaled_ws_gain_matches_scipy_quad(name):
    phi = resolve(name).phi

    def moment(power):
        return integrate.quad(
            lambda z: float(phi(torch.tensor(z)) ** power) * math.exp(-z * z / 2), -12, 12
        )[0] / math.sqrt(2 * math.pi)

    expected = 1.0 / math.sqrt(moment(2) - moment(1) ** 2)
    assert scaled_ws_gain(phi, name) == pytest.approx(expected, rel=1e-7)


def test_scaled_ws_rows_have_gain_norm():
    network = DeepMLP(40, 10, depth=4, width=32, activation="tanh", norm="scaled_ws")
    weight = network.hidden[1].linear.weight
    gain = scaled_ws_gain(network.hidden[1].activation, "tanh")
    assert torch.allclose(weight.mean(1), torch.zeros(32), atol=1e-6)
    assert torch.allclose(weight.norm(dim=1), torch.full((32,), gain), rtol=1e-4)


# agnostic_batch takes its critical point from the init's sigma_b2, which only init critical
# accepts.
CRITICAL = {"init": "critical", "sigma_b2": 0.1}


def test_agnostic_batch_holds_critical_q():
    network = DeepMLP(
        40, 10, depth=4, width=64, activation="tanh", norm="agnostic_batch", **CRITICAL
    )
    _, q = critical_moments(resolve("tanh"), 0.1)
    h = network.hidden[0].norm(network.hidden[0].linear(torch.randn(256, 40)))
    assert h.pow(2).mean().item() == pytest.approx(q, rel=1e-3)


def test_agnostic_batch_rejects_phi_without_critical_point():
    with pytest.raises(ValueError, match="norm 'agnostic_batch' with activation 'softplus'"):
        DeepMLP(40, 10, depth=4, width=16, activation="softplus", norm="agnostic_batch", **CRITICAL)


def test_agnostic_batch_rejects_zero_q_star():
    with pytest.raises(ValueError, match="q\\* = 0"):
        DeepMLP(40, 10, depth=4, width=16, norm="agnostic_batch", init="critical", sigma_b2=0.0)


def test_agnostic_batch_rejects_transform():
    with pytest.raises(ValueError, match="transform 'dks' with norm 'agnostic_batch'"):
        DeepMLP(40, 10, depth=4, width=16, transform="dks", norm="agnostic_batch", **CRITICAL)


@pytest.mark.parametrize("norm", ["weight", "scaled_ws"])
def test_weight_norms_keep_monitor_gradients(norm):
    network = DeepMLP(40, 10, depth=4, width=16, norm=norm)
    network(torch.randn(8, 40)).sum().backward()
    assert all(layer.weight.grad is not None for _, layer in network.weight_layers())
