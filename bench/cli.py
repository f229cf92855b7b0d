"""LightningCLI subclass with the suite's defaults: data, model, optimiser, monitors, records.

``python -m bench fit`` trains one configuration, measures gradient flow with
``GradientFlowMonitor``, tests the final weights, writes the run record under
``--results`` (default ``runs/``) and prints a summary table.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import torch
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, instantiate_class
from torch.optim import Optimizer
from typing_extensions import override

from bench.monitors import GradientFlowMonitor, JacobianSpectrumMonitor
from bench.recorder import RunRecorder, run_identity
from bench.results import run_id
from bench.wandb_logger import make_wandb_logger
from models.module import Classifier

log = logging.getLogger(__name__)
# The seed is part of every run's record and summary; Lightning's own line about it would
# otherwise come before any configuration error.
logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)

SHORT_USAGE = (
    "usage: python -m bench {command} [--config FILE] [--model.KEY VALUE] [--data.KEY VALUE] "
    "[--optimizer.KEY VALUE] [--trainer.KEY VALUE] ...\n"
)


class ConfigError(ValueError):
    """A configuration value was rejected while the run was being built."""


DEFAULT_DATA = {"class_path": "datamodules.MNIST1DDataModule"}
DEFAULT_OPTIMIZER = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9}}
TRAINER_DEFAULTS: dict[str, Any] = {"max_epochs": 20, "log_every_n_steps": 10}


class BenchArgumentParser(LightningArgumentParser):
    """``LightningArgumentParser`` whose usage line on an argument error is one line.

    The full usage lists every Trainer option and would push the error message off screen;
    ``--help`` still prints all of them.
    """

    def print_usage(self, file: Any = None) -> None:
        command = self.prog.split()[-1] if self.prog else "fit"
        (file or sys.stderr).write(SHORT_USAGE.format(command=command))

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        super().error(_short_error(message), ex)


class BenchCLI(LightningCLI):
    """The suite's command line: ``fit``, ``validate`` and ``test`` subcommands.

    MNIST-1D and a tanh ``Classifier`` are the defaults, and the optimiser defaults to SGD
    with momentum. ``model.input_dim`` and ``model.num_classes`` come from the datamodule.
    ``trainer.logger: null`` selects the suite's W&B logger. ``fit`` records the run and
    tests the final weights.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        self.recorder: RunRecorder | None = None
        # Vanishing gradients of saturated networks reach float32's subnormal range (below
        # 1.2e-38), where CPU arithmetic is about ten times slower. Flushing them to zero
        # loses no usable signal. The setting applies to CPU tensors only.
        torch.set_flush_denormal(True)
        super().__init__(
            Classifier,
            LightningDataModule,
            subclass_mode_data=True,
            parser_class=BenchArgumentParser,
            seed_everything_default=0,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_callback=None,
            parser_kwargs={
                "prog": "python -m bench",
                "description": "Train deep networks with saturating nonlinearities.",
            },
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--results",
            type=str,
            default="runs",
            help="folder that receives one directory per run (record, config, series)",
        )
        parser.add_argument(
            "--remedy",
            type=str,
            default="baseline",
            help="name of the remedy this run applies; a label for records, tables and W&B "
            "grouping, set by the presets under bench/configs/remedies/",
        )
        parser.add_argument(
            "--group",
            type=str | None,
            default=None,
            help="W&B group of the run, such as the name of the sweep that launched it; not "
            "part of the run id",
        )
        parser.add_lightning_class_args(GradientFlowMonitor, "monitor")
        parser.add_lightning_class_args(JacobianSpectrumMonitor, "jacobian")
        parser.link_arguments("data.input_dim", "model.input_dim", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_optimizer_args((Optimizer,))
        parser.set_defaults({"optimizer": DEFAULT_OPTIMIZER, "data": DEFAULT_DATA})

    def instantiate_classes(self) -> None:
        _check_optimizer(self._subcommand_config().optimizer)
        try:
            super().instantiate_classes()
        except ValueError as error:
            raise ConfigError(_short_error(str(error))) from error

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._subcommand_config()
        trainer_config = config.trainer
        if self.subcommand != "fit":
            if trainer_config.logger is None:
                kwargs["logger"] = False
            return super().instantiate_trainer(**kwargs)

        _check_training_length(trainer_config)
        run_dir = Path(config.results) / fit_run_id(config)
        self.recorder = RunRecorder(
            run_dir=run_dir,
            config_yaml=self._parser(self.subcommand).dump(config, skip_none=False),
            identity=run_identity(config),
            params=flat_params(config),
        )
        callbacks = list(trainer_config.callbacks or [])
        callbacks.append(self.recorder)
        if trainer_config.enable_checkpointing is not False:
            callbacks.append(
                ModelCheckpoint(
                    dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False
                )
            )
        kwargs["callbacks"] = callbacks
        if trainer_config.default_root_dir is None:
            kwargs["default_root_dir"] = str(run_dir)
        if trainer_config.logger is None:
            kwargs["logger"] = make_wandb_logger(
                run_dir, self.recorder.run_id, flat_params(config), group=config.group
            )
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        assert self.recorder is not None
        self.recorder.start(self.trainer)

    def after_fit(self) -> None:
        assert self.recorder is not None
        test_metrics: dict[str, float] = {}
        if not self.model.diverged:
            results = self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
            test_metrics = dict(results[0]) if results else {}
        self.recorder.finish(self.trainer, self.model, test_metrics)

    def _subcommand_config(self) -> Namespace:
        return self.config[self.subcommand] if self.subcommand else self.config


class _ParseOnlyCLI(BenchCLI):
    """``BenchCLI`` without subcommands that parses and builds nothing; see ``fit_parser``."""

    @override
    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # Raise instead of exiting, so a caller can report which run's arguments failed.
        return super().init_parser(**kwargs, exit_on_error=False)

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # Parse nothing now; seed_everything=False also keeps the global seed untouched.
        self.config = Namespace(seed_everything=False)

    @override
    def instantiate_classes(self) -> None:
        pass


def fit_parser() -> LightningArgumentParser:
    """Return a parser of ``python -m bench fit``'s arguments that builds nothing.

    Tools that plan runs (``python -m bench sweep``) parse each run's argument list (without
    the ``fit`` word) with it and compute ``fit_run_id`` exactly as the run will. Invalid
    arguments raise ``jsonargparse.ArgumentError`` instead of exiting.
    """
    return _ParseOnlyCLI(run=False).parser


def fit_run_id(config: Namespace) -> str:
    """Return the id of the run directory that ``fit`` writes for a parsed config."""
    model, seed = config.model, config.seed_everything
    label = f"{model.activation}-{config.remedy}-d{model.depth}-w{model.width}-s{seed}"
    return run_id(run_identity(config), label)


def _check_training_length(trainer_config: Namespace) -> None:
    """Raise ValueError for a fit that would train no step and still record a result."""
    for key in ("max_epochs", "max_steps"):
        if getattr(trainer_config, key) == 0:
            raise ValueError(
                f"trainer.{key} = 0 trains no step, and the run would be recorded as completed "
                f"untrained; pass --trainer.{key} 1 or more (-1 for max_steps means no limit)"
            )


def _check_optimizer(optimizer: Namespace | dict[str, Any] | None) -> None:
    """Raise ConfigError naming the flag when the optimiser rejects its arguments."""
    if not optimizer:
        return
    try:
        instantiate_class(([torch.zeros(1, requires_grad=True)],), optimizer)
    except (ValueError, TypeError) as error:
        class_path = optimizer.get("class_path")
        raise ConfigError(
            f"--optimizer {class_path} rejected its arguments: {error}; "
            f"change that --optimizer.KEY value ({_changed_arguments(optimizer)})"
        ) from error


def _changed_arguments(optimizer: Namespace | dict[str, Any]) -> str:
    """Return the optimiser's arguments that differ from its class defaults, as flags."""
    module_name, _, class_name = str(optimizer.get("class_path")).rpartition(".")
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(
            getattr(importlib.import_module(module_name), class_name)
        ).parameters.items()
    }
    init_args = optimizer.get("init_args") or {}
    changed = [
        f"--optimizer.{key} {value}"
        for key, value in dict(init_args).items()
        if key not in defaults or defaults[key] != value
    ]
    return ", ".join(changed) or "all at their defaults"


