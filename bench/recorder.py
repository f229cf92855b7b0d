"""The callback that writes a run's directory: record, config, per-layer series, summary."""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import shutil
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import wandb
from jsonargparse import Namespace
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table
from typing_extensions import override

from bench.monitors import GradientFlowMonitor, JacobianSpectrumMonitor, SignalSnapshot
from bench.results import (
    CONFIG_FILE,
    RECORD_FILE,
    SCHEMA_VERSION,
    SERIES_FILE,
    STATUS_COMPLETED,
    STATUS_DIVERGED,
    STATUS_FAILED,
    STATUS_RUNNING,
    package_versions,
    write_json_atomic,
    write_series,
)

log = logging.getLogger(__name__)

# Trainer settings that change what a run computes; the rest (logging, progress bar,
# checkpoint folders) do not enter the run id.
_TRAINER_IDENTITY_KEYS = (
    "max_epochs",
    "min_epochs",
    "max_steps",
    "min_steps",
    "limit_train_batches",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "precision",
    "devices",
    "num_nodes",
    "fast_dev_run",
)
# Data settings that change where or how fast data loads, not which data.
_DATA_NON_IDENTITY_KEYS = ("data_dir", "num_workers")


def run_identity(config: Namespace) -> dict[str, Any]:
    """Return the part of a parsed config that decides the run's outcome.

    Constructor arguments left at their defaults are dropped, so adding an argument with a
    default (a new remedy axis) keeps the ids of earlier runs. Changing a default value
    therefore does not change ids: such a change needs a new results folder.
    """
    as_dict = config.clone().as_dict()
    data = dict(as_dict.get("data") or {})
    data_args = _without_defaults(data.get("class_path"), data.get("init_args") or {})
    data["init_args"] = {
        key: value for key, value in data_args.items() if key not in _DATA_NON_IDENTITY_KEYS
    }
    optimizer = dict(as_dict.get("optimizer") or {})
    if optimizer:
        optimizer["init_args"] = _without_defaults(
            optimizer.get("class_path"), optimizer.get("init_args") or {}
        )
    trainer = as_dict.get("trainer") or {}
    return {
        "remedy": as_dict.get("remedy"),
        "model": _without_defaults("models.module.Classifier", as_dict.get("model") or {}),
        "data": data,
        "optimizer": optimizer,
        "lr_scheduler": as_dict.get("lr_scheduler"),
        "seed": as_dict.get("seed_everything"),
        "trainer": {key: trainer.get(key) for key in _TRAINER_IDENTITY_KEYS},
    }


def _without_defaults(class_path: str | None, arguments: dict[str, Any]) -> dict[str, Any]:
    """Return ``arguments`` without the entries equal to the class's own defaults."""
    if not class_path:
        return dict(arguments)
    module_name, _, class_name = class_path.rpartition(".")
    try:
        signature = inspect.signature(getattr(importlib.import_module(module_name), class_name))
    except (ImportError, AttributeError, TypeError, ValueError):
        return dict(arguments)
    explicit = {}
    for key, value in arguments.items():
        parameter = signature.parameters.get(key)
        has_default = parameter is not None and parameter.default is not inspect.Parameter.empty
        if not has_default or _normalised(parameter.default) != _normalised(value):
            explicit[key] = value
    return explicit


def _normalised(value: Any) -> Any:
    # Configs carry tuples as lists; compare them as lists.
    return list(value) if isinstance(value, tuple) else value


