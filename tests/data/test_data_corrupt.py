"""Never load garbage: corrupt compressed data is named and a corrupt cache regenerated; .amat files with
NaN pixels or too few rows are refused; messages name --data-dir and data_dir= and no meaningless paths."""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from epdo.data import DataFormatError, DataNotFoundError, get_dataset, load_replica, load_rotmnist, paths, read_amat
from epdo.data import datasets as datasets_module
from epdo.data.amat import ROTMNIST_ROWS, ROTMNIST_TEST_FILE, ROTMNIST_TRAIN_FILE, ROTMNIST_ZIP_NAME
from epdo.data.idx import MNIST_FILES, write_idx
from epdo.data.replica import _cache_name


def _member_data_offset(zpath: Path, member: str) -> int:
    """Byte offset of ``member``'s compressed data in the zip (after its local header)."""
    with zipfile.ZipFile(zpath) as zf:
        info = zf.getinfo(member)
    raw = zpath.read_bytes()
    h = info.header_offset
    n_name, n_extra = int.from_bytes(raw[h + 26 : h + 28], "little"), int.from_bytes(raw[h + 28 : h + 30], "little")
    return h + 30 + n_name + n_extra


def _flip(path: Path, at: int, n: int = 16) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(at, at + n):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


# ---------------------------------------------------------------------------------------------- replica cache


