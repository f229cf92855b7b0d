"""Time training with and without a monitoring callback, side by side in one run.

Runs alternate (without, with, without, ...) so that load from other processes hits both
arms alike. The ratio of the fastest runs is the headline, because on a shared machine
other load only ever adds time; medians are printed beside it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable

import lightning.pytorch as pl
import torch

from datamodules import MNIST1DDataModule
from models.module import Classifier


def _train_seconds(
    data: MNIST1DDataModule, callbacks: list[pl.Callback], depth: int, epochs: int
) -> float:
    torch.manual_seed(0)
    model = Classifier(activation="tanh", depth=depth, width=128)
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=callbacks,
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - started


def compare(
    make_callback: Callable[[], pl.Callback], label: str, depth: int, repeats: int, epochs: int
) -> None:
    """Print the training time of a tanh MLP with and without ``make_callback()``.

    Args:
        make_callback: builds a fresh callback for each monitored run.
        label: row name of the monitored arm, such as ``monitor every 25 steps``.
        depth: number of weight layers of the width-128 network.
        repeats: runs per arm.
        epochs: MNIST-1D epochs per run.
    """
    with tempfile.TemporaryDirectory() as data_dir:
        data = MNIST1DDataModule(data_dir=data_dir)
        _train_seconds(data, [], depth, epochs=1)  # warm-up: data cache and first calls
        plain, monitored = [], []
        for _ in range(repeats):
            plain.append(_train_seconds(data, [], depth, epochs))
            monitored.append(_train_seconds(data, [make_callback()], depth, epochs))
    print(f"tanh MLP depth {depth} width 128, MNIST-1D, {epochs} epochs, {repeats} runs per arm")
    print(f"{'':30s}{'fastest':>10s}{'median':>10s}")
    print(f"  {'without monitor':28s}{min(plain):9.2f}s{statistics.median(plain):9.2f}s")
    print(f"  {label:28s}{min(monitored):9.2f}s{statistics.median(monitored):9.2f}s")
    ratio_min = min(monitored) / min(plain)
    ratio_median = statistics.median(monitored) / statistics.median(plain)
    print(f"  {'overhead ratio':28s}{ratio_min:10.3f}{ratio_median:10.3f}")
