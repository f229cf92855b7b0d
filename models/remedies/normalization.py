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
* ``agnostic_batch``: batch statistics that hold every pre-activation at moments chosen for
  this phi, rather than at mean 0 and variance 1. The layer normalises each unit by its batch
  mean and variance, like BatchNorm without affine parameters, then gives it variance v and
  mean m. It has no learnable scale or shift, because one would move the moments away from
  their target. Two rules choose (m, v):

  - ``critical`` (the default, ``norm_target`` None): the mean-field critical point. In the
    mean-field theory (Poole et al. 2016, arXiv:1606.05340) a wide layer's pre-activations are
    centred Gaussians whose second moment settles at the fixed point q* of the length map,
    and the network is at the edge of chaos when chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2] = 1.
    For the chosen sigma_b2 the critical sigma_w2* solves chi_1 = 1, and q* = sigma_w2*
    E[phi(sqrt(q*) z)^2] + sigma_b2 is the second moment there: m = 0, v = q*.
  - ``shaped`` (``norm_target`` zeta): the moments at which the normalised network's C'(1)
    is zeta. Batch normalisation changes what criticality means. With u = m + sqrt(v) z, the
    next layer divides W phi(u) by its standard deviation over the batch, so in the wide
    limit one layer maps the correlation c of two inputs to C(c) = Cov(phi(u1), phi(u2)) /
    Var phi(u), whose slope at c = 1 is C'(1) = v E[phi'(u)^2] / Var phi(u). The Gaussian
    Poincare inequality, Var phi(u) <= v E[phi'(u)^2], makes this slope at least 1, with
    equality only for linear phi: a batch-normalised network of a nonlinear phi has no
    critical point, and its gradients grow by about sqrt(C'(1)) per layer. At sigmoid's
    mean-field critical point (sigma_b2 = 0.1, q* = 46) the slope is 2.3, and a depth-100
    network was measured to start with first-layer gradients 2e17 times the last layer's.
    The shaped rule instead spends a fixed budget, the whole network's C'(1) = zeta, as DKS
    does (Martens et al. 2021, arXiv:2110.01765). Batch statistics already give DKS's
    conditions Q(1) = 1 (unit variance after the next normalisation) and C(0) = 0
    (centring), so the DKS solve for phi_hat(x) = gamma (phi(alpha x + beta) + delta) at
    this zeta and network shape gives the moments directly: m = beta, v = alpha^2.

  Under either rule every activation is followed by the fixed affine map
  (phi(u) - E phi(u)) / sqrt(Var phi(u)), so the readout reads features of mean 0 and
  variance 1. Without it a depth-100 sigmoid network at norm_target 10 would hand the
  readout outputs of standard deviation 0.08 around 0.76. In a depth-20 sigmoid network at
  norm_target 1.5 after 60 SGD steps the map raised test accuracy from 0.09 to 0.42. The
  next layer's batch statistics remove any per-unit affine map of its input, values and
  gradients alike, so in a plain network the map changes only the readout's input. In a
  residual network the branch adds the standardised output to the stream, as DKS's phi_hat
  does. With the shaped rule the whole layer computes DKS's phi_hat of a batch-normalised
  input, with the normalisation's scale and shift fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from models.activations import RBF, Nonlinearity
from models.remedies.transforms import NetworkShape, solve_transform
from models.theory import critical_sigma_w2, expectation, from_torch, q_star

NORMS = ("none", "batch", "layer", "weight", "scaled_ws", "agnostic_batch")
# Norms that reparametrise the weight rather than act on the pre-activation.
WEIGHT_NORMS = ("weight", "scaled_ws")
_WS_EPS = 1e-4


def check_norm_name(norm: str) -> None:
    """Raise ValueError unless ``norm`` is one of ``NORMS``."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def check_norm(norm: str, nonlinearity: Nonlinearity, norm_target: float | None = None) -> None:
    """Raise ValueError for an unknown norm or one that does not suit this nonlinearity.

    Whether agnostic_batch has moments for this phi is known only once ``agnostic_moments``
    solves for them, so that check is the solve itself.
    """
    check_norm_name(norm)
    if norm in WEIGHT_NORMS and nonlinearity.name == RBF:
        raise ValueError(
            f"norm {norm!r} with activation 'rbf' is invalid: it reparametrises a linear "
            "weight, and an RBF layer's weight is its centres; use norm batch, layer or none"
        )
    if norm_target is not None and norm != "agnostic_batch":
        raise ValueError(
            f"norm_target = {norm_target!r} applies only to norm 'agnostic_batch', got norm "
            f"{norm!r}; drop norm_target or use norm agnostic_batch"
        )


def _check_shaped(nonlinearity: Nonlinearity, norm_target: float) -> None:
    if nonlinearity.name == RBF:
        raise ValueError(
            "norm 'agnostic_batch' with activation 'rbf' is invalid: its moments come from the "
            "theory of Gaussian pre-activations, and an RBF unit's distance is not one; use "
            "norm batch or layer"
        )
    if not (
        isinstance(norm_target, (int, float)) and math.isfinite(norm_target) and norm_target > 1.0
    ):
        raise ValueError(
            f"norm_target (zeta, the network's C'(1) under agnostic_batch) must be a finite "
            f"number > 1, got {norm_target!r}; 1.5 is DKS's choice"
        )


def agnostic_moments(
    nonlinearity: Nonlinearity,
    sigma_b2: float,
    norm_target: float | None = None,
    shape: NetworkShape | None = None,
) -> tuple[float, float]:
    """Return the (mean, variance) at which norm ``agnostic_batch`` keeps pre-activations.

    Args:
        nonlinearity: the network's phi.
        sigma_b2: bias variance of the mean-field critical point (rule ``critical``).
        norm_target: None for rule ``critical``; zeta, the network's C'(1), for ``shaped``.
        shape: the network's nonlinear layers and residual blocks (rule ``shaped`` only).

    Raises:
        ValueError: the rule has no moments for this phi (see ``critical_moments``), or
            norm_target is not above 1.
    """
    if norm_target is None:
        mean, q = critical_moments(nonlinearity, sigma_b2)
        return mean, q - mean * mean
    _check_shaped(nonlinearity, norm_target)
    if shape is None:
        raise ValueError("the shaped agnostic_batch rule needs the network's shape")
    # NOTE: the DKS solve also imposes Q'(1) = 1, which batch statistics make unnecessary, so
    # a unit without a DKS solution (relu) is rejected though moving the mean could suffice.
    try:
        transform = solve_transform("dks", nonlinearity.phi, shape, norm_target)
    except ValueError as error:
        raise ValueError(
            f"norm 'agnostic_batch' with activation {nonlinearity.name!r} at norm_target = "
            f"{norm_target:g} is invalid: no pre-activation moments give the network that "
            f"C'(1) ({error}); try another norm_target or norm batch"
        ) from error
    return transform.beta, transform.alpha**2


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


def output_standardization(
    nonlinearity: Nonlinearity, mean: float, variance: float
) -> tuple[float, float]:
    """Return (gamma, delta) that standardise phi(u) for u ~ N(mean, variance).

    gamma (phi(u) + delta) then has mean 0 and variance 1.
    """
    functions = from_torch(nonlinearity.phi, nonlinearity.name)
    first = float(expectation(lambda u: functions.phi(mean + u), variance))
    second = float(expectation(lambda u: functions.phi(mean + u) ** 2, variance))
    spread = second - first * first
    if not spread > 0.0:
        raise ValueError(
            f"norm 'agnostic_batch' with activation {nonlinearity.name!r}: phi is constant "
            f"at the held moments (mean {mean:.3g}, variance {variance:.3g}); use norm batch"
        )
    return 1.0 / math.sqrt(spread), -first


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
    """BatchNorm1d without affine parameters, moved to mean ``mean`` and variance ``variance``."""

    def __init__(self, num_features: int, mean: float, variance: float) -> None:
        super().__init__(num_features, affine=False)
        self.register_buffer("target_mean", torch.tensor(float(mean)))
        self.register_buffer("target_std", torch.tensor(math.sqrt(variance)))

    def forward(self, h: Tensor) -> Tensor:
        return super().forward(h) * self.target_std + self.target_mean

    def extra_repr(self) -> str:
        mean, std = self.target_mean.item(), self.target_std.item()
        return f"{super().extra_repr()}, mean={mean:.4g}, variance={std * std:.4g}"


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


def make_norm(norm: str, features: int, moments: tuple[float, float] | None = None) -> nn.Module:
    """Return the module applied between a weight layer and its activation.

    ``moments`` is the (mean, variance) from ``agnostic_moments``, needed for agnostic_batch.
    """
    if norm == "batch":
        return nn.BatchNorm1d(features)
    if norm == "layer":
        return nn.LayerNorm(features)
    if norm == "agnostic_batch":
        if moments is None:
            raise ValueError("norm 'agnostic_batch' needs the moments from agnostic_moments")
        return AgnosticBatchNorm(features, *moments)
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
