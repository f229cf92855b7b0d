"""Initialisations built on the mean-field theory, and the data-driven ones."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from scipy import integrate, special
from torch import nn

from models.activations import resolve
from models.layers import RBFDistance
from models.networks import DeepMLP
from models.remedies.init import (
    DEFAULT_Q_STAR,
    LSUV_TOLERANCE,
    critical_point,
    delta_orthogonal_,
    isometry_point,
    lsuv_,
    scaled_orthogonal_,
)


def gaussian_mean(function, q: float) -> float:
    """E[function(sqrt(q) z)], z ~ N(0, 1), by scipy's adaptive quadrature."""
    density = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)  # noqa: E731
    value, _ = integrate.quad(lambda z: function(math.sqrt(q) * z) * density(z), -np.inf, np.inf)
    return value


TANH = (math.tanh, lambda u: 1.0 - math.tanh(u) ** 2)
ERF = (special.erf, lambda u: 2.0 / math.sqrt(math.pi) * math.exp(-u * u))
GAUSSIAN = (lambda u: math.exp(-0.5 * u * u), lambda u: -u * math.exp(-0.5 * u * u))
REFERENCES = {"tanh": TANH, "erf": ERF, "gaussian": GAUSSIAN}


def assert_on_critical_line(name: str, sigma_w2: float, sigma_b2: float, q_star: float) -> None:
    phi, dphi = REFERENCES[name]
    # chi_1 = 1 and q_star a fixed point of the length map, to quadrature accuracy.
    chi = sigma_w2 * gaussian_mean(lambda u: dphi(u) ** 2, q_star)
    assert chi == pytest.approx(1.0, rel=1e-6)
    length = sigma_w2 * gaussian_mean(lambda u: phi(u) ** 2, q_star) + sigma_b2
    assert length == pytest.approx(q_star, rel=1e-6)


@pytest.mark.parametrize(("name", "sigma_b2"), [("tanh", 0.05), ("erf", 0.3), ("gaussian", 0.0)])
def test_critical_point_on_critical_line(name, sigma_b2):
    point = critical_point(resolve(name), sigma_b2)
    assert point.sigma_b2 == sigma_b2
    assert_on_critical_line(name, point.sigma_w2, point.sigma_b2, point.q_star)


@pytest.mark.parametrize(
    ("name", "q_star"), [("tanh", DEFAULT_Q_STAR), ("tanh", 0.5), ("erf", 1.0)]
)
def test_isometry_point_reaches_requested_q_star(name, q_star):
    point = isometry_point(resolve(name), q_star)
    assert point.q_star == q_star
    assert point.sigma_b2 > 0.0
    assert_on_critical_line(name, point.sigma_w2, point.sigma_b2, q_star)


def test_isometry_point_default_falls_back_for_gaussian():
    # phi(0) = 1 puts every small q_star below sigma_b2 = 0, so the default takes the
    # critical point at sigma_b2 = 0: q_star = 1 + sqrt(2), sigma_w2 = 3 + 2 sqrt(2).
    point = isometry_point(resolve("gaussian"))
    assert point.sigma_b2 == 0.0
    assert point.q_star == pytest.approx(1.0 + math.sqrt(2.0), rel=1e-8)
    assert point.sigma_w2 == pytest.approx(3.0 + 2.0 * math.sqrt(2.0), rel=1e-8)


def test_isometry_point_unreachable_q_star_raises():
    with pytest.raises(ValueError, match=r"q_star = 0.1 needs sigma_b2 = -.* < 0 .*'gaussian'"):
        isometry_point(resolve("gaussian"), 0.1)
    with pytest.raises(ValueError, match=r"q_star must be finite and > 0, got -1"):
        isometry_point(resolve("tanh"), -1.0)


def test_critical_init_weight_and_bias_variance():
    torch.manual_seed(0)
    network = DeepMLP(400, 10, depth=3, width=500, init="critical", sigma_b2=0.05)
    sigma_w2 = critical_point(resolve("tanh"), 0.05).sigma_w2
    linear = network.hidden[1].linear
    # 250,000 weights and 500 biases: sampling errors about 0.3% and 6%.
    assert linear.weight.var().item() == pytest.approx(sigma_w2 / 500, rel=0.02)
    assert linear.bias.var().item() == pytest.approx(0.05, rel=0.25)


