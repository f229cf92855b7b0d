"""A nonlinearity phi and its derivatives as vectorised numpy functions for the theory.

The suite defines every nonlinearity as an elementwise torch function (``models.activations``).
``from_torch`` turns one into numpy callables for phi, phi' and phi'', differentiating by
torch autograd in float64, so a registered unit and a user's ``package.module:function`` are
handled alike. Torch is used here only for that differentiation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from models.theory.gaussian import NumpyFunction

TorchFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class PhiFunctions:
    """Nonlinearity phi with its first and second derivatives, elementwise on numpy arrays.

    Attributes:
        name: label used in messages and tables.
        phi: x -> phi(x).
        dphi: x -> phi'(x).
        d2phi: x -> phi''(x); zero almost everywhere for a piecewise-linear phi, whose kinks
            put Dirac masses into phi'' that no pointwise function can carry.
    """

    name: str
    phi: NumpyFunction
    dphi: NumpyFunction
    d2phi: NumpyFunction

    def derivative(self, k: int) -> NumpyFunction:
        """Return phi^(k) for k in {0, 1, 2}."""
        functions = (self.phi, self.dphi, self.d2phi)
        if k not in (0, 1, 2):
            raise ValueError(f"derivative order must be 0, 1 or 2, got {k!r}")
        return functions[k]


def _autograd_derivative(fn: TorchFunction, k: int) -> NumpyFunction:
    """Return a numpy function evaluating the k-th derivative of the elementwise ``fn``."""

    def evaluate(x: ArrayLike) -> NDArray[np.float64]:
        # torch.tensor copies, so read-only and broadcast numpy views are safe inputs.
        point = torch.tensor(np.asarray(x, dtype=np.float64), dtype=torch.float64)
        if k == 0:
            with torch.no_grad():
                return fn(point).numpy()
        point.requires_grad_(True)
        value = fn(point)
        for step in range(k):
            if not value.requires_grad:
                # phi^(step) no longer depends on x (phi is a polynomial of degree < k).
                return np.zeros(point.shape)
            # phi acts elementwise, so the gradient of the sum is phi' at every point.
            (value,) = torch.autograd.grad(value.sum(), point, create_graph=step < k - 1)
        return value.detach().numpy()

    return evaluate


def _build(fn: TorchFunction, name: str) -> PhiFunctions:
    return PhiFunctions(
        name=name,
        phi=_autograd_derivative(fn, 0),
        dphi=_autograd_derivative(fn, 1),
        d2phi=_autograd_derivative(fn, 2),
    )


@functools.lru_cache(maxsize=128)
def _build_cached(fn: TorchFunction, name: str) -> PhiFunctions:
    return _build(fn, name)


def from_torch(fn: TorchFunction, name: str | None = None) -> PhiFunctions:
    """Return numpy phi, phi', phi'' for an elementwise torch function, by autograd in float64.

    Results are cached per (function, name), so repeated calls with a registered unit reuse
    one object; an unhashable callable is wrapped afresh each time.

    Args:
        fn: elementwise torch function, differentiable twice by autograd (almost everywhere).
        name: label for messages; defaults to ``fn.__name__``.

    Raises:
        TypeError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"phi must be a callable torch function, got {type(fn).__name__}")
    label = name if name is not None else getattr(fn, "__name__", repr(fn))
    if isinstance(fn, Hashable):
        return _build_cached(fn, label)
    return _build(fn, label)


def as_phi_functions(phi: PhiFunctions | TorchFunction) -> PhiFunctions:
    """Return ``phi`` unchanged if it is a PhiFunctions, else wrap the torch function."""
    if isinstance(phi, PhiFunctions):
        return phi
    return from_torch(phi)
