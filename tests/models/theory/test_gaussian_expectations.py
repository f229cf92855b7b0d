"""Gaussian expectations against scipy.integrate.quad/dblquad and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional

from models.activations import gaussian
from models.theory import (
    bivariate_expectation,
    bivariate_expectation_with_error,
    expectation,
    expectation_with_error,
    from_torch,
)
from models.theory.reference import quad_bivariate_expectation, quad_expectation

SMOOTH = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "erf": torch.erf, "gaussian": gaussian}
KINKED = {"softsign": functional.softsign, "selu": functional.selu, "relu": torch.relu}


def _moments(phi):
    return {
        "phi^2": lambda u: phi.phi(u) ** 2,
        "phi'^2": lambda u: phi.dphi(u) ** 2,
        "phi phi''": lambda u: phi.phi(u) * phi.d2phi(u),
    }


@pytest.mark.parametrize("name", SMOOTH)
@pytest.mark.parametrize("q", [0.01, 0.5, 2.0, 8.0])
def test_expectation_smooth_matches_quad(name, q):
    # Tolerance 1e-9: the requirement is 1e-8, and quad itself is set to 1e-13.
    phi = from_torch(SMOOTH[name], name)
    for label, f in _moments(phi).items():
        value = float(expectation(f, q))
        assert value == pytest.approx(quad_expectation(f, q), abs=1e-9), label


@pytest.mark.parametrize("name", KINKED)
@pytest.mark.parametrize("q", [0.1, 2.0])
def test_expectation_kinked_matches_quad(name, q):
    # The rule splits at 0, where these units kink, so they converge as fast as smooth ones.
    phi = from_torch(KINKED[name], name)
    for label, f in list(_moments(phi).items())[:2]:
        value = float(expectation(f, q))
        assert value == pytest.approx(quad_expectation(f, q), abs=1e-9), label


def test_expectation_beats_gauss_hermite():
    # E[softsign'(sqrt(0.5) z)^2]: a kink at 0 that Gauss-Hermite cannot resolve.
    phi = from_torch(functional.softsign, "softsign")
    q = 0.5
    reference = quad_expectation(lambda u: phi.dphi(u) ** 2, q)
    nodes, weights = np.polynomial.hermite_e.hermegauss(128)
    hermite = float(np.sum(weights * phi.dphi(math.sqrt(q) * nodes) ** 2) / math.sqrt(2 * math.pi))
    split = float(expectation(lambda u: phi.dphi(u) ** 2, q, order=64))
    assert abs(hermite - reference) > 1e-3
    assert abs(split - reference) < 1e-12


def test_expectation_error_estimate_tracks_error():
    # A low order at large q, where the error is far above rounding: the estimate (difference
    # to twice the order) should match the true error within a factor of 2.
    phi = from_torch(torch.tanh, "tanh")
    f = lambda u: phi.dphi(u) ** 2  # noqa: E731
    value, estimate = expectation_with_error(f, 60.0, order=16)
    error = abs(float(value) - quad_expectation(f, 60.0))
    assert error > 1e-8
    assert 0.5 * error <= float(estimate) <= 2.0 * error


def test_expectation_vectorised_over_q():
    q = np.array([[0.0, 0.5], [1.0, 3.0]])
    values = expectation(np.cos, q)
    # E[cos(sqrt(q) z)] = exp(-q / 2), exact characteristic function.
    np.testing.assert_allclose(values, np.exp(-q / 2), rtol=0, atol=1e-14)


def test_expectation_rejects_negative_variance():
    with pytest.raises(ValueError, match="q must be finite and >= 0"):
        expectation(np.cos, [-0.1, 1.0])


@pytest.mark.parametrize("c", [-0.6, 0.3, 0.9])
def test_bivariate_expectation_matches_dblquad(c):
    # Unequal variances and two different functions; tolerance 1e-9 (dblquad set to 1e-11).
    tanh = from_torch(torch.tanh, "tanh")
    sigmoid = from_torch(torch.sigmoid, "sigmoid")
    value = float(bivariate_expectation(tanh.phi, sigmoid.phi, 0.7, 2.0, c))
    reference = quad_bivariate_expectation(tanh.phi, sigmoid.phi, 0.7, 2.0, c)
    assert value == pytest.approx(reference, abs=1e-9)


NEAR_ONE = [-1.0, -1.0 + 1e-12, -0.999999, -0.5, 0.0, 0.3, 0.999999, 1.0 - 1e-12, 1.0]


@pytest.mark.parametrize("c", NEAR_ONE)
def test_bivariate_expectation_erf_closed_form(c):
    # Williams 1997: E[erf(u1) erf(u2)] = (2/pi) arcsin(2 q12 / sqrt((1 + 2 q1)(1 + 2 q2))).
    phi = from_torch(torch.erf, "erf")
    q1, q2 = 0.7, 2.0
    q12 = c * math.sqrt(q1 * q2)
    exact = 2 / math.pi * math.asin(2 * q12 / math.sqrt((1 + 2 * q1) * (1 + 2 * q2)))
    assert float(bivariate_expectation(phi.phi, phi.phi, q1, q2, c)) == pytest.approx(
        exact, abs=1e-13
    )


@pytest.mark.parametrize("c", NEAR_ONE)
def test_bivariate_expectation_gaussian_closed_form(c):
    # E[exp(-(u1^2 + u2^2) / 2)] = det(I + Sigma)^(-1/2) for u ~ N(0, Sigma).
    phi = from_torch(gaussian, "gaussian")
    q1, q2 = 0.7, 2.0
    q12 = c * math.sqrt(q1 * q2)
    exact = ((1 + q1) * (1 + q2) - q12 * q12) ** -0.5
    assert float(bivariate_expectation(phi.phi, phi.phi, q1, q2, c)) == pytest.approx(
        exact, abs=1e-13
    )


@pytest.mark.parametrize("c", NEAR_ONE)
def test_bivariate_expectation_relu_arc_cosine(c):
    # Cho & Saul 2009 arc-cosine kernel of degree 1:
    # E[relu(u1) relu(u2)] = sqrt(q1 q2) (sin t + (pi - t) cos t) / (2 pi), t = arccos c.
    # Tolerance 1e-9: within a few 1e-6 of c = +-1 the smoothed kink of the inner integral sits
    # at the end of an outer panel and leaves an error near 1e-10.
    phi = from_torch(torch.relu, "relu")
    q1, q2 = 0.7, 2.0
    angle = math.acos(c)
    exact = math.sqrt(q1 * q2) * (math.sin(angle) + (math.pi - angle) * c) / (2 * math.pi)
    assert float(bivariate_expectation(phi.phi, phi.phi, q1, q2, c)) == pytest.approx(
        exact, abs=1e-9
    )


def test_bivariate_expectation_slope_at_one():
    # Near c = 1 the value must move smoothly: by Price's theorem the secant slope over
    # [1 - 1e-10, 1] equals q E[phi'(u)^2]. Rounding of the two values (1e-16) allows 1e-5.
    phi = from_torch(torch.tanh, "tanh")
    q, step = 2.0, 1e-10
    values = bivariate_expectation(phi.phi, phi.phi, q, q, np.array([1.0 - step, 1.0]), order=24)
    slope = q * float(expectation(lambda u: phi.dphi(u) ** 2, q, order=24))
    assert (values[1] - values[0]) / step == pytest.approx(slope, rel=1e-5)


def test_bivariate_expectation_error_estimate_small_for_smooth():
    phi = from_torch(torch.tanh, "tanh")
    _, estimate = bivariate_expectation_with_error(phi.phi, phi.phi, 1.5, 1.5, 0.4)
    assert float(estimate) < 1e-12


def test_bivariate_expectation_rejects_bad_correlation():
    with pytest.raises(ValueError, match=r"correlation c must lie in \[-1, 1\]"):
        bivariate_expectation(np.cos, np.cos, 1.0, 1.0, 1.5)
