"""Launchers: a pool of local worker processes, or a SLURM job array through submitit.

Every run is a fresh ``python -m bench fit`` process, so W&B, Lightning and torch start
clean for each run and a crash takes down one run only. The run's own recorder writes its
record. The launcher writes a ``failed`` record only for a process that exited with an
error before its recorder started, for example an error while building the run.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bench.results import (
    FINAL_STATUSES,
    RECORD_FILE,
    SCHEMA_VERSION,
    STATUS_FAILED,
    package_versions,
    read_record,
    write_json_atomic,
)
from bench.sweep.grid import Run

log = logging.getLogger(__name__)

# The launcher's own files live here, beside the run directories. read_records skips
# this folder because it contains no record.json.
SWEEP_DIR = "_sweeps"
# A run whose process was killed by a signal has no final record and runs again on the
# next invocation of the same sweep.
OUTCOME_INTERRUPTED = "interrupted"
# A run that exited normally without a final record under its planned id.
OUTCOME_UNRECORDED = "unrecorded"
POLL_INTERVAL_S = 0.5
MAX_ERROR_CHARS = 2000
_PR_SET_PDEATHSIG = 1


def fit_command(run: Run, results: Path, group: str) -> list[str]:
    """Return the command line that trains ``run`` and records it under ``results``."""
    return [
        sys.executable,
        "-m",
        "bench",
        "fit",
        *run.args,
        f"--results={results}",
        f"--group={group}",
    ]


def settle_run(run: Run, results: Path, returncode: int, output_tail: str, wall_s: float) -> str:
    """Return the outcome of a finished run process, recording a failure its recorder missed.

    Returns:
        The record's final status, or ``interrupted`` when a signal killed the process
        before its final record, or ``unrecorded`` when it exited normally without one,
        or ``failed`` (recorded now) when it exited with an error.
    """
    try:
        status = read_record(results / run.run_id)["status"]
    except FileNotFoundError:
        status = None
    if status in FINAL_STATUSES:
        return status
    if returncode < 0:
        return OUTCOME_INTERRUPTED
    if returncode == 0:
        log.warning(
            "run %s exited normally but left no final record under that id: the code that "
            "computes run ids changed after the sweep was planned, or the run used "
            "fast_dev_run; re-run the sweep to plan it again",
            run.run_id,
        )
        return OUTCOME_UNRECORDED
    lines = [line.strip() for line in output_tail.splitlines() if line.strip()]
    # The CLI reports invalid settings from an "error: " line to the end of its output;
    # otherwise the last line of a traceback names the exception.
    starts = [index for index, line in enumerate(lines) if line.startswith("error: ")]
    cause_lines = lines[starts[-1] :] if starts else lines[-1:]
    cause = " ".join(cause_lines)[:MAX_ERROR_CHARS] or "no output"
    error = f"the run process exited with code {returncode}: {cause}"
    write_failed_record(run, results, error, wall_s)
    log.warning("run %s failed: %s", run.run_id, error)
    return STATUS_FAILED


def write_failed_record(run: Run, results: Path, error: str, wall_s: float) -> None:
    """Write a ``failed`` record for a run whose process ended without writing one."""
    now = datetime.now(timezone.utc).isoformat()
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.run_id,
        "status": STATUS_FAILED,
        "params": run.params,
        "config": run.identity,
        "metrics": {},
        "signal": {"init": None, "end": None},
        "diverged_at_step": None,
        "wall_time_s": wall_s,
        "finished_at": now,
        "error": error,
        "versions": package_versions(),
    }
    write_json_atomic(results / run.run_id / RECORD_FILE, record)


# -- local pool -----------------------------------------------------------------------


def local_slots(max_parallel: int | None = None) -> list[dict[str, str]]:
    """Return one environment per parallel worker.

    With GPUs each worker gets one (``CUDA_VISIBLE_DEVICES``, round-robin when
    ``max_parallel`` exceeds the GPU count); without, the CPU cores are split evenly and
    each run's torch uses its share (``OMP_NUM_THREADS``, which sets torch's intra-op
    threads).
    """
    gpus = torch.cuda.device_count()
    cores = len(os.sched_getaffinity(0))
    workers = max_parallel or gpus or cores
    threads = str(max(1, cores // workers))
    slots = []
    for index in range(workers):
        slot = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        slot["CUDA_VISIBLE_DEVICES"] = str(index % gpus) if gpus else ""
        slots.append(slot)
    return slots


@dataclass
class _Active:
    run: Run
    process: subprocess.Popen
    log_file: IO[str]
    log_path: Path
    started: float


def run_local(
    runs: Sequence[Run],
    results: Path,
    group: str,
    slots: Sequence[dict[str, str]],
    console: Console | None = None,
) -> Counter:
    """Run ``runs`` in parallel, one per slot, with a live progress display.

    Returns the number of runs per outcome (a final status or ``interrupted``). On
    Ctrl-C the workers are killed and their runs stay unfinished, so the next invocation
    runs them again.
    """
    console = console or Console()
    log_dir = results / SWEEP_DIR / group / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    queue, active = list(runs), {}
    outcomes: Counter = Counter()
    with _results_lock(results), _progress(console) as progress:
        task = progress.add_task(f"sweep {group}", total=len(runs), counts="")
        try:
            while queue or active:
                for slot in range(len(slots)):
                    if slot not in active and queue:
                        active[slot] = _start(queue.pop(0), results, group, slots[slot], log_dir)
                time.sleep(POLL_INTERVAL_S)
                for slot, item in list(active.items()):
                    if item.process.poll() is not None:
                        del active[slot]
                        outcomes[_finish(item, results)] += 1
                        progress.advance(task)
                counts = _counts_text(outcomes, len(active), len(queue))
                progress.update(task, counts=counts)
                progress.refresh()
        except KeyboardInterrupt:
            for item in active.values():
                item.process.kill()
                item.process.wait()
            console.print("interrupted: re-run the same command to finish the remaining runs")
            raise
    return outcomes


def _progress(console: Console) -> Progress:
    # Refreshed by the polling loop, not by rich's thread: a thread alive while workers
    # fork would make preexec_fn unsafe.
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counts]}"),
        console=console,
        auto_refresh=False,
    )


def _counts_text(outcomes: Counter, running: int, remaining: int) -> str:
    done = sum(outcomes[status] for status in FINAL_STATUSES if status != STATUS_FAILED)
    failed = outcomes[STATUS_FAILED] + outcomes[OUTCOME_INTERRUPTED] + outcomes[OUTCOME_UNRECORDED]
    return f"done {done}  failed {failed}  running {running}  remaining {remaining}"


def _start(run: Run, results: Path, group: str, slot: dict[str, str], log_dir: Path) -> _Active:
    log_path = log_dir / f"{run.run_id}.log"
    log_file = log_path.open("w")
    parent = os.getpid()
    process = subprocess.Popen(
        fit_command(run, results, group),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=os.environ | slot,
        # A new session keeps Ctrl-C in the terminal from reaching the runs (the launcher
        # kills them itself), and the parent-death signal ends them if the launcher dies.
        start_new_session=True,
        preexec_fn=lambda: _die_with_parent(parent),
    )
    log.info("started %s (pid %d), output in %s", run.run_id, process.pid, log_path)
    return _Active(run, process, log_file, log_path, time.perf_counter())


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when the launcher dies (runs in the child)."""
    # NOTE: Linux only; elsewhere runs outlive a killed launcher and finish on their own.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The launcher may have died before prctl took effect.
    if os.getppid() != parent:
        os._exit(1)


