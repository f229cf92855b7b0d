"""Time training with and without JacobianSpectrumMonitor at its default interval."""

from __future__ import annotations

from bench.benchmarks.callback_overhead import compare
from bench.monitors import JacobianSpectrumMonitor


def main(repeats: int = 5, epochs: int = 20) -> None:
    every = JacobianSpectrumMonitor().every_n_steps
    compare(JacobianSpectrumMonitor, f"Jacobian every {every} steps", 30, repeats, epochs)
