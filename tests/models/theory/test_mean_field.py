"""Length and correlation maps, fixed points, critical line and depth scales.

References: closed forms for erf (Williams 1997) and the Gaussian unit exp(-x^2 / 2), adaptive
quadrature (models.theory.reference, scipy.integrate.quad), and a wide random tanh network.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize
from torch.nn import functional

from models.activations import gaussian
from models.theory import (
    analyse,
    c_star,
    chi_1,
    correlation_depth_scale,
    correlation_map,
    critical_curve,
    critical_sigma_w2,
    depth_scale,
    from_torch,
    iterate_length_map,
    length_map,
    length_map_slope,
    phase_diagram,
    q_star,
)
from models.theory.reference import (
    quad_chi_1,
    quad_correlation_map,
    quad_critical_sigma_w2,
    quad_expectation,
    quad_q_star,
)

TANH = from_torch(torch.tanh, "tanh")
ERF = from_torch(torch.erf, "erf")
GAUSSIAN = from_torch(gaussian, "gaussian")
SIGMOID = from_torch(torch.sigmoid, "sigmoid")
SOFTSIGN = from_torch(functional.softsign, "softsign")
RELU = from_torch(torch.relu, "relu")


# --- erf: arcsin closed forms (Williams 1997) ---------------------------------------------


def _erf_length(q, sigma_w2, sigma_b2):
    return sigma_w2 * 2 / math.pi * np.arcsin(2 * q / (1 + 2 * q)) + sigma_b2


def _erf_correlation(c, q, sigma_w2, sigma_b2):
    return (sigma_w2 * 2 / math.pi * np.arcsin(2 * q * c / (1 + 2 * q)) + sigma_b2) / q


def test_length_map_erf_closed_form():
    q = np.array([0.0, 0.1, 1.0, 5.0])
    np.testing.assert_allclose(
        length_map(ERF, q, 1.7, 0.2), _erf_length(q, 1.7, 0.2), rtol=0, atol=1e-13
    )


def test_correlation_map_erf_closed_form():
    c = np.array([-1.0, -0.5, 0.0, 0.5, 1.0 - 1e-9, 1.0])
    np.testing.assert_allclose(
        correlation_map(ERF, c, 0.8, 1.7, 0.2), _erf_correlation(c, 0.8, 1.7, 0.2), atol=1e-13
    )


def test_length_map_slope_erf_closed_form():
    # d/dq of (2/pi) arcsin(2q / (1 + 2q)) = (4/pi) / ((1 + 2q) sqrt(1 + 4q)).
    q = np.array([0.0, 0.3, 2.0])
    exact = 1.7 * 4 / math.pi / ((1 + 2 * q) * np.sqrt(1 + 4 * q))
    np.testing.assert_allclose(length_map_slope(ERF, q, 1.7), exact, rtol=1e-12)


def test_chi_1_erf_closed_form():
    # erf'(u)^2 = (4/pi) exp(-2u^2), so E = (4/pi) / sqrt(1 + 4q).
    q = np.array([0.0, 0.3, 2.0])
    np.testing.assert_allclose(chi_1(ERF, q, 1.7), 1.7 * 4 / math.pi / np.sqrt(1 + 4 * q), 1e-12)


def test_critical_sigma_w2_erf_at_zero_bias():
    # q_star = 0 at the transition, so chi_1 = sigma_w2 erf'(0)^2 = 1 gives pi / 4.
    assert critical_sigma_w2(ERF, 0.0) == pytest.approx(math.pi / 4, rel=1e-9)


def test_c_star_erf_closed_form():
    sigma_w2, sigma_b2 = 3.0, 0.1
    q = optimize.brentq(lambda x: _erf_length(x, sigma_w2, sigma_b2) - x, 1e-6, 10, xtol=1e-15)
    exact = optimize.brentq(
        lambda c: _erf_correlation(c, q, sigma_w2, sigma_b2) - c, -1 + 1e-9, 0.99, xtol=1e-15
    )
    k = 2 * q / (1 + 2 * q)
    slope = sigma_w2 * 2 / math.pi * k / (q * math.sqrt(1 - (k * exact) ** 2))
    fixed_point, chi_c, xi_c = correlation_depth_scale(ERF, q, sigma_w2, sigma_b2)
    assert float(fixed_point) == pytest.approx(exact, abs=1e-10)
    assert float(chi_c) == pytest.approx(slope, rel=1e-9)
    assert float(xi_c) == pytest.approx(-1 / math.log(slope), rel=1e-8)


# --- the Gaussian unit exp(-x^2 / 2): closed forms ------------------------------------------


def test_gaussian_moments_closed_form():
    # E[exp(-k u^2 / 2) u^(2j)] with u^2 = q z^2 reduces to (2j - 1)!! q^j (1 + k q)^(-j - 1/2).
    q = np.array([0.0, 0.4, 3.0])
    a = 1 + 2 * q
    np.testing.assert_allclose(length_map(GAUSSIAN, q, 1.0), a**-0.5, atol=1e-14)
    np.testing.assert_allclose(chi_1(GAUSSIAN, q, 1.0), q * a**-1.5, atol=1e-14)
    second = 3 * q**2 * a**-2.5 - 2 * q * a**-1.5 + a**-0.5
    np.testing.assert_allclose(
        correlation_map(GAUSSIAN, 1.0, q, 1.0, derivative=2), q * second, atol=1e-13
    )
    # The length map decreases: chi_q = -sigma_w2 (1 + 2q)^(-3/2).
    np.testing.assert_allclose(length_map_slope(GAUSSIAN, q, 1.0), -(a**-1.5), atol=1e-13)


def test_critical_sigma_w2_gaussian_exact():
    # At sigma_b2 = 0 the fixed point is q = sigma_w2 / sqrt(1 + 2q) and
    # chi_1 = sigma_w2 q (1 + 2q)^(-3/2). Dividing, chi_1 = 1 gives q^2 / (1 + 2q) = 1, so
    # q_star = 1 + sqrt(2) and sigma_w2 = q sqrt(1 + 2q) = (1 + sqrt(2))^2 = 3 + 2 sqrt(2).
    curve = critical_curve(GAUSSIAN, [0.0])
    assert curve.sigma_w2[0] == pytest.approx(3 + 2 * math.sqrt(2), rel=1e-8, abs=0)
    assert curve.q_star[0] == pytest.approx(1 + math.sqrt(2), rel=1e-8, abs=0)


def test_correlation_map_gaussian_nonzero_at_zero():
    # Non-odd phi: E[phi] = (1 + q)^(-1/2) != 0, so C(0) = sigma_w2 / ((1 + q) q) at sigma_b2 = 0.
    q = float(q_star(GAUSSIAN, 2.0, 0.0))
    value = float(correlation_map(GAUSSIAN, 0.0, q, 2.0, 0.0))
    assert value == pytest.approx(2.0 / ((1 + q) * q), rel=1e-12)
    assert value > 0.3


# --- adaptive quadrature references --------------------------------------------------------


@pytest.mark.parametrize("phi", [TANH, SOFTSIGN, SIGMOID], ids=lambda phi: phi.name)
@pytest.mark.parametrize(("sigma_w2", "sigma_b2"), [(1.5, 0.05), (3.0, 0.2)])
def test_q_star_and_chi_1_match_quad(phi, sigma_w2, sigma_b2):
    # Tolerance 1e-9 relative: both sides solve to about 1e-13.
    reference_q = quad_q_star(phi, sigma_w2, sigma_b2)
    value_q = float(q_star(phi, sigma_w2, sigma_b2))
    assert value_q == pytest.approx(reference_q, rel=1e-9)
    assert float(chi_1(phi, value_q, sigma_w2)) == pytest.approx(
        quad_chi_1(phi, reference_q, sigma_w2), rel=1e-9
    )


def test_q_star_sigmoid_positive_at_zero_bias():
    # sigmoid(0) = 1/2: the length map is sigma_w2 / 4 > 0 at q = 0, so q_star > 0.
    value = float(q_star(SIGMOID, 2.0, 0.0))
    assert value > 0.1
    assert value == pytest.approx(quad_q_star(SIGMOID, 2.0, 0.0), rel=1e-10)


@pytest.mark.parametrize("phi", [TANH, SOFTSIGN], ids=lambda phi: phi.name)
def test_critical_sigma_w2_matches_quad(phi):
    # The reference brackets chi_1(sigma_w2) - 1 in sigma_w2 with q_star iterated inside.
    assert critical_sigma_w2(phi, 0.1) == pytest.approx(quad_critical_sigma_w2(phi, 0.1), rel=1e-8)


def test_c_star_tanh_is_fixed_point_by_dblquad():
    sigma_w2, sigma_b2 = 3.0, 0.05
    q = float(q_star(TANH, sigma_w2, sigma_b2))
    fixed_point = float(c_star(TANH, q, sigma_w2, sigma_b2))
    assert 0.0 < fixed_point < 1.0
    mapped = quad_correlation_map(TANH, fixed_point, q, sigma_w2, sigma_b2)
    assert mapped == pytest.approx(fixed_point, abs=1e-9)


def test_correlation_map_sigmoid_nonzero_at_zero():
    # C(0) = (sigma_w2 E[sigmoid]^2 + sigma_b2) / q_star with E[sigmoid(sqrt(q) z)] = 1/2.
    q = float(q_star(SIGMOID, 2.0, 0.0))
    value = float(correlation_map(SIGMOID, 0.0, q, 2.0, 0.0))
    mean = quad_expectation(SIGMOID.phi, q)
    assert mean == pytest.approx(0.5, abs=1e-12)
    assert value == pytest.approx(2.0 * mean**2 / q, rel=1e-10)


# --- the tanh edge of chaos ----------------------------------------------------------------


def test_critical_sigma_w2_tanh_edge_of_chaos():
    # sigma_b2 = 0: q_star = 0 and chi_1 = sigma_w2 tanh'(0)^2, so exactly 1.
    assert critical_sigma_w2(TANH, 0.0) == pytest.approx(1.0, rel=1e-9)
    # sigma_b2 = 0.05: the value usually quoted is 1.76, three significant figures, so half a
    # unit in the last place (0.005) is the tolerance. test_critical_sigma_w2_matches_quad
    # checks more digits against adaptive quadrature.
    assert critical_sigma_w2(TANH, 0.05) == pytest.approx(1.76, abs=0.005)


def test_critical_curve_vectorised_matches_scalar():
    grid = np.array([0.0, 0.01, 0.05, 0.1, 0.5])
    curve = critical_curve(TANH, grid)
    scalar = [critical_sigma_w2(TANH, value) for value in grid]
    np.testing.assert_allclose(curve.sigma_w2, scalar, rtol=1e-12)
    # chi_1 = 1 at every point of the curve.
    np.testing.assert_allclose(chi_1(TANH, curve.q_star, curve.sigma_w2), 1.0, rtol=1e-10)


def test_critical_curve_relu_he_at_zero_bias():
    # relu: chi_1 = sigma_w2 / 2 for every q, so sigma_w2 = 2 (He et al. 2015).
    assert critical_sigma_w2(RELU, 0.0) == pytest.approx(2.0, rel=1e-12)


def test_critical_curve_no_critical_point_relu_raises():
    # relu with sigma_b2 > 0: (q - sigma_b2) / 2 < q / 2 for every q, so chi_1 < 1 throughout.
    with pytest.raises(
        ValueError, match=r"relu has no critical point .* sigma_b2 = 0.1 \(sigma_w2 searched in"
    ):
        critical_curve(RELU, [0.0, 0.1])


def test_critical_curve_no_critical_point_bounded_raises():
    # A bounded unit with slope 0.01: chi_1 reaches 1 only near sigma_w2 = 1e8.
    weak = from_torch(lambda x: 1.0 + 0.01 * torch.tanh(x), "weak_tanh")
    with pytest.raises(ValueError, match=r"weak_tanh has no critical point .* sigma_b2 = 0.05"):
        critical_sigma_w2(weak, 0.05)


# --- fixed points and depth scales ---------------------------------------------------------


def test_q_star_tanh_zero_in_ordered_zero_bias():
    values = q_star(TANH, np.array([0.5, 1.0]), 0.0)
    np.testing.assert_array_equal(values, [0.0, 0.0])


def test_q_star_tanh_small_just_above_one():
    # Near q = 0: L(q) - q = (sigma_w2 - 1) q - 2 sigma_w2 q^2 + O(q^3), so q_star is about
    # (sigma_w2 - 1) / (2 sigma_w2).
    value = float(q_star(TANH, 1.001, 0.0))
    assert value == pytest.approx(0.001 / 2.002, rel=1e-2)


def test_q_star_unbounded_raises():
    with pytest.raises(ValueError, match="length map of relu has no fixed point"):
        q_star(RELU, 3.0, 0.0)


def test_q_star_rejects_negative_variance():
    with pytest.raises(ValueError, match="sigma_b2 must be finite and >= 0"):
        q_star(TANH, 1.0, -0.1)


def test_c_star_odd_zero_bias_is_zero():
    # Odd phi at sigma_b2 = 0: C(0) = 0, and c = 0 attracts in the chaotic phase.
    q = float(q_star(TANH, 3.0, 0.0))
    assert float(c_star(TANH, q, 3.0, 0.0)) == pytest.approx(0.0, abs=1e-12)


def test_c_star_ordered_is_one():
    q = float(q_star(TANH, 1.2, 0.1))
    assert float(c_star(TANH, q, 1.2, 0.1)) == 1.0


def test_depth_scale_values():
    np.testing.assert_allclose(depth_scale([0.5, -0.5, 0.0]), [1 / math.log(2)] * 2 + [0.0])
    assert np.all(np.isinf(depth_scale([1.0, 1.5])))


def test_chi_1_relu_at_zero_length_averages_kink():
    # q -> 0 limit: relu' is 0 on one side and 1 on the other, so E[relu'^2] = 1/2.
    assert float(chi_1(RELU, 0.0, 2.0)) == pytest.approx(1.0, rel=1e-12)


# --- analyse and phase diagram -------------------------------------------------------------


def test_analyse_critical_by_default():
    result = analyse(TANH, sigma_b2=0.05)
    assert result.sigma_w2 == result.sigma_w2_critical
    assert result.phase == "critical"
    assert result.chi_1 == pytest.approx(1.0, abs=1e-12)
    assert result.c_star == 1.0
    assert math.isinf(result.xi_c)
    assert math.isinf(result.trainable_depth)


def test_analyse_marginal_at_zero_bias():
    # tanh at sigma_b2 = 0: q_star = 0 with chi_q = 1, approached like 1 / (2 l), not
    # exponentially, so xi_q is infinite like xi_c.
    result = analyse(TANH, sigma_b2=0.0)
    assert result.q_star == 0.0
    assert result.chi_q == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(result.xi_q)
    assert math.isinf(result.xi_c)


def test_analyse_chaotic_tanh():
    result = analyse(TANH, sigma_w2=3.0, sigma_b2=0.05)
    assert result.phase == "chaotic"
    assert result.q_star == pytest.approx(quad_q_star(TANH, 3.0, 0.05), rel=1e-9)
    assert 0.0 < result.c_star < 1.0
    assert result.xi_c == pytest.approx(-1 / math.log(result.chi_c), rel=1e-12)
    assert result.trainable_depth == pytest.approx(6 * result.xi_c, rel=1e-12)
    # Smooth phi: Gaussian integration by parts gives chi_q = chi_1 + sigma_w2 E[phi phi''].
    extra = 3.0 * quad_expectation(lambda u: TANH.phi(u) * TANH.d2phi(u), result.q_star)
    assert result.chi_q == pytest.approx(result.chi_1 + extra, rel=1e-9)


def test_analyse_without_critical_point_keeps_given_sigma_w2():
    result = analyse(RELU, sigma_w2=1.5, sigma_b2=0.1)
    assert result.sigma_w2_critical is None
    assert result.phase == "ordered"


def test_analyse_without_critical_point_raises_when_none_given():
    with pytest.raises(ValueError, match="relu has no critical point"):
        analyse(RELU, sigma_b2=0.1)


def test_phase_diagram_matches_analyse():
    # The diagram runs at order 24; 1e-4 relative covers its quadrature error at q_star < 3.
    sigma_w2, sigma_b2 = np.array([1.2, 3.0]), np.array([0.0, 0.1])
    diagram = phase_diagram(TANH, sigma_w2, sigma_b2)
    for row, bias in enumerate(sigma_b2):
        for column, weight in enumerate(sigma_w2):
            expected = analyse(TANH, weight, bias)
            assert diagram.q_star[row, column] == pytest.approx(expected.q_star, rel=1e-4)
            assert diagram.xi_c[row, column] == pytest.approx(expected.xi_c, rel=1e-4)


# --- theory against a measured network ------------------------------------------------------


def _measured_lengths(sigma_w2, sigma_b2, q_input, width=1024, depth=50, batch=64, seed=0):
    """Return the mean squared pre-activation per layer of a random tanh network at init."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 256, generator=generator)
    activations = inputs / inputs.norm(dim=1, keepdim=True) * math.sqrt(q_input * 256)
    lengths = []
    for _ in range(depth):
        fan_in = activations.shape[1]
        weight = torch.randn(fan_in, width, generator=generator) * math.sqrt(sigma_w2 / fan_in)
        bias = torch.randn(width, generator=generator) * math.sqrt(sigma_b2)
        preactivation = activations @ weight + bias
        lengths.append(preactivation.pow(2).mean().item())
        activations = torch.tanh(preactivation)
    return np.array(lengths)


def test_iterate_length_map_matches_wide_network():
    # Width 1024, depth 50, starting above q_star so the transient is visible. Finite width
    # makes each layer's mean square fluctuate by about 1%: the relative std sqrt(2 / width)
    # shrinks by averaging over 64 inputs, which decorrelate (c_star = 0.08 here). Over 50
    # layers the largest deviation reaches about 3% (6 seeds tried), hence 4% per layer and
    # 1.5% on average.
    sigma_w2, sigma_b2, q_input = 3.0, 0.01, 3.0
    theory = iterate_length_map(TANH, sigma_w2 * q_input + sigma_b2, sigma_w2, sigma_b2, depth=50)
    deviation = np.abs(_measured_lengths(sigma_w2, sigma_b2, q_input) / theory - 1)
    assert theory[0] > 2 * theory[-1]
    assert deviation.max() < 0.04
    assert deviation.mean() < 0.015
