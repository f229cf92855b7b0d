"""Everything the theory predicts for one operating point, or over a grid of them.

``analyse`` combines the maps (``models.theory.mean_field``) and their fixed points
(``models.theory.fixed_points``) into one record per (phi, sigma_w2, sigma_b2);
``phase_diagram`` evaluates xi_c over a (sigma_b2, sigma_w2) grid, the phase diagram of
Schoenholz et al. 2017 (arXiv:1611.01232).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.theory.fixed_points import (
    correlation_depth_scale,
    critical_curve,
    q_star,
    solve_q_star,
)
from models.theory.gaussian import DEFAULT_ORDER, as_variance
from models.theory.mean_field import (
    CRITICAL_TOLERANCE,
    Phase,
    Phi,
    chi_1,
    classify_phase,
    correlation_map,
    depth_scale,
    length_map_slope,
    trainable_depth,
)
from models.theory.phi import as_phi_functions

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FixedPointStatistics:
    """Signal statistics of a deep random network at the fixed point of its length map.

    Attributes:
        q_star: fixed point of the length map (mean squared pre-activation of a unit).
        chi_q: slope of the length map at q_star; q_star attracts where |chi_q| < 1.
        xi_q: depth scale of the approach to q_star, -1 / log|chi_q| (inf if |chi_q| >= 1).
        chi_1: slope C'(1) of the correlation map, the per-layer factor of squared gradients.
        c_star: stable fixed point of the correlation map (1 unless chaotic).
        chi_c: slope C'(c_star).
        xi_c: depth scale of the approach to c_star, -1 / log chi_c (inf when critical).
        c_curvature: C''(1); for phi with kinks it omits their Dirac terms in phi''.
        trainable_depth: 6 xi_c, the depth up to which Schoenholz et al. found networks train.
        phase: "ordered" (chi_1 < 1), "critical" or "chaotic" (chi_1 > 1).
    """

    q_star: float
    chi_q: float
    xi_q: float
    chi_1: float
    c_star: float
    chi_c: float
    xi_c: float
    c_curvature: float
    trainable_depth: float
    phase: Phase

    @classmethod
    def from_slopes(
        cls,
        *,
        q_star: float,
        chi_q: float,
        chi_1: float,
        c_star: float,
        chi_c: float,
        xi_c: float,
        c_curvature: float,
        **controls,
    ):
        """Build the record from the fixed points and slopes; ``controls`` fill subclass fields.

        xi_q is inf where |chi_q| is within 1e-8 of 1, as xi_c is at criticality, because a
        marginal fixed point (tanh at sigma_w2 = 1, sigma_b2 = 0) is approached algebraically.
        """
        marginal = abs(abs(chi_q) - 1.0) <= CRITICAL_TOLERANCE
        return cls(
            q_star=float(q_star),
            chi_q=float(chi_q),
            xi_q=math.inf if marginal else float(depth_scale(chi_q)),
            chi_1=float(chi_1),
            c_star=float(c_star),
            chi_c=float(chi_c),
            xi_c=float(xi_c),
            c_curvature=float(c_curvature),
            trainable_depth=float(trainable_depth(xi_c)),
            phase=classify_phase(float(chi_1)),
            **controls,
        )


@dataclass(frozen=True, kw_only=True)
class SignalPropagation(FixedPointStatistics):
    """Mean-field signal propagation of a deep fully connected network with one phi.

    Attributes:
        phi: name of the nonlinearity.
        sigma_w2: weight variance times fan-in.
        sigma_b2: bias variance.
        sigma_w2_critical: critical sigma_w2 at this sigma_b2, or None if there is none.
    """

    phi: str
    sigma_w2: float
    sigma_b2: float
    sigma_w2_critical: float | None


def analyse(
    phi: Phi,
    sigma_w2: float | None = None,
    sigma_b2: float = 0.0,
    q0: float = 1.0,
    order: int = DEFAULT_ORDER,
) -> SignalPropagation:
    """Compute q_star, chi_1, c_star, the depth scales and the critical point for one phi.

    Args:
        phi: the nonlinearity (PhiFunctions or an elementwise torch function).
        sigma_w2: weight variance times fan-in; None analyses the critical point.
        sigma_b2: bias variance.
        q0: the first layer's mean squared pre-activation, which picks the fixed point when
            the length map has several.
        order: quadrature nodes per half-line.

    Raises:
        ValueError: ``sigma_w2`` is None and phi has no critical point at ``sigma_b2``; the
            length map has no fixed point; or an argument is negative.
    """
    phi = as_phi_functions(phi)
    sigma_b2 = float(as_variance("sigma_b2", sigma_b2))
    try:
        curve = critical_curve(phi, np.array([sigma_b2]), order)
        critical, q_critical = float(curve.sigma_w2[0]), float(curve.q_star[0])
    except ValueError:
        if sigma_w2 is None:
            raise
        critical = q_critical = None

    if sigma_w2 is None:
        sigma_w2, q = critical, q_critical
    else:
        sigma_w2 = float(as_variance("sigma_w2", sigma_w2))
        q = float(q_star(phi, sigma_w2, sigma_b2, q0, order)[()])

    chi_q = float(length_map_slope(phi, q, sigma_w2, order))
    if abs(chi_q) > 1.0 + CRITICAL_TOLERANCE:
        log.warning(
            "q_star = %g of %s at sigma_w2 = %g, sigma_b2 = %g repels (chi_q = %g): the squared "
            "length moves away from it with depth, alternating sides if chi_q < 0",
            q,
            phi.name,
            sigma_w2,
            sigma_b2,
            chi_q,
        )
    fixed_point, chi_c, xi_c = correlation_depth_scale(phi, q, sigma_w2, sigma_b2, order)
    return SignalPropagation.from_slopes(
        q_star=q,
        chi_q=chi_q,
        chi_1=float(chi_1(phi, q, sigma_w2, order)),
        c_star=fixed_point,
        chi_c=chi_c,
        xi_c=xi_c,
        c_curvature=float(correlation_map(phi, 1.0, q, sigma_w2, derivative=2, order=order)),
        phi=phi.name,
        sigma_w2=sigma_w2,
        sigma_b2=sigma_b2,
        sigma_w2_critical=critical,
    )


# --- phase diagram -----------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseDiagram:
    """Depth scales over a (sigma_b2, sigma_w2) grid; 2-D arrays have rows over sigma_b2.

    Attributes:
        sigma_w2: weight variances (columns).
        sigma_b2: bias variances (rows).
        q_star: fixed point of the length map; nan where the signal diverges.
        chi_1: slope C'(1) of the correlation map.
        xi_c: correlation depth scale; inf on the critical line.
    """

    sigma_w2: NDArray[np.float64]
    sigma_b2: NDArray[np.float64]
    q_star: NDArray[np.float64]
    chi_1: NDArray[np.float64]
    xi_c: NDArray[np.float64]


def phase_diagram(
    phi: Phi,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike,
    q0: float = 1.0,
    order: int = 24,
) -> PhaseDiagram:
    """Compute q_star, chi_1 and xi_c on the grid sigma_b2 x sigma_w2.

    The default order of 24 nodes per panel keeps a 48 x 32 grid to a few seconds on one core.
    For tanh its relative error is about 5e-7 at q_star = 3 and 1e-4 at q_star = 10, enough for
    a picture; ``expectation_with_error`` estimates it for other units.
    """
    phi = as_phi_functions(phi)
    sigma_w2 = np.ravel(as_variance("sigma_w2", sigma_w2))
    sigma_b2 = np.ravel(as_variance("sigma_b2", sigma_b2))
    weights, biases = np.meshgrid(sigma_w2, sigma_b2)
    lengths = solve_q_star(phi, weights, biases, q0, order)

    finite = np.isfinite(lengths)
    slopes = np.full(lengths.shape, np.nan)
    xi_c = np.full(lengths.shape, np.nan)
    slopes[finite] = chi_1(phi, lengths[finite], weights[finite], order)
    xi_c[finite] = correlation_depth_scale(
        phi, lengths[finite], weights[finite], biases[finite], order
    )[2]
    return PhaseDiagram(sigma_w2, sigma_b2, lengths, slopes, xi_c)
