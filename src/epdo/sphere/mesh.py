r"""Icosphere meshes, neighbourhoods and tangent frames (paper 002, "Icosahedral Spherical Mesh").

**Mesh.** Level 0 is the icosahedron with the 12 vertices :math:`(0, \pm 1, \pm\varphi)` and their cyclic
permutations (normalised), the same icosahedron whose 60 rotations :func:`epdo.groups.icosahedral` generates;
level L splits every triangle of level L-1 into four at the edge midpoints, pushed onto the sphere. The new
vertices are appended after the old ones, so level L-1's vertices are the first ``10 * 4**(L-1) + 2`` of
level L (pooling by restriction). Every icosahedral rotation permutes the vertices of every level
(:meth:`Icosphere.permutation`). A short subdivision of our own (numpy) rather than ``trimesh``: it fixes the
vertex order we rely on (nesting, the icosahedral alignment) and adds no dependency.

**Section and frames.** Each vertex P gets a rotation matrix :math:`s(P)` with third column P (the chart of
paper 002, :math:`\varphi_P^{-1}(x_1, x_2) = s(P)\,(x_1, x_2, \sqrt{1 - |x|^2})`); the tangent coordinates of
a neighbour Q are the first two components of :math:`s(P)^{T} Q` (orthographic). The section is ZYZ Euler
angles with :math:`\gamma = 0` about the axis :math:`n = (1, 1, 1)/\sqrt{3}` (:data:`SECTION_AXIS`):
:math:`s(P) = B\, Z(\alpha)\, Y(\beta)` with :math:`B^{T} P = (\sin\beta\cos\alpha, \sin\beta\sin\alpha,
\cos\beta)` and B a fixed rotation taking :math:`e_z` to n. It is singular only at :math:`\pm n`, which are
centres of icosahedron faces: midpoint subdivision never puts a vertex there (their barycentric coordinates
1/3 are not dyadic), so no vertex of any level sits on the singular points (tested). The usual z-axis would
not do: :math:`(0, 0, \pm 1)` are edge midpoints, vertices from level 1 on.

**Convention for** :math:`A_R`. For a rotation R, :math:`R\,s(P)` and :math:`s(RP)` both have third column RP,
so they differ by a rotation about the z-axis:

.. math:: R\, s(P) = s(RP)\, A_R(P), \qquad A_R(P) = s(RP)^{T} R\, s(P) \in SO(2)

(:meth:`Icosphere.frame_rotation` returns its angle :math:`a_R(P)`). Then the tangent gradient in the frame
transforms as :math:`\nabla_{RP}[f \circ R^{-1}] = A_R(P)\, \nabla_P f`, and the rotated operator of
:mod:`epdo.sphere.layers` satisfies :math:`\chi^{(A_R A)}[f\circ R^{-1}](RP) = \chi^{(A)}[f](P)`: an
orientation field moves as :math:`(R\cdot\psi)(RP, A_R A) = \psi(P, A)`, i.e. the orientation index at the
image point shifts by :math:`+a_R(P)`.

>>> from epdo.sphere import icosphere
>>> m = icosphere(2)
>>> m.num_vertices, m.faces.shape, m.vertices.dtype
(162, (320, 3), dtype('float64'))
>>> bool((icosphere(1).vertices == m.vertices[:42]).all())
True
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["Icosphere", "icosphere", "num_vertices", "section", "SECTION_AXIS", "MAX_LEVEL"]

#: The axis about which the section's Euler angles are taken (a 3-fold axis: icosahedron face centres).
SECTION_AXIS = np.array([1.0, 1.0, 1.0]) / math.sqrt(3.0)
#: The largest level built (level 8 has 655,362 vertices).
MAX_LEVEL = 8


def _section_basis() -> np.ndarray:
    b3 = SECTION_AXIS
    b1 = np.array([1.0, -1.0, 0.0]) / math.sqrt(2.0)
    return np.stack([b1, np.cross(b3, b1), b3], axis=1)


_B = _section_basis()


def num_vertices(level: int) -> int:
    """10 * 4**level + 2."""
    return 10 * 4 ** _check_level(level) + 2


def _check_level(level) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"icosphere level must be an integer in 0..{MAX_LEVEL}, got {level!r}")
    return int(level)


def section(points: np.ndarray) -> np.ndarray:
    r"""The section :math:`s(P)` (see the module doc) of unit vectors ``(..., 3)``: rotations ``(..., 3, 3)``
    with third column P. Raises ValueError within 1e-9 of the singular points :math:`\pm n`."""
    p = np.asarray(points, dtype=np.float64)
    u = p @ _B  # B^T P
    rho = np.hypot(u[..., 0], u[..., 1])
    if (rho < 1e-9).any():
        raise ValueError(f"section: a point lies on the singular axis {SECTION_AXIS.tolist()} of the section")
    cb, sb = u[..., 2], rho
    ca, sa = u[..., 0] / rho, u[..., 1] / rho
    e1 = np.stack([ca * cb, sa * cb, -sb], axis=-1) @ _B.T
    e2 = np.stack([-sa, ca, np.zeros_like(ca)], axis=-1) @ _B.T
    return np.stack([e1, e2, p], axis=-1)


def _base() -> tuple[np.ndarray, np.ndarray]:
    phi = (1 + math.sqrt(5)) / 2
    v = []
    for a in (1.0, -1.0):
        for b in (phi, -phi):
            v += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    v = np.array(v) / math.sqrt(1 + phi * phi)
    d = v @ v.T
    adj = d > 0.4  # neighbours: cos = 1/sqrt(5)
    np.fill_diagonal(adj, False)
    faces = []
    for i in range(12):
        for j in range(i + 1, 12):
            for k in range(j + 1, 12):
                if adj[i, j] and adj[j, k] and adj[i, k]:
                    f = [i, j, k]
                    if np.dot(np.cross(v[j] - v[i], v[k] - v[i]), v[i]) < 0:
                        f = [i, k, j]
                    faces.append(f)
    return v, np.array(faces, dtype=np.int64)


def _subdivide(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e.sort(axis=1)
    edges, inv = np.unique(e, axis=0, return_inverse=True)
    inv = inv.reshape(3, -1)
    mid = v[edges[:, 0]] + v[edges[:, 1]]
    mid /= np.linalg.norm(mid, axis=1, keepdims=True)
    m01, m12, m20 = (len(v) + inv[i] for i in range(3))
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    nf = np.concatenate([np.stack(t, 1) for t in ((a, m01, m20), (b, m12, m01), (c, m20, m12), (m01, m12, m20))])
    return np.concatenate([v, mid]), nf


def _csr(rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    key = np.unique(rows * n + cols)
    r, c = key // n, key % n
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, r + 1, 1)
    return np.cumsum(indptr), c.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Icosphere:
    """One icosphere level (build with :func:`icosphere`, cached): arrays are read-only.

    Attributes:
        level: subdivision level.
        vertices: (V, 3) float64 unit vectors.
        faces: (F, 3) int64, counter-clockwise seen from outside.
        ring1, ring2: neighbourhoods as CSR ``(indptr, indices)``: the 1-ring (5 or 6 neighbours) and the
            2-ring (neighbours within two edges, the vertex itself excluded; 10 at level 0, 15 or 18 else).
        frames: (V, 3, 3) the section s(P) at each vertex.
    """

    level: int
    vertices: np.ndarray
    faces: np.ndarray
    ring1: tuple[np.ndarray, np.ndarray]
    ring2: tuple[np.ndarray, np.ndarray]
    frames: np.ndarray

    def __repr__(self) -> str:
        return f"epdo.sphere.icosphere({self.level})"

    def __reduce__(self):
        return (icosphere, (self.level,))

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    def neighbours(self, i: int, ring: int = 1) -> np.ndarray:
        """Indices of the 1- or 2-ring of vertex i."""
        indptr, idx = self.ring1 if ring == 1 else self.ring2
        return idx[indptr[i]:indptr[i + 1]]

    def spacing(self) -> float:
        """Mean great-circle edge length (radians)."""
        indptr, idx = self.ring1
        rows = np.repeat(np.arange(self.num_vertices), np.diff(indptr))
        c = np.clip((self.vertices[rows] * self.vertices[idx]).sum(1), -1, 1)
        return float(np.arccos(c).mean())

    def permutation(self, rotation: np.ndarray, atol: float = 1e-9) -> np.ndarray | None:
        """``perm`` with ``R v[p] = v[perm[p]]`` when the 3x3 rotation R permutes the vertices (to ``atol``),
        else None."""
        r = _check_rotation(rotation)
        rv = self.vertices @ r.T
        j = nearest_vertex(self, rv)
        if np.abs(self.vertices[j] - rv).max() > atol:
            return None
        return j

    def frame_rotation(self, rotation: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        r"""Angles :math:`a_R(P)` of :math:`A_R(P) = s(RP)^T R s(P)` at the vertices (or at unit vectors
        ``points``); see the module doc for the convention."""
        r = _check_rotation(rotation)
        s = self.frames if points is None else section(points)
        sp = section(s[..., 2] @ r.T)
        re1 = s[..., 0] @ r.T
        return np.arctan2((sp[..., 1] * re1).sum(-1), (sp[..., 0] * re1).sum(-1))


def _check_rotation(rotation) -> np.ndarray:
    m = getattr(rotation, "matrix", rotation)
    try:
        r = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"expected a 3x3 rotation matrix, got {type(rotation).__name__}") from None
    if r.shape != (3, 3):
        raise ValueError(f"expected a 3x3 rotation matrix, got shape {r.shape}")
    if not np.allclose(r.T @ r, np.eye(3), atol=1e-8) or np.linalg.det(r) < 0:
        raise ValueError(f"expected a rotation matrix (R^T R = I to 1e-8, det +1), got {r.tolist()} "
                         f"(det {np.linalg.det(r):.4g})")
    return r


def nearest_vertex(mesh: Icosphere, points: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index of the nearest vertex of ``mesh`` to each unit vector in ``points`` (..., 3)."""
    p = np.asarray(points, dtype=np.float64)
    flat = p.reshape(-1, 3)
    out = np.empty(len(flat), dtype=np.int64)
    v = mesh.vertices
    for s in range(0, len(flat), chunk):
        out[s:s + chunk] = np.argmax(flat[s:s + chunk] @ v.T, axis=1)
    return out.reshape(p.shape[:-1])


