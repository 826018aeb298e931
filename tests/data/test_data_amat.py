"""MNIST-rot (.amat / zip) loader on small synthetic files written by the test."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from epdo.data import ChecksumError, DataFormatError, DataNotFoundError, get_dataset, load_rotmnist, read_amat
from epdo.data.amat import ROTMNIST_TEST_FILE, ROTMNIST_TRAIN_FILE, ROTMNIST_ZIP_NAME


#: row counts of the synthetic archive (the real one: 12,000 / 50,000, checked by default)
ROWS = {"train": 24, "test": 8}


def _write_amat(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    rows = np.concatenate([images.reshape(len(images), -1), labels[:, None].astype(np.float64)], axis=1)
    # same layout as the original: space-separated scientific notation, label as a float
    np.savetxt(path, rows, fmt="%.18e", delimiter="  ")


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 28, 28))
    images[:, :, :14] = 0.0  # asymmetric, so a transpose is visible
    labels = np.arange(n) % 10
    return images, labels


@pytest.fixture()
def archive(tmp_path: Path) -> dict[str, object]:
    tr_x, tr_y = _synthetic(24, 0)
    te_x, te_y = _synthetic(8, 1)
    d = tmp_path / "amat"
    d.mkdir()
    _write_amat(d / ROTMNIST_TRAIN_FILE, tr_x, tr_y)
    _write_amat(d / ROTMNIST_TEST_FILE, te_x, te_y)
    zpath = tmp_path / "zipdir" / ROTMNIST_ZIP_NAME
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(d / ROTMNIST_TRAIN_FILE, ROTMNIST_TRAIN_FILE)
        zf.write(d / ROTMNIST_TEST_FILE, "mnist_rotation_new/" + ROTMNIST_TEST_FILE)  # members may sit in a folder
    return {"dir": d, "zip": zpath, "train": (tr_x, tr_y), "test": (te_x, te_y)}


def test_read_amat(archive: dict) -> None:
    images, labels = read_amat(archive["dir"] / ROTMNIST_TRAIN_FILE)
    tr_x, tr_y = archive["train"]
    assert images.dtype == np.float32 and images.shape == (24, 28, 28)
    assert labels.dtype == np.int64
    np.testing.assert_allclose(images, tr_x, atol=1e-7)
    np.testing.assert_array_equal(labels, tr_y)
    images_t, _ = read_amat(archive["dir"] / ROTMNIST_TRAIN_FILE, transpose=True)
    np.testing.assert_allclose(images_t, tr_x.transpose(0, 2, 1), atol=1e-7)


@pytest.mark.parametrize("where", ["zip", "zipdir", "dir"])
def test_load_rotmnist_from_zip_or_directory(archive: dict, where: str) -> None:
    path = {"zip": archive["zip"], "zipdir": archive["zip"].parent, "dir": archive["dir"]}[where]
    data = load_rotmnist(path, expected_rows=ROWS)
    for part in ("train", "test"):
        x, y = archive[part]
        np.testing.assert_allclose(data[f"{part}_images"], x, atol=1e-7)
        np.testing.assert_array_equal(data[f"{part}_labels"], y)


def test_zip_checksums(archive: dict) -> None:
    content = archive["zip"].read_bytes()
    sha = hashlib.sha256(content).hexdigest()
    load_rotmnist(archive["zip"], expected_sha256=sha, expected_md5=hashlib.md5(content).hexdigest(), expected_rows=ROWS)
    with pytest.raises(ChecksumError) as info:
        load_rotmnist(archive["zip"], expected_sha256="ab" * 32)
    assert str(archive["zip"]) in str(info.value) and "ab" * 32 in str(info.value)
    with pytest.warns(UserWarning, match="not checked"):
        load_rotmnist(archive["dir"], expected_sha256=sha, expected_rows=ROWS)


def test_missing_and_malformed(tmp_path: Path, archive: dict) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_rotmnist(tmp_path / "absent.zip")
    assert "absent.zip" in str(info.value) and ROTMNIST_ZIP_NAME in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match=ROTMNIST_TRAIN_FILE):
        load_rotmnist(empty)
    bad = tmp_path / "bad.amat"
    bad.write_text("0.5 0.5 1.0\n")
    with pytest.raises(DataFormatError, match="785 columns"):
        read_amat(bad)
    ragged = tmp_path / "ragged.amat"
    ragged.write_text(" ".join(["0.1"] * 785) + "\n" + " ".join(["0.1"] * 784) + "\n")
    with pytest.raises(DataFormatError):
        read_amat(ragged)
    badlabel = tmp_path / "label.amat"
    badlabel.write_text(" ".join(["0.1"] * 784 + ["3.5"]) + "\n")
    with pytest.raises(DataFormatError, match="labels"):
        read_amat(badlabel)
    notzip = tmp_path / "fake.zip"
    notzip.write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="zip"):
        load_rotmnist(notzip)
    with zipfile.ZipFile(tmp_path / "partial.zip", "w") as zf:
        zf.write(archive["dir"] / ROTMNIST_TRAIN_FILE, ROTMNIST_TRAIN_FILE)
    with pytest.raises(DataFormatError, match=ROTMNIST_TEST_FILE):
        load_rotmnist(tmp_path / "partial.zip")


def test_get_dataset_rotmnist(archive: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    train = get_dataset("rotmnist", "train", data_dir=archive["zip"], expected_rows=ROWS)
    valid = get_dataset("rotmnist", "valid", data_dir=archive["zip"], expected_rows=ROWS)
    test = get_dataset("rotmnist", "test", data_dir=archive["zip"], expected_rows=ROWS)
    # 1/6 of train+valid is valid (2,000 of 12,000 on the real archive): 4 of 24 here
    assert (len(train), len(valid), len(test)) == (20, 4, 8)
    assert not train.is_replica and train.name == "rotmnist" and valid.split == "valid"
    tr_x, _ = archive["train"]
    np.testing.assert_allclose(valid.images[:, 0].numpy(), tr_x[20:], atol=1e-7)
    x, y = test[3]
    assert x.shape == (1, 28, 28) and x.dtype.is_floating_point and int(y) == 3
    monkeypatch.setenv("EPDO_ROTMNIST_DIR", str(archive["dir"]))
    assert len(get_dataset("rotmnist", "test", expected_rows=ROWS)) == 8
    monkeypatch.delenv("EPDO_ROTMNIST_DIR")
    with pytest.raises(DataNotFoundError, match="EPDO_ROTMNIST_DIR") as info:
        get_dataset("rotmnist", "train")
    assert "mnist_rotation_new.zip" in str(info.value)
    sha = hashlib.sha256(archive["zip"].read_bytes()).hexdigest()
    assert len(get_dataset("rotmnist", "train", data_dir=archive["zip"], expected_sha256=sha, expected_rows=ROWS)) == 20
    with pytest.raises(ChecksumError):
        get_dataset("rotmnist", "train", data_dir=archive["zip"], expected_sha256="0" * 64, expected_rows=ROWS)
