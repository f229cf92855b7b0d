import math
import sys
import textwrap

import pytest
import torch

from models.activations import NAMES, Activation, max_slope, resolve


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tanh", 1.0),
        ("sigmoid", 0.25),
        ("erf", 2.0 / math.sqrt(math.pi)),
        ("softsign", 1.0),
        ("gaussian", math.exp(-0.5)),
        ("relu", 1.0),
    ],
)
def test_max_slope_matches_closed_form(name, expected):
    assert max_slope(resolve(name).phi) == pytest.approx(expected, rel=1e-6)


def test_resolve_every_registered_name():
    x = torch.linspace(-2, 2, 5)
    for name in NAMES:
        out = resolve(name).phi(x)
        assert out.shape == x.shape, name


def test_resolve_unknown_name_lists_known():
    with pytest.raises(ValueError, match=r"unknown activation 'tanhh'.*sigmoid, tanh"):
        resolve("tanhh")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "units.py").write_text(
        textwrap.dedent(
            """
            import torch

            def scaled_tanh(x):
                return 1.7159 * torch.tanh(2.0 * x / 3.0)

            def not_elementwise(x):
                return x.sum()

            def numpy_based(x):
                import numpy
                return torch.as_tensor(numpy.tanh(x.detach().numpy()))

            CONSTANT = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userpkg.units"
    for name in ("userpkg", "userpkg.units"):
        sys.modules.pop(name, None)


def test_resolve_user_function(user_module):
    unit = resolve(f"{user_module}:scaled_tanh")
    x = torch.tensor([0.5, -1.0])
    torch.testing.assert_close(unit.phi(x), 1.7159 * torch.tanh(2.0 * x / 3.0))
    assert unit.smooth is None


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nosuchpkg.mod:f", r"module 'nosuchpkg.mod' cannot be imported"),
        ("userpkg.units:missing", r"has no attribute 'missing'"),
        ("userpkg.units:CONSTANT", r"is not callable"),
        ("userpkg.units:not_elementwise", r"same shape"),
        ("userpkg.units:numpy_based", r"not differentiable by autograd"),
    ],
)
def test_resolve_bad_import_path(user_module, path, message):
    with pytest.raises(ValueError, match=message):
        resolve(path)


def test_activation_transform_formula():
    activation = Activation(resolve("sigmoid"))
    activation.set_transform(alpha=1.5, beta=-0.3, gamma=2.0, delta=-0.5)
    x = torch.randn(64)
    expected = 2.0 * (torch.sigmoid(1.5 * x - 0.3) - 0.5)
    torch.testing.assert_close(activation(x), expected)
    assert activation.slope_scale() == pytest.approx(3.0)


def test_activation_transform_in_state_dict():
    source = Activation(resolve("tanh"))
    source.set_transform(2.0, 0.1, 0.5, 0.0)
    target = Activation(resolve("tanh"))
    target.load_state_dict(source.state_dict())
    x = torch.randn(8)
    torch.testing.assert_close(target(x), source(x))
