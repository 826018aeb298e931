r"""The charged N-body data set (Kipf et al. 2018, in the form used by EGNN and SEGNN; paper 003 section 9).

Five particles in 3-D with charges :math:`q_i \in \{-1, +1\}` (uniform), unit masses and Coulomb forces

.. math:: \ddot x_i = F_i = \sum_{j \ne i} q_i q_j \frac{x_i - x_j}{\|x_i - x_j\|^3}

(like charges repel; each force component clipped to :math:`\pm 0.1/\Delta t` as in Kipf et al.'s
simulator), no walls (EGNN removed Kipf's box so that the data are E(3)-symmetric). Initial positions
:math:`\mathcal N(0, 1)` per coordinate (Kipf's loc_std = 1), velocities of norm 0.5 in a uniform direction. Integration:
velocity Verlet with :math:`\Delta t = 0.001` (Kipf's code uses a leapfrog of the same order). An item is the
state after ``start`` = 3,000 steps (EGNN's frame 30 at sampling interval 100) and the positions
``horizon`` = 1,000 steps later (frame 40): ``(pos (5, 3), vel (5, 3), charge (5, 1), target (5, 3))``,
float32. Splits: 3,000 train / 2,000 valid / 2,000 test trajectories from independent seeded streams
(numpy ``default_rng([seed, split])``).

Setting ``"egnn"`` (``epdo train --data nbody --setting egnn``) instead reproduces the draws of EGNN's
reference generator (``generate_dataset.py --num-train 10000 --seed 43 --sufix small``, the files behind the
published table): numpy's legacy ``RandomState(43)``, the trajectories drawn in the reference's order (10,000
train, then 2,000 valid, then 2,000 test; each draws its charges, positions, velocities and the two unused
noise arrays), charges from :math:`\{-1, 0, +1\}` with probabilities (1/2, 0, 1/2), Kipf's integrator (a kick
then a drift per step: symplectic Euler, so the stored velocity is half a step behind the position) and its
frames: frame k is step (k + 1) * 100, so the input is step 3,100 and the target step 4,100. Training uses
the first 3,000 train trajectories, as EGNN's ``max_training_samples``. The initial states are then the
reference's to the last bit; the trajectories agree up to rounding, which the chaotic close encounters
amplify (the reference computes distances by expanding the square). The default setting, ``"epdo"``, has
independent streams per split and the velocity-Verlet integrator above.

Generated in numpy (about one CPU-minute for the three splits), cached as ``.npz`` written atomically,
with a SHA-256 of the arrays stored inside and checked on reading (a bad cache is regenerated, with a warning).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .paths import atomic_savez, resolve_cache_dir

__all__ = ["NBodyDataset", "simulate", "coulomb_forces", "energy", "initial_state", "make_nbody", "load_nbody", "NBODY_SIZES",
           "NBODY_VERSION", "NBODY_SETTINGS", "reference_initial_states"]

NBODY_VERSION = 1
NBODY_SIZES = {"train": 3000, "valid": 2000, "test": 2000}
_SPLIT_ID = {"train": 0, "valid": 1, "test": 2}
DT = 0.001
MAX_F = 0.1 / DT
_KEYS = ("pos", "vel", "charge", "target")
#: ``"epdo"``: independent seeded streams, velocity Verlet; ``"egnn"``: EGNN's reference generator's draws
NBODY_SETTINGS = ("epdo", "egnn")
_INTEGRATORS = ("verlet", "symplectic-euler")
# EGNN's nbody_small files: generator seed, trajectories drawn per split (in this order), frame spacing
_REF_SEED, _REF_DRAWN, _REF_FREQ, _REF_LENGTH = 43, {"train": 10000, "valid": 2000, "test": 2000}, 100, 5000


def coulomb_forces(pos: np.ndarray, charge: np.ndarray, clip: float | None = MAX_F) -> np.ndarray:
    """Forces ``(..., N, 3)`` on particles at ``pos`` (..., N, 3) with charges (..., N, 1); components clipped to
    [-clip, clip] (None: no clipping)."""
    d = pos[..., :, None, :] - pos[..., None, :, :]  # x_i - x_j
    r2 = (d * d).sum(-1)
    n = pos.shape[-2]
    eye = np.eye(n, dtype=bool)
    r2 = np.where(eye, 1.0, r2)
    qq = charge[..., :, 0, None] * charge[..., None, :, 0]
    w = np.where(eye, 0.0, qq / (r2 * np.sqrt(r2)))
    f = (w[..., None] * d).sum(-2)
    return f if clip is None else np.clip(f, -clip, clip)


def energy(pos: np.ndarray, vel: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Total energy per system: kinetic :math:`\\sum \\|v\\|^2/2` plus Coulomb :math:`\\sum_{i<j} q_i q_j / r_{ij}`."""
    kin = 0.5 * (vel * vel).sum((-1, -2))
    d = pos[..., :, None, :] - pos[..., None, :, :]
    r = np.sqrt((d * d).sum(-1))
    n = pos.shape[-2]
    iu = np.triu_indices(n, 1)
    qq = charge[..., :, 0, None] * charge[..., None, :, 0]
    return kin + (qq[..., iu[0], iu[1]] / r[..., iu[0], iu[1]]).sum(-1)


