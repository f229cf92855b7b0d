"""Slow reference values of the mean-field quantities by adaptive quadrature.

Each function recomputes a quantity of ``models.theory`` with scipy.integrate.quad or dblquad
and scipy.optimize.brentq. No quadrature rule or solver is shared with the fast path. Here the
fixed point q_star comes from iterating the length map. The critical sigma_w2 comes from
bracketing chi_1(sigma_w2) - 1 in sigma_w2 with q_star recomputed inside, whereas
``models.theory.fixed_points`` solves for q_star on the critical line. Tests compare against
these functions, and ``bench/benchmarks/theory_speed.py`` times them. Functions act on one
point at a time (floats in, float out).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, optimize

from models.theory.gaussian import NumpyFunction
from models.theory.phi import PhiFunctions

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# Truncation of the z range for dblquad; the normal mass beyond |z| = 10 is 1.5e-23.
_Z_RANGE = 10.0


def _scalar(f: NumpyFunction):
    return lambda x: float(f(np.array(x)))


def quad_expectation(f: NumpyFunction, q: float) -> float:
    """Return E_z[f(sqrt(q) z)] by scipy.integrate.quad over z in [0, inf), f folded at 0."""
    f, root = _scalar(f), math.sqrt(q)

    def integrand(z: float) -> float:
        return (f(root * z) + f(-root * z)) * _INV_SQRT_2PI * math.exp(-0.5 * z * z)

    value, _ = integrate.quad(integrand, 0.0, math.inf, epsabs=1e-14, epsrel=1e-13, limit=400)
    return value


def quad_bivariate_expectation(
    f: NumpyFunction, g: NumpyFunction, q1: float, q2: float, c: float
) -> float:
    """Return E[f(u1) g(u2)] by scipy.integrate.dblquad over (z1, z2) in [-10, 10]^2."""
    f, g = _scalar(f), _scalar(g)
    s = math.sqrt((1.0 - c) * (1.0 + c))
    root1, root2 = math.sqrt(q1), math.sqrt(q2)

    def integrand(z2: float, z1: float) -> float:
        density = _INV_SQRT_2PI**2 * math.exp(-0.5 * (z1 * z1 + z2 * z2))
        return f(root1 * z1) * g(root2 * (c * z1 + s * z2)) * density

    value, _ = integrate.dblquad(
        integrand, -_Z_RANGE, _Z_RANGE, -_Z_RANGE, _Z_RANGE, epsabs=1e-12, epsrel=1e-11
    )
    return value


def quad_length_map(phi: PhiFunctions, q: float, sigma_w2: float, sigma_b2: float) -> float:
    """Return sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2."""
    return sigma_w2 * quad_expectation(lambda u: phi.phi(u) ** 2, q) + sigma_b2


def quad_q_star(
    phi: PhiFunctions,
    sigma_w2: float,
    sigma_b2: float,
    q0: float = 1.0,
    tolerance: float = 1e-14,
    max_iterations: int = 10_000,
) -> float:
    """Return the fixed point of the length map by iterating it from q0.

    Raises:
        RuntimeError: the iteration has not settled to ``tolerance`` (relative) in
            ``max_iterations`` steps, as near a marginal fixed point.
    """
    q = q0
    for _ in range(max_iterations):
        following = quad_length_map(phi, q, sigma_w2, sigma_b2)
        if abs(following - q) <= tolerance * max(q, 1e-300):
            return following
        q = following
    raise RuntimeError(
        f"length map of {phi.name} did not converge in {max_iterations} iterations at "
        f"sigma_w2 = {sigma_w2}, sigma_b2 = {sigma_b2} (last q = {q})"
    )


def quad_chi_1(phi: PhiFunctions, q: float, sigma_w2: float) -> float:
    """Return sigma_w2 E[phi'(sqrt(q) z)^2]."""
    return sigma_w2 * quad_expectation(lambda u: phi.dphi(u) ** 2, q)


def quad_critical_sigma_w2(
    phi: PhiFunctions, sigma_b2: float, bracket: tuple[float, float] = (0.05, 500.0)
) -> float:
    """Return the sigma_w2 in ``bracket`` where chi_1 at the fixed point q_star equals 1."""

    def excess(sigma_w2: float) -> float:
        return quad_chi_1(phi, quad_q_star(phi, sigma_w2, sigma_b2), sigma_w2) - 1.0

    return optimize.brentq(excess, *bracket, xtol=1e-13, rtol=1e-13)


def quad_correlation_map(
    phi: PhiFunctions, c: float, q: float, sigma_w2: float, sigma_b2: float, derivative: int = 0
) -> float:
    """Return C(c) (derivative 0) or C'(c) (derivative 1) at length q by dblquad."""
    f = phi.derivative(derivative)
    moment = quad_bivariate_expectation(f, f, q, q, c)
    if derivative == 1:
        return sigma_w2 * moment
    return (sigma_w2 * moment + sigma_b2) / q


def quad_c_star(phi: PhiFunctions, q: float, sigma_w2: float, sigma_b2: float) -> float:
    """Return the chaotic fixed point c_star in (-1, 0.999) of the correlation map by brentq.

    The caller must pick a chaotic point whose c_star lies below 0.999.
    """

    def gap(c: float) -> float:
        return quad_correlation_map(phi, c, q, sigma_w2, sigma_b2) - c

    return optimize.brentq(gap, -1.0 + 1e-6, 0.999, xtol=1e-12, rtol=1e-12)
