r"""MNIST6-180 and MNIST6-M (paper 004, section 5.1): the 6s of MNIST, rotated on the whole circle or mirrored.

- ``mnist6-180``: every 6 rotated counter-clockwise by an angle drawn uniformly on [0, 2 pi) (seeded);
  label 0 ("6") for an angle in [-90, 90) degrees (mod 360), 1 ("9") otherwise. A fully rotation-invariant
  network cannot tell the classes apart (50 %); one invariant to rotations in [-90, 90) only can.
- ``mnist6-m``: every 6 flipped left-right (x -> -x, "mirroring over the y axis"; PITFALLS 28: not epdo's D_N
  reflection y -> -y) with probability 1/2; label 1 when flipped.

Splits: the 6s of MNIST's train (55,000 images: 5,436 sixes) / valid (the last 5,000 of MNIST train: 482 sixes) /
test (10,000: 958 sixes) splits, read through ``get_dataset("mnist", ...)`` (checksummed IDX files from
``data_dir`` / ``$EPDO_MNIST_DIR``). The angles and flips are drawn by ``numpy.random.default_rng((seed, split))``
and kept in ``.angles`` / ``.flips``. Rotation: bilinear about the image centre (:func:`epdo.data.rotate_images`).
``n``: keep only the first n images of the split (short runs). Items are ``(image (1, 28, 28) float32 in
[0, 1], int64 label)``; ``.tensors == (images, labels)``; ``num_classes == 2``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .datasets import SPLITS, ImageDataset
from .rotate import rotate_images

__all__ = ["Mnist6Dataset", "load_mnist6_180", "load_mnist6_m", "MNIST6_DATASETS"]

MNIST6_DATASETS = ("mnist6-180", "mnist6-m")
_SPLIT_ID = {"train": 0, "valid": 1, "test": 2}


class Mnist6Dataset(ImageDataset):
    """An :class:`~epdo.data.ImageDataset` with two classes and the transformation of every image."""

    num_classes = 2

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels


def _sixes(split: str, data_dir) -> np.ndarray:
    from .datasets import get_dataset

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    ds = get_dataset("mnist", split, data_dir)
    return ds.images[ds.labels == 6]


def _check_n(n, count: int):
    if n is None:
        return count
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (images kept per split), got {n!r}")
    return min(int(n), count)


def load_mnist6_180(split: str, *, data_dir=None, cache_dir=None, seed: int = 0, n: int | None = None) -> Mnist6Dataset:
    """MNIST6-180 (see the module doc); ``cache_dir`` is unused (built in memory in about a second)."""
    del cache_dir
    imgs = _sixes(split, data_dir)
    k = _check_n(n, len(imgs))
    rng = np.random.default_rng((int(seed), _SPLIT_ID[split], 180))
    angles = rng.uniform(0.0, 2 * math.pi, size=len(imgs))[:k]
    imgs = imgs[:k]
    rotated = rotate_images(imgs, torch.as_tensor(angles), mode="bilinear").clamp(0.0, 1.0)
    deg = np.degrees(angles) % 360.0
    labels = ((deg >= 90.0) & (deg < 270.0)).astype(np.int64)  # [-90, 90) -> "6" (0), else "9" (1)
    return Mnist6Dataset(rotated, labels, name="mnist6-180", split=split, is_replica=False, angles=angles,
                         description=f"mnist6-180: the 6s of MNIST rotated uniformly on the circle (seed {int(seed)}), "
                                     f"label 6 / 9 by the angle; {split} split")


def load_mnist6_m(split: str, *, data_dir=None, cache_dir=None, seed: int = 0, n: int | None = None) -> Mnist6Dataset:
    """MNIST6-M (see the module doc)."""
    del cache_dir
    imgs = _sixes(split, data_dir)
    k = _check_n(n, len(imgs))
    rng = np.random.default_rng((int(seed), _SPLIT_ID[split], 2))
    flips = rng.integers(0, 2, size=len(imgs))[:k].astype(bool)
    imgs = imgs[:k].clone()
    imgs[torch.as_tensor(flips)] = imgs[torch.as_tensor(flips)].flip(-1)  # x -> -x: columns reversed
    ds = Mnist6Dataset(imgs, flips.astype(np.int64), name="mnist6-m", split=split, is_replica=False,
                       description=f"mnist6-m: the 6s of MNIST flipped left-right with probability 1/2 (seed "
                                   f"{int(seed)}), label: flipped; {split} split")
    ds.flips = torch.as_tensor(flips)
    return ds


def _register() -> None:
    import sys

    ns = vars(sys.modules[__package__])  # the package namespace (register_dataset once the registry exists)

    register = ns.get("register_dataset")
    spec = ns.get("DatasetSpec")
    if register is None or spec is None:  # the dataset registry is not in this version of epdo.data
        return
    register(spec(name="mnist6-180", load=load_mnist6_180, task="classification", options=("n",),
                  description="the 6s of MNIST rotated on the circle; 6 vs 9 by the angle (Romero & Lohit 2022)"))
    register(spec(name="mnist6-m", load=load_mnist6_m, task="classification", options=("n",),
                  description="the 6s of MNIST flipped left-right or not; label: flipped (Romero & Lohit 2022)"))


_register()
