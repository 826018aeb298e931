"""MNIST6-180 and MNIST6-M (epdo.data.mnist6): labels from the drawn angle / flip, the transformation applied
as documented (rotation sign, x -> -x), seeded, and the CIFAR loader on a synthetic archive."""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from epdo.data import ChecksumError, DataFormatError, DataNotFoundError, get_dataset, rotate_images
from epdo.data.cifar import load_cifar
from epdo.data.mnist6 import load_mnist6_180, load_mnist6_m

MNIST_DIR = Path(os.environ.get("EPDO_MNIST_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist")


@pytest.fixture(scope="module")
def sixes():
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not found at {MNIST_DIR} (set EPDO_MNIST_DIR)")
    ds = get_dataset("mnist", "test", MNIST_DIR)
    return ds.images[ds.labels == 6]


def test_mnist6_180(sixes):
    ds = load_mnist6_180("test", data_dir=MNIST_DIR, seed=0, n=300)
    assert len(ds) == 300 and ds.num_classes == 2 and ds.tensors[0].shape == (300, 1, 28, 28)
    deg = np.degrees(ds.angles.numpy()) % 360
    assert torch.equal(ds.labels, torch.as_tensor((deg >= 90) & (deg < 270)).long())
    assert 0.35 < ds.labels.float().mean() < 0.65
    # the image is the source 6 rotated counter-clockwise by its angle: rotating back restores it
    back = rotate_images(ds.images, -ds.angles.float())
    err_back = (back - sixes[:300]).abs().mean()
    err_wrong = (rotate_images(ds.images, ds.angles.float()) - sixes[:300]).abs().mean()
    assert err_back < 0.05 and err_wrong > 2 * err_back
    again = load_mnist6_180("test", data_dir=MNIST_DIR, seed=0, n=300)
    other = load_mnist6_180("test", data_dir=MNIST_DIR, seed=1, n=300)
    assert torch.equal(again.images, ds.images) and not torch.equal(other.angles, ds.angles)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        load_mnist6_180("test", data_dir=MNIST_DIR, n=0)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_mnist6_180("dev", data_dir=MNIST_DIR)


def test_mnist6_m_flips_left_right(sixes):
    ds = load_mnist6_m("test", data_dir=MNIST_DIR, seed=0, n=200)
    f = ds.flips
    assert torch.equal(ds.labels, f.long()) and 0.35 < f.float().mean() < 0.65
    assert torch.equal(ds.images[f], sixes[:200][f].flip(-1))  # x -> -x: columns reversed (not y -> -y)
    assert torch.equal(ds.images[~f], sixes[:200][~f])


def test_mnist6_missing_data_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("EPDO_MNIST_DIR", raising=False)
    with pytest.raises(DataNotFoundError, match="MNIST"):
        load_mnist6_180("test", data_dir=tmp_path)


# --- CIFAR --------------------------------------------------------------------------------------------

def _batch(n: int, seed: int, key: bytes, classes: int) -> bytes:
    rng = np.random.default_rng(seed)
    return pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         key: rng.integers(0, classes, n).tolist(), b"batch_label": b"synthetic"})


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_cifar10_synthetic_archive(tmp_path):
    members = {f"cifar-10-batches-py/data_batch_{i}": _batch(1100, i, b"labels", 10) for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = _batch(300, 9, b"labels", 10)
    arc = _archive(tmp_path / "cifar-10-python.tar.gz", members)
    sha = hashlib.sha256(arc.read_bytes()).hexdigest()
    tr = load_cifar("cifar10", "train", data_dir=tmp_path, expected_sha256=sha)
    va = load_cifar("cifar10", "valid", data_dir=tmp_path, expected_sha256=sha)
    te = load_cifar("cifar10", "test", data_dir=tmp_path, expected_sha256=sha)
    assert (len(tr), len(va), len(te)) == (500, 5000, 300) and tr.num_classes == 10
    raw = pickle.loads(members["cifar-10-batches-py/test_batch"])
    assert torch.equal(te.images[3], torch.as_tensor(raw[b"data"][3].reshape(3, 32, 32)).float() / 255)
    assert te.labels.tolist() == raw[b"labels"]
    last = pickle.loads(members["cifar-10-batches-py/data_batch_5"])
    assert va.labels[-1] == last[b"labels"][-1]
    with pytest.raises(ChecksumError, match="sha256 .* expected 0+"):
        load_cifar("cifar10", "test", data_dir=tmp_path, expected_sha256="0" * 64)
    with pytest.raises(ChecksumError, match="md5 .* published c58f30108f718f92721af3b95e74349a"):
        load_cifar("cifar10", "test", data_dir=tmp_path)


def test_cifar100_and_unsafe_pickles(tmp_path, monkeypatch):
    monkeypatch.delenv("EPDO_CIFAR_DIR", raising=False)
    evil = pickle.dumps({b"data": os.system})  # a pickle that would import os.system
    arc = _archive(tmp_path / "cifar-100-python.tar.gz", {"cifar-100-python/train": _batch(5200, 1, b"fine_labels", 100),
                                                          "cifar-100-python/test": evil})
    tr = load_cifar("cifar100", "train", data_dir=tmp_path, verify=False)
    assert len(tr) == 200 and tr.num_classes == 100 and int(tr.labels.max()) < 100
    with pytest.raises(DataFormatError, match="refusing to load"):
        load_cifar("cifar100", "test", data_dir=arc, verify=False)
    with pytest.raises(DataNotFoundError, match="EPDO_CIFAR_DIR"):
        load_cifar("cifar10", "test")
