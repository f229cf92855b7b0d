import pytest
import torch
from torch import nn

from models.layers import RBFDistance
from models.networks import DeepMLP


@pytest.mark.parametrize("depth", [1, 2, 7])
def test_deep_mlp_depth_counts_weight_layers(depth):
    network = DeepMLP(input_dim=40, num_classes=10, depth=depth, width=16)
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == depth
    assert len(network.weight_layers()) == depth
    assert len(network.activations()) == depth - 1
    assert network(torch.randn(3, 40)).shape == (3, 10)


def test_deep_mlp_rbf_uses_distance_layers():
    network = DeepMLP(input_dim=8, num_classes=3, depth=4, width=6, activation="rbf")
    layers = [layer for _, layer in network.weight_layers()]
    assert all(isinstance(layer, RBFDistance) for layer in layers[:3])
    assert type(layers[3]) is nn.Linear
    out = network(torch.randn(5, 8))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0}, r"depth must be a positive integer .* got 0"),
        ({"width": -5}, r"width must be a positive integer .* got -5"),
        ({"activation": "tanhh"}, r"unknown activation 'tanhh'"),
        ({"init": "glorot"}, r"unknown init 'glorot'; choose one of xavier"),
    ],
)
def test_deep_mlp_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepMLP(input_dim=4, num_classes=2, **kwargs)


@pytest.mark.parametrize(("fan_in", "fan_out"), [(64, 256), (256, 64), (128, 128)])
def test_orthogonal_init_respects_out_in_layout(fan_in, fan_out):
    torch.manual_seed(0)
    network = DeepMLP(input_dim=fan_in, num_classes=fan_out, depth=1, init="orthogonal")
    weight = network.readout.weight.detach().double()
    assert weight.shape == (fan_out, fan_in)
    # Orthonormal rows when the layer narrows, orthonormal columns when it widens: singular
    # values are exactly 1, with no in/out rescaling.
    singular_values = torch.linalg.svdvals(weight)
    torch.testing.assert_close(singular_values, torch.ones_like(singular_values), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("init", "variance"),
    [("xavier", lambda i, o: 2.0 / (i + o)), ("kaiming", lambda i, o: 2.0 / i)],
)
def test_baseline_init_weight_variance(init, variance):
    torch.manual_seed(0)
    network = DeepMLP(input_dim=300, num_classes=500, depth=1, init=init)
    weight = network.readout.weight.detach()
    # 150,000 entries: the sample variance is within 1% of the target with margin.
    assert weight.var().item() == pytest.approx(variance(300, 500), rel=0.02)
    assert torch.count_nonzero(network.readout.bias) == 0
