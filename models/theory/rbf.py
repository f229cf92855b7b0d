"""Mean-field signal propagation through deep stacks of Gaussian RBF layers.

A unit of an RBF layer with input x in R^d outputs

    y_i = exp(-|x - w_i|^2 / (2 s^2))

with centre w_i and width s shared by the layer. The centres are random with i.i.d.
N(0, sigma_w2) coordinates. q = |x|^2 / d is the per-coordinate second moment of the input,
and s2 stands for s^2 in the code.

Moments over the centres at a fixed input. For one coordinate, w ~ N(0, sigma_w2) and t > 0,
E[exp(-t (x_k - w)^2)] = (1 + 2 t sigma_w2)^(-1/2) exp(-t x_k^2 / (1 + 2 t sigma_w2)). The
coordinates are independent, so t = k / (2 s^2) gives, for k = 1, 2,

    E[y]   = (1 + sigma_w2 / s^2)^(-d/2)   exp(-d q / (2 (s^2 + sigma_w2))),
    E[y^2] = (1 + 2 sigma_w2 / s^2)^(-d/2) exp(-d q / (s^2 + 2 sigma_w2)).

For two inputs x, x' with q = |x|^2 / d, q' = |x'|^2 / d and q12 = x.x' / d, the identity
|x - w|^2 + |x' - w|^2 = 2 |w - (x + x') / 2|^2 + |x - x'|^2 / 2 gives

    E[y(x) y(x')] = (1 + 2 sigma_w2 / s^2)^(-d/2)
                    exp(-d (q + q' - 2 q12) / (4 s^2))
                    exp(-d (q + q' + 2 q12) / (4 (s^2 + 2 sigma_w2))).

Averaging also over a Gaussian input x ~ N(0, q I) adds the variances of data and centres:
E[y^k] = (1 + k (q + sigma_w2) / s^2)^(-d/2). Either way the prefactor tends to
exp(-k d sigma_w2 / (2 s^2)) and the exponent to -k d q / (2 s^2) as d grows. The outputs
therefore vanish when s^2 << d and saturate at 1 when s^2 >> d, and stay of order 1 only if s^2
grows like d, that is s like sqrt(d).

Deep stack. Layer l + 1 has d units like layer l and reads its outputs. For wide layers
|y|^2 / d concentrates at E[y^2], and the cross moment divided by E[y^2] gives the correlation
c = q12 / q of two inputs of equal length q:

    length map       q^{l+1} = A exp(-B q^l),  A = (1 + 2 sigma_w2 / s^2)^(-d/2),
                                               B = d / (s^2 + 2 sigma_w2),
    correlation map  c^{l+1} = C(c^l) = exp(-chi_1 (1 - c^l)),
                     chi_1 = C'(1) = d q sigma_w2 / (s^2 (s^2 + 2 sigma_w2)).

The fixed point solves B q e^(B q) = A B, so q_star = W(A B) / B with W the principal branch
of Lambert's W function, and the length map's slope there is chi_q = -B q_star = -W(A B). The
fixed point attracts only if A B < e; otherwise the length alternates between two values.
At q_star, chi_1 = W(A B) sigma_w2 / s^2 and C''(1) = chi_1^2. For chi_1 > 1 the stable
correlation is c_star = -W(-chi_1 e^(-chi_1)) / chi_1 < 1 with slope C'(c_star) = chi_1 c_star;
for chi_1 <= 1, c_star = 1.

Criticality. Put r = s^2 / sigma_w2. Then chi_1 = 1 means W(A B) = r, that is A B = r e^r, and
with A = (1 + 2 / r)^(-d/2), B = d / (sigma_w2 (r + 2)) this fixes the centre variance:

    sigma_w2 = d (1 + 2 / r)^(-d/2) e^(-r) / (r (r + 2)).

For d > 2 the right side peaks at r = sqrt(d + 2) - 2. A critical width therefore exists only
for sigma_w2 up to that peak, and below it there are two: a narrow one (r below the peak) and a
wide one. At criticality chi_q = -r, so q_star attracts only where r < 1.

NOTE: the peak falls like exp(-2 sqrt(d)) (6e-9 at d = 100). A stack with zero-mean Gaussian
centres and a width s ~ sqrt(d), which keeps the outputs of order 1, has chi_1 ~ q sigma_w2 / d.
It sits deep in the ordered phase and maps all inputs to nearly the same output, so reaching
criticality needs centres correlated with the data rather than this isotropic model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

from models.theory.analysis import FixedPointStatistics
from models.theory.gaussian import as_variance
from models.theory.mean_field import CRITICAL_TOLERANCE, depth_scale


def _check_layer(
    sigma_w2: ArrayLike, s2: ArrayLike, d: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return sigma_w2 and s2 as float arrays after checking that both are > 0 and d >= 1."""
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"input dimension d must be a positive integer, got {d!r}")
    sigma_w2_array = as_variance("sigma_w2", sigma_w2)
    s2_array = as_variance("s2", s2)
    if np.any(sigma_w2_array <= 0.0):
        raise ValueError(f"sigma_w2 must be > 0, got {sigma_w2!r}")
    if np.any(s2_array <= 0.0):
        raise ValueError(f"the squared width s2 must be > 0, got {s2!r}")
    return sigma_w2_array, s2_array


