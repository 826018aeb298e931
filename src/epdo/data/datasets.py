"""Dataset objects and the single entry point :func:`get_dataset`."""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .amat import ROTMNIST_ROWS, load_rotmnist
from .errors import DataFormatError, DataNotFoundError
from .idx import FASHION_MNIST_FILES, MNIST_FILES, load_idx_dataset
from .registry import DATASETS, DatasetSpec, dataset_spec, register_dataset
from .paths import (
    DATA_DIR_HINT,
    FASHION_MNIST_DEFAULT_DIR,
    resolve_fashion_mnist_dir,
    resolve_mnist_dir,
    resolve_rotmnist_path,
)
from .replica import REPLICA_VERSION, load_replica

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "register_dataset",
    "dataset_spec",
    "SPLITS",
    "ImageDataset",
    "get_dataset",
    "load_sample",
    "SAMPLE_SEED",
    "SAMPLE_N_TRAIN",
    "SAMPLE_N_TEST",
]

PathLike = str | os.PathLike

SPLITS: tuple[str, ...] = ("train", "valid", "test")

#: The embedded sample is the prefix (2,000 train / 1,000 test) of the seed-0 replica.
SAMPLE_SEED = 0
SAMPLE_N_TRAIN = 2_000
SAMPLE_N_TEST = 1_000

# Fraction of the training part held out (at its end) as the valid split; gives the standard counts
# on the full data: rotmnist 10,000 / 2,000; MNIST 55,000 / 5,000; Fashion-MNIST 50,000 / 10,000;
# sample 1,600 / 400.
_VALID_FRACTION = {
    "rotmnist-replica": 2_000 / 12_000,
    "rotmnist": 2_000 / 12_000,
    "mnist": 5_000 / 60_000,
    "fashion-mnist": 10_000 / 60_000,
    "sample": 0.2,
}


class ImageDataset(Dataset):
    """In-memory image classification data set.

    ``images``: float32 ``(N, 1, H, W)`` in [0, 1]; ``labels``: int64 ``(N,)``; ``ds[i]`` is
    ``(images[i], labels[i])``. ``name``, ``split`` and ``is_replica`` say what the data are;
    ``description`` is a one-line human-readable provenance (it says "REPLICA" for replicas).
    ``angles`` (radians, float64) and ``source_index`` are set for rotated data whose angles are known.
    """

    num_classes = 10

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        *,
        name: str,
        split: str,
        is_replica: bool,
        description: str = "",
        angles: np.ndarray | torch.Tensor | None = None,
        source_index: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        imgs = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        if imgs.dim() == 3:
            imgs = imgs.unsqueeze(1)
        if imgs.dim() != 4:
            raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W), got {tuple(imgs.shape)}")
        if imgs.dtype == torch.uint8:
            imgs = imgs.to(torch.float32) / 255.0
        else:  # copy: never alias caller-owned or cached arrays
            imgs = imgs.to(torch.float32, copy=True)
        labs = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        labs = labs.to(torch.int64, copy=True)
        if labs.shape != (imgs.shape[0],):
            raise ValueError(f"labels must have shape ({imgs.shape[0]},), got {tuple(labs.shape)}")
        self.images: torch.Tensor = imgs.contiguous()
        self.labels: torch.Tensor = labs.contiguous()
        self.name = name
        self.split = split
        self.is_replica = bool(is_replica)
        self.description = description or name
        self.angles = None if angles is None else torch.as_tensor(angles, dtype=torch.float64)
        self.source_index = None if source_index is None else torch.as_tensor(source_index, dtype=torch.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)``: the in-memory arrays in item order (the registry's item contract)."""
        return self.images, self.labels

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"is_replica={self.is_replica}, shape={tuple(self.images.shape[1:])})"
        )


def _train_valid(n: int, fraction: float, name: str) -> tuple[slice, slice]:
    n_valid = int(round(n * fraction))
    if not 0 < n_valid < n:
        raise DataFormatError(f"{name}: {n} training images are too few to carve a valid split")
    return slice(0, n - n_valid), slice(n - n_valid, n)


