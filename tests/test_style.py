"""The repository passes ruff's lint and format checks at the configured 100 columns."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff_clean(command):
    ruff = shutil.which("ruff")
    assert ruff, "ruff is missing: install the dev extra with pip install -e '.[dev]'"
    completed = subprocess.run(
        [ruff, *command, str(ROOT)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