def _finish(item: _Active, results: Path) -> str:
    item.log_file.close()
    wall_s = time.perf_counter() - item.started
    tail = item.log_path.read_text()[-4000:]
    outcome = settle_run(item.run, results, item.process.returncode, tail, wall_s)
    log.info("finished %s: %s after %.1f s", item.run.run_id, outcome, wall_s)
    return outcome


@contextlib.contextmanager
def _results_lock(results: Path) -> Iterator[None]:
    """Hold an exclusive lock on the results folder for one local sweep at a time.

    The kernel drops the lock when the launcher dies, so a killed sweep leaves none.
    """
    path = results / SWEEP_DIR / "local.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"another local sweep is running on {results} (lock {path}); wait for it "
                "or give this sweep another --results folder"
            ) from None
        yield


# -- SLURM through submitit -----------------------------------------------------------


def execute_run(run: Run, results: str, group: str) -> str:
    """Train one run in a fresh process and return its outcome; one SLURM array task.

    The run's output goes to the job's standard output, which submitit keeps in its log
    folder.
    """
    env = dict(os.environ)
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus:
        env |= {"OMP_NUM_THREADS": cpus, "MKL_NUM_THREADS": cpus}
    started = time.perf_counter()
    completed = subprocess.run(
        fit_command(run, Path(results), group),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sys.stdout.write(completed.stdout)
    wall_s = time.perf_counter() - started
    return settle_run(run, Path(results), completed.returncode, completed.stdout[-4000:], wall_s)


def launch_slurm(
    runs: Sequence[Run],
    results: Path,
    group: str,
    parameters: dict[str, Any],
    max_parallel: int | None = None,
    executor: Any = None,
) -> list[Any]:
    """Submit ``runs`` as one job array and return submitit's jobs without waiting.

    Args:
        runs: the runs to submit.
        results: shared results folder every job writes its run directory into.
        group: the sweep's name (W&B group).
        parameters: submitit parameters from the grid's ``slurm`` section, such as
            ``timeout_min``, ``gpus_per_node``, ``cpus_per_task``, ``slurm_partition``.
        max_parallel: array tasks running at once (``slurm_array_parallelism``).
        executor: a configured submitit executor; default a SLURM ``AutoExecutor``.

    Raises:
        ValueError: no executor was given and SLURM's ``sbatch`` is not on PATH.
    """
    import submitit

    if executor is None:
        if shutil.which("sbatch") is None:
            raise ValueError(
                "--launcher slurm needs SLURM's sbatch on PATH; run the sweep on a login node "
                "of the cluster, or use --launcher local"
            )
        executor = submitit.AutoExecutor(folder=results / SWEEP_DIR / group / "submitit")
        limits = {"slurm_array_parallelism": max_parallel} if max_parallel else {}
        executor.update_parameters(name=f"sweep-{group}", **parameters, **limits)
    count = len(runs)
    return executor.map_array(execute_run, list(runs), [str(results)] * count, [group] * count)
