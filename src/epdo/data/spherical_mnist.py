r"""Spherical MNIST (the s2cnn / ugscnn protocol) sampled on an icosphere: dataset ``spherical-mnist``.

Protocol (version :data:`VERSION`; generated from the MNIST IDX files, our implementation of the protocol of
Cohen et al. 2018 (s2cnn) and Jiang et al. 2019 (ugscnn), not their files):

* **Projection.** The 28 x 28 image is the square :math:`[-1, 1]^2` of the plane (x right, y up; pixel
  centres at :math:`(j - 13.5)/14`, :math:`(13.5 - i)/14`), placed on the sphere by the inverse stereographic
  projection from the south pole: the sphere point :math:`(x, y, z)` shows the image at
  :math:`(x, y)/(1 + z)`. The unit disc is the northern hemisphere, so the digit (MNIST's central 20 x 20
  box) lies on the northern hemisphere; points outside the square are 0.
* **Sampling.** The signal at icosphere vertex v (level ``level``, default 4: 2,562 vertices) is the image
  bilinearly interpolated at the projection of :math:`R^{-1} v`, stored as uint8 (rounded x 255).
* **Rotations.** R is the identity for unrotated data and a uniform random rotation (unit quaternion from
  ``SeedSequence(seed)``: stream 0 for the 60,000 training images, stream 1 for the 10,000 test images,
  one per image) for rotated data; rotating the sampling points is exact (no resampling of a mesh signal).
* **Settings.** ``N/N`` (train and test unrotated), ``N/R`` (train unrotated, test rotated), ``R/R`` (both
  rotated). Splits: ``train`` = MNIST train images 0..54,999, ``valid`` = 55,000..59,999 (rotated like
  train), ``test`` = the 10,000 MNIST test images.

Each (level, part, rotation stream) is cached atomically in ``cache_dir`` (``$EPDO_CACHE`` or
``~/.cache/epdo``) as ``.npz`` with the SHA-256 of its signals and labels, verified on every read (an
unusable cache is regenerated with a warning). Items are ``(float32 (1, V) in [0, 1], int64 label)``.

>>> import numpy as np
>>> from epdo.data.spherical_mnist import project
>>> from epdo.sphere import icosphere
>>> img = np.zeros((1, 28, 28), np.uint8); img[0, 13:15, 13:15] = 255   # a dot at the image centre
>>> s = project(img, icosphere(2).vertices)
>>> s.shape, int(np.argmax(s[0])) == int(np.argmax(icosphere(2).vertices[:, 2]))   # lands at the north pole
((1, 162), True)
"""

from __future__ import annotations

import hashlib
import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .paths import atomic_savez, resolve_cache_dir, resolve_mnist_dir
from .registry import DatasetSpec, register_dataset

__all__ = ["SETTINGS", "VERSION", "SphericalMNIST", "project", "random_rotations", "load_spherical_mnist"]

PathLike = str | os.PathLike

