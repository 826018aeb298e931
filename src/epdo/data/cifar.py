r"""CIFAR-10 / CIFAR-100 from the standard python-pickle archives (Krizhevsky 2009), for paper 004's CIFAR columns.

``load_cifar(name, split, data_dir=...)`` reads ``cifar-10-python.tar.gz`` (batches ``data_batch_1..5``,
``test_batch`` in ``cifar-10-batches-py/``) or ``cifar-100-python.tar.gz`` (``train``, ``test`` in
``cifar-100-python/``; fine labels) from ``data_dir`` (or ``$EPDO_CIFAR_DIR``), or the extracted folder.

- Checksums: ``expected_sha256`` (or ``$EPDO_CIFAR10_SHA256`` / ``$EPDO_CIFAR100_SHA256``) is checked when
  given; otherwise the archive's md5 is checked against the value published with the data set
  (``verify=False`` skips it). A mismatch raises :class:`~epdo.data.ChecksumError` naming the file.
- The pickles are read by a restricted unpickler that only builds dicts, lists, bytes and numpy arrays
  (a pickle can run code; these never need to).
- Splits: train = the first 45,000 training images, valid = the last 5,000, test = the test batch.
  Items ``(float32 (3, 32, 32) in [0, 1], int64 label)``; ``.tensors``, ``num_classes`` 10 / 100.

The archives are not available offline here: the loader is tested on a small synthetic archive of the same
layout (tests/data/test_data_cifar.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .datasets import SPLITS, ImageDataset
from .errors import ChecksumError, DataFormatError, DataNotFoundError

__all__ = ["CifarDataset", "load_cifar", "CIFAR_ARCHIVES"]

#: name -> (archive file, folder inside, train members, test members, label key, classes, published md5)
CIFAR_ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                ("test_batch",), b"labels", 10, "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), b"fine_labels", 100,
                 "eb9058c3a382ffc7106e4002c42a8d85"),
}
_N_VALID = 5_000


class CifarDataset(ImageDataset):
    """CIFAR images ``(N, 3, 32, 32)``; ``num_classes`` set per instance."""

    def __init__(self, *args, num_classes: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_classes = int(num_classes)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels


class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only dicts, lists, "
                                     f"bytes and numpy arrays")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any failure is a format error of this file
        raise DataFormatError(f"{where}: not a CIFAR python pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or b"data" not in obj:
        raise DataFormatError(f"{where}: expected a dict with b'data', got {type(obj).__name__}")
    return obj


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _members(path: Path, folder: str, names: tuple[str, ...]) -> dict[str, bytes]:
    if path.is_dir():
        base = path / folder if (path / folder).is_dir() else path
        out = {}
        for n in names:
            f = base / n
            if not f.is_file():
                raise DataNotFoundError(f"CIFAR batch not found: {f}")
            out[n] = f.read_bytes()
        return out
    try:
        with tarfile.open(path, "r:gz") as tar:
            out = {}
            for n in names:
                try:
                    member = tar.extractfile(f"{folder}/{n}")
                except KeyError:
                    member = None
                if member is None:
                    raise DataFormatError(f"{path}: no member {folder}/{n}")
                out[n] = member.read()
            return out
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .tar.gz archive ({type(exc).__name__}: {exc})") from exc


def load_cifar(name: str, split: str, *, data_dir=None, cache_dir=None, seed: int = 0, verify: bool = True,
               expected_sha256: str | None = None) -> CifarDataset:
    """CIFAR-10 (``"cifar10"``) or CIFAR-100 (``"cifar100"``), split train / valid / test (module doc)."""
    del cache_dir, seed
    if name not in CIFAR_ARCHIVES:
        raise ValueError(f"unknown CIFAR data set {name!r}; expected one of {tuple(CIFAR_ARCHIVES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    archive, folder, train_names, test_names, label_key, classes, md5 = CIFAR_ARCHIVES[name]
    root = data_dir if data_dir is not None else os.environ.get("EPDO_CIFAR_DIR")
    if root is None:
        raise DataNotFoundError(f"{name}: no data directory; pass data_dir or set EPDO_CIFAR_DIR to the folder "
                                f"holding {archive} (https://www.cs.toronto.edu/~kriz/cifar.html)")
    root = Path(root)
    path = root / archive if (root / archive).is_file() else (root if root.is_file() else root)
    if not path.exists():
        raise DataNotFoundError(f"{name}: {root / archive} not found (nor an extracted {root / folder})")
    if path.is_file():
        sha = expected_sha256 or os.environ.get(f"EPDO_{name.upper()}_SHA256")
        if sha:
            got = _digest(path, "sha256")
            if got != sha.lower():
                raise ChecksumError(f"{path}: sha256 {got}, expected {sha.lower()}")
        elif verify:
            got = _digest(path, "md5")
            if got != md5:
                raise ChecksumError(f"{path}: md5 {got}, expected the published {md5} (pass expected_sha256 for "
                                    f"another archive, or verify=False)")
    names = test_names if split == "test" else train_names
    batches = [_unpickle(b, f"{path}:{n}") for n, b in _members(path, folder, names).items()]
    try:
        data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    except KeyError as exc:
        raise DataFormatError(f"{path}: a batch lacks the key {exc.args[0]!r}") from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataFormatError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataFormatError(f"{path}: labels outside [0, {classes})")
    images = data.reshape(-1, 3, 32, 32)
    if split != "test":
        if len(images) <= _N_VALID:
            raise DataFormatError(f"{path}: {len(images)} training images are too few for a {_N_VALID}-image valid split")
        sl = slice(0, len(images) - _N_VALID) if split == "train" else slice(len(images) - _N_VALID, None)
        images, labels = images[sl], labels[sl]
    return CifarDataset(images, labels, name=name, split=split, is_replica=False, num_classes=classes,
                        description=f"{name}: CIFAR from {path}, {split} split")


def _register() -> None:
    import sys

    ns = vars(sys.modules[__package__])

    register, spec = ns.get("register_dataset"), ns.get("DatasetSpec")
    if register is None or spec is None:
        return
    for key in CIFAR_ARCHIVES:
        register(spec(name=key, load=lambda split, _k=key, **kw: load_cifar(_k, split, **kw), task="classification",
                      options=("verify", "expected_sha256"),
                      description=f"{key.upper()} from the python-pickle archive (data_dir / EPDO_CIFAR_DIR)"))


_register()