def simulate(pos: np.ndarray, vel: np.ndarray, charge: np.ndarray, steps: int, dt: float = DT,
             clip: float | None = MAX_F, integrator: str = "verlet") -> tuple[np.ndarray, np.ndarray]:
    r"""Integrate :func:`coulomb_forces` for ``steps`` steps; returns (pos, vel).

    ``"verlet"``: velocity Verlet (half kick, drift, half kick). ``"symplectic-euler"``: Kipf et al.'s loop, a
    full kick :math:`v \mathrel{+}= \Delta t F(x)` then a drift :math:`x \mathrel{+}= \Delta t v` per step."""
    if integrator not in _INTEGRATORS:
        raise ValueError(f"simulate: integrator must be one of {_INTEGRATORS}, got {integrator!r}")
    pos, vel = np.array(pos, dtype=np.float64), np.array(vel, dtype=np.float64)
    if integrator == "symplectic-euler":
        for _ in range(int(steps)):
            vel += dt * coulomb_forces(pos, charge, clip)
            pos += dt * vel
        return pos, vel
    f = coulomb_forces(pos, charge, clip)
    for _ in range(int(steps)):
        vel += 0.5 * dt * f
        pos += dt * vel
        f = coulomb_forces(pos, charge, clip)
        vel += 0.5 * dt * f
    return pos, vel