@pytest.mark.parametrize(("fan_in", "fan_out"), [(32, 96), (96, 32), (64, 64)])
def test_scaled_orthogonal_respects_out_in_layout(fan_in, fan_out):
    weight = torch.empty(fan_out, fan_in, dtype=torch.float64)
    scaled_orthogonal_(weight, sigma_w2=2.0)
    # Every singular value is sqrt(2) whichever side is longer: no in/out rescaling.
    singular_values = torch.linalg.svdvals(weight)
    expected = torch.full_like(singular_values, math.sqrt(2.0))
    torch.testing.assert_close(singular_values, expected, atol=1e-12, rtol=0)


def test_critical_orthogonal_layers_and_input_length():
    torch.manual_seed(0)
    network = DeepMLP(40, 10, depth=4, width=128, init="critical_orthogonal")
    point = isometry_point(resolve("tanh"))
    layers = [module for _, module in network.weight_layers()]
    for layer in layers[1:]:
        singular_values = torch.linalg.svdvals(layer.weight.detach().double())
        expected = torch.full_like(singular_values, math.sqrt(point.sigma_w2))
        torch.testing.assert_close(singular_values, expected, atol=1e-5, rtol=0)
    # Standardised inputs land at q^1 = q_star: 20,000 examples, sampling error below 1%.
    x = torch.randn(20_000, 40)
    q1 = network.hidden[0].linear(x).pow(2).mean().item()
    assert q1 == pytest.approx(point.q_star, rel=0.03)


@pytest.mark.parametrize(
    ("shape", "centre"), [((32, 16, 3), (1,)), ((8, 16, 3, 5), (1, 2)), ((16, 16, 1, 1), (0, 0))]
)
def test_delta_orthogonal_kernel_is_orthogonal_centre_tap(shape, centre):
    weight = torch.empty(shape, dtype=torch.float64)
    delta_orthogonal_(weight, gain=1.5)
    tap = weight[(slice(None), slice(None), *centre)]
    others = weight.clone()
    others[(slice(None), slice(None), *centre)] = 0.0
    assert torch.count_nonzero(others) == 0
    singular_values = torch.linalg.svdvals(tap)
    torch.testing.assert_close(singular_values, torch.full_like(singular_values, 1.5))


def test_delta_orthogonal_conv_preserves_norm():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, kernel_size=3, padding=1, bias=False).double()
    delta_orthogonal_(conv.weight.data)
    x = torch.randn(4, 16, 10, 10, dtype=torch.float64)
    # out >= in: orthonormal columns at every position, so the conv is an isometry.
    assert conv(x).norm().item() == pytest.approx(x.norm().item(), rel=1e-10)


def test_delta_orthogonal_dense_weight_raises():
    with pytest.raises(ValueError, match=r"needs a convolution weight .* got shape \(8, 4\)"):
        delta_orthogonal_(torch.empty(8, 4))


def pre_activation_variances(network: DeepMLP, x: torch.Tensor) -> list[float]:
    layers = [layer.linear for layer in network.hidden_layers()] + [network.readout]
    variances: list[float] = []
    handles = [
        layer.register_forward_hook(lambda module, inputs, out: variances.append(out.var().item()))
        for layer in layers
    ]
    with torch.no_grad():
        network(x)
    for handle in handles:
        handle.remove()
    return variances


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gaussian"])
def test_lsuv_unit_variance_per_layer(activation):
    torch.manual_seed(0)
    network = DeepMLP(40, 10, depth=12, width=64, activation=activation, init="lsuv")
    x = torch.randn(512, 40) * 3.0
    before = pre_activation_variances(network, x)
    network.init_from_data(x)
    after = pre_activation_variances(network, x)
    assert max(abs(value - 1.0) for value in before) > 0.2
    for variance in after:
        assert abs(variance - 1.0) <= LSUV_TOLERANCE
    assert all(torch.count_nonzero(layer.bias) == 0 for _, layer in network.weight_layers())


