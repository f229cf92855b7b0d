"""Normalisation for any nonlinearity: batch, layer, weight, scaled WS and agnostic batch norm.

* ``batch``: BatchNorm1d before phi (Ioffe & Szegedy 2015), the reference.
* ``layer``: LayerNorm before phi (Ba et al. 2016, arXiv:1607.06450).
* ``weight``: weight normalisation W = g v / |v| per output unit (Salimans & Kingma 2016,
  arXiv:1602.07868), through ``torch.nn.utils.parametrizations.weight_norm``.
* ``scaled_ws``: scaled weight standardisation (Brock et al. 2021, "Characterizing signal
  propagation to close the performance gap in unnormalized ResNets", arXiv:2101.08692):
  W_hat = g * gain * (W - mean(W)) / (std(W) sqrt(fan_in)) per output unit, with g learnable
  from 1 and the fixed gain = 1 / sqrt(Var phi(z)), z ~ N(0, 1), computed here by quadrature
  for any phi. Each row of W_hat has zero mean and squared norm gain^2, so a unit reading
  phi(h) with h ~ N(0, 1) gets the variance Var phi(z) * gain^2 = 1 back. The input layer
  reads data, not phi, and uses gain 1.
* ``agnostic_batch``: batch statistics that hold every pre-activation at the moments where
  this phi is critical, rather than at mean 0 and variance 1. In the mean-field theory (Poole
  et al. 2016, arXiv:1606.05340) a wide layer's pre-activations are centred Gaussians whose
  second moment settles at the fixed point q* of the length map, and the network is at the
  edge of chaos when chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2] = 1. For the chosen sigma_b2 the
  critical sigma_w2* solves chi_1 = 1, and q* = sigma_w2* E[phi(sqrt(q*) z)^2] + sigma_b2 is
  the second moment there. So the layer normalises each unit by its batch mean and variance,
  like BatchNorm without affine parameters, and multiplies by sqrt(q*): mean 0, second
  moment q*. It has no learnable scale or shift, because one would move q_l away from q*.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from models.activations import RBF, Nonlinearity
from models.theory import critical_sigma_w2, expectation, from_torch, q_star

NORMS = ("none", "batch", "layer", "weight", "scaled_ws", "agnostic_batch")
# Norms that reparametrise the weight rather than act on the pre-activation.
WEIGHT_NORMS = ("weight", "scaled_ws")
_WS_EPS = 1e-4


def check_norm_name(norm: str) -> None:
    """Raise ValueError unless ``norm`` is one of ``NORMS``."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def check_norm(norm: str, nonlinearity: Nonlinearity, sigma_b2: float) -> None:
    """Raise ValueError for an unknown norm or one that does not suit this nonlinearity."""
    check_norm_name(norm)
    if norm in WEIGHT_NORMS and nonlinearity.name == RBF:
        raise ValueError(
            f"norm {norm!r} with activation 'rbf' is invalid: it reparametrises a linear "
            "weight, and an RBF layer's weight is its centres; use norm batch, layer or none"
        )
    if norm == "agnostic_batch":
        critical_moments(nonlinearity, sigma_b2)


def critical_moments(nonlinearity: Nonlinearity, sigma_b2: float) -> tuple[float, float]:
    """Return (mean, q*) of a pre-activation at phi's critical point for bias variance sigma_b2.

    Raises:
        ValueError: phi has no critical point at this sigma_b2, q* is 0 there (odd phi at
            sigma_b2 = 0), or phi is the RBF unit, whose distance pre-activation is not the
            centred Gaussian the theory assumes.
    """
    name = nonlinearity.name
    if name == RBF:
        raise ValueError(
            "norm 'agnostic_batch' with activation 'rbf' is invalid: the critical moments come "
            "from the theory of Gaussian pre-activations, and an RBF unit's distance is not "
            "one; use norm batch or layer"
        )
    if not (isinstance(sigma_b2, (int, float)) and math.isfinite(sigma_b2) and sigma_b2 >= 0):
        raise ValueError(f"sigma_b2 must be a finite number >= 0, got {sigma_b2!r}")
    phi = from_torch(nonlinearity.phi, name)
    try:
        sigma_w2 = critical_sigma_w2(phi, sigma_b2)
    except ValueError as error:
        raise ValueError(
            f"norm 'agnostic_batch' with activation {name!r} at sigma_b2 = {sigma_b2:g} "
            "is invalid: the activation has no critical point there (chi_1 < 1 at every "
            "fixed point q* searched), so there are no critical moments to hold; try another "
            "sigma_b2 (python -m bench theory lists them) or norm batch or layer"
        ) from error
    q = float(q_star(phi, sigma_w2, sigma_b2))
    if not q > 1e-8:
        raise ValueError(
            f"norm 'agnostic_batch' with activation {name!r} at sigma_b2 = {sigma_b2:g} is "
            f"invalid: the critical point has q* = {q:.3g}, so every pre-activation would be "
            "held at zero; pass --model.sigma_b2 above 0 (for example 0.1)"
        )
    return 0.0, q


