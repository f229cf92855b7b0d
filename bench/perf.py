"""``python -m bench perf [NAME ...]``: benchmarks that print ratios measured side by side."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "monitor": "bench.benchmarks.monitor_overhead",
    "theory": "bench.benchmarks.theory_speed",
    "transform": "bench.benchmarks.transform_solve",
    "jacobian": "bench.benchmarks.jacobian_monitor",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench perf", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        print(f"== {name}")
        importlib.import_module(BENCHMARKS[name]).main()
    return 0
