"""Activation transforms that shape a whole network's kernel at initialisation: DKS and TAT.

Deep Kernel Shaping (Martens et al. 2021, arXiv:2110.01765) and Tailored Activation
Transformation (Zhang et al. 2022, arXiv:2203.08120) replace phi by

    phi_hat(x) = gamma * (phi(alpha * x + beta) + delta)

and pick (alpha, beta, gamma, delta) from conditions on the local maps of phi_hat at input
length q = 1, with z ~ N(0, 1):

    Q(1)   = E[phi_hat(z)^2]                    length map,
    Q'(1)  = E[z phi_hat(z) phi_hat'(z)]        its slope,
    C(0)   = E[phi_hat(z)]^2                    correlation map at c = 0 (with Q(1) = 1),
    C'(1)  = E[phi_hat'(z)^2],   C''(1) = E[phi_hat''(z)^2].

* ``dks``: Q(1) = 1 (gamma), C(0) = 0 (delta), Q'(1) = 1 and C'(1) = s (alpha, beta), where s
  is chosen so that the network's C'(1) equals ``zeta`` (default 1.5).
* ``tat`` (smooth phi): Q(1) = 1 (gamma), Q'(1) = 1, C'(1) = 1 and C''(1) = k (alpha, beta,
  delta), where k is chosen so that the network's C''(1) equals ``tau`` (default 0.3).

The network's C'(1) and C''(1) follow from the local values the way the ``dks`` package
(deepmind, v0.1.2) composes them: a plain stack of L nonlinear layers has C'(1) = s^L and,
with s = 1, C''(1) = L k. A residual block h + a f(h) mixes the kernels of its shortcut and
branch with weights 1 / (1 + a^2) and a^2 / (1 + a^2), so a block whose branch holds b
nonlinear layers has C'(1) = (1 + a^2 s^b) / (1 + a^2) and C''(1) = b k a^2 / (1 + a^2).

The expectations use Gauss-Legendre panels on [-9, 9] in z split where phi's argument
alpha z + beta crosses 0, so a kink of phi at 0 (softsign) falls on a panel end; phi, phi'
and phi'' come from one float64 autograd pass. Every residual evaluation therefore costs one
call of phi on 128 points, which is what makes the solve much faster than the ``dks``
package's 100,000-point quadrature.

RBF units apply phi to the scaled distance r = |x - w| / s (``models.layers.RBFDistance``).
With centres w of per-coordinate variance v and an input of per-coordinate second moment
q = 1, |x - w|^2 is a sum of ``d`` independent terms, so in wide layers r is close to
Gaussian across units: r ~ m + sd * g with m = sqrt(d (q + v)) / s,
sd = sqrt(2 v^2 + 4 q v) / (2 s sqrt(q + v)) and g ~ N(0, 1). For two inputs with correlation
c the standardised distances g, g' have correlation rho(c) = (v + 2 q c) / (v + 2 q), so the
layer's correlation map is C_phi_hat(rho(c)), with slope rho'(1) = 2 q / (v + 2 q). The suite
solves the transform for phi on g with the local C'(1) target divided by rho'(1) (C''(1) by
rho'(1)^2) and maps it back to r by alpha_r = alpha / sd, beta_r = beta - alpha m / sd. Q and Q'
then refer to the standardised distance g, not to the input length of the RBF layer.

The mapping needs each input's length to be exactly q = 1. A change of the input's mean
square by dq moves every distance of the layer by about dq sqrt(d) / (2 s sqrt(q + v)),
which is of the same order as sd, and at finite width the per-example length of a hidden
layer fluctuates by O(1 / sqrt(d)). Without a correction a DKS-transformed RBF network
therefore missed its C'(1) target from the second RBF layer on (0 to 20 instead of 1.5,
depending on the seed). The transform therefore sets ``RBFDistance.normalize_input``, which
rescales each input to mean square 1 before the distances are taken.

NOTE: alpha_r = alpha / sd grows as sqrt(d), so the transformed unit is that much more
sensitive to its centres and widths. A depth-20, width-64 DKS RBF network diverged under
SGD at lr 0.01 and reached 0.22 test accuracy at lr 1e-4 (0.10 untransformed), after 3
epochs on 2,000 MNIST-1D examples; no learning rate was tuned beyond that.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import optimize
from torch import nn

from models.activations import RBF, Activation, Nonlinearity, max_slope

log = logging.getLogger(__name__)

METHODS = ("none", "dks", "tat")
DEFAULT_TARGETS = {"dks": 1.5, "tat": 0.3}

_CUTOFF = 9.0
_ORDER = 64
# Starting points for (alpha, beta) and for TAT's delta, as in the dks package's first tries;
# solutions are unique only up to sign symmetries, so a fixed order keeps runs reproducible.
_ALPHA_STARTS = (1.0, 0.1, 0.5, 2.0)
_BETA_STARTS = (0.0, 1.0, -1.0)
_DELTA_STARTS = (0.0, 1.0, -1.0)
_RANDOM_STARTS = 40
_TOLERANCE = 1e-8
# TAT rejects solutions whose phi_hat has a maximum slope of 2 or more: they have unstable Q
# maps and larger kernel approximation errors. The dks package tests |alpha gamma| >= 2, which
# is the same bound for units of maximum slope 1 (tanh, erf with its own scale aside) but
# would reject every sigmoid solution, whose slope peaks at 1/4.
_TAT_MAX_SLOPE_SCALE = 2.0


@dataclass(frozen=True)
class Transform:
    """The parameters of phi_hat(x) = gamma * (phi(alpha * x + beta) + delta)."""

    alpha: float = 1.0
    beta: float = 0.0
    gamma: float = 1.0
    delta: float = 0.0

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.alpha, self.beta, self.gamma, self.delta)


@dataclass(frozen=True)
class NetworkShape:
    """What the network-level kernel depends on: the count and arrangement of nonlinear layers.

    Attributes:
        nonlinear_layers: nonlinear layers outside residual blocks (a plain MLP of ``depth``
            weight layers has depth - 1).
        blocks: residual blocks after those layers (0 without residuals).
        branch_layers: nonlinear layers in each residual branch.
        branch_scale2: a^2, the squared branch multiplier at which the kernel is shaped.
    """

    nonlinear_layers: int
    blocks: int = 0
    branch_layers: int = 1
    branch_scale2: float = 0.0

    def _branch_weight(self) -> float:
        return self.branch_scale2 / (1.0 + self.branch_scale2)

    def c_slope(self, local_slope: float) -> float:
        """Return the network's C'(1) when every nonlinear layer has C'(1) = local_slope."""
        weight = self._branch_weight()
        block = (1.0 - weight) + weight * local_slope**self.branch_layers
        return local_slope**self.nonlinear_layers * block**self.blocks

    def log_c_slope(self, log_local_slope: float) -> float:
        """Return log C'(1) of the network from log C'(1) of each layer, without overflow."""
        log_block = 0.0
        if self.blocks:
            weight = self._branch_weight()
            log_block = float(
                np.logaddexp(
                    math.log1p(-weight), math.log(weight) + self.branch_layers * log_local_slope
                )
            )
        return self.nonlinear_layers * log_local_slope + self.blocks * log_block

    def c_curvature(self, local_curvature: float) -> float:
        """Return the network's C''(1) when every layer has C'(1) = 1, C''(1) = local_curvature."""
        per_block = self.branch_layers * self._branch_weight()
        return local_curvature * (self.nonlinear_layers + self.blocks * per_block)


