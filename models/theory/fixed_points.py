"""Fixed points of the mean-field maps and the order-to-chaos critical line.

See ``models.theory.mean_field`` for the maps (Poole et al. 2016, arXiv:1606.05340; Schoenholz
et al. 2017, arXiv:1611.01232). Each solver scans a grid to bracket the wanted root and refines
all brackets at once with scipy.optimize.elementwise.find_root (Chandrupatla's method):

* q_star: the fixed point of the length map that iterating from the first layer's q^1 reaches;
* c_star: the largest fixed point of the correlation map below 1, in the chaotic phase;
* the critical line chi_1 = 1, solved with q = q_star as the unknown: the fixed point fixes
  sigma_w2(q) = (q - sigma_b2) / E[phi(sqrt(q) z)^2], so chi_1 = 1 becomes the scalar equation
  (q - sigma_b2) E[phi'(sqrt(q) z)^2] = E[phi(sqrt(q) z)^2] in q >= sigma_b2, with no nested
  fixed-point solve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import elementwise

from models.theory.gaussian import DEFAULT_ORDER, as_variance
from models.theory.mean_field import (
    CRITICAL_TOLERANCE,
    Q_LIMIT,
    Phi,
    chi_1,
    correlation_map,
    depth_scale,
    length_map,
)
from models.theory.phi import PhiFunctions, as_phi_functions

Q_MAX = 1e6
CRITICAL_Q_MAX = 1e4

# Relative size below which a gap (L(q) - q, or the normalised critical gap) is rounding and
# counts as a root.
_GAP_TOLERANCE = 1e-12
# Absolute tolerance on c_star and on C(c) - c: below it the gap is rounding, and without it
# the solver bisects towards the smallest normal number when c_star = 0 (odd phi at
# sigma_b2 = 0).
_C_TOLERANCE = 1e-15
# Largest number of Gaussian evaluations held in memory at once while scanning a grid.
_SCAN_BLOCK = 1 << 22


def _scan(fn, points: NDArray[np.float64], cost_per_point: int) -> NDArray[np.float64]:
    """Evaluate the elementwise ``fn`` on ``points`` (S, K), a block of columns at a time."""
    rows, columns = points.shape
    block = max(1, _SCAN_BLOCK // max(1, rows * cost_per_point))
    return np.concatenate(
        [fn(points[:, start : start + block]) for start in range(0, columns, block)], axis=1
    )


# --- fixed point of the length map -----------------------------------------------------


def _length_grid(q_max: float) -> NDArray[np.float64]:
    decades = math.log10(q_max) + 10.0
    return np.concatenate([[0.0], np.logspace(-10.0, math.log10(q_max), int(6 * decades) + 1)])


def _bracket_q_star(
    signs: NDArray[np.float64], sign_q0: NDArray[np.float64], q0: NDArray[np.float64], grid
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Return the bracket [lo, hi] of the fixed point reached from q0, and where one exists.

    ``signs`` is the sign of L(q) - q on ``grid`` (S, K), 0 within rounding of a root.
    Iterating a length map from q0 moves towards the nearest crossing of the gap from + to -
    in the direction of sign(L(q0) - q0). lo == hi marks a grid point (or q0) that is a root.
    """
    rows = np.arange(signs.shape[0])
    upward = (grid > q0[:, None]) & (signs <= 0.0)
    first_up = np.argmax(upward, axis=1)
    downward = (grid < q0[:, None]) & (signs >= 0.0)
    last_down = grid.size - 1 - np.argmax(downward[:, ::-1], axis=1)

    up_hi = grid[first_up]
    up_lo = np.where(
        signs[rows, first_up] == 0.0, up_hi, np.maximum(q0, grid[np.maximum(first_up - 1, 0)])
    )
    down_lo = grid[last_down]
    down_hi = np.where(
        signs[rows, last_down] == 0.0,
        down_lo,
        np.minimum(q0, grid[np.minimum(last_down + 1, grid.size - 1)]),
    )

    going_up = sign_q0 > 0.0
    lo = np.where(sign_q0 == 0.0, q0, np.where(going_up, up_lo, down_lo))
    hi = np.where(sign_q0 == 0.0, q0, np.where(going_up, up_hi, down_hi))
    found = (sign_q0 == 0.0) | np.where(going_up, upward[rows, first_up], downward[rows, last_down])
    return lo, hi, found


