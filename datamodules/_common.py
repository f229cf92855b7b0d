"""Shared parts of the in-memory datamodules: input checks, seeded splits, scaling.

`ArrayDataModule` turns raw training, validation and test arrays into standardised
`TensorDataset`s and builds the loaders. Its subclasses decide where the arrays come
from and how the test split is chosen.
"""

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override


def check_positive(name: str, value: int | None, allow_none: bool = False) -> None:
    """Raise ValueError unless `value` >= 1, or is None when `allow_none` is set."""
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}; pass a positive {name}")


def check_fraction(name: str, value: float) -> None:
    """Raise ValueError unless 0 <= `value` < 1."""
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{name} must lie in [0, 1), got {value}; pass a fraction such as 0.1, or 0 for none"
        )


def count_split(num_items: int, fraction: float) -> int:
    """Return `fraction` of `num_items`, rounded, and at least 1 when `fraction` > 0."""
    if fraction == 0.0:
        return 0
    return max(1, round(fraction * num_items))


def split_sizes(
    num_items: int, num_test: int, val_fraction: float, max_train_samples: int | None
) -> tuple[int, int]:
    """Return the training and validation sizes for a dataset of `num_items` samples.

    Validation takes `val_fraction` of the samples left after the test split. Training
    takes the rest, cut to `max_train_samples` when that is given.

    Raises:
        ValueError: if no training sample is left, or if `max_train_samples` is larger
            than the number left.
    """
    num_left = num_items - num_test
    num_val = count_split(num_left, val_fraction)
    num_train = num_left - num_val
    if num_train < 1:
        after_test = f" after the {num_test}-sample test split" if num_test else ""
        raise ValueError(
            f"val_fraction={val_fraction} leaves no training samples out of {num_left}"
            f"{after_test}; pass a smaller fraction or generate more samples"
        )
    if max_train_samples is not None and max_train_samples > num_train:
        raise ValueError(
            f"max_train_samples={max_train_samples} exceeds the {num_train} training samples "
            f"left after the validation split; pass at most {num_train}, or None for all"
        )
    return num_train if max_train_samples is None else max_train_samples, num_val


def fit_standardizer(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the per-feature mean and scale of the training inputs, in float64.

    The scale is the population standard deviation, or 1 where that is 0, so a feature
    that is constant in training (a border pixel that is always blank) maps to 0 instead
    of NaN or inf.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    scale = np.where(std > 0.0, std, 1.0)
    return mean, scale


def make_tensor_dataset(
    x: np.ndarray, y: np.ndarray, mean: np.ndarray, scale: np.ndarray
) -> TensorDataset:
    """Standardise `x` with the given statistics and pair it with the labels `y`.

    Returns:
        A dataset of float32 inputs and int64 labels.
    """
    x = (np.asarray(x, dtype=np.float64) - mean) / scale
    inputs = torch.from_numpy(x.astype(np.float32))
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return TensorDataset(inputs, labels)


class ArrayDataModule(L.LightningDataModule):
    """Base class of the in-memory classification datamodules.

    A subclass sets `name`, `input_dim` and `num_classes`, calls
    `save_hyperparameters()` in its `__init__`, and implements `setup`: it loads the raw
    arrays, picks rows with `_split_indices` and hands the raw splits to `_set_splits`.

    Args:
        batch_size: Samples per batch in every loader.
        num_workers: Loader worker processes; 0 loads in the main process.
        val_fraction: Fraction of the non-test samples held out for validation.
        seed: Seed of the data split and of the training loader's shuffling.
        max_train_samples: Keep only this many training samples, chosen after the
            validation split, for fast tests; None keeps all of them.

    Raises:
        ValueError: if an argument is out of range. The message names it.
    """

    input_dim: int
    num_classes: int

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        val_fraction: float,
        seed: int,
        max_train_samples: int | None,
    ) -> None:
        super().__init__()
        check_positive("batch_size", batch_size)
        if num_workers < 0:
            raise ValueError(
                f"num_workers must be >= 0, got {num_workers}; pass 0 to load in the main process"
            )
        check_fraction("val_fraction", val_fraction)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}; pass a non-negative integer")
        check_positive("max_train_samples", max_train_samples, allow_none=True)

        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.max_train_samples = max_train_samples

        # Set by setup: the source rows of each split and the training statistics.
        self.train_indices: np.ndarray | None = None
        self.val_indices: np.ndarray | None = None
        self.feature_mean: np.ndarray | None = None
        self.feature_scale: np.ndarray | None = None
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def _split_indices(
        self, num_items: int, num_test: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return seeded training, validation and test indices into `num_items` rows.

        A single permutation drawn from `seed` gives its first `num_test` rows to the
        test split, the next `val_fraction` of the rest to validation, and the
        remainder, cut to `max_train_samples`, to training. The validation and test rows
        therefore do not depend on `max_train_samples`.
        """
        num_train, num_val = split_sizes(
            num_items, num_test, self.val_fraction, self.max_train_samples
        )
        order = np.random.default_rng(self.seed).permutation(num_items)
        test = order[:num_test]
        val = order[num_test : num_test + num_val]
        train = order[num_test + num_val :][:num_train]
        return train, val, test

    def _set_splits(
        self,
        train: tuple[np.ndarray, np.ndarray],
        val: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
    ) -> None:
        """Store the (inputs, labels) splits, standardised with training statistics."""
        self.feature_mean, self.feature_scale = fit_standardizer(train[0])
        self.train_set = make_tensor_dataset(*train, self.feature_mean, self.feature_scale)
        self.val_set = make_tensor_dataset(*val, self.feature_mean, self.feature_scale)
        self.test_set = make_tensor_dataset(*test, self.feature_mean, self.feature_scale)

    def _make_loader(self, dataset: TensorDataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(
                f"{type(self).__name__} has no data yet; call prepare_data() and setup() first"
            )
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    @override
    def train_dataloader(self) -> DataLoader:
        # A new generator on every call, so two instances with the same seed yield the
        # same batches, while successive epochs of one loader still differ in order.
        return self._make_loader(self.train_set, shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader:
        return self._make_loader(self.val_set, shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader:
        return self._make_loader(self.test_set, shuffle=False)
