"""Grid files: axes of values and shared settings, expanded into runs with stable ids.

A grid file is YAML::

    name: smoke                 # W&B group and sweep folder name
    axes:                       # the runs are the Cartesian product of these lists
      activation: [tanh, sigmoid]
      remedy: [baseline, orthogonal]   # presets bench/configs/remedies/<name>.yaml
      depth: [3]
      seed: [0]
    fixed:                      # fit flags shared by every run, without the leading --
      model.width: 8
      trainer.max_epochs: 1
    slurm:                      # optional submitit parameters for --launcher slurm
      timeout_min: 30

Axis names are the short names in ``AXIS_FLAGS``, ``remedy``, ``dataset`` (a datamodule
``name`` such as ``mnist1d``) or any dotted fit flag such as ``optimizer.init_args.lr``.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError

import datamodules
from bench.cli import fit_parser, fit_run_id, flat_params
from bench.configs import GRID_DIR, remedy_path
from bench.recorder import run_identity
from models.activations import resolve
from models.networks import check_settings
from models.remedies.regularizers import Regularizer

# Short axis names and the fit flags they set.
AXIS_FLAGS = {
    "activation": "model.activation",
    "depth": "model.depth",
    "width": "model.width",
    "init": "model.init",
    "seed": "seed_everything",
    "lr": "optimizer.init_args.lr",
    "batch_size": "data.init_args.batch_size",
    "max_epochs": "trainer.max_epochs",
}
REMEDY_AXIS = "remedy"
DATASET_AXIS = "dataset"
GRID_KEYS = ("name", "description", "axes", "fixed", "slurm")
# Flags every sweep run gets; they change neither the outcome nor the run id.
QUIET_FLAGS = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")


@dataclass(frozen=True)
class Grid:
    """A parsed grid file."""

    name: str
    axes: dict[str, list[Any]]
    fixed: dict[str, Any]
    slurm: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its id and the ``python -m bench fit`` arguments that make it."""

    run_id: str
    args: tuple[str, ...]
    params: dict[str, Any]
    identity: dict[str, Any]


def grid_names() -> list[str]:
    """Return the names of the shipped grids."""
    return sorted(path.stem for path in GRID_DIR.glob("*.yaml"))


def load_grid(spec: str | Path) -> Grid:
    """Read a grid by shipped name (``smoke``) or by path to a YAML file.

    Raises:
        ValueError: no such grid, or the file is not a valid grid.
    """
    path = Path(spec)
    if not path.is_file():
        path = GRID_DIR / f"{spec}.yaml"
    if not path.is_file():
        raise ValueError(
            f"grid {str(spec)!r} not found: give a YAML file or one of the shipped grids "
            f"{', '.join(grid_names())}"
        )
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"grid {path} is not valid YAML: {error}") from error
    if not isinstance(content, Mapping):
        raise ValueError(f"grid {path}: expected a mapping with keys {', '.join(GRID_KEYS)}")
    return grid_from_dict(content, path)


