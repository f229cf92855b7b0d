"""Run records: one directory per run, written atomically, read back as a DataFrame.

Layout of a run directory ``<results>/<run_id>/``:

- ``record.json``: config, status, metrics, signal statistics at init and end, wall time,
  package versions and seed. Written through a temporary file and ``os.replace``, so a
  reader sees either the previous complete record or the new one, never a partial file.
- ``config.yaml``: the resolved LightningCLI config that reproduces the run.
- ``series.parquet``: per-layer signal statistics over training in long format
  (step, quantity, layer, value).
- ``checkpoints/`` and ``wandb/`` when enabled.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = 1
RECORD_FILE = "record.json"
SERIES_FILE = "series.parquet"
CONFIG_FILE = "config.yaml"

STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_DIVERGED = "diverged"
STATUS_FAILED = "failed"
FINAL_STATUSES = (STATUS_COMPLETED, STATUS_DIVERGED, STATUS_FAILED)

_VERSIONED_PACKAGES = ("torch", "lightning", "torchmetrics", "numpy", "mnist1d", "wandb")


def run_id(identity: Mapping[str, Any], label: str = "") -> str:
    """Return a stable run id: a readable label and a hash of the run's identity.

    Args:
        identity: everything that decides the run's outcome (model, data, optimiser,
            training length, seed), as JSON-serialisable values.
        label: readable prefix such as ``tanh-d20-w128-xavier-s0``; characters outside
            ``[A-Za-z0-9_.-]`` become ``_``.
    """
    canonical = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")
    return f"{label}-{digest}" if label else digest


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as JSON to ``path`` so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(payload, stream, indent=2, sort_keys=True, default=_json_default)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only; a shared results folder
        # needs the usual permissions.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} in a run record")


def write_series(path: Path, rows: Iterable[tuple[int, str, str, float]]) -> None:
    """Write (step, quantity, layer, value) rows as Parquet, atomically."""
    frame = pd.DataFrame(list(rows), columns=["step", "quantity", "layer", "value"])
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def read_series(run_dir: str | Path) -> pd.DataFrame:
    """Read a run's per-layer series (empty frame if the run wrote none)."""
    path = Path(run_dir) / SERIES_FILE
    if not path.exists():
        return pd.DataFrame(columns=["step", "quantity", "layer", "value"])
    return pd.read_parquet(path)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """Read one run's record.

    Raises:
        FileNotFoundError: the directory has no record.
        ValueError: the record's schema version is not one this suite reads.
    """
    path = Path(run_dir) / RECORD_FILE
    record = json.loads(path.read_text())
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: record schema version {version!r} is not supported (this suite reads "
            f"version {SCHEMA_VERSION}); re-run the run or use the suite version that wrote it"
        )
    return record


def read_records(results_dir: str | Path) -> pd.DataFrame:
    """Read every run record under ``results_dir`` into one row per run.

    Columns: ``run_id``, ``status``, the flat config keys (activation, depth, ...), the
    final metrics (``test/acc`` ...), signal headline numbers (``signal/grad_ratio_init``
    ...), ``wall_time_s`` and ``run_dir``.
    """
    rows = []
    for path in sorted(Path(results_dir).glob(f"*/{RECORD_FILE}")):
        record = read_record(path.parent)
        rows.append(flatten_record(record) | {"run_dir": str(path.parent)})
    return pd.DataFrame(rows)


def flatten_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return the one-row view of a record used by tables and sweeps."""
    row: dict[str, Any] = {"run_id": record["run_id"], "status": record["status"]}
    row.update(record.get("params", {}))
    row.update(record.get("metrics", {}))
    signal = record.get("signal", {})
    for moment in ("init", "end"):
        snapshot = signal.get(moment) or {}
        for key in ("grad_ratio", "mean_saturation"):
            if key in snapshot:
                row[f"signal/{key}_{moment}"] = snapshot[key]
    row["diverged_at_step"] = record.get("diverged_at_step")
    row["wall_time_s"] = record.get("wall_time_s")
    return row