class RunRecorder(pl.Callback):
    """Write the run directory: a ``running`` record at the start, the final one at the end.

    A run that raises is recorded as ``failed`` with the error; one whose loss became
    non-finite as ``diverged`` with the step. An existing directory of the same run id is
    replaced, since the same id means the same configuration and seed.
    """

    def __init__(
        self, run_dir: Path, config_yaml: str, identity: dict[str, Any], params: dict[str, Any]
    ) -> None:
        self.run_dir = Path(run_dir)
        self.config_yaml = config_yaml
        self.identity = identity
        self.params = params
        self.record: dict[str, Any] = {}
        self.fit_metrics: dict[str, float] = {}
        self._started = 0.0
        self._enabled = True

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def start(self, trainer: pl.Trainer) -> None:
        """Create the run directory and its ``running`` record; call before ``fit``.

        It runs before the trainer starts so that nothing the logger writes into the
        directory is removed with an earlier run of the same id.
        """
        self._started = time.perf_counter()
        # fast_dev_run is Lightning's smoke-test mode: it writes no logs or checkpoints,
        # and the suite writes no record either.
        self._enabled = not trainer.fast_dev_run
        if self._enabled:
            self._start_directory()

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # trainer.test() resets callback_metrics, so keep the training metrics now.
        self.fit_metrics = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.split("/")[0] in ("train", "val") and value.numel() == 1
        }

    @rank_zero_only
    def _start_directory(self) -> None:
        if self.run_dir.exists():
            log.warning("replacing the earlier run in %s", self.run_dir)
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        (self.run_dir / CONFIG_FILE).write_text(self.config_yaml)
        self.record = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "status": STATUS_RUNNING,
            "params": self.params,
            "config": self.identity,
            "started_at": datetime.now(timezone.utc).isoformat(),
            "versions": package_versions(),
        }
        write_json_atomic(self.run_dir / RECORD_FILE, self.record)

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not self._enabled or not self.record:
            return
        if isinstance(exception, KeyboardInterrupt):
            # An interrupted run is unfinished, not failed: its `running` record stays,
            # so a sweep runs it again instead of skipping it as final.
            return
        error = "".join(traceback.format_exception_only(type(exception), exception)).strip()
        self._write_final(STATUS_FAILED, trainer, pl_module, {}, error=error)

    def finish(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, test_metrics: dict[str, float]
    ) -> dict[str, Any]:
        """Write the final record, the series and the summary table after fit and test."""
        status = STATUS_DIVERGED if getattr(pl_module, "diverged", False) else STATUS_COMPLETED
        if self._enabled:
            self._write_final(status, trainer, pl_module, test_metrics)
        else:
            self.record = self._final_record(status, trainer, pl_module, test_metrics, None)
        if trainer.is_global_zero:
            print_summary(self.record, self.run_dir / RECORD_FILE if self._enabled else None)
        return self.record

    @rank_zero_only
    def _write_final(
        self,
        status: str,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        test_metrics: dict[str, float],
        error: str | None = None,
    ) -> None:
        self.record = self._final_record(status, trainer, pl_module, test_metrics, error)
        monitor = _find_monitor(trainer)
        jacobian = _find_jacobian_monitor(trainer)
        if monitor is not None or jacobian is not None:
            rows = _series_rows(monitor.series) if monitor is not None else []
            rows += _jacobian_rows(jacobian) if jacobian is not None else []
            write_series(self.run_dir / SERIES_FILE, rows)
        write_json_atomic(self.run_dir / RECORD_FILE, self.record)
        _finish_wandb(trainer, self.record, monitor.series if monitor else [])

    def _final_record(
        self,
        status: str,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        test_metrics: dict[str, float],
        error: str | None,
    ) -> dict[str, Any]:
        metrics = dict(self.fit_metrics)
        metrics.update({key: float(value) for key, value in test_metrics.items()})
        monitor = _find_monitor(trainer)
        signal = {
            "init": _snapshot_dict(monitor.init if monitor else None),
            "end": _snapshot_dict(monitor.end if monitor else None),
        }
        record = dict(self.record)
        record.update(
            status=status,
            metrics={key: value for key, value in metrics.items() if math.isfinite(value)}
            | {key: None for key, value in metrics.items() if not math.isfinite(value)},
            signal=signal,
            jacobian=_jacobian_record(_find_jacobian_monitor(trainer)),
            diverged_at_step=getattr(pl_module, "diverged_at_step", None),
            global_step=trainer.global_step,
            epochs=trainer.current_epoch,
            wall_time_s=time.perf_counter() - self._started,
            finished_at=datetime.now(timezone.utc).isoformat(),
            error=error,
        )
        return record


def _find_monitor(trainer: pl.Trainer) -> GradientFlowMonitor | None:
    for callback in trainer.callbacks:
        if isinstance(callback, GradientFlowMonitor):
            return callback
    return None