def _fake_full_mnist(directory: Path) -> None:
    """60,000 + 10,000 mostly black images with one bright square each (compressible, like MNIST)."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, spec in MNIST_FILES.items():
        n = spec.shape[0]
        if key.endswith("images"):
            arr = np.zeros((n, 28, 28), np.uint8)
            k = np.arange(n)
            for d in range(4):
                arr[k, 8 + (k % 10) + d, 10:14] = 255
        else:
            arr = (np.arange(n) % 10).astype(np.uint8)
        write_idx(directory / (spec.stem + ".gz"), arr)


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mnist")
    _fake_full_mnist(d)
    return d


def test_corrupt_member_of_the_replica_cache_is_named_and_regenerated(fake_mnist, tmp_path):
    kw = dict(seed=3, cache_dir=tmp_path, n_train=120, n_test=60, verify=False)
    fresh = load_replica(fake_mnist, **kw)
    cache = tmp_path / _cache_name(3, 120, 60)
    assert cache.is_file()
    _flip(cache, _member_data_offset(cache, "train_images.npy") + 2)
    with pytest.raises((zlib.error, zipfile.BadZipFile)):  # what numpy raises: no file named
        with np.load(cache) as z:
            z["train_images"]
    with pytest.warns(UserWarning, match=rf"unusable replica cache {cache}.*regenerating"):
        again = load_replica(fake_mnist, **kw)
    for k in fresh:
        np.testing.assert_array_equal(again[k], fresh[k])
    with np.load(cache) as z:  # the cache was rewritten, so later runs do not fail
        np.testing.assert_array_equal(z["train_images"], fresh["train_images"])


def test_replica_cache_with_bad_content_is_regenerated(fake_mnist, tmp_path):
    kw = dict(seed=4, cache_dir=tmp_path, n_train=120, n_test=60, verify=False)
    fresh = load_replica(fake_mnist, **kw)
    cache = tmp_path / _cache_name(4, 120, 60)
    bad = dict(fresh)
    bad["test_labels"] = fresh["test_labels"] + 20
    paths.atomic_savez(cache, **bad)
    with pytest.warns(UserWarning, match="bad test labels"):
        again = load_replica(fake_mnist, **kw)
    np.testing.assert_array_equal(again["test_labels"], fresh["test_labels"])


def test_corrupt_embedded_sample_names_the_file(tmp_path, monkeypatch):
    src = datasets_module._sample_path()
    copy = tmp_path / "sample.npz"
    copy.write_bytes(Path(str(src)).read_bytes())
    with zipfile.ZipFile(copy) as zf:
        member = zf.namelist()[0]
    _flip(copy, _member_data_offset(copy, member) + 2)
    monkeypatch.setattr(datasets_module, "_sample_path", lambda: copy)
    datasets_module._load_sample_cached.cache_clear()
    try:
        with pytest.raises(DataFormatError, match=rf"{copy}: the embedded sample is corrupt"):
            get_dataset("sample", "test")
    finally:
        datasets_module._load_sample_cached.cache_clear()


# ---------------------------------------------------------------------------------------------- MNIST-rot archive


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 784))
    images[:, 300:320] = rng.random((n, 20))  # mostly zeros: compresses like the real files
    return np.concatenate([images, (np.arange(n) % 10)[:, None]], axis=1)


def _amat_bytes(rows: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savetxt(buf, rows, fmt="%.18e", delimiter="  ")
    return buf.getvalue()


def _zip(path: Path, train: np.ndarray, test: np.ndarray) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(ROTMNIST_TRAIN_FILE, _amat_bytes(train))
        zf.writestr(ROTMNIST_TEST_FILE, _amat_bytes(test))
    return path


def test_corrupt_zip_member_names_the_archive_and_member(tmp_path):
    z = _zip(tmp_path / ROTMNIST_ZIP_NAME, _rows(40, 0), _rows(20, 1))
    assert len(load_rotmnist(z, expected_rows=None)["train_labels"]) == 40
    _flip(z, _member_data_offset(z, ROTMNIST_TEST_FILE) + 200)
    with pytest.raises(DataFormatError) as info:
        load_rotmnist(z, expected_rows=None)
    msg = str(info.value)
    assert f"{z}:{ROTMNIST_TEST_FILE}" in msg and ("corrupt" in msg or "not a valid .amat" in msg)
    with pytest.raises(DataFormatError, match=ROTMNIST_ZIP_NAME):
        get_dataset("rotmnist", "test", data_dir=z, expected_rows=None)


def test_amat_nan_pixels_and_truncation_at_a_row_boundary_are_refused(tmp_path):
    rows = _rows(30, 2)
    rows[7, 400] = np.nan
    nan = tmp_path / "nan.amat"
    nan.write_bytes(_amat_bytes(rows))
    with pytest.raises(DataFormatError, match=r"nan\.amat: 1 NaN/inf value\(s\), the first in row 8, column 401"):
        read_amat(nan)
    rows[7, 400] = np.inf
    nan.write_bytes(_amat_bytes(rows))
    with pytest.raises(DataFormatError, match="NaN/inf"):
        read_amat(nan)
    rows[7, 400] = 3.0
    nan.write_bytes(_amat_bytes(rows))
    with pytest.raises(DataFormatError, match=r"outside \[0, 1\]"):
        read_amat(nan)
    # a file cut after a complete row parses; only the row count can tell
    full = _rows(30, 3)
    cut = tmp_path / "cut.amat"
    cut.write_bytes(b"".join(_amat_bytes(full).splitlines(keepends=True)[:25]))
    assert read_amat(cut)[0].shape == (25, 28, 28)
    with pytest.raises(DataFormatError, match=r"cut\.amat: expected 30 rows, got 25"):
        read_amat(cut, expected_rows=30)


def test_real_archive_row_counts_are_required_by_default(tmp_path):
    assert ROTMNIST_ROWS == {"train": 12_000, "test": 50_000}
    z = _zip(tmp_path / ROTMNIST_ZIP_NAME, _rows(12, 0), _rows(6, 1))
    with pytest.raises(DataFormatError, match=rf"{ROTMNIST_TRAIN_FILE}: expected 12,000 rows, got 12"):
        load_rotmnist(z)
    with pytest.raises(DataFormatError, match="expected 12,000 rows"):
        get_dataset("rotmnist", "train", data_dir=z)
    d = tmp_path / "amat"
    d.mkdir()
    (d / ROTMNIST_TRAIN_FILE).write_bytes(_amat_bytes(_rows(12, 0)))
    (d / ROTMNIST_TEST_FILE).write_bytes(_amat_bytes(_rows(6, 0)))
    with pytest.raises(DataFormatError, match="expected 12,000 rows"):
        load_rotmnist(d)
    assert len(load_rotmnist(d, expected_rows={"train": 12, "test": 6})["test_labels"]) == 6


# ---------------------------------------------------------------------------------------------- messages


def test_messages_name_the_flag_and_the_keyword(tmp_path, monkeypatch):
    monkeypatch.delenv("EPDO_ROTMNIST_DIR", raising=False)
    with pytest.raises(DataNotFoundError) as info:
        get_dataset("rotmnist", "train")
    assert "--data-dir" in str(info.value) and "data_dir=" in str(info.value)
    monkeypatch.setenv("EPDO_FASHION_MNIST_DIR", str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError) as info:
        get_dataset("fashion-mnist", "train")
    assert "--data-dir" in str(info.value) and "data_dir=" in str(info.value)
    with pytest.raises(DataNotFoundError) as info:
        get_dataset("mnist", "train", data_dir=tmp_path / "nope")
    assert "--data-dir" in str(info.value) and "data_dir=" in str(info.value)


def test_search_path_outside_a_checkout_lists_only_what_exists(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("EPDO_MNIST_DIR", raising=False)
    monkeypatch.setattr(paths, "in_source_checkout", lambda: False)
    with pytest.raises(DataNotFoundError) as info:
        paths.resolve_mnist_dir()
    msg = str(info.value)
    assert "shared" not in msg and "repository root" not in msg
    assert "$EPDO_MNIST_DIR (not set)" in msg and "--data-dir" in msg and "data_dir=" in msg
    (tmp_path / "shared" / "data" / "mnist").mkdir(parents=True)  # exists, but empty
    with pytest.raises(DataNotFoundError) as info:
        paths.resolve_mnist_dir()
    assert str(work / ".." / "shared" / "data" / "mnist") in str(info.value)


def test_this_checkout_is_recognised():
    assert paths.in_source_checkout() == (paths.repo_root() / "pyproject.toml").is_file()
