"""A replica of MNIST-rot generated from the original MNIST files.

Protocol (version :data:`REPLICA_VERSION`), a function of ``seed`` only:

* ``SeedSequence(seed)`` is split into four independent streams: train selection, test selection,
  train angles, test angles.
* Train (12,000): a random permutation of the 60,000 MNIST training images, first 12,000.
  Rows 0..9,999 form the ``train`` split and rows 10,000..11,999 the ``valid`` split.
* Test (50,000): drawn without replacement from the 58,000 remaining images (the 48,000 unused
  MNIST training images followed by the 10,000 MNIST test images), so no source digit is shared
  between train and test. Source indices >= 60,000 denote MNIST test image ``index - 60,000``.
* Each image is rotated by its own angle, uniform in [0, 2 pi), counter-clockwise about the image
  centre, bilinear interpolation (zero outside), computed in float32 and rounded to uint8.

``n_train`` / ``n_test`` give prefixes of the full replica (same images, same angles), useful for tests.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .paths import atomic_savez, resolve_cache_dir, resolve_mnist_dir
from .rotate import rotate_images

__all__ = ["REPLICA_VERSION", "N_TRAIN", "N_TEST", "replica_plan", "make_replica", "load_replica"]

PathLike = str | os.PathLike

REPLICA_VERSION = 1
N_TRAIN = 12_000
N_TEST = 50_000
_N_MNIST_TRAIN = 60_000
_N_MNIST_TEST = 10_000
_KEYS = ("images", "labels", "angles", "source")


def _check_sizes(n_train: int | None, n_test: int | None) -> tuple[int, int]:
    n_train = N_TRAIN if n_train is None else int(n_train)
    n_test = N_TEST if n_test is None else int(n_test)
    if not 0 < n_train <= N_TRAIN:
        raise ValueError(f"n_train must be in 1..{N_TRAIN}, got {n_train}")
    if not 0 < n_test <= N_TEST:
        raise ValueError(f"n_test must be in 1..{N_TEST}, got {n_test}")
    return n_train, n_test


def replica_plan(seed: int = 0, n_train: int | None = None, n_test: int | None = None) -> dict[str, np.ndarray]:
    """Source indices (into MNIST train ++ test) and angles of the replica, without touching any image."""
    n_train, n_test = _check_sizes(n_train, n_test)
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    s_train, s_test, a_train, a_test = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4))
    perm = s_train.permutation(_N_MNIST_TRAIN)
    rest = np.concatenate([perm[N_TRAIN:], _N_MNIST_TRAIN + np.arange(_N_MNIST_TEST)])
    test_src = rest[s_test.permutation(rest.size)[:N_TEST]]
    two_pi = 2.0 * np.pi
    angles_train = np.mod(a_train.uniform(0.0, two_pi, N_TRAIN), two_pi)
    angles_test = np.mod(a_test.uniform(0.0, two_pi, N_TEST), two_pi)
    return {
        "train_source": perm[:n_train].astype(np.int64),
        "test_source": test_src[:n_test].astype(np.int64),
        "train_angles": angles_train[:n_train],
        "test_angles": angles_test[:n_test],
    }


def make_replica(
    mnist: dict[str, np.ndarray], seed: int = 0, n_train: int | None = None, n_test: int | None = None
) -> dict[str, np.ndarray]:
    """Generate the replica from MNIST arrays (as returned by ``load_idx_dataset``).

    Returns ``{train,test}_{images uint8 (N, 28, 28), labels uint8, angles float64, source int64}``
    plus ``seed`` and ``version`` (0-d arrays).
    """
    if mnist["train_images"].shape[0] != _N_MNIST_TRAIN or mnist["test_images"].shape[0] != _N_MNIST_TEST:
        raise ValueError(
            "make_replica needs the full MNIST (60,000 train / 10,000 test images), got "
            f"{mnist['train_images'].shape[0]} / {mnist['test_images'].shape[0]}"
        )
    plan = replica_plan(seed, n_train, n_test)
    pool_images = np.concatenate([mnist["train_images"], mnist["test_images"]])
    pool_labels = np.concatenate([mnist["train_labels"], mnist["test_labels"]])
    out: dict[str, np.ndarray] = {"seed": np.asarray(int(seed)), "version": np.asarray(REPLICA_VERSION)}
    for part in ("train", "test"):
        src, angles = plan[f"{part}_source"], plan[f"{part}_angles"]
        rotated = rotate_images(pool_images[src].astype(np.float32), angles, mode="bilinear").numpy()
        out[f"{part}_images"] = np.clip(np.rint(rotated), 0, 255).astype(np.uint8)
        out[f"{part}_labels"] = pool_labels[src].astype(np.uint8)
        out[f"{part}_angles"] = angles
        out[f"{part}_source"] = src
    return out


def _cache_name(seed: int, n_train: int, n_test: int) -> str:
    return f"rotmnist-replica-v{REPLICA_VERSION}-seed{int(seed)}-{n_train}x{n_test}.npz"


def _read_cache(path: Path, seed: int, n_train: int, n_test: int) -> dict[str, np.ndarray] | None:
    """Load a cached replica, or None if absent or unusable; prefixes are taken if larger.

    Unusable (then regenerated, with a warning naming the file): unreadable, truncated or corrupt (bad zip,
    bad CRC, corrupt deflate stream, bad ``.npy`` header), another version or seed, too few rows, wrong
    dtypes or shapes, labels outside 0..9, non-finite angles. The cache is derived data, so any failure to
    read it means "regenerate", never "fail every later run".
    """
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if int(z["version"]) != REPLICA_VERSION or int(z["seed"]) != int(seed):
                raise ValueError("version or seed mismatch")
            out = {"seed": z["seed"], "version": z["version"]}
            for part, n in (("train", n_train), ("test", n_test)):
                for key in _KEYS:
                    arr = z[f"{part}_{key}"]
                    if arr.shape[0] < n:
                        raise ValueError("too few rows")
                    out[f"{part}_{key}"] = arr[:n]
                images, labels = out[f"{part}_images"], out[f"{part}_labels"]
                if images.shape[1:] != (28, 28) or images.dtype != np.uint8:
                    raise ValueError(f"bad {part} image array {images.dtype} {images.shape}")
                if labels.shape != (n,) or (labels.size and int(labels.max()) > 9):
                    raise ValueError(f"bad {part} labels")
                if not np.isfinite(out[f"{part}_angles"]).all():
                    raise ValueError(f"non-finite {part} angles")
        return out
    except Exception as exc:  # zlib.error, zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, ...
        warnings.warn(
            f"ignoring unusable replica cache {path} ({type(exc).__name__}: {exc}); regenerating it", stacklevel=3
        )
        return None


def load_replica(
    mnist_dir: PathLike | None = None,
    seed: int = 0,
    cache_dir: PathLike | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    *,
    verify: bool = True,
    use_cache: bool = True,
) -> dict[str, np.ndarray]:
    """The replica for ``seed``, from the cache (``cache_dir``, ``$EPDO_CACHE`` or ``~/.cache/epdo``) if
    present, else generated from the MNIST files in ``mnist_dir`` (default: see ``resolve_mnist_dir``)
    and written atomically to the cache.

    A subset (``n_train``/``n_test``) is read from the full cache file if that exists.
    """
    from .idx import MNIST_FILES, load_idx_dataset

    n_train, n_test = _check_sizes(n_train, n_test)
    cache = resolve_cache_dir(cache_dir)
    if use_cache:
        names = [_cache_name(seed, n_train, n_test)]
        if (n_train, n_test) != (N_TRAIN, N_TEST):
            names.append(_cache_name(seed, N_TRAIN, N_TEST))
        for name in names:
            cached = _read_cache(cache / name, seed, n_train, n_test)
            if cached is not None:
                return cached
    mnist = load_idx_dataset(resolve_mnist_dir(mnist_dir), MNIST_FILES, dataset="MNIST", verify=verify)
    out = make_replica(mnist, seed, n_train, n_test)
    if use_cache:
        atomic_savez(cache / _cache_name(seed, n_train, n_test), **out)
    return out