@lru_cache(maxsize=None)
def _raw(level: int) -> tuple[np.ndarray, np.ndarray]:
    if level == 0:
        return _base()
    return _subdivide(*_raw(level - 1))


@lru_cache(maxsize=None)
def icosphere(level: int) -> Icosphere:
    """The icosphere of ``level`` (0..8; 10 * 4**level + 2 vertices), cached in memory (the build takes
    ~0.1 s at level 5 here: an on-disk cache would not pay, see docs/results.md)."""
    level = _check_level(level)
    v, f = _raw(level)
    n = len(v)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    rows, cols = np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])
    ring1 = _csr(rows, cols, n)
    ip, ix = ring1
    deg = np.diff(ip)
    # two steps: for each (i, j) in ring1, all k in ring1(j)
    r1 = np.repeat(np.arange(n), deg)
    r2 = np.repeat(r1, deg[ix])
    starts = np.repeat(ip[ix], deg[ix])
    offs = np.arange(len(r2)) - np.repeat(np.cumsum(deg[ix]) - deg[ix], deg[ix])
    c2 = ix[starts + offs]
    rr, cc = np.concatenate([r1, r2]), np.concatenate([ix, c2])
    keep = rr != cc
    ring2 = _csr(rr[keep], cc[keep], n)
    frames = section(v)
    arrays = [v, f, *ring1, *ring2, frames]
    for a in arrays:
        a.setflags(write=False)
    return Icosphere(level, v, f, ring1, ring2, frames)


def build_time(level: int) -> float:
    """Seconds to build ``level`` from scratch (clears the caches; for the benchmark / docs)."""
    _raw.cache_clear()
    icosphere.cache_clear()
    t = time.perf_counter()
    icosphere(level)
    return time.perf_counter() - t
