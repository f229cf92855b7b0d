"""Sweeps end to end: real ``python -m bench fit`` runs on MNIST-1D, launched by the sweep."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import submitit
import yaml

from bench.results import read_records
from bench.sweep import expand_grid, launch_slurm, load_grid, main, run_statuses
from bench.sweep.grid import grid_names
from bench.sweep.status import is_done

SWEEP = [sys.executable, "-m", "bench", "sweep"]


def write_grid(path: Path, data_dir: str, axes: dict, **fixed) -> Path:
    """Write a grid of tiny MNIST-1D runs that share the session's data cache."""
    settings = {
        "model.width": 8,
        "trainer.max_epochs": 1,
        "data.init_args.num_samples": 500,
        "data.init_args.data_dir": data_dir,
        **fixed,
    }
    path.write_text(yaml.safe_dump({"name": path.stem, "axes": axes, "fixed": settings}))
    return path


def records_by_id(results: Path) -> dict[str, dict]:
    return {
        path.parent.name: json.loads(path.read_text()) for path in results.glob("*/record.json")
    }


def test_sweep_smoke_grid_end_to_end(tmp_path, capsys, monkeypatch):
    # The shipped grid keeps MNIST-1D's default data folder, relative to the working
    # directory.
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "runs"
    runs = expand_grid(load_grid("smoke"))
    assert len(runs) == 4

    assert main(["smoke", f"--results={results}", "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "4 runs, 0 done, 4 to run" in listing
    for run in runs:
        assert f"to run (missing)     {run.run_id}" in listing
    assert not (results / runs[0].run_id).exists()

    assert main(["smoke", f"--results={results}", "--max-parallel=2"]) == 0
    records = records_by_id(results)
    # The sweep's planned ids are the ids `python -m bench fit` gave its run directories.
    assert set(records) == {run.run_id for run in runs}
    assert all(record["status"] == "completed" for record in records.values())
    frame = read_records(results)
    assert sorted(frame["activation"].unique()) == ["sigmoid", "tanh"]
    assert sorted(frame["remedy"].unique()) == ["baseline", "orthogonal"]
    config = (results / runs[0].run_id / "config.yaml").read_text()
    assert "group: smoke" in config
    capsys.readouterr()

    # A second invocation finds every run recorded and starts none.
    assert main(["smoke", f"--results={results}"]) == 0
    assert "4 already recorded, 0 to run" in capsys.readouterr().out
    assert records_by_id(results) == records

    assert main(["smoke", f"--results={results}", "--dry-run"]) == 0
    assert "4 runs, 4 done, 0 to run" in capsys.readouterr().out
    assert main(["smoke", f"--results={results}", "--status"]) == 0
    summary = capsys.readouterr().out
    assert "completed │    4" in summary
    assert "not finished" not in summary


def output_text(tmp_path: Path) -> str:
    return (tmp_path / "sweep.log").read_text()[-3000:]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PDEATHSIG")
def test_sweep_resumes_after_sigkill(tmp_path, data_dir):
    # Two short runs start first and two long ones follow, so there is a moment, seconds
    # long on any machine, when one run is complete while another is training.
    grid = write_grid(
        tmp_path / "resume.yaml",
        data_dir,
        {"max_epochs": [1, 150], "seed": [0, 1]},
        **{"model.depth": 3},
    )
    results = tmp_path / "runs"
    runs = expand_grid(load_grid(grid))
    command = [*SWEEP, str(grid), f"--results={results}", "--max-parallel=2"]
    output = (tmp_path / "sweep.log").open("w")
    parent = subprocess.Popen(
        command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
    )

    # Wait until one run has finished and another is training, then kill a worker and
    # the launcher.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        statuses = run_statuses(results, runs)
        if "completed" in statuses.values() and "running" in statuses.values():
            break
        if parent.poll() is not None:
            pytest.fail(f"the sweep ended before it could be killed: {output_text(tmp_path)}")
        time.sleep(0.2)
    else:
        pytest.fail(f"no run finished while another ran within 240 s: {statuses}")
    workers = _children(parent.pid)
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=30)
    time.sleep(1.0)
    # The remaining workers die with the launcher.
    assert not any(_alive(worker) for worker in workers)

    before = run_statuses(results, runs)
    finished = {run_id for run_id, status in before.items() if status == "completed"}
    assert "running" in before.values()
    # A started record is read as running, never as complete.
    frame = read_records(results)
    for run_id, status in zip(frame["run_id"], frame["status"], strict=True):
        assert status == before[run_id]
        assert is_done(status) == (run_id in finished)
    completed_before = {run_id: records_by_id(results)[run_id] for run_id in finished}

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    after = records_by_id(results)
    assert set(after) == {run.run_id for run in runs}
    assert all(record["status"] == "completed" for record in after.values())
    frame = read_records(results)
    assert len(frame) == len(runs)
    assert frame["run_id"].is_unique
    # The runs finished before the kill were not run again.
    for run_id, record in completed_before.items():
        assert after[run_id]["finished_at"] == record["finished_at"]


def test_sweep_failures_recorded_and_counted(tmp_path, data_dir, capsys, monkeypatch):
    package = tmp_path / "brokenunits"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "units.py").write_text(
        textwrap.dedent(
            """
            import torch

            def fails_on_batches(x):
                # Passes the registry's 1-D probe, then raises on the first batch.
                if x.dim() > 1:
                    raise RuntimeError("fails_on_batches called on a batch")
                return torch.tanh(x)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    grid = write_grid(
        tmp_path / "failing.yaml",
        data_dir,
        {"activation": ["tanh", "brokenunits.units:fails_on_batches"]},
        **{
            "model.depth": 10,
            "model.width": 32,
            "optimizer.init_args.lr": 1e4,
            "trainer.max_epochs": 3,
        },
    )
    results = tmp_path / "runs"
    assert main([str(grid), f"--results={results}", "--max-parallel=2"]) == 0

    frame = read_records(results).set_index("activation")
    assert len(frame) == 2
    assert frame.loc["tanh", "status"] == "diverged"
    assert frame.loc["tanh", "diverged_at_step"] is not None
    broken = frame.loc["brokenunits.units:fails_on_batches"]
    assert broken["status"] == "failed"
    error = records_by_id(results)[broken["run_id"]]["error"]
    assert "fails_on_batches called on a batch" in error
    capsys.readouterr()

    assert main([str(grid), f"--results={results}", "--status"]) == 0
    summary = capsys.readouterr().out
    assert "diverged  │    1" in summary
    assert "failed    │    1" in summary
    # Failed runs are final: a plain re-run starts nothing.
    assert main([str(grid), f"--results={results}"]) == 0
    assert "2 already recorded, 0 to run" in capsys.readouterr().out


def test_sweep_build_failure_recorded(tmp_path, data_dir, capsys):
    """A run that fails while being built exits before its recorder starts; the sweep
    records it."""
    # More training samples than the split contains passes parsing and fails in the
    # datamodule's constructor.
    grid = write_grid(
        tmp_path / "unbuildable.yaml",
        data_dir,
        {"data.init_args.max_train_samples": [10**6]},
    )
    results = tmp_path / "runs"
    assert main([str(grid), f"--results={results}"]) == 0

    (record,) = records_by_id(results).values()
    assert record["status"] == "failed"
    assert record["error"].startswith("the run process exited with code 2: error: ")
    assert "max_train_samples" in record["error"]
    assert record["params"]["activation"] == "tanh"
    assert read_records(results).loc[0, "status"] == "failed"
    capsys.readouterr()
    assert main([str(grid), f"--results={results}", "--status"]) == 0
    assert "failed    │    1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({"activation": ["tanh", "tanhh"]}, "unknown activation 'tanhh'"),
        ({"remedy": ["baseline", "nosuchremedy"]}, "unknown remedy 'nosuchremedy'"),
        ({"dataset": ["mnist1d", "cifar"]}, "unknown dataset 'cifar'"),
        ({"colour": ["red"]}, "unknown axis 'colour'"),
        ({"model.widht": [8]}, "widht"),
        ({"depth": []}, "axis 'depth' must be a non-empty list"),
        ({"depth": [3, 0]}, "the run {'depth': 0} has an invalid setting: depth must be"),
        ({"init": ["xavier", "xavir"]}, "unknown init 'xavir'; choose one of"),
        ({"model.norm": ["batch", "group"]}, "unknown norm 'group'"),
        ({"model.regularizer": ["jacobian", "l2"]}, "regularizer must be one of"),
    ],
)
def test_sweep_rejects_invalid_grid(tmp_path, data_dir, capsys, axes, message):
    grid = write_grid(tmp_path / "bad.yaml", data_dir, axes)
    results = tmp_path / "runs"
    assert main([str(grid), f"--results={results}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert not results.exists()


def test_sweep_unreadable_grid_yaml(tmp_path, capsys):
    grid = tmp_path / "broken.yaml"
    grid.write_text("axes: [1, 2")
    assert main([str(grid)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: grid {grid} is not valid YAML")
    assert "Traceback" not in err


def test_sweep_unknown_grid_name(capsys):
    assert main(["nosuchgrid"]) == 2
    err = capsys.readouterr().err
    assert "grid 'nosuchgrid' not found" in err
    assert "smoke" in err


def test_sweep_unknown_schema_rejected(tmp_path, data_dir, capsys):
    grid = write_grid(tmp_path / "schema.yaml", data_dir, {"seed": [0]})
    results = tmp_path / "runs"
    (run,) = expand_grid(load_grid(grid))
    (results / run.run_id).mkdir(parents=True)
    record = {"schema_version": 99, "run_id": run.run_id, "status": "completed"}
    (results / run.run_id / "record.json").write_text(json.dumps(record))

    with pytest.raises(ValueError, match="record schema version 99 is not supported"):
        read_records(results)
    assert main([str(grid), f"--results={results}", "--status"]) == 2
    assert "record schema version 99 is not supported" in capsys.readouterr().err


def test_sweep_submitit_job_array(tmp_path, data_dir):
    grid = write_grid(tmp_path / "array.yaml", data_dir, {"activation": ["tanh", "erf"]})
    results = tmp_path / "runs"
    runs = expand_grid(load_grid(grid))
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=10)

    jobs = launch_slurm(runs, results, "array", {}, executor=executor)
    assert len(jobs) == 2
    assert [job.result() for job in jobs] == ["completed", "completed"]
    assert set(records_by_id(results)) == {run.run_id for run in runs}


@pytest.mark.parametrize("name", grid_names())
def test_shipped_grid_expands(name):
    grid = load_grid(name)
    runs = expand_grid(grid)
    expected = math.prod(len(values) for values in grid.axes.values())
    assert len(runs) == expected
    assert len({run.run_id for run in runs}) == expected
