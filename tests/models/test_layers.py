import math

import pytest
import torch

from models.layers import GaussianRBF, RBFDistance


def test_gaussian_rbf_matches_definition():
    torch.manual_seed(0)
    layer = GaussianRBF(5, 7)
    distance = layer[0]
    with torch.no_grad():
        distance.width = torch.rand(7) + 0.5
    x = torch.randn(11, 5)
    squared = torch.cdist(x.double(), distance.centres.double()) ** 2
    expected = torch.exp(-squared / (2.0 * distance.width.double() ** 2))
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-6)


def test_rbf_width_stays_positive():
    layer = RBFDistance(3, 4)
    assert torch.all(layer.width > 0)
    assert layer.width[0].item() == pytest.approx(math.sqrt(3))
    with pytest.raises(ValueError, match="positive"), torch.no_grad():
        layer.width = torch.tensor([1.0, -1.0, 1.0, 1.0])
    # Gradient steps act on log(width), so no step can make a width negative.
    (name,) = [n for n, _ in layer.named_parameters() if "width" in n]
    assert name == "parametrizations.width.original"


def test_rbf_gradient_finite_at_centre():
    layer = GaussianRBF(4, 3)
    x = layer[0].centres[:1].detach().clone().requires_grad_(True)
    out = layer(x)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.isfinite(layer[0].centres.grad).all()
    assert out[0, 0].item() == pytest.approx(1.0, abs=1e-6)
