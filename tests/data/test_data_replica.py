"""Rotation and the MNIST-rot replica: geometry, determinism, caching, protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from epdo.data import get_dataset, load_replica, replica_plan, rotate_images
from epdo.data.idx import MNIST_FILES, load_idx_dataset
from epdo.data.replica import N_TEST, N_TRAIN, make_replica

MNIST_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="module")
def mnist() -> dict[str, np.ndarray]:
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    return load_idx_dataset(MNIST_DIR, MNIST_FILES, dataset="MNIST")


def _blob(side: int, x: float, y: float, sigma: float = 1.2) -> np.ndarray:
    """A Gaussian blob centred at plane coordinates (x, y) (x right, y up, origin at the image centre)."""
    c = (side - 1) / 2
    i, j = np.mgrid[0:side, 0:side]
    return np.exp(-(((j - c) - x) ** 2 + ((c - i) - y) ** 2) / (2 * sigma**2))


def _centroid(img: np.ndarray) -> tuple[float, float]:
    c = (img.shape[-1] - 1) / 2
    i, j = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    w = img / img.sum()
    return float(((j - c) * w).sum()), float(((c - i) * w).sum())


def test_rotation_quarter_turns_are_exact() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.random((4, 28, 28))
    for k in range(4):
        out = rotate_images(imgs, k * np.pi / 2).numpy()
        np.testing.assert_allclose(out, np.rot90(imgs, k, axes=(1, 2)), atol=1e-12)
    out4 = rotate_images(imgs[:, None].astype(np.float32), np.zeros(4))
    assert out4.shape == (4, 1, 28, 28)
    np.testing.assert_allclose(out4.numpy()[:, 0], imgs, atol=1e-5)


def test_rotation_is_counter_clockwise_about_the_centre() -> None:
    angles = np.array([0.3, 1.0, 2.5, 4.0, 5.9])
    img = _blob(28, 7.0, 0.0)
    out = rotate_images(np.repeat(img[None], len(angles), 0), angles).numpy()
    for a, o in zip(angles, out, strict=True):
        cx, cy = _centroid(o)
        assert cx == pytest.approx(7 * np.cos(a), abs=0.1)
        assert cy == pytest.approx(7 * np.sin(a), abs=0.1)
        assert o.sum() == pytest.approx(img.sum(), rel=0.02)  # mass preserved inside the image


def test_rotation_input_errors() -> None:
    with pytest.raises(ValueError, match="angles"):
        rotate_images(np.zeros((3, 5, 5)), np.zeros(2))
    with pytest.raises(ValueError, match="mode"):
        rotate_images(np.zeros((1, 5, 5)), 0.0, mode="lanczos")
    with pytest.raises(ValueError, match="shape"):
        rotate_images(np.zeros((5, 5)), 0.0)


def test_plan_protocol() -> None:
    plan = replica_plan(0)
    tr, te = plan["train_source"], plan["test_source"]
    assert tr.shape == (N_TRAIN,) and te.shape == (N_TEST,)
    assert tr.max() < 60000  # train comes from MNIST train only
    assert len(np.unique(tr)) == N_TRAIN and len(np.unique(te)) == N_TEST
    assert not set(tr.tolist()) & set(te.tolist())  # no shared source digit
    assert (te >= 60000).sum() > 0 and te.max() < 70000
    for key in ("train_angles", "test_angles"):
        a = plan[key]
        assert a.min() >= 0 and a.max() < 2 * np.pi
        hist = np.histogram(a, bins=8, range=(0, 2 * np.pi))[0] / len(a)
        assert np.abs(hist - 1 / 8).max() < 0.02  # uniform
    again = replica_plan(0)
    for k in plan:
        np.testing.assert_array_equal(plan[k], again[k])
    small = replica_plan(0, n_train=50, n_test=30)
    np.testing.assert_array_equal(small["train_angles"], plan["train_angles"][:50])
    np.testing.assert_array_equal(small["test_source"], plan["test_source"][:30])
    other = replica_plan(1, n_train=50, n_test=30)
    assert not np.array_equal(other["train_angles"], small["train_angles"])
    with pytest.raises(ValueError, match="n_train"):
        replica_plan(0, n_train=N_TRAIN + 1)
    with pytest.raises(ValueError, match="seed"):
        replica_plan(-1)


def test_replica_images_are_rotated_sources(mnist: dict) -> None:
    rep = make_replica(mnist, seed=3, n_train=64, n_test=32)
    pool = np.concatenate([mnist["train_images"], mnist["test_images"]]).astype(np.float64)
    pool_labels = np.concatenate([mnist["train_labels"], mnist["test_labels"]])
    for part in ("train", "test"):
        imgs, src, ang = rep[f"{part}_images"], rep[f"{part}_source"], rep[f"{part}_angles"]
        assert imgs.dtype == np.uint8 and imgs.shape[1:] == (28, 28)
        np.testing.assert_array_equal(rep[f"{part}_labels"], pool_labels[src])
        expected = rotate_images(pool[src], ang).numpy()
        assert np.abs(imgs - expected).max() <= 0.51 + 1e-3  # only uint8 rounding
        # rotating back by -angle recovers the digit (up to interpolation blur and corner clipping)
        back = rotate_images(imgs.astype(np.float64), -ang).numpy()
        corr = [np.corrcoef(b.ravel(), s.ravel())[0, 1] for b, s in zip(back, pool[src], strict=True)]
        assert min(corr) > 0.9


def test_replica_determinism_and_cache(mnist: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPDO_MNIST_DIR", str(MNIST_DIR))
    fresh = load_replica(MNIST_DIR, seed=5, cache_dir=tmp_path, n_train=120, n_test=60, use_cache=False)
    assert not list(tmp_path.iterdir())
    first = load_replica(MNIST_DIR, seed=5, cache_dir=tmp_path, n_train=120, n_test=60)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rotmnist-replica-v1-seed5-120x60.npz"]  # no temp files left behind
    cached = load_replica(None, seed=5, cache_dir=tmp_path, n_train=120, n_test=60)
    direct = make_replica(mnist, seed=5, n_train=120, n_test=60)
    for k in fresh:
        np.testing.assert_array_equal(fresh[k], first[k])
        np.testing.assert_array_equal(fresh[k], cached[k])
        np.testing.assert_array_equal(fresh[k], direct[k])
    other = make_replica(mnist, seed=6, n_train=120, n_test=60)
    assert not np.array_equal(other["train_images"], fresh["train_images"])
    # a corrupt cache file is replaced, with a warning
    (tmp_path / files[0]).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unusable replica cache"):
        again = load_replica(MNIST_DIR, seed=5, cache_dir=tmp_path, n_train=120, n_test=60)
    np.testing.assert_array_equal(again["test_images"], fresh["test_images"])
    # get_dataset reads the cache named by EPDO_CACHE (MNIST made unreachable to prove it)
    env_cache = tmp_path / "env"
    env_cache.mkdir()
    (env_cache / files[0]).write_bytes((tmp_path / files[0]).read_bytes())
    monkeypatch.setenv("EPDO_CACHE", str(env_cache))
    monkeypatch.setenv("EPDO_MNIST_DIR", str(tmp_path / "no-mnist"))
    ds = get_dataset("rotmnist-replica", "valid", data_dir=tmp_path / "no-mnist", seed=5, n_train=120, n_test=60)
    assert ds.is_replica and ds.name == "rotmnist-replica" and "REPLICA" in ds.description
    assert len(ds) == 20  # 1/6 of the train part, as 2,000 of 12,000
    np.testing.assert_array_equal(ds.source_index.numpy(), fresh["train_source"][100:])
    np.testing.assert_allclose(ds.images[:, 0].numpy() * 255, fresh["train_images"][100:], atol=1e-4)
    with pytest.raises(FileNotFoundError, match="no-mnist"):
        get_dataset("rotmnist-replica", "train", data_dir=tmp_path / "no-mnist", seed=7, n_train=120, n_test=60)
