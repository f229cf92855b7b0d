"""Entry point: ``python -m bench {fit,validate,test,sweep,report,theory,perf} ...``."""

from __future__ import annotations

import sys

USAGE = """usage: python -m bench COMMAND [ARGS ...]

commands:
  fit        train one configuration (LightningCLI; python -m bench fit --help)
  validate   evaluate a checkpoint on the validation split
  test       evaluate a checkpoint on the test split
  sweep      run a grid of configurations and resume it after an interruption
  report     turn a results folder into HTML pages, tables and figures
  theory     mean-field signal-propagation quantities for a nonlinearity
  perf       benchmarks that print timings measured side by side

python -m bench COMMAND --help describes each command's options."""

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments[0] if arguments else None
    if command in (None, "-h", "--help"):
        print(USAGE)
        return 0 if command else 2
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

    if command not in LIGHTNING_COMMANDS and not command.startswith("-"):
        print(f"error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2

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
