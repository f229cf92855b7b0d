"""from_torch: numpy phi, phi', phi'' from a torch function, against hand-derived derivatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.activations import gaussian
from models.theory import PhiFunctions, as_phi_functions, from_torch

X = np.linspace(-4.0, 4.0, 81)


def _tanh(x):
    t = np.tanh(x)
    return t, 1 - t**2, -2 * t * (1 - t**2)


def _sigmoid(x):
    s = 1 / (1 + np.exp(-x))
    return s, s * (1 - s), s * (1 - s) * (1 - 2 * s)


def _gaussian(x):
    g = np.exp(-0.5 * x**2)
    return g, -x * g, (x**2 - 1) * g


@pytest.mark.parametrize(
    ("fn", "closed_form"),
    [(torch.tanh, _tanh), (torch.sigmoid, _sigmoid), (gaussian, _gaussian)],
    ids=["tanh", "sigmoid", "gaussian"],
)
def test_from_torch_matches_closed_form_derivatives(fn, closed_form):
    phi = from_torch(fn)
    for k, expected in enumerate(closed_form(X)):
        np.testing.assert_allclose(phi.derivative(k)(X), expected, rtol=0, atol=1e-14)


def test_from_torch_keeps_shape():
    phi = from_torch(torch.tanh)
    x = np.zeros((3, 4, 5))
    assert phi.phi(x).shape == x.shape
    assert phi.d2phi(x).shape == x.shape


def test_from_torch_linear_has_zero_second_derivative():
    phi = from_torch(lambda x: 3.0 * x, "linear")
    np.testing.assert_array_equal(phi.dphi(X), np.full_like(X, 3.0))
    np.testing.assert_array_equal(phi.d2phi(X), np.zeros_like(X))


def test_from_torch_caches_per_function():
    assert from_torch(torch.tanh) is from_torch(torch.tanh)
    assert from_torch(torch.tanh, "other") is not from_torch(torch.tanh)


def test_from_torch_names_after_function():
    assert from_torch(torch.tanh).name == "tanh"


def test_from_torch_rejects_non_callable():
    with pytest.raises(TypeError, match="callable torch function"):
        from_torch(3.0)


def test_as_phi_functions_passes_through():
    phi = PhiFunctions("cos", np.cos, lambda x: -np.sin(x), lambda x: -np.cos(x))
    assert as_phi_functions(phi) is phi


def test_phi_functions_rejects_third_derivative():
    with pytest.raises(ValueError, match="derivative order must be 0, 1 or 2"):
        from_torch(torch.tanh).derivative(3)