def scaled_ws_gain(phi: Callable[[Tensor], Tensor], name: str) -> float:
    """Return 1 / sqrt(Var phi(z)), z ~ N(0, 1), by Gauss-Legendre quadrature.

    Args:
        phi: elementwise torch function (an ``Activation`` module, so a DKS/TAT transform
            counts).
        name: label for the error message.
    """
    functions = from_torch(phi, name)
    mean = float(expectation(functions.phi, 1.0))
    variance = float(expectation(lambda u: functions.phi(u) ** 2, 1.0)) - mean * mean
    if not variance > 0.0:
        raise ValueError(f"norm 'scaled_ws': Var phi(z) of {name!r} is {variance:.3g}, not > 0")
    return 1.0 / math.sqrt(variance)


class AgnosticBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d without affine parameters, rescaled to second moment ``q_target``."""

    def __init__(self, num_features: int, q_target: float) -> None:
        super().__init__(num_features, affine=False)
        self.register_buffer("root_q", torch.tensor(math.sqrt(q_target)))

    def forward(self, h: Tensor) -> Tensor:
        return super().forward(h) * self.root_q

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, q_target={self.root_q.item() ** 2:.4g}"


class ScaledWeightStandardization(nn.Module):
    """Parametrisation W -> g * gain * (W - mean) / (std * sqrt(fan_in)), per output row."""

    def __init__(self, out_features: int, gain: float) -> None:
        super().__init__()
        self.gain = gain
        self.affine = nn.Parameter(torch.ones(out_features, 1))

    def forward(self, weight: Tensor) -> Tensor:
        mean = weight.mean(dim=1, keepdim=True)
        variance = weight.var(dim=1, keepdim=True, unbiased=False)
        # The floor keeps a row whose weights are all equal finite, as in Brock et al.
        scale = torch.rsqrt(torch.clamp(variance * weight.shape[1], min=_WS_EPS))
        return self.affine * self.gain * (weight - mean) * scale


def make_norm(norm: str, features: int, nonlinearity: Nonlinearity, sigma_b2: float) -> nn.Module:
    """Return the module applied between a weight layer and its activation."""
    if norm == "batch":
        return nn.BatchNorm1d(features)
    if norm == "layer":
        return nn.LayerNorm(features)
    if norm == "agnostic_batch":
        return AgnosticBatchNorm(features, critical_moments(nonlinearity, sigma_b2)[1])
    return nn.Identity()


def reparametrize_weight(linear: nn.Linear, norm: str, gain: float) -> None:
    """Register weight normalisation or scaled WS on ``linear.weight``; other norms do nothing."""
    if norm == "weight":
        weight_norm(linear)
    elif norm == "scaled_ws":
        parametrize.register_parametrization(
            linear, "weight", ScaledWeightStandardization(linear.out_features, gain)
        )


class WeightView:
    """The trainable tensor behind a layer's weight, under the name ``weight``.

    Gradient monitors read ``layer.weight`` and its ``.grad``; a reparametrised weight is
    recomputed on every access and has no ``.grad``, so they get the free tensor instead: v
    for weight normalisation, the raw W for scaled WS.
    """

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer

    @property
    def weight(self) -> Tensor:
        if not parametrize.is_parametrized(self.layer, "weight"):
            return self.layer.weight
        tensors = self.layer.parametrizations.weight
        return tensors.original1 if hasattr(tensors, "original1") else tensors.original

    @property
    def bias(self) -> Tensor | None:
        return getattr(self.layer, "bias", None)
