"""Time training with and without GradientFlowMonitor at its default interval."""

from __future__ import annotations

from bench.benchmarks.callback_overhead import compare
from bench.monitors import GradientFlowMonitor


def main(repeats: int = 5, epochs: int = 20) -> None:
    every = GradientFlowMonitor().every_n_steps
    compare(GradientFlowMonitor, f"monitor every {every} steps", 50, repeats, epochs)
