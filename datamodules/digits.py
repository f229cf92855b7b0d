"""scikit-learn's 8x8 handwritten digits as a LightningDataModule.

The data (1,797 images of 64 pixels with values 0-16, 10 classes) is a copy of the test
set of the UCI "Optical Recognition of Handwritten Digits" dataset that ships inside
scikit-learn, so `load_digits` reads it from the installed package and nothing is
downloaded.
"""

import numpy as np
from sklearn.datasets import load_digits
from typing_extensions import override

from datamodules._common import ArrayDataModule, check_fraction, count_split, split_sizes

NUM_SAMPLES = 1797


class DigitsDataModule(ArrayDataModule):
    """8x8 digits classification: 64 standardised pixel features, 10 classes.

    One seeded permutation splits the 1,797 images into test, validation and training
    sets (not stratified). Every pixel is standardised with the mean and standard
    deviation of the training images only. A pixel that is constant over the training
    images (some border pixels are always 0) is only centred, so it becomes 0 instead of
    NaN. The defaults give 1,294 training, 144 validation and 359 test images.

    Args:
        batch_size: Samples per batch in every loader.
        num_workers: Loader worker processes; 0 loads in the main process.
        val_fraction: Fraction of the non-test images held out for validation.
        test_fraction: Fraction of all images held out for testing.
        seed: Seed of the test/validation/training split and of the training loader's
            shuffling.
        max_train_samples: Keep only this many training images (after the test and
            validation splits are carved out), for fast tests; None keeps them all.

    Raises:
        ValueError: if an argument is out of range; the message names it.
    """

    name = "digits"
    input_dim = 64
    num_classes = 10

    def __init__(
        self,
        batch_size: int = 100,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        max_train_samples: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, val_fraction, seed, max_train_samples)
        self.save_hyperparameters()
        check_fraction("test_fraction", test_fraction)
        self.test_fraction = test_fraction
        self.num_test = count_split(NUM_SAMPLES, test_fraction)
        # Check the split sizes now, so a bad value fails here and not in setup.
        split_sizes(NUM_SAMPLES, self.num_test, val_fraction, max_train_samples)
        self.test_indices: np.ndarray | None = None

    @override
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_digits(return_X_y=True)
        assert len(y) == NUM_SAMPLES, (len(y), NUM_SAMPLES)

        train, val, test = self._split_indices(len(y), num_test=self.num_test)
        self.train_indices, self.val_indices, self.test_indices = train, val, test
        self._set_splits((x[train], y[train]), (x[val], y[val]), (x[test], y[test]))
