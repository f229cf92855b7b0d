"""DDP over gloo with 2 CPU processes: the same training as 1 process, logged once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMON = [
    "--model.depth=4",
    "--model.width=32",
    "--optimizer.lr=0.1",
    "--trainer.max_epochs=15",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.num_samples=1000",
    # 200 training samples in one global batch: every step is full-batch gradient
    # descent, so the data order cannot make the two runs differ.
    "--data.init_args.max_train_samples=200",
]


def fit(results: Path, data_dir: str, env: dict[str, str], *args: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "bench",
        "fit",
        f"--results={results}",
        f"--data.data_dir={data_dir}",
        *COMMON,
        *args,
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    (record_path,) = results.glob("*/record.json")
    return json.loads(record_path.read_text())


@pytest.mark.skipif(sys.platform == "win32", reason="gloo DDP through Lightning's relaunch")
def test_ddp_two_processes_match_one(tmp_path, data_dir):
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env |= {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    single = fit(
        tmp_path / "single",
        data_dir,
        env | {"WANDB_MODE": "disabled"},
        "--data.init_args.batch_size=200",
    )
    # DDP splits each global batch of 200 into 100 per rank and averages the gradients;
    # W&B is on (offline) to check that only rank zero logs.
    results = tmp_path / "ddp"
    ddp = fit(
        results,
        data_dir,
        env | {"WANDB_MODE": "offline"},
        "--data.init_args.batch_size=100",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
    )

    assert ddp["status"] == "completed"
    assert ddp["global_step"] == single["global_step"] == 15
    # Same loss up to the order of float additions in the all-reduce: relative 1e-4.
    for key in ("train/loss", "val/loss", "test/loss"):
        assert ddp["metrics"][key] == pytest.approx(single["metrics"][key], rel=1e-4), key
    for key in ("train/acc", "val/acc", "test/acc"):
        assert ddp["metrics"][key] == pytest.approx(single["metrics"][key], abs=1e-6), key
    # The loss moved: the comparison is between trained networks.
    assert single["metrics"]["train/loss"] < 2.0

    # One record and one W&B run: rank one created no run directory of its own.
    (run_dir,) = [path for path in results.iterdir() if path.is_dir()]
    assert run_dir.name == ddp["run_id"]
    assert len(list(results.rglob("offline-run-*"))) == 1
    assert len(list(results.rglob("record.json"))) == 1
