"""The nonlinearity registry: built-in saturating units, the ReLU reference and user functions.

A nonlinearity is a plain elementwise torch function ``phi``. Derivatives everywhere in the
suite come from autograd, so a user's function given as an import path
``package.module:function`` needs nothing beyond being differentiable.

``Activation`` wraps ``phi`` as a module with the scale-and-shift re-parameterisation
``gamma * (phi(alpha * h + beta) + delta)`` of Martens et al. 2021 (DKS, arXiv:2110.01765) and
Zhang et al. 2022 (TAT, arXiv:2203.08120); the identity transform (1, 0, 1, 0) is the default.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Phi = Callable[[Tensor], Tensor]


def gaussian(x: Tensor) -> Tensor:
    """Gaussian unit exp(-x^2 / 2): even, bounded, saturating on both sides."""
    return torch.exp(-0.5 * x * x)


@dataclass(frozen=True)
class Nonlinearity:
    """A registered or user-supplied nonlinearity.

    Attributes:
        name: the config value (a registry key or ``package.module:function``).
        phi: the elementwise torch function.
        smooth: whether phi is twice continuously differentiable everywhere; ``None`` for a
            user function, whose smoothness the suite cannot know.
        reference: True for units kept only as the baseline the suite compares against.
    """

    name: str
    phi: Phi
    smooth: bool | None
    reference: bool = False


_BUILTIN: dict[str, Nonlinearity] = {
    unit.name: unit
    for unit in (
        Nonlinearity("sigmoid", torch.sigmoid, smooth=True),
        Nonlinearity("tanh", torch.tanh, smooth=True),
        Nonlinearity("erf", torch.erf, smooth=True),
        Nonlinearity("softsign", nn.functional.softsign, smooth=False),
        Nonlinearity("gaussian", gaussian, smooth=True),
        Nonlinearity("softplus", nn.functional.softplus, smooth=True),
        Nonlinearity("selu", nn.functional.selu, smooth=False),
        Nonlinearity("relu", torch.relu, smooth=False, reference=True),
    )
}

# "rbf" is a layer type, not an elementwise function: its units apply the Gaussian to a
# scaled Euclidean distance (see ``models.layers.RBFDistance``).
RBF = "rbf"
NAMES: tuple[str, ...] = (*_BUILTIN, RBF)


def resolve(name: str) -> Nonlinearity:
    """Look up a nonlinearity by registry name or import path.

    Args:
        name: a registry key (see ``NAMES``; ``rbf`` resolves to the Gaussian applied to the
            RBF unit's scaled distance) or ``package.module:function``.

    Raises:
        ValueError: the name is unknown, the import path does not resolve, or the object it
            names is not an elementwise differentiable torch function.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"activation must be a non-empty string, got {name!r}")
    if name == RBF:
        return Nonlinearity(RBF, gaussian, smooth=True)
    if name in _BUILTIN:
        return _BUILTIN[name]
    if ":" not in name:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(NAMES)} "
            "or give a user function as 'package.module:function'"
        )
    return Nonlinearity(name, _import_function(name), smooth=None)


def _import_function(path: str) -> Phi:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"activation {path!r}: module {module_name!r} cannot be imported ({error}); "
            "make sure the module is on PYTHONPATH or installed"
        ) from error
    phi = getattr(module, attribute, None)
    if phi is None:
        raise ValueError(
            f"activation {path!r}: module {module_name!r} has no attribute {attribute!r}"
        )
    if not callable(phi):
        raise ValueError(f"activation {path!r} is not callable (got {type(phi).__name__})")
    _check_elementwise(path, phi)
    return phi


def _check_elementwise(path: str, phi: Phi) -> None:
    probe = torch.linspace(-3.0, 3.0, 7, dtype=torch.float64, requires_grad=True)
    try:
        out = phi(probe)
    except Exception as error:
        raise ValueError(f"activation {path!r} failed on a tensor input: {error!r}") from error
    if not isinstance(out, Tensor) or out.shape != probe.shape:
        raise ValueError(
            f"activation {path!r} must map a tensor to a tensor of the same shape "
            f"(elementwise); got {type(out).__name__} {getattr(out, 'shape', '')}"
        )
    if not out.requires_grad:
        raise ValueError(
            f"activation {path!r} is not differentiable by autograd: write it with torch "
            "operations on its input"
        )


def max_slope(phi: Phi, bound: float = 12.0, points: int = 24_001) -> float:
    """Return max |phi'(x)| over [-bound, bound], with phi' from autograd in float64.

    The saturation statistic compares |phi'(h)| against this maximum; a grid of spacing 1e-3
    resolves the peak of every built-in unit to better than 1e-6 relative.
    """
    x = torch.linspace(-bound, bound, points, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(phi(x).sum(), x)
    peak = slope.abs().max().item()
    if not math.isfinite(peak) or peak <= 0.0:
        raise ValueError(
            f"phi has no finite non-zero slope on [-{bound}, {bound}] (max |phi'| = {peak}); "
            "a saturation statistic needs a non-constant, finite phi"
        )
    return peak


class Activation(nn.Module):
    """Elementwise nonlinearity ``gamma * (phi(alpha * h + beta) + delta)``.

    The transform parameters are buffers, so a solved DKS/TAT transform travels with the
    state dict; the defaults give plain phi. Monitors find activation sites by this type and
    read the pre-activation from ``preactivation(input)``.
    """

    def __init__(self, nonlinearity: Nonlinearity) -> None:
        super().__init__()
        self.nonlinearity = nonlinearity
        for key, value in (("alpha", 1.0), ("beta", 0.0), ("gamma", 1.0), ("delta", 0.0)):
            self.register_buffer(key, torch.tensor(value))

    @property
    def phi(self) -> Phi:
        return self.nonlinearity.phi

    def slope_scale(self) -> float:
        """Return |alpha * gamma|, the factor the transform applies to phi's slope."""
        return abs(self.alpha.item() * self.gamma.item())

    def set_transform(self, alpha: float, beta: float, gamma: float, delta: float) -> None:
        """Set the scale and shift around phi (DKS/TAT parameters)."""
        for key, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("delta", delta)):
            getattr(self, key).fill_(float(value))

    def preactivation(self, h: Tensor) -> Tensor:
        """Return the pre-activation of this site for module input ``h`` (``h`` itself here)."""
        return h

    def forward(self, h: Tensor) -> Tensor:
        return self.gamma * (self.phi(self.alpha * h + self.beta) + self.delta)

    def extra_repr(self) -> str:
        return f"{self.nonlinearity.name}"
