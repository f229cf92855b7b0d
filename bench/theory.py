"""``python -m bench theory``: mean-field signal propagation of one nonlinearity, as a table.

Prints, over a grid of bias variances, the critical weight variance (edge of chaos, Schoenholz
et al. 2017, arXiv:1611.01232) and q_star, chi_1, xi_c and the predicted trainable depth at
either that critical point or a given sigma_w2, then the initialisation to paste into a run.
``--plot`` saves the sigma_w2-sigma_b2 phase diagram coloured by xi_c with the critical line.

A second table gives the kernel-shaping parameters for a plain network of ``--depth`` weight
layers: the DKS and TAT transforms phi_hat(x) = gamma (phi(alpha x + beta) + delta) that
``--model.transform dks|tat`` solves, with the network's C'(1) or C''(1) they reach, and the
mean and variance at which ``--model.norm agnostic_batch --model.norm_target ZETA`` keeps
each pre-activation.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from models.activations import RBF, Nonlinearity, resolve
from models.remedies.normalization import agnostic_moments
from models.remedies.transforms import NetworkShape, check_method, local_maps, solve_transform
from models.theory import (
    PhiFunctions,
    SignalPropagation,
    analyse,
    critical_curve,
    from_torch,
    phase_diagram,
)

PROG = "python -m bench theory"
DEFAULT_SIGMA_B2 = (0.0, 0.01, 0.05, 0.1, 0.5)
# The recommended initialisation uses this bias variance when the grid has a critical point
# there, else the nearest grid value that has one. A small positive sigma_b2 keeps q_star away
# from 0, where the length of the signal of an odd unit decays only slowly (chi_q = 1).
RECOMMENDED_SIGMA_B2 = 0.05
# Columns (sigma_w2) and rows (sigma_b2) of the phase diagram: a few seconds on one core.
PLOT_GRID = (48, 32)


class InputError(ValueError):
    """Invalid command-line input, reported as one line with exit code 2."""


@dataclass(frozen=True)
class Row:
    """One sigma_b2 of the table; ``result`` is None when no sigma_w2 was given and phi has no
    critical point at this sigma_b2."""

    sigma_b2: float
    critical_sigma_w2: float | None
    result: SignalPropagation | None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Mean-field signal propagation (q_star, chi_1, depth scales, edge of chaos) "
        "of a deep fully connected network with one nonlinearity.",
    )
    parser.add_argument(
        "--activation",
        default="tanh",
        help="registered nonlinearity or a user function 'package.module:function' (default: tanh)",
    )
    parser.add_argument(
        "--sigma-b2",
        type=float,
        nargs="+",
        default=list(DEFAULT_SIGMA_B2),
        metavar="V",
        help="bias variances to tabulate (default: %(default)s)",
    )
    parser.add_argument(
        "--sigma-w2",
        type=float,
        default=None,
        metavar="V",
        help="weight variance times fan-in to analyse; default: the critical value at each "
        "sigma_b2",
    )
    parser.add_argument(
        "--plot", default=None, metavar="FILE", help="save the phase diagram to FILE (PNG, PDF)"
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=50,
        help="weight layers of the plain network the shaping table is solved for "
        "(default: %(default)s, as in python -m bench fit)",
    )
    parser.add_argument(
        "--zeta",
        type=float,
        default=1.5,
        help="network C'(1) for dks and for agnostic_batch's norm_target (default: %(default)s)",
    )
    parser.add_argument(
        "--tau", type=float, default=0.3, help="network C''(1) for tat (default: %(default)s)"
    )
    parser.add_argument(
        "--order",
        type=int,
        default=64,
        help="quadrature nodes per half-line for the table (default: %(default)s)",
    )
    return parser


def _validate(arguments: argparse.Namespace) -> None:
    for value in arguments.sigma_b2:
        if not math.isfinite(value) or value < 0.0:
            raise InputError(f"--sigma-b2 values must be finite and >= 0, got {value}")
    if arguments.sigma_w2 is not None and (
        not math.isfinite(arguments.sigma_w2) or arguments.sigma_w2 <= 0.0
    ):
        raise InputError(f"--sigma-w2 must be finite and > 0, got {arguments.sigma_w2}")
    if arguments.order < 2:
        raise InputError(f"--order must be >= 2, got {arguments.order}")
    if arguments.depth < 2:
        raise InputError(
            f"--depth must be >= 2 (one hidden layer and the readout), got {arguments.depth}"
        )
    if not (math.isfinite(arguments.zeta) and arguments.zeta > 1.0):
        raise InputError(f"--zeta must be finite and > 1, got {arguments.zeta}; DKS uses 1.5")
    if not (math.isfinite(arguments.tau) and arguments.tau > 0.0):
        raise InputError(f"--tau must be finite and > 0, got {arguments.tau}; TAT uses 0.3")


def _resolve_nonlinearity(name: str) -> Nonlinearity:
    try:
        return resolve(name)
    except ValueError as error:
        raise InputError(str(error)) from error


def _critical(phi: PhiFunctions, sigma_b2: float, order: int) -> float | None:
    try:
        return float(critical_curve(phi, np.array([sigma_b2]), order).sigma_w2[0])
    except ValueError:
        return None


def _rows(phi: PhiFunctions, arguments: argparse.Namespace) -> list[Row]:
    rows = []
    for sigma_b2 in arguments.sigma_b2:
        critical = _critical(phi, sigma_b2, arguments.order)
        result = None
        if arguments.sigma_w2 is not None or critical is not None:
            try:
                result = analyse(phi, arguments.sigma_w2, sigma_b2, order=arguments.order)
            except ValueError as error:
                raise InputError(str(error)) from error
        rows.append(Row(sigma_b2, critical, result))
    return rows


def _number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "none"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"


def _table(phi: PhiFunctions, rows: list[Row], sigma_w2: float | None) -> Table:
    where = "the critical sigma_w2" if sigma_w2 is None else f"sigma_w2 = {sigma_w2:g}"
    table = Table(title=f"{phi.name}: signal propagation at {where}")
    headers = ("sigma_b2", "critical\nsigma_w2", "q_star", "chi_1", "xi_q", "xi_c")
    for header in (*headers, "trainable\ndepth"):
        table.add_column(header, justify="right")
    table.add_column("phase")
    for row in rows:
        result = row.result
        cells = [f"{row.sigma_b2:g}", _number(row.critical_sigma_w2)]
        if result is None:
            cells += ["-"] * 6
            table.caption = "-: no critical point at this sigma_b2, and no sigma_w2 was given"
        else:
            cells += [
                _number(result.q_star),
                _number(result.chi_1),
                _number(result.xi_q, 3),
                _number(result.xi_c, 3),
                _number(result.trainable_depth, 3),
                result.phase,
            ]
        table.add_row(*cells)
    return table


def _shaping_table(nonlinearity: Nonlinearity, arguments: argparse.Namespace) -> Table:
    """Return the DKS, TAT and agnostic_batch parameters for a plain network of this depth."""
    shape = NetworkShape(arguments.depth - 1)
    table = Table(
        title=f"{nonlinearity.name}: kernel shaping for a plain network of depth {arguments.depth}"
    )
    for header in ("remedy", "target", "alpha", "beta", "gamma", "delta", "network C'(1)"):
        table.add_column(header, justify="right")
    table.add_column("network C''(1)", justify="right")
    failures = []
    for method, target in (("dks", arguments.zeta), ("tat", arguments.tau)):
        try:
            check_method(method, nonlinearity)
            transform = solve_transform(method, nonlinearity.phi, shape, target)
        except ValueError as error:
            failures.append(f"{method}: {error}")
            continue
        maps = local_maps(nonlinearity.phi, transform)
        table.add_row(
            method,
            f"{target:g}",
            *(_number(value) for value in transform.as_tuple()),
            _number(shape.c_slope(maps["c_slope"])),
            _number(shape.c_curvature(maps["c_curvature"])) if method == "tat" else "-",
        )
    try:
        mean, variance = agnostic_moments(nonlinearity, 0.0, arguments.zeta, shape)
        table.caption = (
            f"agnostic_batch with norm_target {arguments.zeta:g} keeps each pre-activation at "
            f"mean {mean:.4g} and variance {variance:.4g}"
        )
    except ValueError as error:
        failures.append(str(error))
    if failures:
        table.caption = "\n".join(filter(None, [table.caption, *failures]))
    return table


def _recommendation(phi: PhiFunctions, rows: list[Row]) -> str:
    candidates = [row for row in rows if row.critical_sigma_w2 is not None]
    if not candidates:
        return (
            f"No critical initialisation for {phi.name} at these sigma_b2: chi_1 < 1 at every "
            "fixed point, so gradients vanish with depth whatever sigma_w2 is."
        )
    best = min(candidates, key=lambda row: abs(row.sigma_b2 - RECOMMENDED_SIGMA_B2))
    return (
        f"Recommended initialisation: sigma_w2 = {best.critical_sigma_w2:.4f} at sigma_b2 = "
        f"{best.sigma_b2:g} (edge of chaos). Config flags:\n"
        f"  --model.init critical --model.sigma_b2 {best.sigma_b2:g}"
    )


def _plot(phi: PhiFunctions, rows: list[Row], arguments: argparse.Namespace) -> None:
    # Agg renders without a display. Selecting it at plot time, not at import, leaves the
    # backend of a notebook that imports this module unchanged.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    criticals = [row.critical_sigma_w2 for row in rows if row.critical_sigma_w2 is not None]
    sigma_w2_max = max([4.0, *(2.0 * value for value in criticals)])
    sigma_b2_max = max([*arguments.sigma_b2, 0.1])
    sigma_w2 = np.linspace(sigma_w2_max / PLOT_GRID[0], sigma_w2_max, PLOT_GRID[0])
    sigma_b2 = np.linspace(0.0, sigma_b2_max, PLOT_GRID[1])
    diagram = phase_diagram(phi, sigma_w2, sigma_b2)

    figure, axes = plt.subplots(figsize=(6.4, 4.8), layout="constrained")
    xi_c = np.clip(diagram.xi_c, 1e-1, 1e3)
    mesh = axes.pcolormesh(sigma_w2, sigma_b2, xi_c, norm=LogNorm(1e-1, 1e3), shading="nearest")
    figure.colorbar(mesh, ax=axes, label=r"$\xi_c$ (layers)")
    line_b2 = np.linspace(0.0, sigma_b2_max, 50)
    curve = _critical_line(phi, line_b2)
    if curve is not None:
        axes.plot(curve[0], curve[1], "w--", label=r"critical line $\chi_1 = 1$")
        axes.legend(loc="upper left")
    axes.set_xlim(0.0, sigma_w2_max)
    axes.set_ylim(0.0, sigma_b2_max)
    axes.set_xlabel(r"$\sigma_w^2$")
    axes.set_ylabel(r"$\sigma_b^2$")
    axes.set_title(f"{phi.name}: correlation depth scale")
    figure.savefig(arguments.plot, dpi=150)
    plt.close(figure)


def _critical_line(phi: PhiFunctions, sigma_b2: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Return (sigma_w2, sigma_b2) along the critical line, dropping points without one."""
    points = [(value, _critical(phi, value, order=24)) for value in sigma_b2]
    critical_points = [(weight, bias) for bias, weight in points if weight is not None]
    if not critical_points:
        return None
    return tuple(np.array(column) for column in zip(*critical_points, strict=True))


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m bench theory``; return 0 on success and 2 on invalid input."""
    try:
        arguments = _parser().parse_args(argv)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    console = Console()
    try:
        _validate(arguments)
        nonlinearity = _resolve_nonlinearity(arguments.activation)
        phi = from_torch(nonlinearity.phi, nonlinearity.name)
        rows = _rows(phi, arguments)
    except InputError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2

    console.print(_table(phi, rows, arguments.sigma_w2))
    if arguments.activation == RBF:
        console.print(
            "Note: rbf units apply the Gaussian to a scaled distance, not to a linear "
            "pre-activation; this table treats the Gaussian as an elementwise unit. "
            "models.theory.rbf analyses the distance layer."
        )
    console.print(_recommendation(phi, rows), markup=False, highlight=False, soft_wrap=True)
    if arguments.activation == RBF:
        console.print(
            "Kernel shaping of rbf layers depends on each layer's centres and widths, so "
            "python -m bench fit solves it when it builds the network."
        )
    else:
        console.print(_shaping_table(nonlinearity, arguments))
    if arguments.plot:
        try:
            _plot(phi, rows, arguments)
        except (OSError, ValueError) as error:
            # Matplotlib raises OSError for an unwritable path, ValueError for an unknown format.
            print(f"{PROG}: error: cannot save --plot {arguments.plot}: {error}", file=sys.stderr)
            return 2
        console.print(f"Phase diagram saved to {arguments.plot}", markup=False)
    return 0
