"""Gaussian RBF layers: derived moments and maps against Monte Carlo and their own equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize

from models.theory import rbf_analyse, rbf_critical_s2
from models.theory.rbf import (
    rbf_c_star,
    rbf_chi_1,
    rbf_correlation_map,
    rbf_cross_moment,
    rbf_length_map,
    rbf_length_map_slope,
    rbf_moments,
    rbf_q_star,
)


def _inputs(d, q1, q2, q12, generator):
    """Return x, x' in R^d with |x|^2 = d q1, |x'|^2 = d q2 and x.x' = d q12."""
    basis, _ = torch.linalg.qr(torch.randn(d, 2, generator=generator, dtype=torch.float64))
    first = math.sqrt(d * q1) * basis[:, 0]
    along = d * q12 / math.sqrt(d * q1)
    across = math.sqrt(d * q2 - along**2)
    return first, along * basis[:, 0] + across * basis[:, 1]


def test_rbf_moments_match_monte_carlo():
    # 400k random centres; each estimate must lie within 5 standard errors of the formula.
    d, sigma_w2, s2 = 40, 0.5, 30.0
    q1, q2, q12 = 0.8, 1.2, 0.3
    generator = torch.Generator().manual_seed(0)
    x, x_other = _inputs(d, q1, q2, q12, generator)
    centres = torch.randn(400_000, d, generator=generator, dtype=torch.float64)
    centres *= math.sqrt(sigma_w2)
    y = torch.exp(-((x - centres) ** 2).sum(dim=1) / (2 * s2)).numpy()
    y_other = torch.exp(-((x_other - centres) ** 2).sum(dim=1) / (2 * s2)).numpy()

    mean, second = rbf_moments(q1, sigma_w2, s2, d)
    cross = rbf_cross_moment(q1, q2, q12, sigma_w2, s2, d)
    for label, samples, exact in (
        ("E[y]", y, mean),
        ("E[y^2]", y**2, second),
        ("E[y y']", y * y_other, cross),
    ):
        standard_error = samples.std() / math.sqrt(samples.size)
        assert abs(samples.mean() - float(exact)) < 5 * standard_error, label


def test_rbf_moments_scale_with_sqrt_d():
    # With s^2 = kappa d, E[y^2] tends to exp(-(sigma_w2 + q) / kappa) as d grows: the
    # outputs neither vanish nor saturate.
    kappa, sigma_w2, q = 0.8, 0.3, 1.1
    second = rbf_moments(q, sigma_w2, kappa * 1e7, 10**7)[1]
    assert float(second) == pytest.approx(math.exp(-(sigma_w2 + q) / kappa), rel=1e-6)


def test_rbf_correlation_map_from_moments():
    # C(c) is the cross moment at equal lengths divided by the second moment.
    d, sigma_w2, s2, q = 30, 0.4, 20.0, 0.7
    c = np.array([-1.0, 0.0, 0.5, 1.0])
    cross = rbf_cross_moment(q, q, c * q, sigma_w2, s2, d)
    second = rbf_moments(q, sigma_w2, s2, d)[1]
    np.testing.assert_allclose(
        rbf_correlation_map(c, q, sigma_w2, s2, d), cross / second, rtol=1e-12
    )


def test_rbf_length_map_matches_deep_stack():
    # Width 1000, 6 layers, inputs at q = 2 far from q_star = 0.48. Each layer's mean of y^2
    # over 1000 units and 16 inputs fluctuates by about 0.1% here, hence 0.5%.
    width, sigma_w2, s2, depth = 1000, 1.0, 2000.0, 6
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(16, width, generator=generator, dtype=torch.float64)
    activations = inputs / inputs.norm(dim=1, keepdim=True) * math.sqrt(2.0 * width)
    theory = [2.0]
    measured = []
    for _ in range(depth):
        centres = torch.randn(width, width, generator=generator, dtype=torch.float64)
        centres *= math.sqrt(sigma_w2)
        distance = torch.cdist(activations, centres) ** 2
        activations = torch.exp(-distance / (2 * s2))
        measured.append(activations.pow(2).mean().item())
        theory.append(float(rbf_length_map(theory[-1], sigma_w2, s2, width)))
    np.testing.assert_allclose(measured, theory[1:], rtol=0.005)
    assert theory[-1] == pytest.approx(float(rbf_q_star(sigma_w2, s2, width)), rel=0.01)


def test_rbf_q_star_is_fixed_point():
    sigma_w2, s2, d = np.array([0.1, 1.0]), np.array([10.0, 2000.0]), 100
    value = rbf_q_star(sigma_w2, s2, d)
    np.testing.assert_allclose(rbf_length_map(value, sigma_w2, s2, d), value, rtol=1e-12)
    # chi_q = -B q_star, the derivative of A exp(-B q) at the fixed point.
    step = 1e-7 * value
    numeric = (
        rbf_length_map(value + step, sigma_w2, s2, d)
        - rbf_length_map(value - step, sigma_w2, s2, d)
    ) / (2 * step)
    np.testing.assert_allclose(rbf_length_map_slope(sigma_w2, s2, d), numeric, rtol=1e-6)


def test_rbf_c_star_solves_correlation_map():
    chi = 2.5
    exact = optimize.brentq(lambda c: math.exp(-chi * (1 - c)) - c, 0.0, 0.99, xtol=1e-15)
    assert float(rbf_c_star(chi)) == pytest.approx(exact, abs=1e-12)
    assert float(rbf_c_star(0.7)) == 1.0


@pytest.mark.parametrize("d", [1, 3, 10, 100])
def test_rbf_critical_s2_gives_unit_chi(d):
    sigma_w2 = 1e-9
    widths = rbf_critical_s2(sigma_w2, d)
    assert len(widths) == (2 if d > 2 else 1)
    for s2 in widths:
        chi = rbf_chi_1(rbf_q_star(sigma_w2, s2, d), sigma_w2, s2, d)
        assert float(chi) == pytest.approx(1.0, rel=1e-10)


def test_rbf_critical_s2_none_above_peak():
    # At d = 100 the largest centre variance with a critical width is about 6e-9.
    with pytest.raises(ValueError, match=r"no critical RBF width at sigma_w2 = 0.001, d = 100"):
        rbf_critical_s2(1e-3, 100)


def test_rbf_analyse_ordered_at_order_one_outputs():
    # s^2 proportional to d keeps outputs of order 1 but gives chi_1 ~ q sigma_w2 / d.
    result = rbf_analyse(sigma_w2=1.0, s2=2000.0, d=1000)
    assert result.phase == "ordered"
    assert result.q_star == pytest.approx(float(rbf_q_star(1.0, 2000.0, 1000)))
    assert result.chi_1 < 1e-3
    assert result.s2_critical == ()
    assert result.c_curvature == pytest.approx(result.chi_1**2)


def test_rbf_rejects_bad_width():
    with pytest.raises(ValueError, match="squared width s2 must be > 0"):
        rbf_moments(1.0, 0.5, 0.0, 10)