def grid_from_dict(content: Mapping[str, Any], path: Path | None = None) -> Grid:
    """Check a grid's structure and names and return it as a ``Grid``.

    Raises:
        ValueError: an unknown key, an empty axis, or an unknown activation, remedy or
            dataset; the message names the value.
    """
    where = f"grid {path or content.get('name')}"
    unknown = sorted(set(content) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {GRID_KEYS}")
    name = content.get("name") or (path.stem if path else None)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(
            f"{where}: 'name' must be a non-empty string of letters, digits, '_', '.' and "
            f"'-' (it names the sweep's folder and W&B group), got {name!r}"
        )
    axes = dict(content.get("axes") or {})
    for axis, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ValueError(
                f"{where}: axis {axis!r} must be a non-empty list of values, got {values!r}"
            )
        _check_axis_name(where, axis)
    fixed = dict(content.get("fixed") or {})
    grid = Grid(name, axes, fixed, dict(content.get("slurm") or {}), path)
    _check_names(where, grid)
    return grid


def _check_axis_name(where: str, axis: str) -> None:
    if axis in AXIS_FLAGS or axis in (REMEDY_AXIS, DATASET_AXIS) or "." in axis:
        return
    known = ", ".join([*AXIS_FLAGS, REMEDY_AXIS, DATASET_AXIS])
    raise ValueError(
        f"{where}: unknown axis {axis!r}; use one of {known} or a dotted fit flag such as "
        "optimizer.init_args.momentum"
    )


def _check_names(where: str, grid: Grid) -> None:
    """Reject unknown activations, remedies and datasets before any run is parsed."""
    activations = list(grid.axes.get("activation", []))
    if "model.activation" in grid.fixed:
        activations.append(grid.fixed["model.activation"])
    for value in grid.axes.get(REMEDY_AXIS, []):
        try:
            remedy_path(str(value))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    for value in activations:
        try:
            resolve(value)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    for value in grid.axes.get(DATASET_AXIS, []):
        dataset_class_path(value, where)


def dataset_class_path(name: str, where: str = "grid") -> str:
    """Return the class path of the datamodule whose ``name`` is ``name``.

    Raises:
        ValueError: no datamodule of the suite has that name.
    """
    classes = {getattr(datamodules, attr).name: attr for attr in datamodules.__all__}
    if name not in classes:
        raise ValueError(
            f"{where}: unknown dataset {name!r}; choose one of {', '.join(sorted(classes))}"
        )
    return f"datamodules.{classes[name]}"


def run_arguments(grid: Grid, point: Mapping[str, Any]) -> list[str]:
    """Return the fit arguments (without ``fit``) of one point of the grid.

    The datamodule class comes first and the remedy preset next, so that the grid's fixed
    settings and then its axis values override what the preset sets.
    """
    args: list[str] = []
    if DATASET_AXIS in point:
        args.append(f"--data={dataset_class_path(point[DATASET_AXIS])}")
    if REMEDY_AXIS in point:
        args.append(f"--config={remedy_path(point[REMEDY_AXIS])}")
    for key, value in grid.fixed.items():
        args.append(f"--{key}={format_value(value)}")
    for axis, value in point.items():
        if axis not in (DATASET_AXIS, REMEDY_AXIS):
            args.append(f"--{AXIS_FLAGS.get(axis, axis)}={format_value(value)}")
    return [*args, *QUIET_FLAGS]


def format_value(value: Any) -> str:
    """Write a YAML value as a command-line value that jsonargparse reads back the same."""
    if isinstance(value, str):
        return value
    # JSON is YAML, and json.dumps writes True as true and None as null.
    return json.dumps(value)


# Building the parser takes seconds and parsing leaves it unchanged, so one serves all.
_fit_parser = functools.cache(fit_parser)


def expand_grid(grid: Grid) -> list[Run]:
    """Expand the grid into runs whose ids are those ``python -m bench fit`` computes.

    Every run's arguments are parsed with the fit parser and its model settings checked
    without building anything, so an invalid flag, name or size fails here, before any run
    starts. A remedy that does not suit a run's activation fails in that run, which is
    recorded as failed with the reason, and the other runs go on.

    Raises:
        ValueError: a run's arguments do not parse; the message names the run.
    """
    parser = _fit_parser()
    runs: dict[str, Run] = {}
    for values in itertools.product(*grid.axes.values()):
        point = dict(zip(grid.axes, values, strict=True))
        args = run_arguments(grid, point)
        try:
            config = parser.parse_args(args)
        except ArgumentError as error:
            raise ValueError(
                f"grid {grid.name}: the run {point} has invalid arguments: {error}; fix the "
                f"grid's 'axes' or 'fixed' settings"
            ) from None
        try:
            _check_model_settings(config.model)
        except ValueError as error:
            raise ValueError(
                f"grid {grid.name}: the run {point} has an invalid setting: {error}; fix the "
                f"grid's 'axes' or 'fixed' settings"
            ) from None
        identifier = fit_run_id(config)
        # Two points can be the same run, for example when a preset overrides an axis.
        runs.setdefault(
            identifier, Run(identifier, tuple(args), flat_params(config), run_identity(config))
        )
    return list(runs.values())


def _check_model_settings(model: Any) -> None:
    """Raise ValueError for a model setting that is invalid whatever the activation."""
    check_settings(
        model.depth,
        model.width,
        model.init,
        model.transform,
        model.residual,
        model.residual_branch,
        model.norm,
    )
    Regularizer(model.regularizer, model.regularizer_weight)
