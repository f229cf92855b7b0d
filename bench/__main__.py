"""Entry point: ``python -m bench {fit,validate,test,sweep,report,theory,perf} ...``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments[0] if arguments else None
    if command == "theory":
        from bench.theory import main as theory_main

        return theory_main(arguments[1:])
    if command == "sweep":
        from bench.sweep import main as sweep_main

        return sweep_main(arguments[1:])
    if command == "perf":
        from bench.perf import main as perf_main

        return perf_main(arguments[1:])
    if command == "report":
        from bench.report import main as report_main

        return report_main(arguments[1:])

    from bench.cli import BenchCLI, ConfigError

    try:
        # LightningCLI reads sys.argv itself when args is None.
        BenchCLI(args=argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
