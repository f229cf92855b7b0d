"""Layers with a non-standard pre-activation: the Gaussian radial-basis-function unit.

An RBF unit i computes exp(-||x - w_i||^2 / (2 s_i^2)) with centre w_i and width s_i
(Broomhead & Lowe 1988). The suite splits it into a distance layer returning the scaled
distance r_i = ||x - w_i|| / s_i and the registry's ``gaussian`` activation exp(-r^2 / 2), so
monitors read r as the unit's pre-activation and activation transforms apply to it as to any
other phi.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from models.activations import Activation, resolve

# Added under the square root so that d r / d x stays finite where x equals a centre: the
# Gaussian's slope is proportional to r, so the chain rule then gives the exact limit.
_DISTANCE_EPS = 1e-12


class _Exp(nn.Module):
    """Parametrisation width = exp(log_width), which keeps every width positive."""

    def forward(self, log_width: Tensor) -> Tensor:
        return torch.exp(log_width)

    def right_inverse(self, width: Tensor) -> Tensor:
        if (width <= 0).any():
            raise ValueError(f"RBF widths must be positive, got minimum {width.min().item()}")
        return torch.log(width)


class RBFDistance(nn.Module):
    """Scaled Euclidean distance r_i = ||x - w_i|| / s_i from the input to each centre.

    ``centres`` has PyTorch's weight layout [out_features, in_features], so initialisers and
    monitors treat it as the layer's weight. ``width`` is positive by parametrisation;
    assigning ``layer.width = tensor`` stores its logarithm.

    With ``normalize_input`` set, each input x is rescaled to mean square 1 over its
    coordinates before the distance is taken. An activation transform sets it (see
    ``models.remedies.transforms``), because the transform is solved for inputs of exactly
    that length and the distances to all centres shift together with the input's length.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.centres = nn.Parameter(torch.empty(out_features, in_features))
        self.width = nn.Parameter(torch.ones(out_features))
        parametrize.register_parametrization(self, "width", _Exp())
        self.normalize_input = False
        self.reset_parameters()

    @property
    def weight(self) -> Tensor:
        return self.centres

    def reset_parameters(self) -> None:
        """Centres from N(0, 1) and widths sqrt(in_features).

        With inputs and centres of unit per-coordinate variance, ||x - w||^2 is about
        2 * in_features, so r starts near sqrt(2), where the Gaussian is neither flat nor
        saturated.
        """
        nn.init.normal_(self.centres)
        with torch.no_grad():
            self.width = torch.full((self.out_features,), math.sqrt(self.in_features))

    def forward(self, x: Tensor) -> Tensor:
        if self.normalize_input:
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + _DISTANCE_EPS)
        # ||x - w||^2 = ||x||^2 + ||w||^2 - 2 x.w costs one matmul; clamping removes the
        # small negative values that cancellation leaves.
        squared = (
            x.pow(2).sum(-1, keepdim=True) + self.centres.pow(2).sum(-1) - 2.0 * x @ self.centres.T
        ).clamp_min(0.0)
        return torch.sqrt(squared / self.width.pow(2) + _DISTANCE_EPS)

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, out_features={self.out_features}"
        return text + (", normalize_input=True" if self.normalize_input else "")


class GaussianRBF(nn.Sequential):
    """Gaussian RBF layer: exp(-||x - w_i||^2 / (2 s_i^2)) for each unit i."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(RBFDistance(in_features, out_features), Activation(resolve("rbf")))
