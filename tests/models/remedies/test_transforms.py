"""DKS/TAT solves: agreement with the dks package and the targets a real network meets."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from models.activations import resolve
from models.networks import DeepMLP
from models.remedies.transforms import NetworkShape, Transform, local_maps, solve_transform
from tests.models.remedies.kernels import network_c_slope

LAYERS = 10


def _dks_reference(name: str, method: str) -> Transform:
    base = pytest.importorskip("dks.base.activation_transform")

    def subnet_max(x, r_fn):
        for _ in range(LAYERS):
            x = r_fn(x)
        return x

    params = base._get_activations_params([name], method=method, subnet_max_func=subnet_max)[name]
    return Transform(
        params.get("input_scale", 1.0),
        params.get("input_shift", 0.0),
        params.get("output_scale", 1.0),
        params.get("output_shift", 0.0),
    )


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("tanh", "DKS"),
        ("sigmoid", "DKS"),
        ("erf", "DKS"),
        ("softsign", "DKS"),
        ("softplus", "DKS"),
        ("tanh", "TAT"),
        ("erf", "TAT"),
        ("softplus", "TAT"),
        pytest.param("sigmoid", "TAT", marks=pytest.mark.slow),
    ],
)
def test_solve_transform_matches_dks_package(name, method):
    phi = resolve(name).phi
    ours = local_maps(phi, solve_transform(method.lower(), phi, NetworkShape(LAYERS)))
    reference = local_maps(phi, _dks_reference(name, method))
    # Both solves stop at residuals near 1e-8; 1e-6 leaves room for the two quadratures.
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def _user_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "user_units.py").write_text(
        "import torch\n\n\ndef bump(x):\n    return torch.exp(-x * x) * (1.0 + 0.5 * x)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    sys.modules.pop("user_units", None)
    return "user_units:bump"


@pytest.mark.parametrize(
    "activation",
    ["gaussian", "rbf", "user"],
)
def test_dks_network_c_slope_meets_zeta(activation, tmp_path, monkeypatch):
    if activation == "user":
        activation = _user_module(tmp_path, monkeypatch)
    width, depth, zeta = 1024, 6, 1.5
    torch.manual_seed(0)
    network = DeepMLP(
        width,
        10,
        depth=depth,
        width=width,
        activation=activation,
        init="orthogonal",
        transform="dks",
        transform_target=zeta,
    ).double()
    # Measured by finite difference of the correlation of 64 pairs of nearby inputs in one
    # wide random network; finite width leaves a few per cent of noise, hence 5%. For rbf,
    # seeds 0 to 3 gave 1.505, 1.520, 1.503 and 1.482.
    assert network_c_slope(network, width) == pytest.approx(zeta, rel=0.05)


def test_tat_rejects_non_smooth_activation():
    with pytest.raises(ValueError, match="transform 'tat' with activation 'softsign' is invalid"):
        DeepMLP(40, 10, depth=4, width=16, activation="softsign", transform="tat")


def test_transform_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown transform 'ntk'"):
        DeepMLP(40, 10, depth=4, width=16, transform="ntk")


def test_dks_rejects_target_at_most_one():
    with pytest.raises(ValueError, match="must be > 1 for dks"):
        DeepMLP(40, 10, depth=4, width=16, transform="dks", transform_target=0.9)
