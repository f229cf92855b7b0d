"""Mean-field signal propagation through deep fully connected networks, for any phi.

Implements Poole et al. 2016, "Exponential expressivity in deep neural networks through
transient chaos" (arXiv:1606.05340), and Schoenholz et al. 2017, "Deep information propagation"
(arXiv:1611.01232). A layer computes h^{l+1} = W^{l+1} phi(h^l) + b^{l+1} with
W_ij ~ N(0, sigma_w2 / fan_in) and b_i ~ N(0, sigma_b2). In wide layers each pre-activation is
a centred Gaussian, and the statistics of two inputs a, b propagate by

    length map       q^{l+1} = sigma_w2 E[phi(sqrt(q^l) z)^2] + sigma_b2,
    correlation map  c^{l+1} = C(c^l) = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q_star,

where q^l is the mean squared pre-activation of a unit, c^l = q_ab / sqrt(q_aa q_bb), z ~ N(0, 1),
and (u1, u2) are centred Gaussians with variance q_star and correlation c (both inputs at the
fixed point q_star of the length map). The pre-activations are centred whatever phi is, so a
non-odd phi (sigmoid, gaussian, softplus) changes only the values of the maps: its mean adds
sigma_w2 E[phi]^2 to C(0), and q_star > 0 even at sigma_b2 = 0.

Derivatives follow from Price's theorem, d/dc E[f(u1) g(u2)] = q E[f'(u1) g'(u2)]:

    C'(c)  = sigma_w2 E[phi'(u1) phi'(u2)],    chi_1 = C'(1) = sigma_w2 E[phi'(sqrt(q_star) z)^2],
    C''(c) = sigma_w2 q_star E[phi''(u1) phi''(u2)],
    chi_q  = dq^{l+1} / dq^l at q_star = sigma_w2 E[u phi(u) phi'(u)] / q_star,  u = sqrt(q_star) z.

For smooth phi, Gaussian integration by parts turns chi_q into chi_1 + sigma_w2 E[phi(u) phi''(u)].
The form with u needs no phi'', so it also holds for kinked units.

Near their fixed points q^l and c^l converge like exp(-l / xi) with the depth scales

    xi_q = -1 / log|chi_q|,    xi_c = -1 / log C'(c_star).

c_star = 1 in the ordered phase (chi_1 < 1). In the chaotic phase (chi_1 > 1) c = 1 repels and
c_star < 1 is the largest other fixed point. xi_c diverges on the critical line chi_1 = 1 (the
edge of chaos), and Schoenholz et al. found that networks train when their depth stays below
about 6 xi_c.

This module contains the maps and their slopes. ``fixed_points`` solves for q_star, c_star and
the critical line, and ``analysis`` gathers everything for one operating point or a grid.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.theory.gaussian import (
    DEFAULT_ORDER,
    as_variance,
    bivariate_expectation,
    expectation,
)
from models.theory.phi import PhiFunctions, TorchFunction, as_phi_functions

Phi = PhiFunctions | TorchFunction
Phase = Literal["ordered", "critical", "chaotic"]

# |chi_1 - 1| below this counts as critical: a solved critical sigma_w2 reproduces chi_1 = 1
# to about 1e-13, and xi_c > 1e8 layers is infinite for any network that can be built.
CRITICAL_TOLERANCE = 1e-8
TRAINABLE_DEPTH_FACTOR = 6.0
# Stand-in for q -> 0 in limits: E[f(sqrt(q) z)] at q = 1e-30 samples f within 1e-14 of 0 on
# both sides, so a kink at 0 (relu, softsign) contributes the average of its one-sided values.
Q_LIMIT = 1e-30

# Below this q the slope chi_q uses its q -> 0 limit, because dividing E[u phi phi'] by q would
# amplify rounding by 1 / sqrt(q).
_Q_TINY = 1e-10


def _second_moment(phi: PhiFunctions, q: ArrayLike, order: int) -> NDArray[np.float64]:
    return expectation(lambda u: phi.phi(u) ** 2, q, order)


def _slope_moment(phi: PhiFunctions, q: ArrayLike, order: int) -> NDArray[np.float64]:
    return expectation(lambda u: phi.dphi(u) ** 2, q, order)


def length_map(
    phi: Phi,
    q: ArrayLike,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike = 0.0,
    order: int = DEFAULT_ORDER,
) -> NDArray[np.float64]:
    """Return q^{l+1} = sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2, elementwise (broadcast).

    Args:
        phi: the nonlinearity (PhiFunctions or an elementwise torch function).
        q: mean squared pre-activation of layer l, q^l.
        sigma_w2: weight variance times fan-in.
        sigma_b2: bias variance.
        order: quadrature nodes per half-line (see ``models.theory.gaussian``).
    """
    phi = as_phi_functions(phi)
    sigma_w2 = as_variance("sigma_w2", sigma_w2)
    sigma_b2 = as_variance("sigma_b2", sigma_b2)
    return sigma_w2 * _second_moment(phi, q, order) + sigma_b2


def iterate_length_map(
    phi: Phi,
    q1: float,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    depth: int = 10,
    order: int = DEFAULT_ORDER,
) -> NDArray[np.float64]:
    """Return [q^1, ..., q^depth], the length map iterated from the first layer's q^1.

    For an input x of dimension d, q^1 = sigma_w2 |x|^2 / d + sigma_b2.

    Raises:
        ValueError: ``depth`` < 1 or a negative variance.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    phi = as_phi_functions(phi)
    lengths = [float(as_variance("q1", q1))]
    for _ in range(depth - 1):
        lengths.append(float(length_map(phi, lengths[-1], sigma_w2, sigma_b2, order)))
    return np.array(lengths)


