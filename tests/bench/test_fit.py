"""End-to-end runs of ``python -m bench fit`` on real MNIST-1D with real Lightning Trainers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.configs import remedy_path
from bench.results import read_records, read_series

QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def fit(results: Path, data_dir: str, *args: str) -> int:
    argv = ["fit", f"--results={results}", f"--data.data_dir={data_dir}", *QUIET, *args]
    return main(argv)


def only_record(results: Path) -> dict:
    (record_path,) = results.glob("*/record.json")
    return json.loads(record_path.read_text())


def test_fit_writes_complete_record(tmp_path, data_dir):
    results = tmp_path / "runs"
    code = fit(
        results,
        data_dir,
        "--model.depth=4",
        "--model.width=32",
        "--trainer.max_epochs=2",
        "--monitor.every_n_steps=5",
    )
    assert code == 0
    record = only_record(results)
    run_dir = results / record["run_id"]
    assert record["status"] == "completed"
    assert record["schema_version"] == 1
    assert record["params"]["activation"] == "tanh"
    assert record["params"]["depth"] == 4
    assert record["params"]["dataset"] == "mnist1d"
    assert record["params"]["optimizer"] == "sgd"
    assert record["params"]["seed"] == 0
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
    assert "val/acc" in record["metrics"]
    assert record["versions"]["torch"]
    assert record["wall_time_s"] > 0
    for moment in ("init", "end"):
        snapshot = record["signal"][moment]
        assert len(snapshot["grad_norm"]) == 4
        assert len(snapshot["q"]) == 3
        assert len(snapshot["saturation"]) == 3
    assert (run_dir / "config.yaml").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()

    series = read_series(run_dir)
    series = series[~series["quantity"].str.startswith("jacobian/")]
    steps = sorted(series["step"].unique())
    # 2 epochs of 36 batches: samples at steps 0, 5, ..., 70.
    assert steps == list(range(0, 72, 5))
    assert set(series["quantity"]) == {"grad_ratio", "grad_norm", "q", "saturation"}
    assert not any(name.startswith(".") for name in os.listdir(run_dir))

    frame = read_records(results)
    assert frame.loc[0, "run_id"] == record["run_id"]
    assert frame.loc[0, "test/acc"] == record["metrics"]["test/acc"]


def test_fit_run_id_stable_and_seed_sensitive(tmp_path, data_dir):
    results = tmp_path / "runs"
    base = ["--model.depth=2", "--model.width=8", "--trainer.max_epochs=1"]
    fit(results, data_dir, *base)
    fit(results, data_dir, *base, f"--data.data_dir={data_dir}")
    assert len(list(results.iterdir())) == 1
    fit(results, data_dir, *base, "--seed_everything=1")
    assert len(list(results.iterdir())) == 2


def test_fit_vanishing_gradient_sigmoid_vs_tanh(tmp_path, data_dir):
    """Sigmoid at depth 20 under Xavier init does not train; tanh at depth 10 does."""
    sigmoid = tmp_path / "sigmoid"
    fit(
        sigmoid,
        data_dir,
        "--model.activation=sigmoid",
        "--model.depth=20",
        "--model.width=128",
        "--trainer.max_epochs=5",
    )
    record = only_record(sigmoid)
    assert record["signal"]["init"]["grad_ratio"] < 1e-3
    assert record["signal"]["end"]["grad_ratio"] < 1e-3
    # Chance is 10%; a network that learned anything reaches over 25% within one epoch.
    assert record["metrics"]["test/acc"] < 0.15

    tanh = tmp_path / "tanh"
    fit(
        tanh,
        data_dir,
        "--model.activation=tanh",
        "--model.depth=10",
        "--model.width=128",
        "--trainer.max_epochs=20",
    )
    record = only_record(tanh)
    assert 0.1 < record["signal"]["init"]["grad_ratio"] < 10
    assert record["metrics"]["test/acc"] > 0.55


def test_fit_diverging_run_recorded(tmp_path, data_dir):
    results = tmp_path / "runs"
    code = fit(
        results, data_dir, "--optimizer.lr=1e4", "--model.depth=10", "--trainer.max_epochs=3"
    )
    assert code == 0
    record = only_record(results)
    assert record["status"] == "diverged"
    assert record["diverged_at_step"] is not None
    assert record["diverged_at_step"] < 108
    assert record["metrics"].get("test/acc") is None


def test_fit_user_activation_import_path(tmp_path, data_dir, monkeypatch):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(
        textwrap.dedent(
            """
            import torch

            def myfun(x):
                return torch.tanh(x) + 0.1 * x
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    results = tmp_path / "runs"
    code = fit(
        results,
        data_dir,
        "--model.activation=mypkg.mod:myfun",
        "--model.depth=3",
        "--model.width=16",
        "--trainer.max_epochs=1",
    )
    assert code == 0
    record = only_record(results)
    assert record["status"] == "completed"
    assert record["params"]["activation"] == "mypkg.mod:myfun"
    assert record["run_id"].startswith("mypkg.mod_myfun-baseline-d3")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.activation=tanhh"], "unknown activation 'tanhh'; choose one of sigmoid"),
        (["--model.depth=0"], "depth must be a positive integer"),
        (["--model.width=-3"], "width must be a positive integer"),
        (["--model.activation=nosuch.module:f"], "module 'nosuch.module' cannot be imported"),
        (["--trainer.max_epochs=0"], "trainer.max_epochs = 0 trains no step"),
        (["--optimizer.lr=-1"], "Invalid learning rate: -1.0; change that --optimizer.KEY value"),
        (["--optimizer.lr=-1"], "(--optimizer.lr -1.0, --optimizer.momentum 0.9)"),
    ],
)
def test_fit_bad_input_clear_error(tmp_path, data_dir, capsys, args, message):
    results = tmp_path / "runs"
    code = fit(results, data_dir, *args)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not results.exists()