VERSION = 1
SETTINGS = ("N/N", "N/R", "R/R")
_N_TRAIN, _N_VALID = 55_000, 5_000


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` Haar-uniform rotation matrices (normalised Gaussian quaternions), float64 ``(n, 3, 3)``."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def project(images: np.ndarray, points: np.ndarray, rotations: np.ndarray | None = None,
            chunk: int = 2048) -> np.ndarray:
    r"""Sample ``images`` (n, 28, 28) uint8 on the sphere at ``points`` (V, 3) (see the module doc), each
    image rotated by its ``rotations[i]`` (n, 3, 3) or not at all: uint8 ``(n, V)``."""
    imgs = np.asarray(images)
    if imgs.ndim != 3 or imgs.shape[1:] != (28, 28):
        raise ValueError(f"project: expected images of shape (n, 28, 28), got {imgs.shape}")
    n, v = len(imgs), len(points)
    out = np.empty((n, v), dtype=np.uint8)
    flat = np.concatenate([imgs.reshape(n, -1).astype(np.float32), np.zeros((n, 1), np.float32)], 1)  # [.., 0]
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        p = np.broadcast_to(points, (e - s, v, 3)) if rotations is None else np.einsum("vj,nji->nvi", points, rotations[s:e])
        den = 1.0 + p[..., 2]
        ok = den > 1e-9
        den = np.where(ok, den, 1.0)
        col = p[..., 0] / den * 14.0 + 13.5
        row = 13.5 - p[..., 1] / den * 14.0
        c0, r0 = np.floor(col), np.floor(row)
        fc, fr = (col - c0).astype(np.float32), (row - r0).astype(np.float32)
        acc = np.zeros((e - s, v), np.float32)
        for dr, dc, wgt in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            rr, cc = r0 + dr, c0 + dc
            inside = ok & (rr >= 0) & (rr <= 27) & (cc >= 0) & (cc <= 27)
            idx = np.where(inside, rr * 28 + cc, 784).astype(np.int64)
            acc += wgt * np.take_along_axis(flat[s:e], idx, 1)
        out[s:e] = np.clip(np.rint(acc), 0, 255).astype(np.uint8)
    return out


def _digest(signals: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(signals).tobytes())
    h.update(np.ascontiguousarray(labels.astype(np.int64)).tobytes())
    return h.hexdigest()


def _cache_name(level: int, part: str, rotated: bool, seed: int) -> str:
    rot = f"R-seed{int(seed)}" if rotated else "N"
    return f"spherical-mnist-v{VERSION}-L{level}-{part}-{rot}.npz"


def _read_cache(path: Path, level: int, n: int, v: int) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            out = {k: z[k] for k in ("signals", "labels", "rotations")}
            if int(z["version"]) != VERSION or int(z["level"]) != level:
                raise ValueError("version or level mismatch")
            if out["signals"].shape != (n, v) or out["signals"].dtype != np.uint8 or out["labels"].shape != (n,):
                raise ValueError(f"bad shapes {out['signals'].shape} {out['labels'].shape}")
            if _digest(out["signals"], out["labels"]) != str(z["sha256"]):
                raise ValueError("SHA-256 of signals and labels does not match the stored one")
        return out
    except Exception as exc:  # zlib.error, BadZipFile, OSError, ValueError, KeyError, ...
        warnings.warn(f"ignoring unusable spherical-mnist cache {path} ({type(exc).__name__}: {exc}); regenerating it",
                      stacklevel=3)
        return None


@lru_cache(maxsize=1)
def _mnist(directory: str, verify: bool) -> dict[str, np.ndarray]:
    from .idx import MNIST_FILES, load_idx_dataset

    return load_idx_dataset(directory, MNIST_FILES, dataset="MNIST", verify=verify)


def _part(part: str, rotated: bool, level: int, seed: int, data_dir, cache_dir, verify: bool) -> dict[str, np.ndarray]:
    from ..sphere import icosphere

    mesh = icosphere(level)
    n = 60_000 if part == "train" else 10_000
    path = resolve_cache_dir(cache_dir) / _cache_name(level, part, rotated, seed)
    cached = _read_cache(path, level, n, mesh.num_vertices)
    if cached is not None:
        return cached
    mnist = _mnist(str(resolve_mnist_dir(data_dir).resolve()), bool(verify))
    images, labels = mnist[f"{part}_images"], mnist[f"{part}_labels"].astype(np.int64)
    if rotated:
        rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(2)[0 if part == "train" else 1])
        rotations = random_rotations(n, rng)
    else:
        rotations = np.broadcast_to(np.eye(3), (n, 3, 3))
    signals = project(images, mesh.vertices, rotations if rotated else None)
    out = {"signals": signals, "labels": labels, "rotations": np.ascontiguousarray(rotations)}
    atomic_savez(path, **out, sha256=np.array(_digest(signals, labels)), version=np.array(VERSION),
                 level=np.array(level))
    return out


class SphericalMNIST(Dataset):
    """In-memory spherical MNIST split: ``ds[i] = (float32 (1, V) in [0, 1], int64 label)``; ``signals`` uint8
    ``(N, V)``, ``labels``, ``rotations`` (N, 3, 3) (the identity where unrotated), ``mesh``."""

    num_classes = 10

    def __init__(self, signals: np.ndarray, labels: np.ndarray, rotations: np.ndarray, *, level: int, split: str,
                 setting: str, description: str):
        from ..sphere import icosphere

        self.signals = torch.as_tensor(np.ascontiguousarray(signals))
        self.labels = torch.as_tensor(np.ascontiguousarray(labels), dtype=torch.int64)
        self.rotations = torch.as_tensor(np.ascontiguousarray(rotations), dtype=torch.float64)
        self.mesh = icosphere(level)
        self.name = "spherical-mnist"
        self.split, self.setting = split, setting
        self.is_replica = False
        self.description = description

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i):
        return self.signals[i].to(torch.float32).div_(255.0).unsqueeze(0), self.labels[i]

    def __repr__(self) -> str:
        return (f"SphericalMNIST(split={self.split!r}, setting={self.setting!r}, n={len(self)}, "
                f"level={self.mesh.level}, vertices={self.mesh.num_vertices})")


def load_spherical_mnist(split: str, *, data_dir: PathLike | None = None, cache_dir: PathLike | None = None,
                         seed: int = 0, setting: str = "N/N", level: int = 4, verify: bool = True) -> SphericalMNIST:
    """One split of spherical MNIST under ``setting`` (see the module doc); ``data_dir``: the MNIST folder."""
    if setting not in SETTINGS:
        raise ValueError(f"spherical-mnist: setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if split not in ("train", "valid", "test"):
        raise ValueError(f"spherical-mnist: split must be 'train', 'valid' or 'test', got {split!r}")
    from ..sphere.mesh import _check_level

    level = _check_level(level)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"spherical-mnist: seed must be a non-negative integer, got {seed!r}")
    part = "test" if split == "test" else "train"
    rotated = setting[2 if part == "test" else 0] == "R"
    arr = _part(part, rotated, level, int(seed), data_dir, cache_dir, verify)
    sl = slice(None) if part == "test" else (slice(0, _N_TRAIN) if split == "train" else slice(_N_TRAIN, None))
    desc = (f"spherical-mnist v{VERSION}: MNIST {split} split, stereographic projection onto the northern "
            f"hemisphere, level-{level} icosphere, setting {setting} ({'rotated, seed ' + str(seed) if rotated else 'unrotated'})")
    return SphericalMNIST(arr["signals"][sl], arr["labels"][sl], arr["rotations"][sl], level=level, split=split,
                          setting=setting, description=desc)


register_dataset(DatasetSpec(
    name="spherical-mnist", load=load_spherical_mnist, task="classification", options=("setting", "level", "verify"),
    description="MNIST projected onto the sphere (s2cnn protocol), level-4 icosphere, settings N/N, N/R, R/R",
))