@dataclass(frozen=True)
class DistanceStatistics:
    """Per-unit statistics of an RBF layer's scaled distance r ~ m + sd * g (see the module doc).

    ``slope`` is rho'(1), the slope of the map from input correlation to distance correlation.
    """

    mean: float
    std: float
    slope: float

    @classmethod
    def from_layer(cls, centres_variance: float, width2: float, in_features: int, q: float = 1.0):
        v, d = centres_variance, in_features
        return cls(
            mean=math.sqrt(d * (q + v) / width2),
            std=math.sqrt(2.0 * v * v + 4.0 * q * v) / (2.0 * math.sqrt(width2 * (q + v))),
            slope=2.0 * q / (v + 2.0 * q),
        )


def check_method_name(method: str) -> None:
    """Raise ValueError unless ``method`` is one of ``METHODS``."""
    if method not in METHODS:
        raise ValueError(f"unknown transform {method!r}; choose one of {', '.join(METHODS)}")


def check_method(method: str, nonlinearity: Nonlinearity) -> None:
    """Raise ValueError unless ``method`` is known and suits ``nonlinearity``.

    TAT for smooth units shapes C''(1), which needs a phi'' that is not a sum of Dirac masses:
    it is rejected for units registered as not smooth (softsign, selu, relu). A user function's
    smoothness is unknown; the suite accepts it and logs a warning, and a piecewise-linear user
    function then fails in the solve because its autograd phi'' is zero.
    """
    check_method_name(method)
    if method == "tat" and nonlinearity.smooth is False:
        raise ValueError(
            f"transform 'tat' with activation {nonlinearity.name!r} is invalid: TAT for smooth "
            "units shapes C''(1), which needs phi twice differentiable, and "
            f"{nonlinearity.name!r} is not; use transform 'dks' or a smooth activation"
        )
    if method == "tat" and nonlinearity.smooth is None:
        log.warning(
            "transform 'tat' with user activation %r: its smoothness is unknown, so TAT assumes "
            "phi is twice differentiable and takes phi'' from autograd",
            nonlinearity.name,
        )


