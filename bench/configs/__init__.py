"""YAML presets: ``remedies/`` (partial fit configs, one per named remedy) and ``grids/``."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
REMEDY_DIR = CONFIG_DIR / "remedies"
GRID_DIR = CONFIG_DIR / "grids"


def remedy_names() -> list[str]:
    """Return the names of the shipped remedy presets."""
    return sorted(path.stem for path in REMEDY_DIR.glob("*.yaml"))


def remedy_path(name: str) -> Path:
    """Return the preset file of a named remedy.

    Raises:
        ValueError: no preset of that name ships with the suite.
    """
    path = REMEDY_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(
            f"unknown remedy {name!r}; choose one of {', '.join(remedy_names())} or add "
            f"{path.name} under {REMEDY_DIR}"
        )
    return path
