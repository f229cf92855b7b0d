"""Time training with and without JacobianSpectrumMonitor at its default interval.

Runs alternate (without, with, without, ...) so that load from other processes hits both
arms alike. The ratio of the fastest runs is the headline, because on a shared machine
other load only ever adds time; medians are printed beside it.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import lightning.pytorch as pl
import torch

from bench.monitors import JacobianSpectrumMonitor
from datamodules import MNIST1DDataModule
from models.module import Classifier


def _train_seconds(data: MNIST1DDataModule, monitored: bool, epochs: int) -> float:
    torch.manual_seed(0)
    model = Classifier(activation="tanh", depth=30, width=128)
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[JacobianSpectrumMonitor()] if monitored else [],
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - started


def main(repeats: int = 5, epochs: int = 20) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        data = MNIST1DDataModule(data_dir=data_dir)
        _train_seconds(data, monitored=False, epochs=1)  # warm-up: data cache and first calls
        plain, monitored = [], []
        for _ in range(repeats):
            plain.append(_train_seconds(data, monitored=False, epochs=epochs))
            monitored.append(_train_seconds(data, monitored=True, epochs=epochs))
    every = JacobianSpectrumMonitor().every_n_steps
    print(f"tanh MLP depth 30 width 128, MNIST-1D, {epochs} epochs, {repeats} runs per arm")
    print(f"{'':30s}{'fastest':>10s}{'median':>10s}")
    print(f"  {'without monitor':28s}{min(plain):9.2f}s{statistics.median(plain):9.2f}s")
    label = f"Jacobian every {every} steps"
    print(f"  {label:28s}{min(monitored):9.2f}s{statistics.median(monitored):9.2f}s")
    ratio_min = min(monitored) / min(plain)
    ratio_median = statistics.median(monitored) / statistics.median(plain)
    print(f"  {'overhead ratio':28s}{ratio_min:10.3f}{ratio_median:10.3f}")