def test_lsuv_max_iterations_reached_warns(caplog):
    torch.manual_seed(0)
    network = DeepMLP(40, 10, depth=3, width=32, init="orthogonal")
    layers = [layer.linear for layer in network.hidden_layers()] + [network.readout]
    # LSUV rescales only the weight, so a bias of variance about 4 keeps the variance above 1.
    nn.init.normal_(network.hidden[0].linear.bias, std=2.0)
    with caplog.at_level(logging.WARNING, logger="models.remedies.init"):
        reached = lsuv_(network, layers, torch.randn(256, 40), tolerance=1e-3, max_iterations=3)
    assert reached[0] > 1.5
    assert "lsuv: layer 1 has variance" in caplog.text


def test_lsuv_constant_input_raises():
    network = DeepMLP(40, 10, depth=3, width=16, init="lsuv", bias=False)
    with pytest.raises(ValueError, match=r"lsuv: layer 1 has pre-activation variance 0"):
        network.init_from_data(torch.zeros(64, 40))


def test_rbf_data_centres_are_incoming_activations():
    torch.manual_seed(0)
    network = DeepMLP(12, 3, depth=3, width=20, activation="rbf", init="rbf_data")
    x = torch.randn(200, 12)
    network.init_from_data(x)
    first, second = (layer.linear for layer in network.hidden_layers())
    with torch.no_grad():
        incoming = network.hidden[0](x)
    for layer, source in ((first, x), (second, incoming)):
        # Each centre equals one row of the layer's input, and no row is used twice.
        gaps = (layer.centres.detach()[:, None, :] - source[None, :, :]).abs().amax(dim=-1)
        nearest = gaps.min(dim=1)
        assert nearest.values.max().item() < 1e-6
        assert len(set(nearest.indices.tolist())) == layer.out_features


def test_rbf_data_median_distance_near_target():
    torch.manual_seed(0)
    network = DeepMLP(40, 10, depth=3, width=64, activation="rbf", init="rbf_data")
    network.init_from_data(torch.randn(1024, 40))
    layer = network.hidden[0].linear
    assert isinstance(layer, RBFDistance)
    # Held-out inputs from the same distribution: the median scaled distance r is the
    # target 1 within 5% (the median of 64,000 distances, each of relative spread ~ 0.1).
    with torch.no_grad():
        r = layer(torch.randn(1000, 40))
    assert r.median().item() == pytest.approx(1.0, rel=0.05)


def test_rbf_data_identical_inputs_raise():
    network = DeepMLP(4, 2, depth=2, width=3, activation="rbf", init="rbf_data")
    with pytest.raises(ValueError, match=r"RBF layer 1 have median pairwise distance 0"):
        network.init_from_data(torch.ones(10, 4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init": "critical", "activation": "softplus"}, r"'softplus' has no critical point at "),
        (
            {"init": "critical_orthogonal", "activation": "softplus"},
            r"init 'critical_orthogonal': activation 'softplus' has no critical point",
        ),
        ({"init": "critical", "activation": "rbf"}, r"init 'critical' assumes a linear"),
        ({"init": "rbf_data"}, r"init 'rbf_data' places the centres .* 'tanh' has none"),
        ({"init": "delta_orthogonal"}, r"convolution kernels .* use critical_orthogonal"),
        ({"init": "xavier", "sigma_b2": 0.1}, r"sigma_b2 = 0.1 applies only to init 'critical'"),
        ({"init": "critical", "q_star": 0.1}, r"q_star = 0.1 applies only to init 'critical_orth"),
        ({"init": "critical", "sigma_b2": -1.0}, r"sigma_b2 must be finite and >= 0, got -1.0"),
        ({"init": "lsuv", "norm": "weight"}, r"init 'lsuv' with norm 'weight' is invalid"),
        ({"init": "critical", "transform": "dks"}, r"init 'critical' with transform 'dks'"),
        (
            {"init": "critical_orthogonal", "activation": "gaussian", "q_star": 1.0},
            r"q_star = 1 needs sigma_b2 = .* pass a q_star at least that large",
        ),
    ],
)
def test_init_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepMLP(input_dim=8, num_classes=3, depth=4, width=8, **kwargs)


def test_agnostic_batch_sigma_b2_any_init():
    network = DeepMLP(
        8, 3, depth=4, width=8, init="orthogonal", norm="agnostic_batch", sigma_b2=0.1
    )
    assert network(torch.randn(5, 8)).shape == (5, 3)
