"""Loader for the original MNIST-rot archive (Larochelle et al., ICML 2007).

``mnist_rotation_new.zip`` holds two text files, one example per row (784 pixel floats in [0, 1]
then the label as a float):

* ``mnist_all_rotation_normalized_float_train_valid.amat``: 12,000 rows (standard use:
  the first 10,000 for training, the last 2,000 for validation);
* ``mnist_all_rotation_normalized_float_test.amat``: 50,000 rows.

Pixel order: the widely used public loaders (e.g. Cohen & Welling's ``gconv_experiments``) reshape
each row in row-major (C) order like MNIST, without a transpose; this loader does the same by
default. Whether the archive was written column-major could not be verified offline; if so, pass
``transpose=True``. A transpose is a reflection, so it only changes the chirality of the data set.

Integrity: no canonical sha256 of the zip is published. Pass ``expected_sha256`` (or
``expected_md5``) to check the zip you have. Several public loaders use md5
:data:`ROTMNIST_ZIP_MD5_REPORTED` for the archive; it is not verified here.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from .errors import ChecksumError, DataFormatError, DataNotFoundError
from .paths import ROTMNIST_URL

__all__ = [
    "ROTMNIST_ZIP_NAME",
    "ROTMNIST_TRAIN_FILE",
    "ROTMNIST_TEST_FILE",
    "ROTMNIST_ZIP_MD5_REPORTED",
    "ROTMNIST_ROWS",
    "read_amat",
    "load_rotmnist",
]

PathLike = str | os.PathLike

ROTMNIST_ZIP_NAME = "mnist_rotation_new.zip"
ROTMNIST_TRAIN_FILE = "mnist_all_rotation_normalized_float_train_valid.amat"
ROTMNIST_TEST_FILE = "mnist_all_rotation_normalized_float_test.amat"
#: md5 of ``mnist_rotation_new.zip`` as used by several public loaders (not verified here).
ROTMNIST_ZIP_MD5_REPORTED = "0f9a947ff3d30e95cd685462cbf3b847"

#: Rows of the two files of the real archive: 12,000 train+valid, 50,000 test.
ROTMNIST_ROWS: dict[str, int] = {"train": 12_000, "test": 50_000}

_SIDE = 28


def read_amat(
    source: PathLike | IO[bytes],
    *,
    name: str | None = None,
    transpose: bool = False,
    expected_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Parse an ``.amat`` text file: rows of 784 floats in [0, 1] then a label 0..9.

    Returns ``(images float32 (N, 28, 28), labels int64 (N,))``. ``transpose`` swaps rows and columns
    of every image (see the module docstring). ``name`` is used in error messages for streams.
    ``expected_rows``: the number of rows the file must have (a file truncated at a row boundary
    parses fine otherwise). :class:`DataFormatError` for NaN/inf or out-of-range pixels, bad labels,
    a wrong row or column count.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<stream>")
    try:
        if isinstance(source, (str, os.PathLike)):
            data = np.loadtxt(source, dtype=np.float64, ndmin=2)
        else:
            data = np.loadtxt(io.TextIOWrapper(source, encoding="ascii"), dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise DataNotFoundError(f".amat file not found: {label}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{label}: not a valid .amat file ({exc})") from exc
    if data.shape[0] == 0:
        raise DataFormatError(f"{label}: empty .amat file")
    if data.shape[1] != _SIDE * _SIDE + 1:
        raise DataFormatError(f"{label}: expected {_SIDE * _SIDE + 1} columns per row, got {data.shape[1]}")
    if expected_rows is not None and data.shape[0] != expected_rows:
        raise DataFormatError(
            f"{label}: expected {expected_rows:,} rows, got {data.shape[0]:,} (truncated or not the original file)"
        )
    if not np.isfinite(data).all():
        bad = np.argwhere(~np.isfinite(data))
        raise DataFormatError(
            f"{label}: {len(bad)} NaN/inf value(s), the first in row {bad[0][0] + 1}, column {bad[0][1] + 1}"
        )
    raw_labels = data[:, -1]
    labels = np.rint(raw_labels).astype(np.int64)
    if not np.allclose(raw_labels, labels) or labels.min() < 0 or labels.max() > 9:
        raise DataFormatError(f"{label}: labels must be integers 0..9 stored as floats")
    images = data[:, :-1].reshape(-1, _SIDE, _SIDE)
    if transpose:
        images = images.transpose(0, 2, 1)
    if images.min() < -1e-6 or images.max() > 1 + 1e-6:
        raise DataFormatError(f"{label}: pixel values outside [0, 1] ({images.min()}, {images.max()})")
    images = np.clip(images, 0.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(images), labels


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_zip(path: Path, expected_sha256: str | None, expected_md5: str | None) -> None:
    for algo, expected in (("sha256", expected_sha256), ("md5", expected_md5)):
        if expected is None:
            continue
        actual = _hash_file(path, algo)
        if actual != expected.strip().lower():
            raise ChecksumError(
                f"checksum mismatch for {path}: {algo} {actual}, expected {algo} {expected.strip().lower()}. "
                "The archive is corrupt or not the expected one."
            )


def _read_from_zip(path: Path, transpose: bool, rows: dict[str, int] | None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{path}: not a valid zip archive ({exc})") from exc
    with zf:
        members = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
        for fname in (ROTMNIST_TRAIN_FILE, ROTMNIST_TEST_FILE):
            if fname not in members:
                raise DataFormatError(f"{path}: archive has no member {fname} (members: {sorted(members)})")
        for part, fname in (("train", ROTMNIST_TRAIN_FILE), ("test", ROTMNIST_TEST_FILE)):
            where = f"{path}:{members[fname]}"
            try:
                with zf.open(members[fname]) as f:
                    images, labels = read_amat(f, name=where, transpose=transpose,
                                               expected_rows=None if rows is None else rows[part])
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:  # bad CRC, corrupt deflate stream
                raise DataFormatError(
                    f"{where}: corrupt compressed data ({type(exc).__name__}: {exc}); the archive is damaged, "
                    f"download {ROTMNIST_ZIP_NAME} again ({ROTMNIST_URL})"
                ) from exc
            out[f"{part}_images"], out[f"{part}_labels"] = images, labels
    return out


def load_rotmnist(
    path: PathLike,
    *,
    expected_sha256: str | None = None,
    expected_md5: str | None = None,
    transpose: bool = False,
    expected_rows: dict[str, int] | None = ROTMNIST_ROWS,
) -> dict[str, np.ndarray]:
    """Load the real MNIST-rot data from the zip, or from a directory holding the zip or the two .amat files.

    Returns ``train_images``/``test_images`` (float32, (N, 28, 28), [0, 1]) and ``train_labels``/
    ``test_labels`` (int64). The train part is the 12,000-row train+valid file. ``expected_sha256`` /
    ``expected_md5`` check the zip (a warning is issued if only extracted .amat files are present,
    as they cannot be checked against a zip checksum). ``expected_rows``: the row counts of the two files
    (default :data:`ROTMNIST_ROWS`, the real archive's; ``None`` accepts any, e.g. for a subset).
    Corrupt compressed members raise :class:`DataFormatError` naming the zip and the member.
    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(
            f"MNIST-rot not found at {path}: put {ROTMNIST_ZIP_NAME} ({ROTMNIST_URL}) there, or a directory "
            f"holding it or its extracted {ROTMNIST_TRAIN_FILE} and {ROTMNIST_TEST_FILE}"
        )
    zip_path: Path | None = None
    amat_dir: Path | None = None
    if path.is_file():
        zip_path = path
    else:
        for d in (path, path / "mnist_rotation_new"):
            if (d / ROTMNIST_ZIP_NAME).is_file():
                zip_path = d / ROTMNIST_ZIP_NAME
                break
            if (d / ROTMNIST_TRAIN_FILE).is_file() and (d / ROTMNIST_TEST_FILE).is_file():
                amat_dir = d
                break
    if zip_path is not None:
        _check_zip(zip_path, expected_sha256, expected_md5)
        return _read_from_zip(zip_path, transpose, expected_rows)
    if amat_dir is None:
        raise DataNotFoundError(
            f"MNIST-rot not found in {path}: expected {path / ROTMNIST_ZIP_NAME} ({ROTMNIST_URL}) or the "
            f"extracted files {path / ROTMNIST_TRAIN_FILE} and {path / ROTMNIST_TEST_FILE}"
        )
    if expected_sha256 is not None or expected_md5 is not None:
        warnings.warn(
            f"MNIST-rot read from extracted .amat files in {amat_dir}: the expected zip checksum was not checked",
            stacklevel=2,
        )
    out: dict[str, np.ndarray] = {}
    for part, fname in (("train", ROTMNIST_TRAIN_FILE), ("test", ROTMNIST_TEST_FILE)):
        out[f"{part}_images"], out[f"{part}_labels"] = read_amat(
            amat_dir / fname, transpose=transpose, expected_rows=None if expected_rows is None else expected_rows[part]
        )
    return out
