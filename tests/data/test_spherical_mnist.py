"""spherical-mnist: projection, rotations, settings, cache and checksum (small level, real MNIST files)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import epdo
from epdo.data import dataset_spec, get_dataset
from epdo.data.spherical_mnist import SETTINGS, _cache_name, project, random_rotations
from epdo.sphere import icosphere

MNIST = Path(os.environ.get("EPDO_MNIST_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"))
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason=f"MNIST not found in {MNIST}")


def _digit():
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 12:15] = 200  # a vertical bar
    img[6:9, 9:15] = 120
    return img


def test_projection_geometry():
    """Pixel (i, j) at plane point ((j-13.5)/14, (13.5-i)/14), inverse stereographic: the image centre is the
    north pole, the unit disc the northern hemisphere, the south pole sees nothing."""
    v = icosphere(3).vertices
    s = project(_digit()[None], v)[0]
    assert s[v[:, 2] < -0.2].max() == 0 and s[v[:, 2] > 0].max() > 100
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 0, 27] = 255  # top-right pixel: plane (0.964, 0.964) -> x > 0, y > 0
    hit = v[project(img, v)[0] > 0]
    assert len(hit) and (hit[:, 0] > 0).all() and (hit[:, 1] > 0).all()
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 28, 28\), got \(2, 28\)"):
        project(np.zeros((2, 28)), v)


def test_rotation_is_exact_sampling_and_icosahedral_rotations_permute():
    v = icosphere(2).vertices
    img = _digit()[None]
    for g in epdo.groups.icosahedral().elements[1::13]:
        R = g.matrix
        rotated = project(img, v, R[None])[0]  # f(R^{-1} v)
        perm = icosphere(2).permutation(R)
        plain = project(img, v)[0]
        expect = np.empty_like(plain)
        expect[perm] = plain
        assert np.array_equal(rotated, expect)
    rots = random_rotations(50, np.random.default_rng(0))
    assert np.allclose(np.einsum("nji,njk->nik", rots, rots), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(rots), 1) and abs(rots[:, 2, 2].mean()) < 0.2  # spread out


@needs_mnist
def test_settings_splits_and_cache(tmp_path, recwarn):
    kw = dict(data_dir=MNIST, cache_dir=tmp_path, level=1)
    nn_test = get_dataset("spherical-mnist", "test", setting="N/N", **kw)
    nr_test = get_dataset("spherical-mnist", "test", setting="N/R", **kw)
    rr_train = get_dataset("spherical-mnist", "train", setting="R/R", **kw)
    nr_train = get_dataset("spherical-mnist", "train", setting="N/R", **kw)
    valid = get_dataset("spherical-mnist", "valid", setting="N/R", **kw)
    assert (len(nr_train), len(valid), len(nn_test)) == (55_000, 5_000, 10_000)
    x, y = nn_test[0]
    assert x.shape == (1, 42) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.dtype == torch.int64 and nn_test.num_classes == 10 and int(y) == 7  # MNIST test image 0 is a 7
    assert torch.equal(nn_test.labels, nr_test.labels) and not torch.equal(nn_test.signals, nr_test.signals)
    assert torch.equal(nr_train.signals[:5], get_dataset("spherical-mnist", "train", setting="N/N", **kw).signals[:5])
    # rotated data = the unrotated image sampled at R^{-1} v (recomputed from the stored rotations)
    from epdo.data.idx import MNIST_FILES, load_idx_dataset

    imgs = load_idx_dataset(MNIST, MNIST_FILES, dataset="MNIST")["test_images"][:3]
    assert np.array_equal(project(imgs, icosphere(1).vertices, nr_test.rotations[:3].numpy()), nr_test.signals[:3].numpy())
    assert not torch.allclose(rr_train.rotations[:3], nr_test.rotations[:3])  # train and test streams differ
    # seeded: the same seed gives the same rotations (from the cache or regenerated)
    path = tmp_path / _cache_name(1, "test", True, 0)
    first = nr_test.signals.clone()
    path.unlink()
    assert torch.equal(get_dataset("spherical-mnist", "test", setting="N/R", **kw).signals, first)
    other = get_dataset("spherical-mnist", "test", setting="N/R", seed=1, **kw)
    assert not torch.equal(other.rotations, nr_test.rotations)
    assert not recwarn.list
    # a corrupted cache is noticed (checksum), regenerated with a warning, and rewritten
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["signals"] = arrays["signals"].copy()
    arrays["signals"][0, 0] ^= 1
    np.savez(path, **arrays)
    with pytest.warns(UserWarning, match=r"unusable spherical-mnist cache .*SHA-256"):
        again = get_dataset("spherical-mnist", "test", setting="N/R", **kw)
    assert torch.equal(again.signals, first)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_bad_options():
    spec = dataset_spec("spherical-mnist")
    assert spec.options == ("setting", "level", "verify") and set(SETTINGS) == {"N/N", "N/R", "R/R"}
    with pytest.raises(ValueError, match=r"setting must be one of N/N, N/R, R/R, got 'R/N'"):
        get_dataset("spherical-mnist", "test", setting="R/N")
    with pytest.raises(ValueError, match=r"split must be 'train', 'valid' or 'test'|unknown split"):
        get_dataset("spherical-mnist", "dev")
    with pytest.raises(ValueError, match="level must be an integer in 0..8, got 12"):
        get_dataset("spherical-mnist", "test", level=12)
    with pytest.raises(ValueError, match="takes no option 'angle'"):
        get_dataset("spherical-mnist", "test", angle=3)
