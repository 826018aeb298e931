"""Data sets for epdo: MNIST / Fashion-MNIST (IDX, checksummed), the real MNIST-rot archive,
a seeded MNIST-rot replica generated from MNIST, and an embedded sample.

Entry point::

    from epdo.data import get_dataset, DATASETS
    ds = get_dataset("rotmnist-replica", "train")   # ds[i] -> (float32 (1, 28, 28) in [0, 1], int64 label)

Every dataset is registered (:func:`register_dataset`, :class:`DatasetSpec`); its items are tuples whose
last element is the target and whose others are the model's inputs (``model(*item[:-1])``). Every data set carries ``.name``, ``.split`` and ``.is_replica`` (and ``.description``), so that
results obtained on a replica can say so. Depends on numpy and torch only.
"""

from __future__ import annotations

from .amat import ROTMNIST_ZIP_MD5_REPORTED, load_rotmnist, read_amat
from .datasets import SPLITS, ImageDataset, get_dataset, load_sample
from .errors import ChecksumError, DataError, DataFormatError, DataNotFoundError
from .idx import FASHION_MNIST_FILES, MNIST_FILES, read_idx, write_idx
from .paths import resolve_cache_dir, resolve_mnist_dir
from .replica import load_replica, make_replica, replica_plan
from .registry import DATASETS, TASKS, DatasetSpec, dataset_spec, register_dataset
from .rotate import rotate_images

# Modules that register datasets (``register_dataset``) when imported; to add a dataset family write
# src/epdo/data/<module>.py and append one import line here.
from . import spherical_mnist  # noqa: E402,F401  (spherical-mnist, issue 11)
from . import nbody  # noqa: E402,F401  (the charged N-body simulation, issue 13)
from . import cifar, mnist6  # noqa: E402,F401  (registers mnist6-180, mnist6-m, cifar10, cifar100 with the dataset registry)
from . import imagefolder  # noqa: E402,F401  (registers imagefolder, imagenet, imagenet100)

__all__ = [
    "DATASETS",
    "TASKS",
    "DatasetSpec",
    "register_dataset",
    "dataset_spec",
    "SPLITS",
    "ImageDataset",
    "get_dataset",
    "load_sample",
    "DataError",
    "DataNotFoundError",
    "ChecksumError",
    "DataFormatError",
    "read_idx",
    "write_idx",
    "MNIST_FILES",
    "FASHION_MNIST_FILES",
    "read_amat",
    "load_rotmnist",
    "ROTMNIST_ZIP_MD5_REPORTED",
    "load_replica",
    "make_replica",
    "replica_plan",
    "rotate_images",
    "resolve_cache_dir",
    "resolve_mnist_dir",
]
