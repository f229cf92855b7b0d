"""Fixtures shared by the tests that drive ``python -m bench`` in-process."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    """LightningCLI warns when sys.argv carries pytest's own arguments beside ``args``."""
    monkeypatch.setattr(sys, "argv", ["bench"])
