"""The charged N-body generator: physics (energy drift, momentum, rotation and translation symmetry,
the Coulomb force against its potential), seeding, caching with checksums, and the dataset items."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from epdo.data import nbody


def _systems(n=32, seed=0):
    return nbody.initial_state(n, np.random.default_rng(seed))


def test_force_is_minus_the_gradient_of_the_potential():
    pos, vel, q = _systems(4)
    f = nbody.coulomb_forces(pos, q, clip=None)
    eps = 1e-6
    for i in range(5):
        for k in range(3):
            d = np.zeros_like(pos)
            d[:, i, k] = eps
            zero = np.zeros_like(vel)
            grad = (nbody.energy(pos + d, zero, q) - nbody.energy(pos - d, zero, q)) / (2 * eps)
            assert np.allclose(f[:, i, k], -grad, rtol=1e-6, atol=1e-6)


def test_energy_drift_is_second_order_and_momentum_is_conserved():
    pos, vel, q = _systems(64)
    e0 = nbody.energy(pos, vel, q)
    p1, v1 = nbody.simulate(pos, vel, q, 500, clip=None)
    drift = np.abs(nbody.energy(p1, v1, q) - e0) / np.abs(e0)
    # measured: median 8.6e-7, 54 of 64 below 1e-4; close encounters give the tail (why Kipf clips forces)
    assert np.median(drift) < 1e-5
    calm = drift < 1e-4
    p2, v2 = nbody.simulate(pos[calm], vel[calm], q[calm], 1000, dt=nbody.DT / 2, clip=None)
    drift2 = np.abs(nbody.energy(p2, v2, q[calm]) - e0[calm]) / np.abs(e0[calm])
    ratio = np.median(drift[calm] / np.maximum(drift2, 1e-16))
    assert 3.5 < ratio < 4.5, ratio  # measured 4.00; velocity Verlet: error ~ dt^2, halving dt divides it by ~4
    assert np.abs(v1.sum(1) - vel.sum(1)).max() < 1e-10  # pairwise forces: total momentum is conserved


def test_dynamics_commute_with_rotations_inversion_and_translations():
    pos, vel, q = _systems(16)
    rng = np.random.default_rng(3)
    a, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    for R in (a, -a, -np.eye(3)):
        t = rng.normal(size=3)
        p, v = nbody.simulate(pos, vel, q, 200)
        pr, vr = nbody.simulate(pos @ R.T + t, vel @ R.T, q, 200)
        assert np.abs(pr - (p @ R.T + t)).max() < 1e-9 and np.abs(vr - v @ R.T).max() < 1e-9


def test_splits_are_seeded_and_independent():
    a = nbody.make_nbody(3, seed=0, split="train", start=20, horizon=10)
    b = nbody.make_nbody(3, seed=0, split="train", start=20, horizon=10)
    c = nbody.make_nbody(3, seed=0, split="valid", start=20, horizon=10)
    d = nbody.make_nbody(3, seed=1, split="train", start=20, horizon=10)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.allclose(a["pos"], c["pos"]) and not np.allclose(a["pos"], d["pos"])
    assert set(np.unique(a["charge"])) <= {-1.0, 1.0} and a["charge"].shape == (3, 5, 1)
    assert np.allclose(np.linalg.norm(nbody.initial_state(4, np.random.default_rng(0))[1], axis=-1), 0.5)
    with pytest.raises(ValueError, match="split must be one of"):
        nbody.make_nbody(1, split="dev")


def test_cache_is_atomic_checksummed_and_regenerated_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setattr(nbody, "make_nbody", _small(nbody.make_nbody))
    a = nbody.load_nbody("test", seed=2, cache_dir=tmp_path, n=4)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name == "nbody-v1-seed2-test-4-t3000+1000.npz"
    b = nbody.load_nbody("test", seed=2, cache_dir=tmp_path, n=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with np.load(files[0]) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["target"] = arrays["target"] + 1  # the stored checksum no longer matches
    np.savez(files[0], **arrays)
    with pytest.warns(UserWarning, match="checksum mismatch"):
        c = nbody.load_nbody("test", seed=2, cache_dir=tmp_path, n=4)
    assert np.array_equal(c["target"], a["target"])
    files[0].write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="unusable nbody cache"):
        nbody.load_nbody("test", seed=2, cache_dir=tmp_path, n=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nbody.load_nbody("test", seed=2, cache_dir=tmp_path, n=4)  # rewritten: no warning now
    with pytest.raises(ValueError, match="positive number of trajectories"):
        nbody.load_nbody("test", n=0, cache_dir=tmp_path)


def _small(make):
    """make_nbody with a short trajectory (the cache logic does not depend on the length)."""
    return lambda n, seed=0, split="train", start=3000, horizon=1000, setting="epdo": make(n, seed, split, 30, 10,
                                                                                            setting)


def test_dataset_items_and_tensors(tmp_path, monkeypatch):
    monkeypatch.setattr(nbody, "make_nbody", _small(nbody.make_nbody))
    ds = nbody.load("valid", cache_dir=tmp_path, seed=0, n=6)
    assert len(ds) == 6 and ds.task == "regression" and ds.split == "valid"
    pos, vel, charge, target = ds[2]
    assert pos.shape == vel.shape == target.shape == (5, 3) and charge.shape == (5, 1)
    assert all(t.dtype == torch.float32 and t.shape[0] == 6 for t in ds.tensors)
    assert torch.equal(ds.tensors[3][2], target)
    assert nbody.NBODY_SIZES == {"train": 3000, "valid": 2000, "test": 2000}


def _reference_kick_drift(pos, vel, charge, steps, dt=nbody.DT, max_f=nbody.MAX_F):
    """Kipf et al.'s loop written out in their (3, n) layout, distances by expanding the square."""
    x, v, q = pos.T.copy(), vel.T.copy(), charge[:, 0]
    n = x.shape[1]
    for _ in range(steps):
        a = x.T
        sq = (a ** 2).sum(1)
        l2 = sq[:, None] + sq[None, :] - 2 * a @ a.T
        np.fill_diagonal(l2, 1.0)
        size = np.outer(q, q) / l2 ** 1.5
        np.fill_diagonal(size, 0.0)
        f = np.stack([(size * np.subtract.outer(x[c], x[c])).sum(-1) for c in range(3)])
        v = v + dt * np.clip(f, -max_f, max_f)
        x = x + dt * v
    return x.T, v.T


