r"""The finite rotation groups of 3-D space: tetrahedral T (12), octahedral O (24), icosahedral I (60).

Each group is the closure of two generating 3x3 rotation matrices (the 3-fold rotation
:math:`P: (x, y, z) \mapsto (z, x, y)` about (1, 1, 1) and, for T, :math:`\mathrm{diag}(1, -1, -1)`; for O,
the quarter turn about z; for I, the fifth of a turn about the icosahedron's vertex (0, 1, phi)), so that
T is a subgroup of O and of I (same matrices). Closure compares matrices rounded to 1e-8, and every entry is
then snapped to the mean of its cluster of equal values (so equal entries are bitwise equal). Elements are
numbered in closure order, the identity first; the Cayley table gives products and inverses exactly.

Real irreps are found numerically, once per group and only when first needed (cached), by splitting the
regular representation: a random symmetric element :math:`X = \sum_g c_g R(g)` (``c_g = c_{g^{-1}}``) of its
commutant (the right multiplications R) has eigenspaces that are single copies of the real irreps; equivalent
copies are recognised by their characters and one of each is kept (the first in eigenvalue order, in a basis
obtained by Gram-Schmidt from the projections of e_0, e_1, ..., so that it does not depend on the LAPACK
build), its matrices cleaned to 1e-12. The
3-dimensional irrep whose character is tr(g.matrix) is stored as g.matrix itself (:attr:`~PolyhedralGroup.
defining_irrep_id`). Irrep ids are ``(i,)``, sorted by dimension with the trivial irrep ``(0,)`` first:

- T: (0,) trivial, (1,) 2-dim of complex type (from the pair of complex characters; End = span(I, J)),
  (2,) the rotation matrices;
- O: (0,) trivial, (1,) sign, (2,) 2-dim, (3,) the rotation matrices, (4,) sign (x) (3,);
- I: (0,) trivial, (1,) the rotation matrices, (2,) its Galois conjugate, (3,) 4-dim, (4,) 5-dim.

Real-irrep dimensions obey :math:`\sum_\psi d_\psi^2 / \dim \mathrm{End}(\psi) = |G|`.

>>> from epdo import groups
>>> I = groups.icosahedral()
>>> I.order, [I.irrep_dim(i) for i in I.irrep_ids()], I.regular.size
(60, [1, 3, 3, 4, 5], 60)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import cos, pi, sin, sqrt

import numpy as np

from .group import Group, GroupElement, IrrepId, _canonical_basis, readonly

__all__ = ["PolyhedralGroup", "PolyhedralElement", "tetrahedral", "octahedral", "icosahedral"]

_ORDERS = {"tetrahedral": 12, "octahedral": 24, "icosahedral": 60}
_NAMES = {"tetrahedral": "T", "octahedral": "O", "icosahedral": "I"}


@dataclass(frozen=True)
class PolyhedralElement(GroupElement):
    """The element number ``index`` (closure order) of a polyhedral group; ``matrix`` is its 3x3 rotation."""

    group: "PolyhedralGroup"
    index: int

    @property
    def matrix(self) -> np.ndarray:
        return _data(self.group.kind).matrices[self.index]

    def __repr__(self) -> str:
        return f"{self.group!r}.element({self.index})"

    def __str__(self) -> str:
        return f"{self.group.name}[{self.index}]"


def _rotation(axis, angle: float) -> np.ndarray:
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    k = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return cos(angle) * np.eye(3) + sin(angle) * k + (1 - cos(angle)) * np.outer(u, u)


def _generators(kind: str) -> list[np.ndarray]:
    p = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if kind == "tetrahedral":
        return [p, np.diag([1.0, -1.0, -1.0])]
    if kind == "octahedral":
        return [p, np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])]
    return [p, _rotation((0.0, 1.0, (1 + sqrt(5)) / 2), 2 * pi / 5)]


def _key(m: np.ndarray) -> bytes:
    return (np.round(m, 8) + 0.0).tobytes()


class _Data:
    """Matrices, Cayley table and inverses of one polyhedral group."""

    def __init__(self, kind: str):
        gens = _generators(kind)
        mats, where = [np.eye(3)], {_key(np.eye(3)): 0}
        i = 0
        while i < len(mats):  # breadth-first closure under left multiplication by the generators
            for s in gens:
                m = s @ mats[i]
                k = _key(m)
                if k not in where:
                    where[k] = len(mats)
                    mats.append(m)
            i += 1
            if len(mats) > _ORDERS[kind]:
                raise RuntimeError(f"closure of the {kind} generators exceeded {_ORDERS[kind]} elements")
        mats = _snap(np.stack(mats))
        n = len(mats)
        if n != _ORDERS[kind]:
            raise RuntimeError(f"closure of the {kind} generators gave {n} elements, not {_ORDERS[kind]}")
        self.matrices = readonly(mats)
        self.where = {_key(m): j for j, m in enumerate(mats)}
        self.cayley = np.array([[self.where[_key(a @ b)] for b in mats] for a in mats], dtype=np.int64)
        self.inverse = np.argmax(self.cayley == 0, axis=1)
        self.generators = tuple(self.where[_key(s)] for s in gens)
        self.cayley.setflags(write=False)
        self.inverse.setflags(write=False)


def _snap(mats: np.ndarray) -> np.ndarray:
    """Entries equal to 1e-8 become bitwise equal (the mean of their cluster), signs exactly opposite."""
    a = np.abs(mats).ravel()
    order = np.argsort(a)
    out = np.empty_like(a)
    start = 0
    for i in range(1, len(a) + 1):
        if i == len(a) or a[order[i]] - a[order[start]] > 1e-8:
            cluster = order[start:i]
            value = 0.0 if a[order[start]] < 1e-8 else float(np.mean(a[cluster]))
            out[cluster] = value
            start = i
    return (np.sign(mats.ravel()) * out).reshape(mats.shape) + 0.0


@lru_cache(maxsize=None)
def _data(kind: str) -> _Data:
    return _Data(kind)


@lru_cache(maxsize=None)
def _irrep_tables(kind: str) -> tuple[np.ndarray, ...]:
    """The real irreps as read-only tables (n, d, d), ordered as documented in the module."""
    data = _data(kind)
    n = len(data.matrices)
    cayley = data.cayley
    left = np.zeros((n, n, n))  # left[g] e_h = e_{gh}
    right = np.zeros((n, n, n))  # right[g] e_h = e_{h g^-1} (commutes with every left[g'])
    for g in range(n):
        left[g, cayley[g], np.arange(n)] = 1.0
        right[g, cayley[np.arange(n), data.inverse[g]], np.arange(n)] = 1.0
    c = np.random.default_rng(0).normal(size=n)
    c = c + c[data.inverse]  # symmetric: X^T = X
    x = np.einsum("g,gij->ij", c, right)
    w, v = np.linalg.eigh((x + x.T) / 2)
    found: dict[tuple, np.ndarray] = {}
    start = 0
    for i in range(1, n + 1):
        if i == n or w[i] - w[start] > 1e-7 * max(1.0, abs(w).max()):
            basis = _canonical_basis(v[:, start:i])
            table = np.einsum("ai,gab,bj->gij", basis, left, basis)
            chi = np.round(np.trace(table, axis1=1, axis2=2), 6) + 0.0
            found.setdefault(tuple(chi), table)
            start = i
    defining = tuple(np.round(np.trace(data.matrices, axis1=1, axis2=2), 6) + 0.0)
    if defining in found:
        found[defining] = np.array(data.matrices)
    keys = sorted(found, key=lambda k: (round(k[0]), k != defining, tuple(-v for v in k)))
    tables = []
    for k in keys:
        t = found[k]
        t = np.where(np.abs(t) < 1e-12, 0.0, t)
        tables.append(readonly(t))
    if sum(t.shape[1] ** 2 / round(np.sum(np.trace(t, axis1=1, axis2=2) ** 2) / n) for t in tables) != n:
        raise RuntimeError(f"the real irreps found for the {kind} group do not add up to its order")
    return tuple(tables)


@dataclass(frozen=True)
class PolyhedralGroup(Group):
    """The rotation group of the tetrahedron, octahedron or icosahedron, acting on R^3 (3x3 matrices).

    Use :func:`tetrahedral`, :func:`octahedral`, :func:`icosahedral`.
    """

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in _ORDERS:
            raise ValueError(f"kind must be one of {sorted(_ORDERS)}, got {self.kind!r}")

    @property
    def name(self) -> str:
        return _NAMES[self.kind]

    @property
    def is_finite(self) -> bool:
        return True

    @property
    def order(self) -> int:
        return _ORDERS[self.kind]

    def __repr__(self) -> str:
        return f"epdo.groups.{self.kind}()"

    # --- elements -----------------------------------------------------------------------------
    def element(self, index: int) -> PolyhedralElement:
        """Element number ``index`` of :attr:`elements`."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < self.order:
            raise ValueError(f"{self.name} elements are numbered 0..{self.order - 1}, got {index!r}")
        return PolyhedralElement(self, int(index))

    def element_from_matrix(self, matrix: np.ndarray) -> PolyhedralElement:
        """The element acting by this 3x3 matrix (to 1e-8), ValueError if there is none."""
        m = np.asarray(matrix, dtype=np.float64)
        j = _data(self.kind).where.get(_key(m)) if m.shape == (3, 3) else None
        if j is None:
            raise ValueError(f"the matrix {m.tolist()} is not an element of {self.name}")
        return PolyhedralElement(self, j)

    @property
    def elements(self) -> tuple[PolyhedralElement, ...]:
        return _elements(self)

    @property
    def identity(self) -> PolyhedralElement:
        return PolyhedralElement(self, 0)

    def index(self, g: PolyhedralElement) -> int:
        self._check(g)
        return g.index

    def compose(self, a: PolyhedralElement, b: PolyhedralElement) -> PolyhedralElement:
        self._check(a)
        self._check(b)
        return PolyhedralElement(self, int(_data(self.kind).cayley[a.index, b.index]))

    def inverse(self, g: PolyhedralElement) -> PolyhedralElement:
        self._check(g)
        return PolyhedralElement(self, int(_data(self.kind).inverse[g.index]))

    def generators(self, max_frequency: int | None = None) -> tuple[PolyhedralElement, ...]:
        """The two generating rotations of the closure (see the module docstring)."""
        return tuple(PolyhedralElement(self, j) for j in _data(self.kind).generators)

    @property
    def cayley_table(self) -> np.ndarray:
        """``cayley_table[a, b]`` = index of ``element(a) * element(b)`` (read-only)."""
        return _data(self.kind).cayley

    # --- irreps -------------------------------------------------------------------------------
    def irrep_ids(self) -> tuple[tuple[int], ...]:
        return tuple((i,) for i in range(len(_irrep_tables(self.kind))))

    def _is_irrep(self, irrep: IrrepId) -> bool:
        return len(irrep) == 1 and 0 <= irrep[0] < len(_irrep_tables(self.kind))

    @property
    def defining_irrep_id(self) -> tuple[int]:
        """The id of the irrep whose matrices are the rotation matrices ``g.matrix``."""
        mats = _data(self.kind).matrices
        return next((i,) for i, t in enumerate(_irrep_tables(self.kind)) if t.shape == mats.shape
                    and np.array_equal(t, mats))

    def irrep_dim(self, irrep: IrrepId) -> int:
        return _irrep_tables(self.kind)[self.check_irrep(irrep)[0]].shape[1]

    def irrep_matrix(self, irrep: IrrepId, g: PolyhedralElement) -> np.ndarray:
        self._check(g)
        return _irrep_tables(self.kind)[self.check_irrep(irrep)[0]][g.index]

    def irrep_matrices(self, irrep: IrrepId, elements) -> np.ndarray:
        return _irrep_tables(self.kind)[self.check_irrep(irrep)[0]][[self.index(g) for g in elements]]

    # --- subgroups ----------------------------------------------------------------------------
    def embed(self, h: GroupElement, subgroup: Group) -> PolyhedralElement:
        """The element acting like ``h``: 3x3 matrices as they are; a planar element of C_N / D_N as the
        rotation about the z axis (its reflection y -> -y as the half turn diag(1, -1, -1))."""
        if not isinstance(h, GroupElement) or h.group != subgroup:
            raise TypeError(f"{h!r} is not an element of {subgroup.name}")
        m = np.asarray(h.matrix, dtype=np.float64)
        if m.shape == (2, 2):
            m = np.block([[m, np.zeros((2, 1))], [np.zeros((1, 2)), np.linalg.det(m) * np.ones((1, 1))]])
        try:
            return self.element_from_matrix(m)
        except ValueError:
            raise ValueError(f"{subgroup.name} is not a subgroup of {self.name} ({h} acts by a matrix "
                             f"that is not in {self.name})") from None


@lru_cache(maxsize=None)
def _elements(group: PolyhedralGroup) -> tuple[PolyhedralElement, ...]:
    return tuple(PolyhedralElement(group, j) for j in range(group.order))


def tetrahedral() -> PolyhedralGroup:
    """T: the 12 rotations of a tetrahedron (isomorphic to A_4)."""
    return PolyhedralGroup("tetrahedral")


def octahedral() -> PolyhedralGroup:
    """O: the 24 rotations of a cube / octahedron (isomorphic to S_4)."""
    return PolyhedralGroup("octahedral")


def icosahedral() -> PolyhedralGroup:
    """I: the 60 rotations of an icosahedron / dodecahedron (isomorphic to A_5)."""
    return PolyhedralGroup("icosahedral")
