"""Time the mean-field theory against the same quantities by adaptive quadrature.

For tanh, sigmoid and the Gaussian unit exp(-x^2 / 2), each path computes q_star, chi_1 and xi_c
at one chaotic point (sigma_w2 = 1.25 x the critical value at sigma_b2 = 0.05) and the critical
sigma_w2 at 20 bias variances in [0.025, 0.5]. The paths are:

* theory, autograd phi: ``models.theory`` with phi from ``from_torch``, as the suite runs it;
* theory, numpy phi: the same code with closed-form numpy phi, phi', phi'';
* quad: ``models.theory.reference`` (scipy.integrate.quad/dblquad, brentq) with numpy phi.

The ratio compares quad with the theory on the same numpy phi, so it measures the quadrature
and solvers rather than the cost of calling torch. Torch runs on one thread. Theory times are
the median of 3 runs after a warm-up; quad runs once. Nothing is asserted about the times.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy import special

from models.activations import gaussian
from models.theory import (
    PhiFunctions,
    chi_1,
    correlation_depth_scale,
    critical_curve,
    critical_sigma_w2,
    from_torch,
    q_star,
)
from models.theory.reference import (
    quad_c_star,
    quad_chi_1,
    quad_correlation_map,
    quad_critical_sigma_w2,
    quad_q_star,
)

SIGMA_B2 = 0.05
CURVE_SIGMA_B2 = np.linspace(0.025, 0.5, 20)
REPEATS = 3


def _numpy_units() -> dict[str, PhiFunctions]:
    def tanh_derivatives(x):
        t = np.tanh(x)
        return t, 1 - t**2, -2 * t * (1 - t**2)

    def sigmoid_derivatives(x):
        s = special.expit(x)
        return s, s * (1 - s), s * (1 - s) * (1 - 2 * s)

    def gaussian_derivatives(x):
        g = np.exp(-0.5 * np.square(x))
        return g, -x * g, (np.square(x) - 1) * g

    units = {}
    for name, derivatives in (
        ("tanh", tanh_derivatives),
        ("sigmoid", sigmoid_derivatives),
        ("gaussian", gaussian_derivatives),
    ):
        units[name] = PhiFunctions(
            name,
            lambda x, d=derivatives: d(x)[0],
            lambda x, d=derivatives: d(x)[1],
            lambda x, d=derivatives: d(x)[2],
        )
    return units


def _theory(phi: PhiFunctions, sigma_w2: float) -> np.ndarray:
    """Return q_star, chi_1, xi_c at (sigma_w2, SIGMA_B2) and the critical curve."""
    q = float(q_star(phi, sigma_w2, SIGMA_B2))
    xi_c = float(correlation_depth_scale(phi, q, sigma_w2, SIGMA_B2)[2])
    curve = critical_curve(phi, CURVE_SIGMA_B2).sigma_w2
    return np.array([q, float(chi_1(phi, q, sigma_w2)), xi_c, *curve])


def _quad(phi: PhiFunctions, sigma_w2: float) -> np.ndarray:
    """Return the same numbers as ``_theory`` by adaptive quadrature."""
    q = quad_q_star(phi, sigma_w2, SIGMA_B2)
    fixed_point = quad_c_star(phi, q, sigma_w2, SIGMA_B2)
    chi_c = quad_correlation_map(phi, fixed_point, q, sigma_w2, SIGMA_B2, derivative=1)
    curve = [quad_critical_sigma_w2(phi, value) for value in CURVE_SIGMA_B2]
    return np.array([q, quad_chi_1(phi, q, sigma_w2), -1 / math.log(chi_c), *curve])


def _seconds(run: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _report()
    finally:
        torch.set_num_threads(threads)


def _report() -> None:
    torch_units = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "gaussian": gaussian}
    print(
        f"q_star, chi_1, xi_c at sigma_w2 = 1.25 x critical, sigma_b2 = {SIGMA_B2}, and the "
        f"critical sigma_w2 at {CURVE_SIGMA_B2.size} sigma_b2 in "
        f"[{CURVE_SIGMA_B2[0]}, {CURVE_SIGMA_B2[-1]}]; torch on 1 thread"
    )
    header = (
        f"{'phi':<10}{'theory, autograd':>18}{'theory, numpy':>16}{'quad, numpy':>14}"
        f"{'quad / theory':>15}{'max rel. diff':>15}"
    )
    print(header)
    for name, phi in _numpy_units().items():
        autograd_phi = from_torch(torch_units[name], name)
        sigma_w2 = 1.25 * critical_sigma_w2(phi, SIGMA_B2)
        _theory(autograd_phi, sigma_w2)  # warm-up: first autograd calls and cached rules
        autograd_s, autograd = _seconds(lambda p=autograd_phi, w=sigma_w2: _theory(p, w), REPEATS)
        numpy_s, theory = _seconds(lambda p=phi, w=sigma_w2: _theory(p, w), REPEATS)
        quad_s, reference = _seconds(lambda p=phi, w=sigma_w2: _quad(p, w), 1)
        difference = max(
            np.max(np.abs(theory / reference - 1)), np.max(np.abs(autograd / reference - 1))
        )
        print(
            f"{name:<10}{autograd_s:>16.3f} s{numpy_s:>14.3f} s{quad_s:>12.2f} s"
            f"{quad_s / numpy_s:>14.0f}x{difference:>15.1e}"
        )
