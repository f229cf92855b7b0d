"""The suite's Weights & Biases logger: online when logged in, offline otherwise.

WANDB_MODE, when set, decides as W&B documents it (``online``, ``offline``,
``disabled``). Without it the logger goes online only if an API key is configured
(WANDB_API_KEY or a netrc entry for the W&B host). Otherwise it runs offline, so a user
without an account gets no login prompt.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

PROJECT = "saturating-nets"


def has_wandb_credentials() -> bool:
    """Return whether W&B has an API key without asking the user or the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def make_wandb_logger(
    run_dir: Path, name: str, params: dict[str, Any], group: str | None = None
) -> WandbLogger:
    """Create a W&B logger whose files live in the run directory.

    Args:
        run_dir: the run's directory; W&B writes under ``run_dir/wandb``.
        name: the W&B run name (the suite's run id).
        params: flat config keys W&B dashboards group by.
        group: the W&B run group (a sweep's name), or None for no group.
    """
    offline = "WANDB_MODE" not in os.environ and not has_wandb_credentials()
    return WandbLogger(
        name=name,
        save_dir=str(run_dir),
        project=os.environ.get("WANDB_PROJECT", PROJECT),
        offline=offline,
        config=params,
        group=group,
        log_model=False,
    )