def _pick(arrays: dict[str, np.ndarray], name: str, split: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Select ``split`` from arrays holding ``train_*`` and ``test_*``; valid is the end of train."""
    if split == "test":
        return {k: arrays[f"test_{k}"] for k in keys}
    n = arrays["train_labels"].shape[0]
    tr, va = _train_valid(n, _VALID_FRACTION[name], name)
    sl = tr if split == "train" else va
    return {k: arrays[f"train_{k}"][sl] for k in keys}


def _sample_path() -> resources.abc.Traversable:
    return resources.files("epdo.data").joinpath("assets", "sample.npz")


def load_sample() -> dict[str, np.ndarray]:
    """The embedded sample (``epdo/data/assets/sample.npz``): uint8 images, labels, angles, sources (copies)."""
    return {k: v.copy() for k, v in _load_sample_cached().items()}


@functools.lru_cache(maxsize=1)
def _load_sample_cached() -> dict[str, np.ndarray]:
    ref = _sample_path()
    if not ref.is_file():
        raise DataNotFoundError(
            f"embedded sample not found at {ref}; regenerate it with `python scripts/make_sample.py` "
            "from a source checkout (needs the MNIST files)"
        )
    with resources.as_file(ref) as p:
        try:
            with np.load(p) as z:
                return {k: z[k] for k in z.files}
        except Exception as exc:  # corrupt zip / deflate stream / npy header
            raise DataFormatError(
                f"{p}: the embedded sample is corrupt ({type(exc).__name__}: {exc}); reinstall epdo (or, in a source "
                "checkout, regenerate it with `python scripts/make_sample.py`)"
            ) from exc


@functools.lru_cache(maxsize=1)
def _rotmnist_cached(
    path: str, stamp: tuple[int, int], sha256: str | None, md5: str | None, transpose: bool,
    rows: tuple[tuple[str, int], ...] | None,
) -> dict[str, np.ndarray]:
    del stamp  # part of the cache key only
    return load_rotmnist(path, expected_sha256=sha256, expected_md5=md5, transpose=transpose,
                         expected_rows=None if rows is None else dict(rows))


def get_dataset(
    name: str,
    split: str,
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    seed: int = 0,
    **options,
) -> Dataset:
    """Load data set ``name`` (one of :data:`DATASETS`), split ``split`` (one of :data:`SPLITS`).

    Any registered dataset (:func:`epdo.data.register_dataset`): ``options`` are the keyword options its
    :class:`~epdo.data.DatasetSpec` declares (others are refused by name). The built-in image data sets:

    * ``rotmnist-replica``: MNIST-rot replica generated from MNIST (``data_dir`` = MNIST directory,
      default ``$EPDO_MNIST_DIR`` / ``../shared/data/mnist``), cached in ``cache_dir`` (default
      ``$EPDO_CACHE`` or ``~/.cache/epdo``); ``seed`` picks the replica; options ``n_train``/``n_test``
      take prefixes, ``verify``. Splits 10,000 train / 2,000 valid / 50,000 test.
    * ``rotmnist``: the real archive (``data_dir`` or ``$EPDO_ROTMNIST_DIR``: the zip or its directory);
      option ``expected_sha256`` (or ``$EPDO_ROTMNIST_SHA256``) checks the zip; ``transpose`` swaps image
      axes; ``expected_rows`` the files' row counts (default 12,000 train+valid / 50,000 test; ``None``: any).
    * ``mnist`` (55,000 / 5,000 / 10,000) and ``fashion-mnist`` (50,000 / 10,000 / 10,000; default
      directory ``/usr/share/datasets/fashion-mnist``); option ``verify`` checks the files' checksums.
    * ``sample``: the embedded 2,000 / 1,000 sample (1,600 train / 400 valid / 1,000 test); needs no files.

    ``valid`` is always the end of the training data, never test data. ``seed`` only affects generated data.
    """
    spec = dataset_spec(name)
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    spec.check_options(options)
    return spec.load(split, data_dir=data_dir, cache_dir=cache_dir, seed=seed, **options)


def _load_builtin(
    name: str,
    split: str,
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    seed: int = 0,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    verify: bool = True,
    expected_sha256: str | None = None,
    transpose: bool = False,
    expected_rows: dict[str, int] | None = ROTMNIST_ROWS,
) -> ImageDataset:
    keys: tuple[str, ...] = ("images", "labels")

    if name == "rotmnist-replica":
        arrays = load_replica(data_dir, seed, cache_dir, n_train, n_test, verify=verify)
        part = _pick(arrays, name, split, keys + ("angles", "source"))
        desc = (
            f"rotmnist-replica: REPLICA of MNIST-rot generated from MNIST (protocol v{REPLICA_VERSION}, "
            f"seed {int(seed)}), {split} split"
        )
        return ImageDataset(
            part["images"], part["labels"], name=name, split=split, is_replica=True, description=desc,
            angles=part["angles"], source_index=part["source"],
        )

    if name == "sample":
        part = _pick(_load_sample_cached(), name, split, keys + ("angles", "source"))
        desc = (
            f"sample: embedded REPLICA sample of MNIST-rot ({SAMPLE_N_TRAIN} train / {SAMPLE_N_TEST} test "
            f"prefix of the seed-{SAMPLE_SEED} replica), {split} split"
        )
        return ImageDataset(
            part["images"], part["labels"], name=name, split=split, is_replica=True, description=desc,
            angles=part["angles"], source_index=part["source"],
        )

    if name == "rotmnist":
        path = resolve_rotmnist_path(data_dir).resolve()
        sha = expected_sha256 or os.environ.get("EPDO_ROTMNIST_SHA256") or None
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        rows = None if expected_rows is None else tuple(sorted(dict(expected_rows).items()))
        arrays = _rotmnist_cached(str(path), stamp, sha, None, bool(transpose), rows)
        part = _pick(arrays, name, split, keys)
        desc = f"rotmnist: MNIST-rot (Larochelle et al. 2007) from {path}, {split} split"
        return ImageDataset(part["images"], part["labels"], name=name, split=split, is_replica=False, description=desc)

    if name == "mnist":
        directory = resolve_mnist_dir(data_dir)
        arrays = load_idx_dataset(
            directory, MNIST_FILES, dataset="MNIST", verify=verify,
            hint=f"or {DATA_DIR_HINT} / set EPDO_MNIST_DIR",
        )
        label = "MNIST"
    else:  # fashion-mnist
        directory = resolve_fashion_mnist_dir(data_dir)
        arrays = load_idx_dataset(
            directory, FASHION_MNIST_FILES, dataset="Fashion-MNIST", verify=verify,
            hint=(
                f"on Debian/Ubuntu `apt-get install dataset-fashion-mnist` puts them in {FASHION_MNIST_DEFAULT_DIR}; "
                f"or {DATA_DIR_HINT} / set EPDO_FASHION_MNIST_DIR"
            ),
        )
        label = "Fashion-MNIST"
    part = _pick(arrays, name, split, keys)
    desc = f"{name}: {label} from {Path(directory)}, {split} split"
    return ImageDataset(part["images"], part["labels"], name=name, split=split, is_replica=False, description=desc)


def _builtin(name: str, options: tuple[str, ...], description: str) -> None:
    def load(split: str, *, data_dir=None, cache_dir=None, seed: int = 0, **kw) -> ImageDataset:
        return _load_builtin(name, split, data_dir, cache_dir, seed, **kw)

    load.__name__ = load.__qualname__ = f"load_{name.replace('-', '_')}"
    register_dataset(DatasetSpec(name=name, load=load, task="classification", options=options, description=description))


_builtin("rotmnist-replica", ("n_train", "n_test", "verify"), "MNIST-rot replica generated from MNIST (seeded)")
_builtin("rotmnist", ("expected_sha256", "transpose", "expected_rows"), "MNIST-rot (Larochelle et al. 2007) archive")
_builtin("mnist", ("verify",), "MNIST (IDX files, checksummed)")
_builtin("fashion-mnist", ("verify",), "Fashion-MNIST (IDX files, checksummed)")
_builtin("sample", (), "embedded 2,000 / 1,000 sample of the MNIST-rot replica")
