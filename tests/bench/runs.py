"""Quiet in-process ``python -m bench fit`` runs for tests that compare training outcomes."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import main


def fit_record(results: Path, data_dir: str, *args: str) -> dict:
    """Train one run without logger, checkpoints or progress bar and return its record."""
    argv = [
        "fit",
        f"--results={results}",
        f"--data.data_dir={data_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.logger=false",
        *args,
    ]
    assert main(argv) == 0
    records = sorted(results.glob("*/record.json"), key=lambda path: path.stat().st_mtime)
    return json.loads(records[-1].read_text())
