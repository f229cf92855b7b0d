"""The suite's LightningDataModules: MNIST-1D (the default) and sklearn's digits."""

from datamodules.digits import DigitsDataModule
from datamodules.mnist1d import MNIST1DDataModule

__all__ = ["DigitsDataModule", "MNIST1DDataModule"]