def resolve_target(method: str, target: float | None) -> float:
    """Return the network-level target: zeta for DKS (> 1), tau for TAT (> 0)."""
    value = DEFAULT_TARGETS[method] if target is None else float(target)
    if not math.isfinite(value):
        raise ValueError(
            f"transform_target must be a finite number, got {target!r}; the DKS paper uses "
            "zeta 1.5 and the TAT paper tau 0.3"
        )
    if method == "dks" and not value > 1.0:
        raise ValueError(
            f"transform_target (zeta, the network's C'(1)) must be > 1 for dks, got {target!r}; "
            "the DKS paper uses 1.5"
        )
    if method == "tat" and not value > 0.0:
        raise ValueError(
            f"transform_target (tau, the network's C''(1)) must be > 0 for tat, got {target!r}; "
            "the TAT paper uses 0.3"
        )
    return value


@functools.cache
def _half_panels() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    return np.polynomial.legendre.leggauss(_ORDER)


def _normal_rule(split: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return nodes z and weights (normal density included) on [-9, 9], split at ``split``."""
    nodes, weights = _half_panels()
    split = min(max(split, -_CUTOFF + 1e-6), _CUTOFF - 1e-6)
    pieces = []
    for lower, upper in ((-_CUTOFF, split), (split, _CUTOFF)):
        half = 0.5 * (upper - lower)
        z = 0.5 * (upper + lower) + half * nodes
        pieces.append((z, half * weights * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)))
    return np.concatenate([z for z, _ in pieces]), np.concatenate([w for _, w in pieces])


class _PhiMoments:
    """Gaussian moments of phi(alpha z + beta) and its derivatives, from one autograd pass."""

    def __init__(self, phi: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.phi = phi

    def evaluate(self, alpha: float, beta: float) -> dict[str, float]:
        split = -beta / alpha if alpha != 0.0 else 0.0
        z, w = _normal_rule(split)
        x = torch.tensor(alpha * z + beta, dtype=torch.float64, requires_grad=True)
        y = self.phi(x)
        (dy,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        d2y = torch.autograd.grad(dy.sum(), x)[0] if dy.requires_grad else torch.zeros_like(x)
        f, df, d2f = (t.detach().numpy() for t in (y, dy, d2y))
        return {
            "mean": float(f @ w),
            "square": float((f * f) @ w),
            "slope2": float((df * df) @ w),
            "curv2": float((d2f * d2f) @ w),
            "z_f": float((z * f) @ w),
            "z_f_df": float((z * f * df) @ w),
            "z_df": float((z * df) @ w),
        }


def _local_maps(moments: dict[str, float], alpha: float, delta: float) -> dict[str, float]:
    """Return Q(1), Q'(1), C(0), C'(1), C''(1) of phi_hat with gamma set for Q(1) = 1."""
    # E[(phi + delta)^2] and E[z (phi + delta) d/dz phi], where d/dz phi(alpha z + beta) is
    # alpha phi'.
    square = moments["square"] + 2.0 * delta * moments["mean"] + delta * delta
    # At alpha = 0 phi_hat is constant and the centred square rounds to 0 or below; a floor
    # keeps the solver's residuals finite (and huge) there.
    gamma2 = 1.0 / max(square, 1e-30)
    q_slope = gamma2 * alpha * (moments["z_f_df"] + delta * moments["z_df"])
    return {
        "gamma": math.sqrt(gamma2),
        "q_slope": q_slope,
        "c_zero": gamma2 * (moments["mean"] + delta) ** 2,
        "c_slope": gamma2 * alpha**2 * moments["slope2"],
        "c_curvature": gamma2 * alpha**4 * moments["curv2"],
    }


def local_maps(phi: Callable[[torch.Tensor], torch.Tensor], transform: Transform) -> dict:
    """Return the local maps Q(1), Q'(1), C(0), C'(1), C''(1) of phi_hat at q = 1.

    Used by tests and reports to check what a transform achieves, whatever its parameters.
    """
    t = transform
    moments = _PhiMoments(phi).evaluate(t.alpha, t.beta)
    shifted = moments["square"] + 2.0 * t.delta * moments["mean"] + t.delta**2
    scale2 = t.gamma**2
    return {
        "q_value": scale2 * shifted,
        "q_slope": scale2 * t.alpha * (moments["z_f_df"] + t.delta * moments["z_df"]),
        "c_zero": scale2 * (moments["mean"] + t.delta) ** 2 / (scale2 * shifted),
        "c_slope": scale2 * t.alpha**2 * moments["slope2"],
        "c_curvature": scale2 * t.alpha**4 * moments["curv2"],
    }


def _starts(size: int) -> list[NDArray[np.float64]]:
    """Return starting points for (alpha, beta[, delta]): a fixed grid, then seeded draws."""
    grid = (_ALPHA_STARTS, _BETA_STARTS, _DELTA_STARTS)[:size]
    starts = [np.array(point) for point in itertools.product(*grid)]
    # A private generator keeps the draws reproducible without touching global seeds.
    rng = np.random.default_rng(0)
    low, high = np.array([0.0, -3.0, -3.0])[:size], np.array([2.0, 3.0, 3.0])[:size]
    starts += [rng.uniform(low, high) for _ in range(_RANDOM_STARTS)]
    return starts


def _solve_dks(moments: _PhiMoments, c_slope: float) -> Transform:
    def residual(p: NDArray[np.float64]) -> list[float]:
        alpha, beta = p
        m = moments.evaluate(alpha, beta)
        maps = _local_maps(m, alpha, -m["mean"])
        return [maps["q_slope"] - 1.0, maps["c_slope"] - c_slope]

    for start in _starts(2):
        solution = optimize.root(residual, np.array(start), method="hybr")
        if solution.success and np.max(np.abs(residual(solution.x))) < _TOLERANCE:
            alpha, beta = solution.x
            m = moments.evaluate(alpha, beta)
            delta = -m["mean"]
            return Transform(alpha, beta, _local_maps(m, alpha, delta)["gamma"], delta)
    raise ValueError(f"DKS found no transform with Q'(1) = 1 and C'(1) = {c_slope:.6g}")


def _solve_tat(moments: _PhiMoments, c_slope: float, c_curvature: float) -> Transform:
    def residual(p: NDArray[np.float64]) -> list[float]:
        alpha, beta, delta = p
        maps = _local_maps(moments.evaluate(alpha, beta), alpha, delta)
        return [
            maps["q_slope"] - 1.0,
            maps["c_slope"] - c_slope,
            maps["c_curvature"] - c_curvature,
        ]

    for start in _starts(3):
        solution = optimize.root(residual, np.array(start), method="hybr")
        if not solution.success or np.max(np.abs(residual(solution.x))) >= _TOLERANCE:
            continue
        alpha, beta, delta = solution.x
        gamma = _local_maps(moments.evaluate(alpha, beta), alpha, delta)["gamma"]
        if abs(alpha * gamma) * max_slope(moments.phi) < _TAT_MAX_SLOPE_SCALE:
            return Transform(alpha, beta, gamma, delta)
    raise ValueError(
        f"TAT found no transform with Q'(1) = 1, C'(1) = {c_slope:.6g} and "
        f"C''(1) = {c_curvature:.6g}"
    )


def local_targets(method: str, target: float, shape: NetworkShape) -> float:
    """Return the per-layer C'(1) (dks) or C''(1) (tat) that gives the network ``target``."""
    if method == "tat":
        return target / shape.c_curvature(1.0)
    # The network's C'(1) increases with the local slope, and is >= the local slope itself
    # whenever the local slope is >= 1, so the root lies in [1, target]. The solve runs on
    # logarithms, so a large target cannot overflow the network's C'(1).
    log_target = math.log(target)
    log_slope = optimize.brentq(
        lambda u: shape.log_c_slope(u) - log_target, 0.0, log_target, xtol=1e-15, rtol=1e-14
    )
    return math.exp(log_slope)


def solve_transform(
    method: str,
    phi: Callable[[torch.Tensor], torch.Tensor],
    shape: NetworkShape,
    target: float | None = None,
    distance: DistanceStatistics | None = None,
) -> Transform:
    """Solve DKS or TAT for ``phi`` in a network of the given shape.

    Args:
        method: ``dks`` or ``tat`` (``none`` returns the identity transform).
        phi: elementwise torch function.
        shape: nonlinear layers and residual blocks of the network.
        target: the network's C'(1) (zeta) for dks or C''(1) (tau) for tat; None for the
            papers' defaults 1.5 and 0.3.
        distance: for an RBF layer, the statistics of its scaled distance; the transform is
            then solved on the standardised distance and mapped back (see the module doc).

    Raises:
        ValueError: unknown method, invalid target, or no transform meets the conditions.
    """
    if method == "none":
        return Transform()
    if method not in ("dks", "tat"):
        raise ValueError(f"unknown transform {method!r}; choose one of {', '.join(METHODS)}")
    local = local_targets(method, resolve_target(method, target), shape)
    slope = 1.0 if distance is None else distance.slope
    moments = _PhiMoments(phi)
    if method == "dks":
        transform = _solve_dks(moments, local / slope)
    else:
        transform = _solve_tat(moments, 1.0 / slope, local / slope**2)
    if distance is None:
        return transform
    return Transform(
        transform.alpha / distance.std,
        transform.beta - transform.alpha * distance.mean / distance.std,
        transform.gamma,
        transform.delta,
    )


def distance_statistics(layer: nn.Module) -> DistanceStatistics:
    """Return the scaled-distance statistics of an ``RBFDistance`` layer as initialised."""
    with torch.no_grad():
        centres_variance = float(layer.centres.pow(2).mean())
        width2 = float(layer.width.pow(2).mean())
    return DistanceStatistics.from_layer(centres_variance, width2, layer.in_features)


def shape_activations(
    sites: list[tuple[Activation, nn.Module]],
    method: str,
    shape: NetworkShape,
    target: float | None = None,
) -> list[Transform]:
    """Solve the transform and set it on every activation (``Activation.set_transform``).

    Args:
        sites: (activation, the weight layer feeding it) in forward order.
        method: ``none``, ``dks`` or ``tat``.
        shape: nonlinear layers and residual blocks of the network.
        target: zeta (dks) or tau (tat); None for the papers' defaults.

    Returns:
        The transform of each site. Sites with the same phi share one solve, except RBF
        layers, whose transform depends on each layer's centre variance and width.
    """
    if method == "none":
        return [Transform() for _ in sites]
    solved: dict[object, Transform] = {}
    transforms = []
    for activation, layer in sites:
        distance = distance_statistics(layer) if activation.nonlinearity.name == RBF else None
        if distance is not None:
            layer.normalize_input = True
        key = (activation.nonlinearity.name, distance)
        if key not in solved:
            solved[key] = solve_transform(method, activation.phi, shape, target, distance)
        activation.set_transform(*solved[key].as_tuple())
        transforms.append(solved[key])
    return transforms
