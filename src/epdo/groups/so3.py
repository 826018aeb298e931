r"""SO(3) and O(3) with real Wigner-D irreps from e3nn (optional extra: ``pip install 'epdo[3d]'``).

Elements are 3x3 rotation matrices (O(3): rotations and rotation-inversions, det = -1); ``g.matrix`` acts
on (x, y, z). The groups are band-limited to irreps of degree <= ``max_degree``:

- SO(3): irrep ``(l,)``, the real Wigner-D matrix :math:`D^l(g)` of dimension 2l + 1;
- O(3): irrep ``(l, p)`` with parity p = 1 (even) or -1 (odd): :math:`p^{k} D^l(\det(g)\, g)` with
  :math:`k = (1 - \det g) / 2` (e3nn's ``Irrep(l, p)``; the vector, ``1o`` in e3nn, is ``(1, -1)``).

``irrep_matrix(id, g)`` is e3nn's ``D_from_angles`` at the YXY Euler angles of the rotation
(:math:`g = Y(\alpha) X(\beta) Y(\gamma)`, computed here with atan2 so that they are accurate near the poles),
evaluated in float64 (e3nn builds its generators in torch's default dtype, which is set to float64 for the
call). The degree-1 irrep is the matrix action in e3nn's vector basis: :math:`D^1(g) = P g P^\top` with the
orthogonal :math:`P` = :func:`e3nn_vector_basis` (the identity for e3nn >= 0.5, whose l = 1 basis is
(x, y, z); the permutation ``[[0, 1, 0], [0, 0, 1], [1, 0, 0]]`` for older e3nn, whose basis was (y, z, x)).
P is measured, not assumed. All irreps are of real type (End = span(I)).

Haar averages (:meth:`SO3Group.averaging`) use 2L+1 equispaced alpha and gamma and L+1 Gauss-Legendre nodes
in cos(beta), exact for matrix entries of degree <= 2L; generators are two fixed rotations about
non-parallel axes by angles that are irrational multiples of pi (they generate a dense subgroup, so their
constraints imply all of SO(3)'s for continuous representations), plus the inversion -I for O(3).
e3nn and torch are imported only when such a group is constructed.

>>> from epdo import groups
>>> G = groups.so3(2)
>>> G.irrep_ids(), G.irrep_dim((2,))
(((0,), (1,), (2,)), 5)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import pi

import numpy as np

from .group import Group, GroupElement, IrrepId, _check_count, readonly

__all__ = ["SO3Group", "RotationElement", "so3", "o3", "e3nn_vector_basis"]


def _e3nn():
    try:
        import torch
        from e3nn import o3
    except ImportError as e:
        raise ImportError("SO(3) and O(3) need e3nn (and torch): install the extra with "
                          f"pip install 'epdo[3d]' (import failed: {e})") from None
    return o3, torch


@dataclass(frozen=True)
class RotationElement(GroupElement):
    """A 3x3 orthogonal matrix as an element of SO(3) or O(3) (entries stored row-major, exactly)."""

    group: "SO3Group"
    entries: tuple

    @property
    def matrix(self) -> np.ndarray:
        return readonly(np.array(self.entries).reshape(3, 3))

    @property
    def det(self) -> int:
        """+1 for rotations, -1 for rotation-inversions."""
        return 1 if np.linalg.det(self.matrix) > 0 else -1

    def __repr__(self) -> str:
        return f"{self.group!r}.element({self.matrix.tolist()!r})"

    def __str__(self) -> str:
        return f"{self.group.name}[{np.array2string(self.matrix, precision=3, separator=',')}]"


@dataclass(frozen=True)
class SO3Group(Group):
    """SO(3) (``parity=False``) or O(3) (``parity=True``) with irreps up to degree ``max_degree``.

    Use :func:`so3` and :func:`o3`. Irreps of SE(3)/E(3) are not provided.
    """

    parity: bool
    max_degree: int

    def __post_init__(self) -> None:
        if not isinstance(self.parity, (bool, np.bool_)):
            raise TypeError(f"parity must be a bool, got {self.parity!r}")
        d = self.max_degree
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ValueError(f"max_degree must be a non-negative integer, got {d!r}")
        object.__setattr__(self, "parity", bool(self.parity))
        object.__setattr__(self, "max_degree", int(d))
        _e3nn()

    @property
    def name(self) -> str:
        return "O(3)" if self.parity else "SO(3)"

    @property
    def is_finite(self) -> bool:
        return False

    @property
    def max_frequency(self) -> int:
        """The band limit (alias of ``max_degree``)."""
        return self.max_degree

    def __repr__(self) -> str:
        return f"epdo.groups.{'o3' if self.parity else 'so3'}(max_degree={self.max_degree})"

    # --- elements -----------------------------------------------------------------------------
    def element(self, matrix) -> RotationElement:
        """The element acting by the 3x3 orthogonal ``matrix`` (det +1; O(3) also det -1)."""
        try:
            m = np.array(matrix, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{self.name} elements are 3x3 matrices, got {matrix!r}") from None
        if m.shape != (3, 3) or not np.isfinite(m).all():
            raise ValueError(f"{self.name} elements are finite 3x3 matrices, got shape {m.shape}")
        if not np.allclose(m.T @ m, np.eye(3), atol=1e-9):
            raise ValueError(f"{self.name} elements are orthogonal matrices (m.T @ m = I to 1e-9), got {m.tolist()}")
        if not self.parity and np.linalg.det(m) < 0:
            raise ValueError(f"SO(3) elements have determinant +1, got {np.linalg.det(m):.3f} (use o3 for inversions)")
        return RotationElement(self, tuple(float(v) + 0.0 for v in m.ravel()))

    @property
    def identity(self) -> RotationElement:
        return self.element(np.eye(3))

    @property
    def inversion(self) -> RotationElement:
        """-I (O(3) only)."""
        if not self.parity:
            raise ValueError("SO(3) has no inversion; use o3")
        return self.element(-np.eye(3))

    def compose(self, a: RotationElement, b: RotationElement) -> RotationElement:
        self._check(a)
        self._check(b)
        return self.element(a.matrix @ b.matrix)

    def inverse(self, g: RotationElement) -> RotationElement:
        self._check(g)
        return self.element(g.matrix.T)

    def sample_elements(self, n: int, seed: int = 0) -> tuple[RotationElement, ...]:
        """Haar samples: rotations from uniform unit quaternions (O(3): times -I with probability 1/2)."""
        _check_count(n)
        rng = np.random.default_rng(seed)
        q = rng.normal(size=(n, 4))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        signs = rng.integers(0, 2, size=n) if self.parity else np.zeros(n, dtype=int)
        return tuple(self.element((-1.0) ** s * _quaternion_matrix(v)) for v, s in zip(q, signs))

    def generators(self, max_frequency: int | None = None) -> tuple[RotationElement, ...]:
        """Two fixed rotations generating a dense subgroup (and -I for O(3)); valid for every degree."""
        gens = (self.element(_axis_angle((1.0, 2.0, 3.0), 1.0)), self.element(_axis_angle((-2.0, 1.0, 0.5), 2 ** 0.5)))
        return gens + ((self.inversion,) if self.parity else ())

    def averaging(self, max_frequency: int) -> tuple[tuple[RotationElement, ...], np.ndarray]:
        """(2L+1)^2 (L+1) rotations Y(alpha) X(beta) Y(gamma) and weights, exact for degree <= 2L."""
        return _quadrature(self, int(max_frequency))

    # --- irreps -------------------------------------------------------------------------------
    def irrep_ids(self) -> tuple[IrrepId, ...]:
        return self.irrep_ids_upto(self.max_degree)

    def irrep_ids_upto(self, max_frequency: int) -> tuple[IrrepId, ...]:
        if self.parity:
            return tuple((l, p) for l in range(max_frequency + 1) for p in (1, -1))
        return tuple((l,) for l in range(max_frequency + 1))

    def _is_irrep(self, irrep: IrrepId) -> bool:
        if self.parity:
            return len(irrep) == 2 and irrep[0] >= 0 and irrep[1] in (1, -1)
        return len(irrep) == 1 and irrep[0] >= 0

    def irrep_frequency(self, irrep: IrrepId) -> int:
        return int(irrep[0])

    def irrep_dim(self, irrep: IrrepId) -> int:
        return 2 * self.check_irrep(irrep)[0] + 1

    def irrep_matrix(self, irrep: IrrepId, g: RotationElement) -> np.ndarray:
        self._check(g)
        return _irrep_matrix(self, self.check_irrep(irrep), g)

    def irrep_matrices(self, irrep: IrrepId, elements) -> np.ndarray:
        irrep = self.check_irrep(irrep)
        for g in elements:
            self._check(g)
        if not len(elements):
            return np.zeros((0, self.irrep_dim(irrep), self.irrep_dim(irrep)))
        out = _wigner(irrep, np.stack([g.matrix for g in elements]), self.parity)
        if len(_CACHE) + len(elements) <= _CACHE_SIZE:  # later single-element calls find them
            for g, m in zip(elements, out):
                _CACHE.setdefault((self, irrep, g), readonly(m))
        return out

    def endomorphism_basis(self, irrep: IrrepId) -> tuple[np.ndarray, ...]:
        """(I,): the real Wigner-D irreps are of real type."""
        return (readonly(np.eye(self.irrep_dim(irrep))),)

    # --- subgroups ----------------------------------------------------------------------------
    def embed(self, h: GroupElement, subgroup: Group) -> RotationElement:
        """The element acting like ``h``: 3x3 matrices as they are; a planar element as the rotation about
        the z axis (its reflection y -> -y as the half turn diag(1, -1, -1))."""
        if not isinstance(h, GroupElement) or h.group != subgroup:
            raise TypeError(f"{h!r} is not an element of {subgroup.name}")
        m = np.asarray(h.matrix, dtype=np.float64)
        if m.shape == (2, 2):
            m = np.block([[m, np.zeros((2, 1))], [np.zeros((1, 2)), np.linalg.det(m) * np.ones((1, 1))]])
        if m.shape != (3, 3) or (not self.parity and np.linalg.det(m) < 0):
            raise ValueError(f"{subgroup.name} is not a subgroup of {self.name}")
        return self.element(m)


def _quaternion_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _axis_angle(axis, angle: float) -> np.ndarray:
    u = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    return _quaternion_matrix(np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * u]))


def _yxy(alpha: float, beta: float, gamma: float) -> np.ndarray:
    def y(t):
        return np.array([[np.cos(t), 0.0, np.sin(t)], [0.0, 1.0, 0.0], [-np.sin(t), 0.0, np.cos(t)]])

    x = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(beta), -np.sin(beta)], [0.0, np.sin(beta), np.cos(beta)]])
    return y(alpha) @ x @ y(gamma)


@lru_cache(maxsize=None)
def _quadrature(group: SO3Group, L: int):
    n = 2 * L + 1
    nodes, w_beta = np.polynomial.legendre.leggauss(L + 1)
    els, weights = [], []
    for s in ((1.0, -1.0) if group.parity else (1.0,)):
        for a in range(n):
            for b, wb in zip(nodes, w_beta):
                for c in range(n):
                    els.append(group.element(s * _yxy(2 * pi * a / n, float(np.arccos(b)), 2 * pi * c / n)))
                    weights.append(wb / 2 / n / n)
    w = np.array(weights) / (2 if group.parity else 1)
    w.setflags(write=False)
    return tuple(els), w


def _wigner(irrep: IrrepId, mats: np.ndarray, parity: bool) -> np.ndarray:
    """e3nn's D^l at the YXY angles of ``mats`` (n, 3, 3), times p^k for O(3)."""
    o3, torch = _e3nn()
    l = irrep[0]
    det = np.where(np.linalg.det(mats) > 0, 1.0, -1.0)
    r = mats * det[:, None, None]
    ycol = r[:, :, 1]  # R e_y
    alpha = np.arctan2(ycol[:, 0], ycol[:, 2])
    beta = np.arctan2(np.hypot(ycol[:, 0], ycol[:, 2]), ycol[:, 1])
    t = torch.as_tensor
    r0 = o3.angles_to_matrix(t(alpha), t(beta), torch.zeros(len(alpha), dtype=torch.float64)).numpy()
    rest = np.swapaxes(r0, 1, 2) @ r
    gamma = np.arctan2(rest[:, 0, 2], rest[:, 0, 0])
    p = irrep[1] if parity else (-1) ** l
    k = t((1.0 - det) / 2)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds its so(3) generators in the default dtype
    try:
        d = o3.Irrep(l, p).D_from_angles(t(alpha), t(beta), t(gamma), k).numpy()
    finally:
        torch.set_default_dtype(old)
    return readonly(d)


