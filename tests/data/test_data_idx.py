"""IDX reader: round trips, checksum and missing-file errors, real MNIST / Fashion-MNIST checksums."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from epdo.data import ChecksumError, DataError, DataFormatError, DataNotFoundError, read_idx, write_idx
from epdo.data.idx import FASHION_MNIST_FILES, MNIST_FILES, IdxFile, find_idx_file, load_idx_dataset, parse_idx

MNIST_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.random((5, 3, 4)) * 100).astype(dtype)
    path = tmp_path / f"x-idx3{suffix}"
    write_idx(path, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_gzip_detected_by_content_and_checksum_is_uncompressed(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = tmp_path / "raw"
    write_idx(raw, arr, compress=False)
    content = raw.read_bytes()
    assert content[:4] == bytes([0, 0, 0x08, 3])
    md5 = hashlib.md5(content).hexdigest()
    sha = hashlib.sha256(content).hexdigest()
    gz = tmp_path / "no-gz-suffix"
    gz.write_bytes(gzip.compress(content))
    np.testing.assert_array_equal(read_idx(gz, md5=md5, sha256=sha), arr)
    np.testing.assert_array_equal(read_idx(raw, md5=md5.upper()), arr)


def test_checksum_mismatch_names_file_and_expected(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte.gz"
    write_idx(path, np.arange(10, dtype=np.uint8))
    expected = "0" * 32
    with pytest.raises(ChecksumError) as info:
        read_idx(path, md5=expected)
    msg = str(info.value)
    assert str(path) in msg and expected in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, DataError)
    with pytest.raises(ChecksumError, match="f" * 64):
        read_idx(path, sha256="f" * 64)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="nothere") as info:
        read_idx(tmp_path / "nothere")
    assert isinstance(info.value, FileNotFoundError)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataFormatError, match="magic"):
        read_idx(bad)
    trunc = tmp_path / "trunc"
    trunc.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(DataFormatError, match="payload"):
        read_idx(trunc)
    badgz = tmp_path / "bad.gz"
    badgz.write_bytes(gzip.compress(b"x" * 100)[:20])
    with pytest.raises(DataFormatError, match="gzip"):
        read_idx(badgz)
    with pytest.raises(DataFormatError, match="type code"):
        parse_idx(bytes([0, 0, 0x07, 1, 0, 0, 0, 0]))


def _fake_set(directory: Path, n_train: int, n_test: int, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, spec in MNIST_FILES.items():
        write_idx(directory / (spec.stem + (".gz" if gz else "")), arrays[key])
    return arrays


def test_load_idx_dataset_small(tmp_path: Path) -> None:
    arrays = _fake_set(tmp_path / "gz", 30, 10)
    got = load_idx_dataset(tmp_path / "gz", MNIST_FILES, dataset="MNIST", verify=False)
    for k in arrays:
        np.testing.assert_array_equal(got[k], arrays[k])
    _fake_set(tmp_path / "raw", 30, 10, gz=False)
    got = load_idx_dataset(tmp_path / "raw", MNIST_FILES, dataset="MNIST", verify=False)
    np.testing.assert_array_equal(got["test_labels"], arrays["test_labels"])
    # verified against the official checksums, the fake files are rejected naming file and checksum
    with pytest.raises(ChecksumError) as info:
        load_idx_dataset(tmp_path / "gz", MNIST_FILES, dataset="MNIST")
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert MNIST_FILES["train_images"].md5 in str(info.value)


def test_load_idx_dataset_missing_file_says_where(tmp_path: Path) -> None:
    _fake_set(tmp_path, 12, 6)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError) as info:
        load_idx_dataset(tmp_path, MNIST_FILES, dataset="MNIST", verify=False, hint="set EPDO_MNIST_DIR")
    msg = str(info.value)
    assert str(tmp_path / "t10k-labels-idx1-ubyte.gz") in msg
    assert MNIST_FILES["test_labels"].md5 in msg
    assert f"in {tmp_path}" in msg and "EPDO_MNIST_DIR" in msg


def test_dotted_file_names_and_shape_checks(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images.idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    assert find_idx_file(tmp_path, "train-images-idx3-ubyte") == tmp_path / "train-images.idx3-ubyte"
    assert find_idx_file(tmp_path, "t10k-images-idx3-ubyte") is None
    files = {
        "train_images": IdxFile("a-idx3-ubyte", "", "", (2, 28, 28)),
        "train_labels": IdxFile("b-idx1-ubyte", "", "", (2,)),
        "test_images": IdxFile("c-idx3-ubyte", "", "", (1, 28, 28)),
        "test_labels": IdxFile("d-idx1-ubyte", "", "", (1,)),
    }
    write_idx(tmp_path / "a-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "b-idx1-ubyte", np.zeros(3, np.uint8))
    write_idx(tmp_path / "c-idx3-ubyte", np.zeros((1, 27, 28), np.uint8))
    write_idx(tmp_path / "d-idx1-ubyte", np.zeros(1, np.uint8))
    with pytest.raises(DataFormatError, match="shape"):
        load_idx_dataset(tmp_path, files, dataset="X", verify=False)
    write_idx(tmp_path / "c-idx3-ubyte", np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataFormatError, match="2 train images but 3 train labels"):
        load_idx_dataset(tmp_path, files, dataset="X", verify=False)


def test_real_mnist_checksums() -> None:
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    arrays = load_idx_dataset(MNIST_DIR, MNIST_FILES, dataset="MNIST")  # verifies md5 and sha256
    assert arrays["train_images"].shape == (60000, 28, 28)
    assert arrays["test_labels"].shape == (10000,)
    assert set(np.unique(arrays["train_labels"])) == set(range(10))


def test_real_fashion_mnist_checksums() -> None:
    if not FASHION_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
    arrays = load_idx_dataset(FASHION_DIR, FASHION_MNIST_FILES, dataset="Fashion-MNIST")
    assert arrays["train_images"].shape == (60000, 28, 28)
    assert np.bincount(arrays["test_labels"]).tolist() == [1000] * 10
