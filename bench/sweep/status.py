"""Status of each run of a sweep, read from the results folder, and the tables that show it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.results import FINAL_STATUSES, STATUS_FAILED, read_record
from bench.sweep.grid import Run

# A run without a record directory; a `running` record means started and not finished
# (still training, or its process was killed).
STATUS_MISSING = "missing"


def run_statuses(results: Path, runs: Iterable[Run]) -> dict[str, str]:
    """Return each run's recorded status, or ``missing`` where it has no record.

    Raises:
        ValueError: a record was written by a schema version this suite does not read.
    """
    statuses = {}
    for run in runs:
        try:
            statuses[run.run_id] = read_record(results / run.run_id)["status"]
        except FileNotFoundError:
            statuses[run.run_id] = STATUS_MISSING
    return statuses


def is_done(status: str, retry_failed: bool = False) -> bool:
    """Return whether a sweep skips a run of this status.

    ``failed`` is final unless ``retry_failed``: an error in a run's own code or settings
    fails again on a plain re-run. ``running`` and ``missing`` always run (again).
    """
    if retry_failed and status == STATUS_FAILED:
        return False
    return status in FINAL_STATUSES


def print_runs(runs: Sequence[Run], statuses: dict[str, str], console: Console) -> None:
    """Print one line per run: whether it is done, and its id (``--dry-run``).

    The id starts with the run's activation, remedy, depth, width and seed.
    """
    done = sum(is_done(statuses[run.run_id]) for run in runs)
    console.print(f"{len(runs)} runs, {done} done, {len(runs) - done} to run")
    for run in runs:
        status = statuses[run.run_id]
        shown = f"done ({status})" if is_done(status) else f"to run ({status})"
        console.print(f"{shown:<20} {run.run_id}", highlight=False, soft_wrap=True)


def print_summary(
    name: str, runs: Sequence[Run], statuses: dict[str, str], console: Console
) -> None:
    """Print the number of runs per status and the runs that are not finished (``--status``)."""
    counts = Counter(statuses[run.run_id] for run in runs)
    table = Table(title=f"sweep {name}: {len(runs)} runs")
    table.add_column("status")
    table.add_column("runs", justify="right")
    for status in (*FINAL_STATUSES, "running", STATUS_MISSING):
        table.add_row(status, str(counts.get(status, 0)))
    console.print(table)

    unfinished = [run for run in runs if statuses[run.run_id] not in FINAL_STATUSES]
    if unfinished:
        console.print(f"not finished ({len(unfinished)}):")
        for run in unfinished:
            console.print(f"  {run.run_id}  {statuses[run.run_id]}")
