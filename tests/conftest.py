"""Shared test settings: W&B off unless a test turns it on, and a small MNIST-1D cache."""

from __future__ import annotations

import os

import pytest

# Tests that need a real W&B run set WANDB_MODE=offline themselves.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MNIST-1D cache folder for the whole session, so data is generated once."""
    return str(tmp_path_factory.mktemp("data"))
