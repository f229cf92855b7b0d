"""Time the suite's DKS/TAT solve against the dks package's solve for the same activations."""

from __future__ import annotations

import time

from models.activations import resolve
from models.remedies.transforms import NetworkShape, solve_transform

LAYERS = 20
CASES = (("tanh", "dks"), ("sigmoid", "dks"), ("softplus", "dks"), ("tanh", "tat"))


def _dks_package_solve(name: str, method: str) -> None:
    from dks.base.activation_transform import _get_activations_params

    def subnet_max(x, r_fn):
        for _ in range(LAYERS):
            x = r_fn(x)
        return x

    _get_activations_params([name], method=method.upper(), subnet_max_func=subnet_max)


def main() -> None:
    print(f"{'activation':<10} {'method':<6} {'suite s':>9} {'dks s':>9} {'ratio':>7}")
    for name, method in CASES:
        start = time.perf_counter()
        solve_transform(method, resolve(name).phi, NetworkShape(LAYERS))
        ours = time.perf_counter() - start
        start = time.perf_counter()
        _dks_package_solve(name, method)
        reference = time.perf_counter() - start
        print(f"{name:<10} {method:<6} {ours:9.4f} {reference:9.4f} {reference / ours:7.1f}")