def solve_q_star(
    phi: Phi,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike = 0.0,
    q0: ArrayLike = 1.0,
    order: int = DEFAULT_ORDER,
    q_max: float = Q_MAX,
) -> NDArray[np.float64]:
    """Return the fixed point q_star reached by iterating the length map from q0, or nan.

    Like ``q_star`` but vectorised without raising: nan marks points whose length map has no
    fixed point up to ``q_max`` (phi grows at least linearly and the signal diverges).
    """
    phi = as_phi_functions(phi)
    sigma_w2, sigma_b2, q0 = np.broadcast_arrays(
        as_variance("sigma_w2", sigma_w2), as_variance("sigma_b2", sigma_b2), as_variance("q0", q0)
    )
    shape = sigma_w2.shape
    sigma_w2, sigma_b2, q0 = (np.ravel(a) for a in (sigma_w2, sigma_b2, q0))

    def gap(q, sw, sb):
        return length_map(phi, q, sw, sb, order) - q

    def sign(q, sw, sb):
        # L(q) - q within rounding of L(q) + q counts as a root (relu at sigma_w2 = 2).
        value = gap(q, sw, sb)
        return np.where(np.abs(value) <= _GAP_TOLERANCE * (value + 2.0 * q), 0.0, np.sign(value))

    grid = _length_grid(q_max)
    points = np.broadcast_to(grid, (q0.size, grid.size))
    signs = _scan(lambda q: sign(q, sigma_w2[:, None], sigma_b2[:, None]), points, 2 * order)
    lo, hi, found = _bracket_q_star(signs, sign(q0, sigma_w2, sigma_b2), q0, grid)

    result = np.where(found & (lo == hi), lo, np.nan)
    solve = found & (lo < hi)
    if np.any(solve):
        root = elementwise.find_root(
            gap, (lo[solve], hi[solve]), args=(sigma_w2[solve], sigma_b2[solve])
        )
        result[solve] = root.x
    return result.reshape(shape)


def q_star(
    phi: Phi,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike = 0.0,
    q0: ArrayLike = 1.0,
    order: int = DEFAULT_ORDER,
    q_max: float = Q_MAX,
) -> NDArray[np.float64]:
    """Return the fixed point q_star of the length map reached from q0, elementwise.

    The fixed point is bracketed on a logarithmic grid of q in [0, q_max] and refined by
    Chandrupatla's method, so slow convergence of the iteration near a marginal fixed point
    (tanh at sigma_w2 = 1, sigma_b2 = 0, where q_star = 0) costs nothing. When several fixed
    points exist, the one that iterating the map from q0 approaches is returned. An unstable
    fixed point (|chi_q| >= 1) is returned too; ``length_map_slope`` identifies it.

    Args:
        phi: the nonlinearity.
        sigma_w2: weight variance times fan-in.
        sigma_b2: bias variance.
        q0: the first layer's mean squared pre-activation, q^1 = sigma_w2 |x|^2 / d + sigma_b2.
        order: quadrature nodes per half-line.
        q_max: largest fixed point searched.

    Raises:
        ValueError: the length map has no fixed point up to ``q_max`` (the signal grows
            without bound), or an argument is negative.
    """
    phi = as_phi_functions(phi)
    result = solve_q_star(phi, sigma_w2, sigma_b2, q0, order, q_max)
    if np.any(np.isnan(result)):
        sigma_w2, sigma_b2 = np.broadcast_arrays(sigma_w2, sigma_b2, result)[:2]
        missing = np.isnan(result)
        raise ValueError(
            f"the length map of {phi.name} has no fixed point q <= {q_max:g} at "
            f"sigma_w2 = {sigma_w2[missing][:5].tolist()}, sigma_b2 = "
            f"{sigma_b2[missing][:5].tolist()}: the signal grows without bound; "
            "lower sigma_w2"
        )
    return result


# --- fixed point of the correlation map --------------------------------------------------

# 1 - c on which C(c) - c is scanned: logarithmic near c = 1, where the fixed point sits when
# chi_1 is close to 1, then c = 0.6, 0.4, ..., -1 (c = 0 is the fixed point of odd phi at
# sigma_b2 = 0).
_ONE_MINUS_C_GRID = np.concatenate([np.logspace(-10.0, -1.0, 7), 1.0 - np.linspace(0.6, -1.0, 9)])


