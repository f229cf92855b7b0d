"""``python -m bench sweep GRID``: expand a grid into runs, skip the recorded ones, run the rest.

A run counts as done when its record has a final status: ``completed``, ``diverged`` or
``failed``. A ``failed`` run reruns only with ``--retry-failed``, since most failures
(an invalid setting, an error in a user function) repeat. A run whose record still has
status ``running``, because its process was killed, runs again: its directory is replaced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from bench.sweep.grid import Grid, Run, expand_grid, grid_names, load_grid
from bench.sweep.launch import (
    OUTCOME_INTERRUPTED,
    OUTCOME_UNRECORDED,
    execute_run,
    launch_slurm,
    local_slots,
    run_local,
)
from bench.sweep.status import STATUS_MISSING, is_done, print_runs, print_summary, run_statuses

__all__ = [
    "STATUS_MISSING",
    "Grid",
    "Run",
    "execute_run",
    "expand_grid",
    "launch_slurm",
    "load_grid",
    "main",
    "run_local",
    "run_statuses",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench sweep", description=__doc__)
    parser.add_argument(
        "grid", help=f"a grid YAML file or a shipped grid: {', '.join(grid_names())}"
    )
    parser.add_argument("--results", default="runs", help="results folder (default: runs)")
    parser.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="local: worker processes on this machine; slurm: one submitit job array",
    )
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=None,
        help="runs at once (default: one per GPU, else one per CPU core); with slurm, the "
        "array's parallelism",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the runs and which are done")
    parser.add_argument(
        "--status", action="store_true", help="count runs per status and list unfinished ones"
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="run the runs recorded as failed again"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``sweep`` command; return 0 when every run has a final record.

    Returns 1 when some runs were interrupted and 2 for invalid input (printed as one
    ``error:`` line).
    """
    args = _parser().parse_args(argv)
    console = Console()
    try:
        if args.max_parallel is not None and args.max_parallel < 1:
            raise ValueError(f"--max-parallel must be >= 1, got {args.max_parallel}")
        grid = load_grid(args.grid)
        runs = expand_grid(grid)
        results = Path(args.results).resolve()
        statuses = run_statuses(results, runs)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.status:
        print_summary(grid.name, runs, statuses, console)
        return 0
    if args.dry_run:
        print_runs(runs, statuses, console)
        return 0

    pending = [run for run in runs if not is_done(statuses[run.run_id], args.retry_failed)]
    console.print(
        f"sweep {grid.name}: {len(runs)} runs, {len(runs) - len(pending)} already recorded, "
        f"{len(pending)} to run ({args.launcher})"
    )
    try:
        return _launch(args, grid, runs, pending, results, console)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _launch(
    args: argparse.Namespace,
    grid: Grid,
    runs: list[Run],
    pending: list[Run],
    results: Path,
    console: Console,
) -> int:
    if not pending:
        return 0
    if args.launcher == "slurm":
        jobs = launch_slurm(pending, results, grid.name, grid.slurm, args.max_parallel)
        console.print(
            f"submitted job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} tasks); "
            f"follow it with: python -m bench sweep {args.grid} --results {results} --status"
        )
        return 0
    try:
        outcomes = run_local(pending, results, grid.name, local_slots(args.max_parallel), console)
    except KeyboardInterrupt:
        return 130
    print_summary(grid.name, runs, run_statuses(results, runs), console)
    return 1 if outcomes[OUTCOME_INTERRUPTED] or outcomes[OUTCOME_UNRECORDED] else 0