def length_map_slope(
    phi: Phi, q: ArrayLike, sigma_w2: ArrayLike, order: int = DEFAULT_ORDER
) -> NDArray[np.float64]:
    """Return chi_q = dq^{l+1}/dq^l = sigma_w2 E[u phi(u) phi'(u)] / q with u = sqrt(q) z.

    At q below 1e-10 the q -> 0 limit sigma_w2 (phi'(0)^2 + phi(0) phi''(0)) is used, with
    phi'(0)^2 averaged over both sides of a kink at 0.
    """
    phi = as_phi_functions(phi)
    q = as_variance("q", q)
    sigma_w2 = as_variance("sigma_w2", sigma_w2)
    safe_q = np.maximum(q, _Q_TINY)
    moment = expectation(lambda u: u * phi.phi(u) * phi.dphi(u), safe_q, order) / safe_q
    limit = expectation(lambda u: phi.dphi(u) ** 2 + phi.phi(u) * phi.d2phi(u), Q_LIMIT, order)
    return sigma_w2 * np.where(q < _Q_TINY, limit, moment)


def chi_1(
    phi: Phi, q: ArrayLike, sigma_w2: ArrayLike, order: int = DEFAULT_ORDER
) -> NDArray[np.float64]:
    """Return chi_1 = sigma_w2 E[phi'(sqrt(q) z)^2], the slope C'(1) of the correlation map.

    chi_1 is also the mean squared singular value of one layer's input-output Jacobian, so it
    sets the growth (> 1) or decay (< 1) of gradients per layer. At q = 0 it takes the limit
    q -> 0, which for a kink at 0 averages the squared one-sided slopes (relu: sigma_w2 / 2).
    """
    phi = as_phi_functions(phi)
    sigma_w2 = as_variance("sigma_w2", sigma_w2)
    return sigma_w2 * _slope_moment(phi, np.maximum(as_variance("q", q), Q_LIMIT), order)


def correlation_map(
    phi: Phi,
    c: ArrayLike,
    q: ArrayLike,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike = 0.0,
    derivative: int = 0,
    order: int = DEFAULT_ORDER,
) -> NDArray[np.float64]:
    """Return the correlation map C(c) at length q, or its first or second derivative in c.

    C(c) = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q and, for k = 1, 2,
    C^(k)(c) = sigma_w2 q^(k-1) E[phi^(k)(u1) phi^(k)(u2)], with (u1, u2) centred Gaussians of
    variance q and correlation c. q is normally the fixed point q_star.

    Args:
        phi: the nonlinearity.
        c: correlations in [-1, 1].
        q: length (mean squared pre-activation) of both inputs.
        sigma_w2: weight variance times fan-in.
        sigma_b2: bias variance.
        derivative: 0 for C, 1 for C', 2 for C''.
        order: quadrature nodes per panel.

    Raises:
        ValueError: q = 0 with ``derivative`` = 0 (C is undefined), or a bad argument.
    """
    phi = as_phi_functions(phi)
    q = as_variance("q", q)
    sigma_w2 = as_variance("sigma_w2", sigma_w2)
    sigma_b2 = as_variance("sigma_b2", sigma_b2)
    f = phi.derivative(derivative)
    if derivative > 0:
        # As in chi_1, q = 0 stands for the limit q -> 0, which matters for a kink at 0.
        safe_q = np.maximum(q, Q_LIMIT)
        moment = bivariate_expectation(f, f, safe_q, safe_q, c, order)
        return sigma_w2 * q ** (derivative - 1) * moment
    if np.any(q == 0.0):
        raise ValueError("the correlation map needs q > 0; at q = 0 every signal is zero")
    moment = bivariate_expectation(f, f, q, q, c, order)
    return (sigma_w2 * moment + sigma_b2) / q


def depth_scale(slope: ArrayLike) -> NDArray[np.float64]:
    """Return xi = -1 / log|slope|, the depth over which a deviation shrinks by 1/e.

    Returns inf where |slope| >= 1 (no convergence) and 0 where slope = 0.
    """
    magnitude = np.abs(np.asarray(slope, dtype=np.float64))
    with np.errstate(divide="ignore"):
        return np.where(magnitude < 1.0, -1.0 / np.log(magnitude), np.inf)


def trainable_depth(xi_c: ArrayLike) -> NDArray[np.float64]:
    """Return the predicted maximum trainable depth, 6 xi_c (Schoenholz et al. 2017)."""
    return TRAINABLE_DEPTH_FACTOR * np.asarray(xi_c, dtype=np.float64)


def classify_phase(chi: float) -> Phase:
    """Return "ordered" (chi_1 < 1), "chaotic" (chi_1 > 1) or "critical" (within 1e-8 of 1)."""
    if chi < 1.0 - CRITICAL_TOLERANCE:
        return "ordered"
    if chi > 1.0 + CRITICAL_TOLERANCE:
        return "chaotic"
    return "critical"