def test_symplectic_euler_is_kipfs_loop():
    pos, vel, q = _systems(3, seed=4)
    p, v = nbody.simulate(pos, vel, q, 200, integrator="symplectic-euler")
    for k in range(3):
        pr, vr = _reference_kick_drift(pos[k], vel[k], q[k], 200)
        assert np.abs(p[k] - pr).max() < 1e-9 and np.abs(v[k] - vr).max() < 1e-9
    # symplectic: the energy error stays bounded (no secular drift) on calm systems
    e0 = nbody.energy(pos, vel, q)
    p1, v1 = nbody.simulate(pos, vel, q, 2000, integrator="symplectic-euler", clip=None)
    assert np.all(np.abs(nbody.energy(p1, v1, q) - e0) / np.abs(e0) < 0.05)
    with pytest.raises(ValueError, match="integrator must be one of"):
        nbody.simulate(pos, vel, q, 1, integrator="rk4")


def test_egnn_setting_replays_the_reference_generators_draws():
    pos, vel, q = nbody.reference_initial_states("train", 2)
    rs = np.random.RandomState(43)  # generate_dataset.py --seed 43: choice, randn, randn, then two noise arrays
    for k in range(2):
        charge = rs.choice([-1.0, 0.0, 1.0], size=(5, 1), p=[0.5, 0.0, 0.5])
        x, w = rs.randn(3, 5), rs.randn(3, 5)
        rs.randn(49, 3, 5), rs.randn(49, 3, 5)
        assert np.array_equal(q[k], charge) and np.array_equal(pos[k], x.T)
        assert np.allclose(vel[k], (w / np.linalg.norm(w, axis=0)).T * 0.5, rtol=0, atol=1e-15)
    vpos, _, vq = nbody.reference_initial_states("valid", 3)  # drawn after all 10,000 train trajectories
    assert vpos.shape == (3, 5, 3) and not np.allclose(vpos[0], pos[0])
    assert set(np.unique(vq)) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="draws 2000 test trajectories"):
        nbody.reference_initial_states("test", 2001)


def test_egnn_setting_options_and_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(nbody, "make_nbody", _small(nbody.make_nbody))
    ds = nbody.load("test", cache_dir=tmp_path, n=3, setting="egnn")
    assert ds.setting == "egnn" and "reference draws" in ds.description
    assert [f.name for f in tmp_path.iterdir()] == ["nbody-v1-egnn-test-3-t3100+1000.npz"]
    ref = nbody.reference_initial_states("test", 3)
    first, _ = nbody.simulate(ref[0], ref[1], ref[2], 30, integrator="symplectic-euler")
    assert np.allclose(ds.tensors[0].numpy(), first, atol=1e-6)
    with pytest.raises(ValueError, match="takes no data seed"):
        nbody.load("test", cache_dir=tmp_path, n=3, seed=1, setting="egnn")
    with pytest.raises(ValueError, match="setting must be one of"):
        nbody.load("test", cache_dir=tmp_path, n=3, setting="kipf")