def initial_state(n: int, rng: np.random.Generator, n_particles: int = 5, loc_std: float = 1.0,
                  vel_norm: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random initial positions, velocities (norm ``vel_norm``) and charges (+-1) of ``n`` systems."""
    pos = rng.normal(0.0, loc_std, size=(n, n_particles, 3))
    vel = rng.normal(size=(n, n_particles, 3))
    vel *= vel_norm / np.linalg.norm(vel, axis=-1, keepdims=True)
    charge = rng.choice(np.array([-1.0, 1.0]), size=(n, n_particles, 1))
    return pos, vel, charge


def reference_initial_states(split: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n`` initial (pos, vel, charge) of ``split`` as EGNN's reference generator draws them (setting
    ``"egnn"``): legacy ``RandomState(43)``, every trajectory of the earlier splits drawn first, the same calls
    in the same order (charges, positions, velocities, then the two noise arrays of zero variance)."""
    if split not in _REF_DRAWN:
        raise ValueError(f"nbody: split must be one of {tuple(_REF_DRAWN)}, got {split!r}")
    if not 0 < n <= _REF_DRAWN[split]:
        raise ValueError(f"nbody (egnn setting): the reference draws {_REF_DRAWN[split]} {split} trajectories, "
                         f"asked for {n}")
    rs = np.random.RandomState(_REF_SEED)
    t_save = _REF_LENGTH // _REF_FREQ - 1
    out = []
    for name, drawn in _REF_DRAWN.items():
        keep = n if name == split else 0
        for k in range(drawn):
            charge = rs.choice(np.array([-1.0, 0.0, 1.0]), size=(5, 1), p=[0.5, 0.0, 0.5])
            pos = rs.randn(3, 5)
            vel = rs.randn(3, 5)
            vel = vel * 0.5 / np.sqrt((vel ** 2).sum(axis=0)).reshape(1, -1)
            if k < keep:
                out.append((pos.T, vel.T, charge))
            elif name == split:
                break
            rs.randn(t_save, 3, 5), rs.randn(t_save, 3, 5)
        if name == split:
            break
    pos, vel, charge = (np.stack(a) for a in zip(*out))
    return pos, vel, charge


def make_nbody(n: int, seed: int = 0, split: str = "train", start: int = 3000, horizon: int = 1000,
               setting: str = "epdo") -> dict[str, np.ndarray]:
    """``n`` trajectories of ``split``'s stream: state after ``start`` steps and positions ``horizon`` later
    (setting ``"egnn"``: the reference generator's draws and integrator, see the module docstring)."""
    if split not in _SPLIT_ID:
        raise ValueError(f"nbody: split must be one of {tuple(_SPLIT_ID)}, got {split!r}")
    if setting not in NBODY_SETTINGS:
        raise ValueError(f"nbody: setting must be one of {NBODY_SETTINGS}, got {setting!r}")
    if setting == "egnn":
        pos, vel, charge = reference_initial_states(split, n)
        integrator = "symplectic-euler"
    else:
        pos, vel, charge = initial_state(n, np.random.default_rng([int(seed), _SPLIT_ID[split]]))
        integrator = "verlet"
    pos, vel = simulate(pos, vel, charge, start, integrator=integrator)
    target, _ = simulate(pos, vel, charge, horizon, integrator=integrator)
    return {"pos": pos.astype(np.float32), "vel": vel.astype(np.float32), "charge": charge.astype(np.float32),
            "target": target.astype(np.float32)}


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in _KEYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _cache_name(seed: int, split: str, n: int, start: int, horizon: int, setting: str = "epdo") -> str:
    if setting == "egnn":
        return f"nbody-v{NBODY_VERSION}-egnn-{split}-{n}-t{start}+{horizon}.npz"
    return f"nbody-v{NBODY_VERSION}-seed{int(seed)}-{split}-{n}-t{start}+{horizon}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            out = {k: z[k] for k in _KEYS}
            if str(z["sha256"]) != _digest(out):
                raise ValueError("checksum mismatch")
        return out
    except Exception as exc:  # bad zip, truncated file, missing key, checksum: regenerate
        warnings.warn(f"ignoring unusable nbody cache {path} ({type(exc).__name__}: {exc}); regenerating it",
                      stacklevel=3)
        return None


def load_nbody(split: str, seed: int = 0, cache_dir=None, n: int | None = None, start: int | None = None,
               horizon: int = 1000, use_cache: bool = True, setting: str = "epdo") -> dict[str, np.ndarray]:
    """The arrays of a split (``n`` trajectories, default the standard size), cached in ``cache_dir``
    (``$EPDO_CACHE``, ``~/.cache/epdo``). ``start`` defaults to 3,000 steps (setting ``"egnn"``: 3,100, the
    reference's frame 30); the ``"egnn"`` setting has the reference's fixed seed and takes no other."""
    if split not in NBODY_SIZES:
        raise ValueError(f"nbody: split must be one of {tuple(NBODY_SIZES)}, got {split!r}")
    if setting not in NBODY_SETTINGS:
        raise ValueError(f"nbody: setting must be one of {NBODY_SETTINGS}, got {setting!r}")
    if setting == "egnn" and int(seed) != 0:
        raise ValueError(f"nbody: the egnn setting reproduces the reference's draws (its seed 43) and takes no "
                         f"data seed; got seed {seed}")
    n = NBODY_SIZES[split] if n is None else int(n)
    if n < 1:
        raise ValueError(f"nbody: n must be a positive number of trajectories, got {n}")
    start = (3100 if setting == "egnn" else 3000) if start is None else int(start)
    path = resolve_cache_dir(cache_dir) / _cache_name(seed, split, n, start, horizon, setting)
    if use_cache:
        cached = _read_cache(path)
        if cached is not None:
            return cached
    out = make_nbody(n, seed, split, start, horizon, setting)
    if use_cache:
        atomic_savez(path, sha256=np.array(_digest(out)), **out)
    return out


class NBodyDataset(Dataset):
    """In-memory N-body regression data: ``ds[i] = (pos (5, 3), vel (5, 3), charge (5, 1), target (5, 3))``;
    ``.tensors`` holds the four stacked tensors (first dim N)."""

    task = "regression"

    def __init__(self, arrays: dict[str, np.ndarray], *, split: str, seed: int, setting: str = "epdo"):
        self.tensors = tuple(torch.as_tensor(np.asarray(arrays[k], dtype=np.float32)) for k in _KEYS)
        self.name, self.split, self.seed, self.is_replica = "nbody", split, int(seed), False
        self.setting = setting
        draws = "EGNN's reference draws" if setting == "egnn" else f"seed {seed}"
        self.description = (f"charged N-body (Kipf et al. 2018 / EGNN), 5 particles, {draws}, {split}: "
                            f"{len(self)} trajectories, 1,000-step horizon")

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, i):
        return tuple(t[i] for t in self.tensors)


def load(split: str, *, data_dir=None, cache_dir=None, seed: int = 0, n: int | None = None,
         setting: str | None = None) -> NBodyDataset:
    """The dataset-registry loader: ``nbody`` split ``split`` (``n``: a prefix size for quick runs; ``setting``:
    one of :data:`NBODY_SETTINGS`, default ``"epdo"``)."""
    setting = "epdo" if setting is None else setting
    return NBodyDataset(load_nbody(split, seed, cache_dir, n, setting=setting), split=split, seed=seed,
                        setting=setting)


def _register() -> None:
    from .registry import DatasetSpec, register_dataset

    register_dataset(DatasetSpec(name="nbody", load=load, task="regression", options=("n", "setting"),
                                 description="charged N-body: 5 particles, predict positions 1,000 steps ahead "
                                             "(3,000 / 2,000 / 2,000 trajectories, generated and cached)"))


_register()
