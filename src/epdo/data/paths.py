"""Where data and caches live: directory resolution, cache directory, atomic ``.npz`` writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes
from .errors import DataNotFoundError
from .idx import MNIST_FILES, find_idx_file

__all__ = [
    "DATA_DIR_HINT",
    "ROTMNIST_URL",
    "FASHION_MNIST_DEFAULT_DIR",
    "repo_root",
    "resolve_mnist_dir",
    "resolve_fashion_mnist_dir",
    "resolve_rotmnist_path",
    "resolve_cache_dir",
    "atomic_savez",
]

PathLike = str | os.PathLike

#: How to pass a data location, for the command line and for Python.
DATA_DIR_HINT = "pass --data-dir DIR (command line) or data_dir=DIR (Python)"

#: Where the original MNIST-rot archive (Larochelle et al. 2007) was published.
ROTMNIST_URL = "http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip"
#: Debian's ``dataset-fashion-mnist`` package installs the IDX files here.
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")


def repo_root() -> Path:
    """The project root when running from a source checkout (``src/epdo/data`` -> root)."""
    return Path(__file__).resolve().parents[3]


def in_source_checkout() -> bool:
    """Whether epdo runs from a source checkout (``<root>/src/epdo`` next to ``<root>/pyproject.toml``)."""
    root = repo_root()
    return (root / "pyproject.toml").is_file() and Path(__file__).resolve().parents[1] == root / "src" / "epdo"


def _has_mnist(directory: Path) -> bool:
    return directory.is_dir() and find_idx_file(directory, MNIST_FILES["train_images"].stem) is not None


def resolve_mnist_dir(data_dir: PathLike | None = None) -> Path:
    """The MNIST IDX directory: ``data_dir`` if given, else the first that holds the files of
    ``$EPDO_MNIST_DIR``, ``./../shared/data/mnist`` (from the working directory) and, in a source checkout,
    ``<repo root>/../shared/data/mnist``. Raises :class:`DataNotFoundError` listing the places tried
    (the relative ones only where they exist or in a source checkout)."""
    if data_dir is not None:
        return Path(data_dir)
    tried: list[str] = []
    env = os.environ.get("EPDO_MNIST_DIR")
    candidates: list[tuple[Path, str]] = []
    if env:
        candidates.append((Path(env), "$EPDO_MNIST_DIR"))
    else:
        tried.append("$EPDO_MNIST_DIR (not set)")
    candidates.append((Path.cwd() / ".." / "shared" / "data" / "mnist", "relative to the working directory"))
    checkout = in_source_checkout()
    if checkout:
        candidates.append((repo_root().parent / "shared" / "data" / "mnist", "relative to the repository root"))
    for path, why in candidates:
        if _has_mnist(path):
            return path.resolve()
        if why == "$EPDO_MNIST_DIR" or checkout or path.exists():
            tried.append(f"{path} ({why})")
    raise DataNotFoundError(
        "MNIST IDX files not found; tried: " + "; ".join(tried) + ". Put the four MNIST files "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        f"t10k-labels-idx1-ubyte.gz) in a directory and {DATA_DIR_HINT}, or set EPDO_MNIST_DIR."
    )


def resolve_fashion_mnist_dir(data_dir: PathLike | None = None) -> Path:
    """Fashion-MNIST directory: ``data_dir``, else ``$EPDO_FASHION_MNIST_DIR``, else Debian's
    ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``)."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("EPDO_FASHION_MNIST_DIR")
    return Path(env) if env else FASHION_MNIST_DEFAULT_DIR


def resolve_rotmnist_path(data_dir: PathLike | None = None) -> Path:
    """The MNIST-rot zip or directory: ``data_dir``, else ``$EPDO_ROTMNIST_DIR``; never guessed."""
    if data_dir is None:
        env = os.environ.get("EPDO_ROTMNIST_DIR")
        if not env:
            raise DataNotFoundError(
                "MNIST-rot (Larochelle et al. 2007) location not given: download mnist_rotation_new.zip "
                f"({ROTMNIST_URL}), then pass --data-dir PATH (command line) or data_dir=PATH (Python), PATH being "
                "the zip, or the directory holding it or its extracted .amat files, or set EPDO_ROTMNIST_DIR. "
                "Without it, use the dataset "
                "'rotmnist-replica' generated from MNIST."
            )
        data_dir = env
    return Path(data_dir)


def resolve_cache_dir(cache_dir: PathLike | None = None) -> Path:
    """Cache directory: ``cache_dir``, else ``$EPDO_CACHE``, else ``~/.cache/epdo`` (not created here)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("EPDO_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "epdo"


def atomic_savez(path: PathLike, *, compressed: bool = True, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` to ``path`` (.npz) atomically: temp file in the same directory, then ``os.replace``."""
    return atomic_write_bytes(path, lambda f: (np.savez_compressed if compressed else np.savez)(f, **arrays))