def _log_prefactor(k: int, sigma_w2: NDArray, s2: NDArray, d: int) -> NDArray[np.float64]:
    """Return log (1 + k sigma_w2 / s^2)^(-d/2), computed without underflow."""
    return -0.5 * d * np.log1p(k * sigma_w2 / s2)


def rbf_moments(
    q: ArrayLike, sigma_w2: ArrayLike, s2: ArrayLike, d: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return (E[y], E[y^2]) over random centres for an input with |x|^2 = d q.

    Args:
        q: per-coordinate second moment of the input, |x|^2 / d.
        sigma_w2: variance of each centre coordinate.
        s2: squared width s^2 of the unit.
        d: input dimension.
    """
    sigma_w2, s2 = _check_layer(sigma_w2, s2, d)
    q = as_variance("q", q)
    mean = np.exp(_log_prefactor(1, sigma_w2, s2, d) - d * q / (2.0 * (s2 + sigma_w2)))
    second = np.exp(_log_prefactor(2, sigma_w2, s2, d) - d * q / (s2 + 2.0 * sigma_w2))
    return mean, second


def rbf_cross_moment(
    q1: ArrayLike, q2: ArrayLike, q12: ArrayLike, sigma_w2: ArrayLike, s2: ArrayLike, d: int
) -> NDArray[np.float64]:
    """Return E[y(x) y(x')] over random centres, with q1 = |x|^2/d, q2 = |x'|^2/d, q12 = x.x'/d."""
    sigma_w2, s2 = _check_layer(sigma_w2, s2, d)
    q1, q2, q12 = (np.asarray(a, dtype=np.float64) for a in (q1, q2, q12))
    distance = d * (q1 + q2 - 2.0 * q12) / (4.0 * s2)
    midpoint = d * (q1 + q2 + 2.0 * q12) / (4.0 * (s2 + 2.0 * sigma_w2))
    return np.exp(_log_prefactor(2, sigma_w2, s2, d) - distance - midpoint)


def rbf_length_map(q: ArrayLike, sigma_w2: ArrayLike, s2: ArrayLike, d: int) -> NDArray[np.float64]:
    """Return q^{l+1} = E[y^2] = A exp(-B q^l) for a stack of width d."""
    return rbf_moments(q, sigma_w2, s2, d)[1]


def rbf_chi_1(q: ArrayLike, sigma_w2: ArrayLike, s2: ArrayLike, d: int) -> NDArray[np.float64]:
    """Return chi_1 = C'(1) = d q sigma_w2 / (s^2 (s^2 + 2 sigma_w2)) at input length q."""
    sigma_w2, s2 = _check_layer(sigma_w2, s2, d)
    return d * as_variance("q", q) * sigma_w2 / (s2 * (s2 + 2.0 * sigma_w2))


def rbf_correlation_map(
    c: ArrayLike, q: ArrayLike, sigma_w2: ArrayLike, s2: ArrayLike, d: int
) -> NDArray[np.float64]:
    """Return C(c) = exp(-chi_1 (1 - c)) for two inputs of equal length q."""
    return np.exp(-rbf_chi_1(q, sigma_w2, s2, d) * (1.0 - np.asarray(c, dtype=np.float64)))


def rbf_q_star(sigma_w2: ArrayLike, s2: ArrayLike, d: int) -> NDArray[np.float64]:
    """Return the fixed point q_star = W(A B) / B of the RBF length map."""
    sigma_w2, s2 = _check_layer(sigma_w2, s2, d)
    b = d / (s2 + 2.0 * sigma_w2)
    return special.lambertw(np.exp(_log_prefactor(2, sigma_w2, s2, d)) * b).real / b


def rbf_length_map_slope(sigma_w2: ArrayLike, s2: ArrayLike, d: int) -> NDArray[np.float64]:
    """Return chi_q = -B q_star, the slope of the RBF length map at its fixed point."""
    sigma_w2, s2 = _check_layer(sigma_w2, s2, d)
    return -d / (s2 + 2.0 * sigma_w2) * rbf_q_star(sigma_w2, s2, d)


def rbf_c_star(chi: ArrayLike) -> NDArray[np.float64]:
    """Return the stable fixed point of C(c) = exp(-chi (1 - c)): 1 if chi <= 1, else below 1."""
    chi = np.asarray(chi, dtype=np.float64)
    chaotic = chi > 1.0 + CRITICAL_TOLERANCE
    safe = np.where(chaotic, chi, 2.0)
    root = -special.lambertw(-safe * np.exp(-safe)).real / safe
    return np.where(chaotic, root, 1.0)


def _log_critical_sigma_w2(log_r: float, d: int) -> float:
    """Return log sigma_w2 at which r = s^2 / sigma_w2 = exp(log_r) is critical."""
    r = math.exp(log_r)
    return math.log(d) - 0.5 * d * math.log1p(2.0 / r) - r - log_r - math.log(r + 2.0)


def rbf_critical_s2(sigma_w2: float, d: int) -> tuple[float, ...]:
    """Return the squared widths s^2 at which an RBF stack of width d is critical (chi_1 = 1).

    Solves sigma_w2 = d (1 + 2/r)^(-d/2) e^(-r) / (r (r + 2)) for r = s^2 / sigma_w2 by
    brentq in log r. For d > 2 there are two roots (narrow, wide); for d <= 2 there is one.

    Raises:
        ValueError: sigma_w2 exceeds the largest centre variance with a critical width.
    """
    _check_layer(sigma_w2, 1.0, d)
    target = math.log(sigma_w2)
    log_lo, log_hi = -690.0, math.log(1e6 + d)
    peak = math.log(math.sqrt(d + 2.0) - 2.0) if d > 2 else log_lo
    peak_value = _log_critical_sigma_w2(peak, d)
    if target > peak_value:
        raise ValueError(
            f"no critical RBF width at sigma_w2 = {sigma_w2:g}, d = {d}: chi_1 < 1 for every "
            f"width because sigma_w2 exceeds {math.exp(peak_value):.3g}, the largest centre "
            "variance with a critical width; lower sigma_w2 or place the centres from data"
        )

    def gap(log_r: float) -> float:
        return _log_critical_sigma_w2(log_r, d) - target

    roots = [optimize.brentq(gap, peak, log_hi, xtol=1e-14)]
    if d > 2:
        roots.insert(0, optimize.brentq(gap, log_lo, peak, xtol=1e-14))
    return tuple(math.exp(log_r) * sigma_w2 for log_r in roots)


@dataclass(frozen=True, kw_only=True)
class RBFSignalPropagation(FixedPointStatistics):
    """Mean-field signal propagation of a deep stack of Gaussian RBF layers.

    Attributes:
        sigma_w2: variance of each centre coordinate.
        s2: squared width s^2 of the units.
        d: width of the stack (input dimension of every layer).
        s2_critical: critical squared widths (narrow first); empty if none exists.
    """

    sigma_w2: float
    s2: float
    d: int
    s2_critical: tuple[float, ...]


def rbf_analyse(sigma_w2: float, s2: float, d: int) -> RBFSignalPropagation:
    """Compute q_star, chi_1, c_star, the depth scales and the critical widths of an RBF stack.

    Args:
        sigma_w2: variance of each centre coordinate.
        s2: squared width s^2 of the units.
        d: width of the stack.
    """
    q = float(rbf_q_star(sigma_w2, s2, d))
    chi = float(rbf_chi_1(q, sigma_w2, s2, d))
    fixed_point = float(rbf_c_star(chi))
    chi_c = chi * fixed_point
    try:
        critical = rbf_critical_s2(sigma_w2, d)
    except ValueError:
        critical = ()
    return RBFSignalPropagation.from_slopes(
        q_star=q,
        chi_q=float(rbf_length_map_slope(sigma_w2, s2, d)),
        chi_1=chi,
        c_star=fixed_point,
        chi_c=chi_c,
        xi_c=math.inf if abs(chi - 1.0) <= CRITICAL_TOLERANCE else float(depth_scale(chi_c)),
        c_curvature=chi * chi,
        sigma_w2=float(sigma_w2),
        s2=float(s2),
        d=int(d),
        s2_critical=critical,
    )