def _find_jacobian_monitor(trainer: pl.Trainer) -> JacobianSpectrumMonitor | None:
    for callback in trainer.callbacks:
        if isinstance(callback, JacobianSpectrumMonitor):
            return callback
    return None


def _jacobian_record(monitor: JacobianSpectrumMonitor | None) -> dict[str, Any] | None:
    """Return ``{"init": summary, "end": summary}`` of the Jacobian spectrum, or None."""
    if monitor is None:
        return None
    return {
        "init": monitor.init.to_dict() if monitor.init is not None else None,
        "end": monitor.end.to_dict() if monitor.end is not None else None,
    }


def _jacobian_rows(monitor: JacobianSpectrumMonitor) -> list[tuple[int, str, str, float]]:
    rows = []
    for snapshot in monitor.series:
        rows.extend((snapshot.step, key, "", value) for key, value in snapshot.metrics().items())
    return rows


def _snapshot_dict(snapshot: SignalSnapshot | None) -> dict[str, Any] | None:
    return snapshot.to_dict() if snapshot is not None else None


def _series_rows(series: list[SignalSnapshot]) -> list[tuple[int, str, str, float]]:
    rows = []
    for snapshot in series:
        rows.append((snapshot.step, "grad_ratio", "", snapshot.grad_ratio))
        for quantity in ("grad_norm", "q", "saturation"):
            for layer, value in getattr(snapshot, quantity).items():
                rows.append((snapshot.step, quantity, layer, value))
    return rows


def _finish_wandb(
    trainer: pl.Trainer, record: dict[str, Any], series: list[SignalSnapshot]
) -> None:
    """Log one multi-line chart per quantity, fill the run summary and close the W&B run.

    The per-layer scalars give one chart per layer; ``signal_charts/<quantity>`` shows every
    layer of a quantity in one chart. Closing here, not at interpreter exit, lets one
    process train several runs.
    """
    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger):
            continue
        if series:
            logger.experiment.log(_layer_charts(series))
        summary = {"status": record["status"], "run_id": record["run_id"]}
        for moment in ("init", "end"):
            snapshot = record["signal"].get(moment)
            if snapshot:
                summary[f"signal/grad_ratio_{moment}"] = snapshot["grad_ratio"]
                summary[f"signal/mean_saturation_{moment}"] = snapshot["mean_saturation"]
        logger.experiment.summary.update(summary)
        logger.experiment.finish()


def _layer_charts(series: list[SignalSnapshot]) -> dict[str, Any]:
    steps = [snapshot.step for snapshot in series]
    charts = {}
    for quantity in ("grad_norm", "q", "saturation"):
        layers = list(getattr(series[0], quantity))
        values = [[getattr(snapshot, quantity)[layer] for snapshot in series] for layer in layers]
        charts[f"signal_charts/{quantity}"] = wandb.plot.line_series(
            xs=steps, ys=values, keys=layers, title=f"signal/{quantity}", xname="step"
        )
    return charts


def print_summary(record: dict[str, Any], record_path: Path | None) -> None:
    """Print the run's headline numbers as a table (the CLI's one use of stdout)."""
    table = Table(title=f"run {record['run_id']}", show_header=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    metrics = record.get("metrics", {})
    table.add_row("status", record["status"])
    if record.get("diverged_at_step") is not None:
        table.add_row("diverged at step", str(record["diverged_at_step"]))
    table.add_row("test accuracy", _format(metrics.get("test/acc")))
    table.add_row("val accuracy", _format(metrics.get("val/acc")))
    for moment in ("init", "end"):
        snapshot = record.get("signal", {}).get(moment) or {}
        table.add_row(f"gradient ratio at {moment}", _format(snapshot.get("grad_ratio"), ".3g"))
        table.add_row(f"saturation at {moment}", _format(snapshot.get("mean_saturation")))
    table.add_row("wall time", f"{record['wall_time_s']:.1f} s")
    table.add_row("record", str(record_path) if record_path else "not written (fast_dev_run)")
    Console().print(table)


def _format(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)