_UNION_REPORT = "Does not validate against any of the Union subtypes"
# Lines of jsonargparse's error reports that restate the nesting or the types tried rather
# than what was wrong with the value.
_GENERIC_LINES = (
    _UNION_REPORT,
    "Subtypes:",
    "Given value type:",
    "Expected a <class 'NoneType'>",
    "Expected a path but",
    "Expected a dot import path string",
    "Errors:",
    "Problem with given class_path",
    "Parser key",
)


def _short_error(message: str) -> str:
    """Condense jsonargparse's nested report on a rejected value to one line.

    With parser keys the line names the flag (their chain), the first specific reason and
    the value given, for example ``--optimizer.lr: Expected a <class 'float'>, got abc``.
    A union report without keys keeps only the reason. ``--data`` accepts a datamodule or
    null, so a datamodule that raises is reported once per type, and the datamodule's own
    message names the fix. Other messages are returned unchanged.
    """
    keys = re.findall(r'Parser key "([^"]+)"', message)
    if not keys and _UNION_REPORT not in message:
        return message
    reasons = [
        line.strip().removeprefix("- ")
        for line in message.splitlines()
        if line.strip()
        and not any(generic in line for generic in _GENERIC_LINES)
        and not line.strip().startswith("Given value:")
    ]
    if not reasons:
        return message
    reason = reasons[0]
    if not keys:
        return reason
    if reason.startswith("--"):
        # A nested parser (an optimiser's arguments) already condensed its own report.
        return f"--{keys[0]}.{reason.removeprefix('--')}"
    given_values = [
        value
        for value in re.findall(r"Given value: (.*)", message)
        if not value.startswith(("NestedArg(", "Namespace("))
    ]
    value = f", got {given_values[0]}" if given_values else ""
    return f"--{'.'.join(keys)}: {reason}{value}"


def flat_params(config: Namespace) -> dict[str, Any]:
    """Return the flat keys W&B dashboards and report tables group runs by."""
    optimizer = config.optimizer or {}
    optimizer_name = str(optimizer.get("class_path", "")).rsplit(".", 1)[-1]
    init_args = optimizer.get("init_args") or {}
    module_name, _, class_name = config.data.class_path.rpartition(".")
    data_class = getattr(importlib.import_module(module_name), class_name)
    return {
        "remedy": config.remedy,
        "activation": config.model.activation,
        "depth": config.model.depth,
        "width": config.model.width,
        "init": config.model.init,
        "optimizer": optimizer_name.lower(),
        "lr": init_args.get("lr"),
        "dataset": getattr(data_class, "name", data_class.__name__),
        "seed": config.seed_everything,
        "max_epochs": config.trainer.max_epochs,
    }