_CACHE: dict = {}
_CACHE_SIZE = 1 << 17


def _irrep_matrix(group: SO3Group, irrep: IrrepId, g: RotationElement) -> np.ndarray:
    key = (group, irrep, g)
    m = _CACHE.get(key)
    if m is None:
        m = readonly(_wigner(irrep, g.matrix[None], group.parity)[0])
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = m
    return m


@lru_cache(maxsize=None)
def e3nn_vector_basis() -> np.ndarray:
    """The orthogonal P with e3nn's degree-1 Wigner-D ``D^1(g) = P g P^T`` (solved on two rotations)."""
    gens = [_axis_angle((1.0, 2.0, 3.0), 1.0), _axis_angle((-2.0, 1.0, 0.5), 2 ** 0.5)]
    rows = [np.kron(_wigner((1,), g[None], False)[0], np.eye(3)) - np.kron(np.eye(3), g.T) for g in gens]
    _, sv, vt = np.linalg.svd(np.concatenate(rows))
    p = vt[-1].reshape(3, 3) * np.sqrt(3)
    p = p * np.sign(np.linalg.det(p))
    p[np.abs(p) < 1e-12] = 0.0
    p = np.round(p, 12) + 0.0
    return readonly(p)


def so3(max_degree: int) -> SO3Group:
    """SO(3), band-limited to real Wigner-D irreps of degree <= max_degree (needs e3nn: ``epdo[3d]``)."""
    return SO3Group(False, _degree(max_degree, "so3"))


def o3(max_degree: int) -> SO3Group:
    """O(3) = SO(3) x {I, -I}, irreps (l, p) of degree <= max_degree (needs e3nn: ``epdo[3d]``)."""
    return SO3Group(True, _degree(max_degree, "o3"))


def _degree(value: object, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{who}(max_degree) needs an integer >= 0, got {value!r}")
    return int(value)