def test_fit_unwritable_data_dir(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    results = tmp_path / "runs"
    code = fit(results, str(blocker / "data"))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data_dir ")
    assert err.strip().endswith("pass --data.data_dir with a writable folder")
    assert "Union" not in err
    assert not results.exists()


def test_bench_usage_lists_every_command(capsys):
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    for command in ("fit", "validate", "test", "sweep", "report", "theory", "perf"):
        assert f"\n  {command} " in usage, command
    assert main(["nosuch"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown command 'nosuch'")


def fit_in_shell(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -m bench fit`` with ``args`` in a new process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "bench", "fit", *args, f"--results={tmp_path}/runs"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fit_misspelt_option_short_usage(tmp_path):
    completed = fit_in_shell(tmp_path, "--model.detph=3")
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert lines[0].startswith("usage: python -m bench fit [--config FILE]")
    assert lines[1] == "tip: For details of accepted options run: python -m bench fit --help"
    assert lines[2] == "error: unrecognized arguments: --model.detph=3"
    assert len(lines) == 3


def test_fit_record_readable_by_group(tmp_path, data_dir):
    results = tmp_path / "runs"
    fit(results, data_dir, "--model.depth=2", "--model.width=8", "--trainer.max_epochs=1")
    (record_path,) = results.glob("*/record.json")
    assert record_path.stat().st_mode & 0o777 == 0o644


def test_fit_bad_input_exit_code_from_shell(tmp_path):
    completed = fit_in_shell(tmp_path, "--model.depth=0")
    assert completed.returncode == 2
    (line,) = completed.stderr.strip().splitlines()
    assert line.startswith("error: depth must be a positive integer")
    assert line.endswith("got 0")


def test_fit_print_config_reproduces_run(tmp_path, data_dir, capsys):
    args = [
        "--model.depth=3",
        "--model.width=16",
        "--trainer.max_epochs=2",
        "--seed_everything=7",
        "--model.activation=erf",
    ]
    direct = tmp_path / "direct"
    fit(direct, data_dir, *args)
    capsys.readouterr()

    with pytest.raises(SystemExit) as printed:
        main(["fit", f"--data.data_dir={data_dir}", *args, "--print_config"])
    assert printed.value.code == 0
    config = tmp_path / "c.yaml"
    config.write_text(capsys.readouterr().out)
    replay = tmp_path / "replay"
    assert main(["fit", f"--config={config}", f"--results={replay}", *QUIET]) == 0

    first, second = only_record(direct), only_record(replay)
    assert first["run_id"] == second["run_id"]
    assert first["metrics"]["test/acc"] == second["metrics"]["test/acc"]
    assert first["signal"]["end"]["grad_norm"] == second["signal"]["end"]["grad_norm"]


def test_fit_wandb_offline_run(tmp_path, data_dir):
    """Without credentials the suite's W&B logger writes a real offline run.

    It runs in a fresh process because W&B keeps its settings process-wide once set up.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env |= {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    results = tmp_path / "runs"
    argv = [
        "fit",
        f"--results={results}",
        f"--data.data_dir={data_dir}",
        *QUIET,
        "--model.depth=3",
        "--model.width=8",
        "--trainer.max_epochs=1",
        "--monitor.every_n_steps=10",
    ]
    completed = subprocess.run(
        [sys.executable, "-m", "bench", *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    record = only_record(results)
    (offline_run,) = (results / record["run_id"] / "wandb").glob("offline-run-*")
    (log_file,) = offline_run.glob("*.wandb")
    # The offline run log is W&B's binary record stream; config keys, metric names and
    # string values appear in it verbatim.
    content = log_file.read_bytes()
    for key in ("activation", "depth", "width", "init", "optimizer", "dataset", "seed"):
        assert key.encode() in content, key
    for metric in ("train/loss", "test/acc", "signal/grad_norm/layer_01", "signal/grad_ratio"):
        assert metric.encode() in content, metric
    assert b'"tanh"' in content
    assert b"signal_charts/grad_norm" in content


def test_fit_jacobian_regularizer_with_monitors(tmp_path, data_dir):
    """The Jacobian penalty runs the network a second time per step; the monitor measures
    only the first pass, so the per-layer statistics keep one value per layer."""
    results = tmp_path / "runs"
    preset = remedy_path("jacobian_reg")
    code = fit(
        results,
        data_dir,
        f"--config={preset}",
        "--model.depth=4",
        "--model.width=16",
        "--trainer.max_epochs=1",
        "--monitor.every_n_steps=5",
    )
    assert code == 0
    record = only_record(results)
    assert record["status"] == "completed"
    assert len(record["signal"]["end"]["q"]) == 3


@pytest.mark.parametrize(
    ("flag", "line"),
    [
        ("--optimizer.lr=abc", "error: --optimizer.lr: Expected a <class 'float'>, got abc"),
        (
            "--optimizer=torch.optim.NoSuch",
            "error: --optimizer: module 'torch.optim' has no attribute 'NoSuch', "
            "got torch.optim.NoSuch",
        ),
    ],
)
def test_fit_rejected_value_one_line(tmp_path, flag, line):
    completed = fit_in_shell(tmp_path, flag)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert lines[-1] == line
    assert len(lines) == 3
