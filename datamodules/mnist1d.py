"""MNIST-1D, the suite's default dataset, generated locally and cached as an .npz file.

MNIST-1D (Greydanus 2020, "Scaling down deep learning", arXiv:2011.14439) turns ten 1D
digit templates into length-40 signals by random padding, shear, scaling, translation
and noise. It trains on a CPU in seconds yet separates models: its README
(github.com/greydanus/mnist1d) reports 68% test accuracy for an MLP and 32% for
logistic regression on the default 4,000/1,000 split. The data comes from the
generator of the `mnist1d` package, `mnist1d.data.make_dataset`; its download path is
never used.
"""

import hashlib
import importlib.metadata
import json
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mnist1d.data import get_dataset_args, make_dataset
from mnist1d.utils import ObjectView
from typing_extensions import override

from datamodules._common import ArrayDataModule, check_positive, split_sizes

log = logging.getLogger(__name__)

# The ten digit templates; mnist1d generates num_samples // 10 samples from each.
NUM_CLASSES = 10


class MNIST1DDataModule(ArrayDataModule):
    """MNIST-1D classification: 40 standardised features, 10 classes.

    `prepare_data` generates `num_samples` signals with mnist1d's generator and caches
    them in `data_dir`. `setup` carves a seeded validation split out of mnist1d's 80%
    training split, keeps its 20% test split, and standardises every feature with the
    mean and standard deviation of the training samples only. The defaults give 3,600
    training, 400 validation and 1,000 test samples.

    `name`, `input_dim` and `num_classes` exist before any data is generated, so the
    command line can pass them to the model before `setup` runs.

    Args:
        data_dir: Folder of the generated-data cache, created if missing.
        num_samples: Samples generated in total, before mnist1d's 80/20 train/test
            split. Must be a multiple of 10 because every class gets the same number.
        batch_size: Samples per batch in every loader.
        num_workers: Loader worker processes; 0 loads in the main process.
        val_fraction: Fraction of mnist1d's training split held out for validation.
        seed: Seed of the train/validation split and of the training loader's shuffling.
        generation_seed: Seed of mnist1d's generator; 42 is mnist1d's default.
        max_train_samples: Keep only this many training samples, chosen after the
            validation split, for fast tests; None keeps all of them.

    Raises:
        ValueError: if an argument is out of range or `data_dir` cannot be written. The
            message names the argument.
    """

    name = "mnist1d"
    # mnist1d's default final_seq_length, which make_generation_args leaves unchanged.
    input_dim = 40
    num_classes = NUM_CLASSES

    def __init__(
        self,
        data_dir: str = "data",
        num_samples: int = 5000,
        batch_size: int = 100,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        generation_seed: int = 42,
        max_train_samples: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, val_fraction, seed, max_train_samples)
        self.save_hyperparameters()
        check_positive("num_samples", num_samples)
        if num_samples % NUM_CLASSES != 0:
            raise ValueError(
                f"num_samples must be a multiple of {NUM_CLASSES}, got {num_samples}, because "
                f"mnist1d generates num_samples // {NUM_CLASSES} samples per class; pass for "
                f"example {max(NUM_CLASSES, num_samples // NUM_CLASSES * NUM_CLASSES)}"
            )
        # mnist1d calls numpy.random.seed(generation_seed), which needs a 32-bit value.
        if not 0 <= generation_seed < 2**32:
            raise ValueError(
                f"generation_seed must lie in [0, 2**32), got {generation_seed}; pass a "
                "non-negative 32-bit integer (42 is mnist1d's default)"
            )
        self.generation_args = make_generation_args(num_samples, generation_seed)
        # Check the split sizes now, so a bad value fails before any data is generated.
        split_sizes(self._mnist1d_train_size(), 0, val_fraction, max_train_samples)

        check_writable(data_dir)
        self.data_dir = data_dir
        self.cache_path = Path(data_dir) / cache_file_name(self.generation_args)

    def _mnist1d_train_size(self) -> int:
        """Return the size of mnist1d's training split, computed as mnist1d does."""
        args = self.generation_args
        return int(args["num_samples"] * args["train_split"])

    @override
    def prepare_data(self) -> None:
        if self.cache_path.exists():
            log.debug("Found the MNIST-1D cache %s", self.cache_path)
            return
        log.info(
            "Generating %d MNIST-1D samples into %s", self.hparams.num_samples, self.cache_path
        )
        arrays = generate(self.generation_args)
        write_npz_atomically(self.cache_path, arrays, self.generation_args)

    @override
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        # A notebook may call setup without prepare_data, which returns at once when the
        # cache exists.
        self.prepare_data()
        with np.load(self.cache_path, allow_pickle=False) as cached:
            x, y = cached["x"], cached["y"]
            x_test, y_test = cached["x_test"], cached["y_test"]
        assert x.shape[1] == self.input_dim, (x.shape, self.input_dim)
        assert len(y) == self._mnist1d_train_size(), (len(y), self._mnist1d_train_size())

        train, val, _ = self._split_indices(len(y), num_test=0)
        self.train_indices, self.val_indices = train, val
        self._set_splits((x[train], y[train]), (x[val], y[val]), (x_test, y_test))


def make_generation_args(num_samples: int, generation_seed: int) -> dict[str, Any]:
    """Return mnist1d's default dataset arguments with new `num_samples` and seed."""
    args = get_dataset_args(as_dict=True)
    # The download address: generation never reads it, so it stays out of the cache key.
    args.pop("url")
    args["num_samples"] = num_samples
    args["seed"] = generation_seed
    return args


def cache_file_name(args: dict[str, Any]) -> str:
    """Return the cache file name: a short hash of `args` and of the mnist1d version.

    The version is part of the key because a new mnist1d release may generate different
    data from the same arguments.
    """
    key = json.dumps(
        {"args": args, "mnist1d": importlib.metadata.version("mnist1d")}, sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"mnist1d_{args['num_samples']}_{digest}.npz"


def generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Generate MNIST-1D with mnist1d's generator, keeping the global random state.

    `make_dataset` reseeds both `random` and `numpy.random` (mnist1d 0.0.2.post1), so
    their states are saved before the call and restored after it.

    Returns:
        The training split as `x`, `y` and the test split as `x_test`, `y_test`.
    """
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        dataset = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return {key: dataset[key] for key in ("x", "y", "x_test", "y_test")}


def write_npz_atomically(path: Path, arrays: dict[str, np.ndarray], args: dict[str, Any]) -> None:
    """Write `arrays` and the generation arguments to `path` through a temporary file.

    `os.replace` makes the file appear whole or not at all, so neither a run killed
    while writing nor two processes writing at once leave a truncated cache behind.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, **arrays, generation_args=np.array(json.dumps(args, sort_keys=True)))
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def check_writable(data_dir: str) -> None:
    """Create `data_dir` if it is missing and check that a file can be written in it.

    Raises:
        ValueError: if the folder cannot be created or written, with the OS error.
    """
    try:
        os.makedirs(data_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as error:
        raise ValueError(
            f"data_dir '{data_dir}' cannot be written ({error}); "
            "pass --data.data_dir with a writable folder"
        ) from error
