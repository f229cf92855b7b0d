"""Framework-free mean-field theory of signal propagation in deep networks.

``gaussian`` computes Gaussian expectations and ``phi`` turns a torch nonlinearity into numpy
functions. ``mean_field`` contains the length and correlation maps of fully connected layers,
``fixed_points`` solves them for q_star, c_star and the critical line, and ``analysis``
gathers the results for one operating point or a phase diagram. ``rbf`` treats Gaussian RBF
layers, and ``reference`` recomputes the main quantities by adaptive quadrature for tests and
benchmarks.
"""

from models.theory.analysis import (
    FixedPointStatistics,
    PhaseDiagram,
    SignalPropagation,
    analyse,
    phase_diagram,
)
from models.theory.fixed_points import (
    CriticalCurve,
    c_star,
    correlation_depth_scale,
    critical_curve,
    critical_sigma_w2,
    q_star,
    solve_q_star,
)
from models.theory.gaussian import (
    DEFAULT_ORDER,
    bivariate_expectation,
    bivariate_expectation_with_error,
    expectation,
    expectation_with_error,
)
from models.theory.mean_field import (
    chi_1,
    classify_phase,
    correlation_map,
    depth_scale,
    iterate_length_map,
    length_map,
    length_map_slope,
    trainable_depth,
)
from models.theory.phi import PhiFunctions, as_phi_functions, from_torch
from models.theory.rbf import RBFSignalPropagation, rbf_analyse, rbf_critical_s2

__all__ = [
    "DEFAULT_ORDER",
    "CriticalCurve",
    "FixedPointStatistics",
    "PhaseDiagram",
    "PhiFunctions",
    "RBFSignalPropagation",
    "SignalPropagation",
    "analyse",
    "as_phi_functions",
    "bivariate_expectation",
    "bivariate_expectation_with_error",
    "c_star",
    "chi_1",
    "classify_phase",
    "correlation_depth_scale",
    "correlation_map",
    "critical_curve",
    "critical_sigma_w2",
    "depth_scale",
    "expectation",
    "expectation_with_error",
    "from_torch",
    "iterate_length_map",
    "length_map",
    "length_map_slope",
    "phase_diagram",
    "q_star",
    "rbf_analyse",
    "rbf_critical_s2",
    "solve_q_star",
    "trainable_depth",
]
