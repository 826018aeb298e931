"""get_dataset: embedded sample, splits, error messages, directory resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import epdo.data.paths as paths
from epdo.data import DATASETS, DataNotFoundError, ImageDataset, get_dataset, load_sample, write_idx
from epdo.data.datasets import SAMPLE_N_TEST, SAMPLE_N_TRAIN, SAMPLE_SEED, SPLITS
from epdo.data.idx import MNIST_FILES, load_idx_dataset
from epdo.data.replica import make_replica

MNIST_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


def test_api_constants() -> None:
    assert tuple(DATASETS)[:5] == ("rotmnist-replica", "rotmnist", "mnist", "fashion-mnist", "sample")
    assert SPLITS == ("train", "valid", "test")


@pytest.mark.parametrize("split,n", [("train", 1600), ("valid", 400), ("test", 1000)])
def test_sample_shapes_dtypes_range(split: str, n: int) -> None:
    ds = get_dataset("sample", split)
    assert isinstance(ds, torch.utils.data.Dataset) and isinstance(ds, ImageDataset)
    assert len(ds) == n and ds.images.shape == (n, 1, 28, 28)
    assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    assert set(ds.labels.tolist()) == set(range(10))
    assert ds.name == "sample" and ds.split == split and ds.is_replica
    assert "REPLICA" in ds.description
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.shape == ()
    assert ds.angles is not None and float(ds.angles.min()) >= 0 and float(ds.angles.max()) < 2 * np.pi
    loader = torch.utils.data.DataLoader(ds, batch_size=32)
    xb, yb = next(iter(loader))
    assert xb.shape == (32, 1, 28, 28) and yb.shape == (32,)


def test_sample_asset_is_small_and_splits_are_disjoint() -> None:
    asset = Path(__file__).resolve().parents[2] / "src" / "epdo" / "data" / "assets" / "sample.npz"
    if asset.is_file():
        assert asset.stat().st_size < 2_000_000
    z = load_sample()
    assert z["train_images"].dtype == np.uint8 and z["train_images"].shape == (SAMPLE_N_TRAIN, 28, 28)
    assert z["test_images"].shape == (SAMPLE_N_TEST, 28, 28)
    src = {s: set(get_dataset("sample", s).source_index.tolist()) for s in SPLITS}
    assert not src["train"] & src["valid"] and not src["train"] & src["test"] and not src["valid"] & src["test"]


def test_sample_matches_replica_protocol() -> None:
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    mnist = load_idx_dataset(MNIST_DIR, MNIST_FILES, dataset="MNIST")
    rep = make_replica(mnist, seed=SAMPLE_SEED, n_train=SAMPLE_N_TRAIN, n_test=SAMPLE_N_TEST)
    z = load_sample()
    for part in ("train", "test"):
        np.testing.assert_array_equal(z[f"{part}_source"], rep[f"{part}_source"])
        np.testing.assert_array_equal(z[f"{part}_labels"], rep[f"{part}_labels"])
        np.testing.assert_allclose(z[f"{part}_angles"], rep[f"{part}_angles"])
        diff = np.abs(z[f"{part}_images"].astype(int) - rep[f"{part}_images"].astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float rounding may differ across platforms


def test_unknown_name_or_split() -> None:
    with pytest.raises(ValueError) as info:
        get_dataset("no-such-data", "train")
    for name in DATASETS:
        assert name in str(info.value)
    with pytest.raises(ValueError) as info:
        get_dataset("sample", "validation")
    for split in SPLITS:
        assert split in str(info.value)
    with pytest.raises(ValueError, match="valid names"):
        get_dataset(None, "train")  # type: ignore[arg-type]


def _fake_mnist(directory: Path, n_train: int = 120, n_test: int = 30) -> None:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = {"train": n_train, "test": n_test}
    for key, spec in MNIST_FILES.items():
        n = sizes[key.split("_")[0]]
        if key.endswith("images"):
            arr = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        else:
            arr = (np.arange(n) % 10).astype(np.uint8)
        write_idx(directory / (spec.stem + ".gz"), arr)


def test_mnist_and_fashion_valid_split_is_end_of_train(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "m")
    tr = get_dataset("mnist", "train", data_dir=tmp_path / "m", verify=False)
    va = get_dataset("mnist", "valid", data_dir=tmp_path / "m", verify=False)
    te = get_dataset("mnist", "test", data_dir=tmp_path / "m", verify=False)
    assert (len(tr), len(va), len(te)) == (110, 10, 30)  # 5,000 of 60,000 -> 10 of 120
    full = load_idx_dataset(tmp_path / "m", MNIST_FILES, dataset="MNIST", verify=False)["train_images"]
    np.testing.assert_allclose(va.images[:, 0].numpy() * 255, full[110:], atol=1e-4)
    np.testing.assert_allclose(tr.images[:, 0].numpy() * 255, full[:110], atol=1e-4)
    assert not tr.is_replica and tr.name == "mnist"
    fa = get_dataset("fashion-mnist", "valid", data_dir=tmp_path / "m", verify=False)
    assert len(fa) == 20 and fa.name == "fashion-mnist"  # 10,000 of 60,000 -> 20 of 120
    # with verification the fake files are rejected
    with pytest.raises(ValueError, match="checksum"):
        get_dataset("mnist", "train", data_dir=tmp_path / "m")


def test_real_mnist_splits() -> None:
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    va = get_dataset("mnist", "valid", data_dir=MNIST_DIR)
    assert len(va) == 5000 and va.images.shape == (5000, 1, 28, 28)


def test_missing_fashion_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPDO_FASHION_MNIST_DIR", str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError) as info:
        get_dataset("fashion-mnist", "train")
    msg = str(info.value)
    assert str(tmp_path / "nope") in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "md5" in msg


def test_mnist_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("EPDO_MNIST_DIR", raising=False)
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path / "elsewhere" / "root")
    monkeypatch.setattr(paths, "in_source_checkout", lambda: True)  # outside one: tests/data/test_data_corrupt.py
    with pytest.raises(DataNotFoundError) as info:
        paths.resolve_mnist_dir()
    msg = str(info.value)
    assert "EPDO_MNIST_DIR" in msg
    assert str(work / ".." / "shared" / "data" / "mnist") in msg
    assert str(tmp_path / "elsewhere" / "shared" / "data" / "mnist") in msg
    # ../shared/data/mnist relative to the working directory
    _fake_mnist(tmp_path / "shared" / "data" / "mnist", 12, 6)
    assert paths.resolve_mnist_dir() == (tmp_path / "shared" / "data" / "mnist").resolve()
    # the environment variable comes first
    _fake_mnist(tmp_path / "env", 12, 6)
    monkeypatch.setenv("EPDO_MNIST_DIR", str(tmp_path / "env"))
    assert paths.resolve_mnist_dir() == (tmp_path / "env").resolve()
    # an explicit data_dir wins
    assert paths.resolve_mnist_dir(tmp_path / "x") == tmp_path / "x"


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EPDO_CACHE", raising=False)
    assert paths.resolve_cache_dir() == Path.home() / ".cache" / "epdo"
    monkeypatch.setenv("EPDO_CACHE", str(tmp_path / "c"))
    assert paths.resolve_cache_dir() == tmp_path / "c"
    assert paths.resolve_cache_dir(tmp_path / "d") == tmp_path / "d"


def test_atomic_savez_leaves_no_partial_file(tmp_path: Path) -> None:
    class Boom:
        def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
            raise RuntimeError("boom")

    target = tmp_path / "sub" / "x.npz"
    paths.atomic_savez(target, a=np.arange(3))
    with pytest.raises(RuntimeError, match="boom"):
        paths.atomic_savez(target, a=np.arange(5), b=Boom())  # type: ignore[arg-type]
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.npz"]
    with np.load(target) as z:
        np.testing.assert_array_equal(z["a"], np.arange(3))


def test_image_dataset_validation() -> None:
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(np.zeros((3, 28, 28), np.uint8), np.zeros(2), name="x", split="train", is_replica=False)
    with pytest.raises(ValueError, match="shape"):
        ImageDataset(np.zeros((28, 28), np.uint8), np.zeros(28), name="x", split="train", is_replica=False)
    ds = ImageDataset(np.full((2, 28, 28), 255, np.uint8), np.array([1, 2]), name="x", split="test", is_replica=False)
    assert float(ds.images.max()) == 1.0 and "x" in repr(ds)