def _bracket_c_star(
    gap: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """Return [c_lo, c_hi] around the largest fixed point below 1, from C(c) - c on the grid.

    In the chaotic phase C(c) - c < 0 just below c = 1 and C(-1) - (-1) >= 0 (C is a
    correlation), so the first grid point (counting down from 1) with a non-negative gap closes
    the bracket; the gap at c = -1 is clipped to >= 0 against rounding. ``resolved``
    is False where even the point nearest 1 has a non-negative gap, that is chi_1 lies so
    close to 1 that the fixed point sits within 1e-10 of 1. ``exact`` marks a gap within
    rounding (1e-15) of 0 at c_lo, which is then the root. Elsewhere both bracket ends have
    gaps beyond rounding, so their signs are reliable.
    """
    gap = gap.copy()
    gap[:, -1] = np.maximum(gap[:, -1], 0.0)
    first = np.argmax(gap >= -_C_TOLERANCE, axis=1)
    resolved = first > 0
    exact = resolved & (gap[np.arange(gap.shape[0]), first] <= _C_TOLERANCE)
    c_lo = 1.0 - _ONE_MINUS_C_GRID[first]
    c_hi = 1.0 - _ONE_MINUS_C_GRID[np.maximum(first - 1, 0)]
    return c_lo, c_hi, resolved, exact


def _solve_c_star(
    phi: PhiFunctions,
    q: NDArray[np.float64],
    sigma_w2: NDArray[np.float64],
    sigma_b2: NDArray[np.float64],
    order: int,
) -> NDArray[np.float64]:
    """Return the largest fixed point c_star < 1 of the correlation map, for chaotic points."""

    def gap(c, q, sw, sb):
        return correlation_map(phi, c, q, sw, sb, order=order) - c

    points = np.broadcast_to(1.0 - _ONE_MINUS_C_GRID, (q.size, _ONE_MINUS_C_GRID.size))
    scanned = _scan(
        lambda c: gap(c, q[:, None], sigma_w2[:, None], sigma_b2[:, None]),
        points,
        6 * order * order,
    )
    c_lo, c_hi, resolved, exact = _bracket_c_star(scanned)
    result = np.empty(q.shape)

    # Unresolved: chi_1 - 1 is below about 1e-10 C''(1), so C(c) = c is solved with C expanded
    # to second order about c = 1: 1 - c_star = 2 (chi_1 - 1) / C''(1).
    if np.any(~resolved):
        near = ~resolved
        curvature = correlation_map(phi, 1.0, q[near], sigma_w2[near], derivative=2, order=order)
        excess = chi_1(phi, q[near], sigma_w2[near], order) - 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = np.clip(2.0 * excess / curvature, 0.0, 1e-10)
        result[near] = 1.0 - np.nan_to_num(distance, nan=0.0)

    result[exact] = c_lo[exact]
    solve = resolved & ~exact
    if np.any(solve):
        root = elementwise.find_root(
            gap,
            (c_lo[solve], c_hi[solve]),
            args=(q[solve], sigma_w2[solve], sigma_b2[solve]),
            tolerances={"xatol": _C_TOLERANCE},
        )
        result[solve] = root.x
    return result


def c_star(
    phi: Phi,
    q: ArrayLike,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike = 0.0,
    order: int = DEFAULT_ORDER,
) -> NDArray[np.float64]:
    """Return the stable fixed point c_star of the correlation map at length q, elementwise.

    c_star = 1 where chi_1 <= 1 + 1e-8 (ordered or critical). In the chaotic phase it is the
    largest root below 1 of C(c) = c, bracketed on a grid of log(1 - c) and refined by
    Chandrupatla's method; for odd phi at sigma_b2 = 0 it is 0.

    Args:
        q: the length at which the map acts, normally q_star.
    """
    phi = as_phi_functions(phi)
    q, sigma_w2, sigma_b2 = np.broadcast_arrays(
        as_variance("q", q), as_variance("sigma_w2", sigma_w2), as_variance("sigma_b2", sigma_b2)
    )
    shape = q.shape
    q, sigma_w2, sigma_b2 = (np.ravel(a).astype(np.float64) for a in (q, sigma_w2, sigma_b2))
    result = np.ones(q.shape)
    chaotic = chi_1(phi, q, sigma_w2, order) > 1.0 + CRITICAL_TOLERANCE
    if np.any(chaotic):
        result[chaotic] = _solve_c_star(
            phi, q[chaotic], sigma_w2[chaotic], sigma_b2[chaotic], order
        )
    return result.reshape(shape)


def correlation_depth_scale(
    phi: Phi,
    q: ArrayLike,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike = 0.0,
    order: int = DEFAULT_ORDER,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Return (c_star, chi_c, xi_c) at length q, elementwise.

    chi_c = C'(c_star) and xi_c = -1 / log chi_c, with xi_c = inf where |chi_1 - 1| <= 1e-8.
    """
    phi = as_phi_functions(phi)
    q, sigma_w2, sigma_b2 = np.broadcast_arrays(
        as_variance("q", q), as_variance("sigma_w2", sigma_w2), as_variance("sigma_b2", sigma_b2)
    )
    shape = q.shape
    q, sigma_w2, sigma_b2 = (np.ravel(a) for a in (q, sigma_w2, sigma_b2))
    slope = chi_1(phi, q, sigma_w2, order)
    fixed_point = c_star(phi, q, sigma_w2, sigma_b2, order)
    chaotic = slope > 1.0 + CRITICAL_TOLERANCE
    chi_c = slope.copy()
    if np.any(chaotic):
        chi_c[chaotic] = correlation_map(
            phi, fixed_point[chaotic], q[chaotic], sigma_w2[chaotic], derivative=1, order=order
        )
    xi_c = np.where(np.abs(slope - 1.0) <= CRITICAL_TOLERANCE, np.inf, depth_scale(chi_c))
    return fixed_point.reshape(shape), chi_c.reshape(shape), xi_c.reshape(shape)


# --- critical line -----------------------------------------------------------------------


@dataclass(frozen=True)
class CriticalCurve:
    """The order-to-chaos boundary chi_1 = 1 over a grid of bias variances.

    Attributes:
        sigma_b2: bias variances.
        sigma_w2: critical weight variance (times fan-in) at each sigma_b2.
        q_star: fixed point of the length map at each critical point.
    """

    sigma_b2: NDArray[np.float64]
    sigma_w2: NDArray[np.float64]
    q_star: NDArray[np.float64]


def _mean_phi_squared(phi: PhiFunctions, q: ArrayLike, order: int) -> NDArray[np.float64]:
    """Return E[phi(sqrt(q) z)^2], the length map at sigma_w2 = 1, sigma_b2 = 0."""
    return length_map(phi, q, 1.0, order=order)


def _mean_slope_squared(phi: PhiFunctions, q: ArrayLike, order: int) -> NDArray[np.float64]:
    """Return E[phi'(sqrt(q) z)^2], chi_1 at sigma_w2 = 1."""
    return chi_1(phi, q, 1.0, order)


def _critical_gap(phi: PhiFunctions, q, sigma_b2, order: int) -> NDArray[np.float64]:
    """Return ((q - b) E[phi'^2] - E[phi^2]) / ((q - b) E[phi'^2] + E[phi^2]) with b = sigma_b2.

    The gap is positive where chi_1 > 1 at the fixed point q and 0 where chi_1 = 1. The
    normalisation makes a tolerance on it relative. 0/0 (q = b = 0 and phi(0) = 0) counts as 0.
    """
    slope_term = (q - sigma_b2) * _mean_slope_squared(phi, q, order)
    length_term = _mean_phi_squared(phi, q, order)
    total = slope_term + length_term
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0.0, (slope_term - length_term) / total, 0.0)


def _no_critical_point_error(
    phi: PhiFunctions,
    sigma_b2: NDArray[np.float64],
    q_grid: NDArray[np.float64],
    order: int,
    q_max: float,
) -> ValueError:
    """Build the error for bias variances at which chi_1 < 1 on the whole searched range."""
    with np.errstate(divide="ignore", invalid="ignore"):
        reachable = (q_grid - sigma_b2[:, None]) / _mean_phi_squared(phi, q_grid, order)
    sigma_w2_max = np.nanmax(np.where(np.isfinite(reachable), reachable, np.nan), axis=1)
    searched = ", ".join(
        f"sigma_b2 = {b:g} (sigma_w2 searched in [0, {w:.4g}])"
        for b, w in zip(sigma_b2, sigma_w2_max, strict=True)
    )
    return ValueError(
        f"{phi.name} has no critical point (chi_1 = 1) at {searched}: chi_1 < 1 at every "
        f"fixed point q_star in [sigma_b2, sigma_b2 + {q_max:g}]; give sigma_w2 explicitly or "
        "use another sigma_b2 or nonlinearity"
    )


def critical_curve(
    phi: Phi,
    sigma_b2: ArrayLike,
    order: int = DEFAULT_ORDER,
    q_max: float = CRITICAL_Q_MAX,
) -> CriticalCurve:
    """Return the critical sigma_w2 (chi_1 = 1 at q_star) for each bias variance.

    The unknown is q = q_star in [sigma_b2, sigma_b2 + q_max]; the first root of
    (q - sigma_b2) E[phi'^2] - E[phi^2] is bracketed on a logarithmic grid and refined, and
    sigma_w2 = (q - sigma_b2) / E[phi^2] follows. When phi(0) = 0 and sigma_b2 = 0 the root can
    be q_star = 0 (tanh, erf, softsign): there sigma_w2 is the q -> 0 limit
    1 / E[phi'(sqrt(q) z)^2], which is 1 / phi'(0)^2 for smooth phi.

    Args:
        phi: the nonlinearity.
        sigma_b2: bias variances, any shape.
        order: quadrature nodes per half-line.
        q_max: width of the searched range of q_star above sigma_b2.

    Raises:
        ValueError: at some sigma_b2, chi_1 < 1 at every fixed point in the searched range (the
            message names phi, those sigma_b2 and the range of sigma_w2 covered).
    """
    phi = as_phi_functions(phi)
    sigma_b2 = as_variance("sigma_b2", sigma_b2)
    shape = sigma_b2.shape
    sigma_b2 = np.ravel(sigma_b2)
    offsets = np.concatenate([[0.0], np.logspace(-3.0, math.log10(q_max), 8 * 7 + 1)])
    q_grid = sigma_b2[:, None] + offsets
    gap = _scan(lambda q: _critical_gap(phi, q, sigma_b2[:, None], order), q_grid, 2 * order)

    # Column 0 (q = sigma_b2) has gap -1, or 0 where phi(0) = 0 and sigma_b2 = 0. The first
    # later column with a gap above -1e-12 closes the bracket; the tolerance admits a gap that
    # is identically 0 up to rounding (relu at sigma_b2 = 0), which then counts as a root.
    positive = gap > -_GAP_TOLERANCE
    positive[:, 0] = False
    if not np.all(positive.any(axis=1)):
        missing = ~positive.any(axis=1)
        raise _no_critical_point_error(phi, sigma_b2[missing], q_grid[missing], order, q_max)
    first = np.argmax(positive, axis=1)
    rows = np.arange(sigma_b2.size)
    lo, hi = q_grid[rows, first - 1], q_grid[rows, first]
    at_lo = gap[rows, first - 1] == 0.0
    at_hi = ~at_lo & (np.abs(gap[rows, first]) <= _GAP_TOLERANCE)

    q_critical = np.where(at_hi, hi, lo)
    solve = ~at_lo & ~at_hi
    if np.any(solve):
        root = elementwise.find_root(
            lambda q, b: _critical_gap(phi, q, b, order),
            (lo[solve], hi[solve]),
            args=(sigma_b2[solve],),
        )
        q_critical[solve] = root.x

    at_zero = q_critical == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_w2 = (q_critical - sigma_b2) / _mean_phi_squared(phi, q_critical, order)
    sigma_w2[at_zero] = 1.0 / _mean_slope_squared(phi, Q_LIMIT, order)
    return CriticalCurve(
        sigma_b2.reshape(shape), sigma_w2.reshape(shape), q_critical.reshape(shape)
    )


def critical_sigma_w2(
    phi: Phi, sigma_b2: float = 0.0, order: int = DEFAULT_ORDER, q_max: float = CRITICAL_Q_MAX
) -> float:
    """Return the critical sigma_w2 (edge of chaos, chi_1 = 1) at one bias variance.

    Raises:
        ValueError: no critical point exists at this sigma_b2 (see ``critical_curve``).
    """
    return float(critical_curve(phi, np.array([sigma_b2]), order, q_max).sigma_w2[0])
