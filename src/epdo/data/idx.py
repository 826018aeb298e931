"""IDX file reader/writer (MNIST format) with checksum verification of the *uncompressed* content.

The IDX format: two zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian
uint32 sizes, then the data in C order (big-endian for multi-byte types). Files may be gzipped;
compression is detected from the gzip magic bytes, not from the file name.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import ChecksumError, DataFormatError, DataNotFoundError

__all__ = [
    "IdxFile",
    "MNIST_FILES",
    "FASHION_MNIST_FILES",
    "read_idx",
    "write_idx",
    "parse_idx",
    "file_checksums",
    "find_idx_file",
    "load_idx_dataset",
]

PathLike = str | os.PathLike

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class IdxFile:
    """Expected name, checksums (of the uncompressed content) and shape of one IDX file."""

    stem: str
    md5: str
    sha256: str
    shape: tuple[int, ...]


def _four(sums: Mapping[str, tuple[str, str]]) -> dict[str, IdxFile]:
    shapes = {
        "train_images": (60000, 28, 28),
        "train_labels": (60000,),
        "test_images": (10000, 28, 28),
        "test_labels": (10000,),
    }
    stems = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    return {k: IdxFile(stems[k], sums[k][0], sums[k][1], shapes[k]) for k in stems}


#: The four official MNIST files (LeCun, Cortes, Burges); checksums of the uncompressed content.
MNIST_FILES: dict[str, IdxFile] = _four(
    {
        "train_images": (
            "6bbc9ace898e44ae57da46a324031adb",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        "train_labels": (
            "a25bea736e30d166cdddb491f175f624",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        "test_images": (
            "2646ac647ad5339dbf082846283269ea",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        "test_labels": (
            "27ae3e4e09519cfbb04c329615203637",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    },
)

#: The four official Fashion-MNIST files (Xiao, Rasul, Vollgraf 2017); uncompressed checksums
#: (Debian's ``dataset-fashion-mnist`` ships them re-gzipped, with identical uncompressed content).
FASHION_MNIST_FILES: dict[str, IdxFile] = _four(
    {
        "train_images": (
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        "train_labels": (
            "9018921c3c673c538a1fc5bad174d6f9",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        "test_images": (
            "8181f5470baa50b63fa0f6fddb340f0a",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        "test_labels": (
            "15d484375f8d13e6eb1aabb0c3f46965",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    },
)


def _read_maybe_gzip(path: Path) -> bytes:
    """Return the (decompressed if gzipped) content of ``path``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataNotFoundError(f"IDX file not found: {path}") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{path}: corrupt gzip stream ({exc}); replace the file") from exc


def file_checksums(data: bytes) -> dict[str, str]:
    """md5 and sha256 hex digests of ``data``."""
    return {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}


def _verify(path: Path, data: bytes, md5: str | None, sha256: str | None) -> None:
    """Raise :class:`ChecksumError` naming ``path`` and the expected checksum on a mismatch."""
    for algo, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        actual = hashlib.new(algo, data).hexdigest()
        if actual != expected.lower():
            raise ChecksumError(
                f"checksum mismatch for {path}: uncompressed content has {algo} {actual}, "
                f"expected {algo} {expected.lower()}. The file is corrupt or not the expected one; "
                f"replace it with the original file."
            )


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes into a native-endian numpy array."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataFormatError(f"{source}: not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DataFormatError(f"{source}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{source}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataFormatError(
            f"{source}: IDX payload has {len(data) - header} bytes, header {shape} implies {expected}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: PathLike, *, md5: str | None = None, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or raw), verifying the uncompressed content against ``md5``/``sha256``.

    Raises :class:`DataNotFoundError` if absent, :class:`ChecksumError` on a mismatch and
    :class:`DataFormatError` if the content is not a valid IDX file.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    _verify(path, data, md5, sha256)
    return parse_idx(data, str(path))


def write_idx(path: PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file; gzipped (reproducibly, mtime 0) if ``compress`` or a ``.gz`` name."""
    path = Path(path)
    arr = np.asarray(array)
    codes = {v.newbyteorder("=").str: k for k, v in _IDX_DTYPES.items()}
    native = arr.dtype.newbyteorder("=").str
    if native not in codes:
        raise ValueError(f"write_idx: unsupported dtype {arr.dtype}; use one of uint8, int8, int16, int32, float32, float64")
    if arr.ndim > 255:
        raise ValueError(f"write_idx: too many dimensions ({arr.ndim})")
    code = codes[native]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(arr, dtype=_IDX_DTYPES[code]).tobytes()
    data = header + payload
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    path.write_bytes(data)


def find_idx_file(directory: PathLike, stem: str) -> Path | None:
    """Locate ``stem`` in ``directory`` under its usual spellings (``.gz`` or raw, ``-idx`` or ``.idx``)."""
    directory = Path(directory)
    names = [stem + ".gz", stem]
    dotted = stem.replace("-idx", ".idx", 1)
    if dotted != stem:
        names += [dotted + ".gz", dotted]
    for name in names:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def load_idx_dataset(
    directory: PathLike,
    files: Mapping[str, IdxFile],
    *,
    dataset: str,
    verify: bool = True,
    hint: str = "",
) -> dict[str, np.ndarray]:
    """Load the four IDX files of an MNIST-like dataset from ``directory``.

    Returns a dict with keys ``train_images``, ``train_labels``, ``test_images``, ``test_labels``.
    Missing files raise :class:`DataNotFoundError` naming the path, the expected md5 and where to put
    the files; corrupt files raise :class:`ChecksumError`.
    """
    directory = Path(directory)
    out: dict[str, np.ndarray] = {}
    for key, spec in files.items():
        path = find_idx_file(directory, spec.stem)
        if path is None:
            listing = ", ".join(f.stem + "[.gz]" for f in files.values())
            raise DataNotFoundError(
                f"{dataset} file not found: {directory / (spec.stem + '.gz')} (or uncompressed "
                f"{directory / spec.stem}); expected uncompressed md5 {spec.md5}. "
                f"Put the four {dataset} IDX files ({listing}) in {directory}"
                + (f"; {hint}" if hint else "")
            )
        arr = read_idx(path, md5=spec.md5 if verify else None, sha256=spec.sha256 if verify else None)
        if arr.ndim != len(spec.shape) or arr.shape[1:] != spec.shape[1:] or arr.dtype != np.uint8:
            want = "(N" + "".join(f", {d}" for d in spec.shape[1:]) + ("," if len(spec.shape) == 1 else "") + ")"
            raise DataFormatError(f"{path}: expected a uint8 array of shape {want}, got {arr.dtype} {arr.shape}")
        out[key] = arr
    for part in ("train", "test"):
        n_img, n_lab = len(out[f"{part}_images"]), len(out[f"{part}_labels"])
        if n_img != n_lab:
            raise DataFormatError(f"{directory}: {n_img} {part} images but {n_lab} {part} labels")
    return out
