r"""The group protocol: what every group of epdo implements (numpy only).

A :class:`Group` is a frozen, hashable value. Finite groups list their :attr:`~Group.elements`; continuous
ones are band-limited (a maximal frequency or degree L) and are sampled by Haar measure. Every group knows its
real irreducible representations (irreps), named by tuples of ints (``irrep_ids()``, the trivial irrep
first), with matrices ``irrep_matrix(id, g)`` and the commutant ``endomorphism_basis(id)`` of each real
irrep (1, 2 or 4 matrices for real, complex or quaternionic type). :meth:`~Group.generators` are elements whose intertwining constraints
imply those of the whole group (on representations of frequency <= L for continuous groups): the Hom solver and
:func:`~epdo.groups.decompose` only look at them.

Implementations: :mod:`.planar` (C_N, D_N, SO(2), O(2)), :mod:`.polyhedral` (T, O, I acting on R^3),
:mod:`.so3` (SO(3), O(3) with e3nn's Wigner-D), :mod:`.euclidean` (SE(2), E(2)).

>>> from epdo import groups
>>> G = groups.dihedral(4)
>>> isinstance(G, groups.Group), G.order, G.is_finite
(True, 8, True)
>>> G.irrep_ids()
((0, 0), (1, 0), (1, 1), (0, 2), (1, 2))
"""

from __future__ import annotations

import abc
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .representation import Representation

__all__ = ["Group", "GroupElement", "IrrepId", "readonly"]

IrrepId = tuple  # a tuple of ints, e.g. (j, k) for planar groups, (l,) for SO(3)


def readonly(a: np.ndarray) -> np.ndarray:
    """``a`` as a float64 array that cannot be written to (a copy when ``a`` is shared or not float64)."""
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


class GroupElement(abc.ABC):
    """An element of a :class:`Group`: ``a * b``, ``g.inverse()``, ``g.group`` and ``g.matrix``.

    ``g.matrix`` is the action on the space the group acts on (2x2 for planar groups, 3x3 for 3-D groups,
    the 3x3 homogeneous matrix for SE(2)); it is read-only. Elements are frozen, hashable values.
    """

    __slots__ = ()

    group: "Group"

    @property
    @abc.abstractmethod
    def matrix(self) -> np.ndarray:
        """The action on the space the group acts on."""

    def __mul__(self, other: "GroupElement") -> "GroupElement":
        return self.group.compose(self, other)

    def inverse(self) -> "GroupElement":
        return self.group.inverse(self)


class Group(abc.ABC):
    """Abstract base of every group (frozen value; subclasses are frozen dataclasses).

    Required: :attr:`name`, :attr:`is_finite`, :attr:`identity`, :meth:`compose`, :meth:`inverse`,
    :attr:`elements` (finite) or :meth:`sample_elements` (continuous), :meth:`irrep_ids`, :meth:`irrep_dim`,
    :meth:`irrep_matrix`, :meth:`generators`. The rest (regular and quotient representations, irreps as
    :class:`~epdo.groups.Representation` values, numerical endomorphism bases, Haar averages of finite
    groups) is shared.
    """

    # --- identity -----------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short human name, e.g. ``"D16"``, ``"SO(3)"``."""

    @property
    @abc.abstractmethod
    def is_finite(self) -> bool: ...

    @property
    def order(self) -> int | None:
        """Number of elements, None for continuous groups."""
        return len(self.elements) if self.is_finite else None

    def __str__(self) -> str:
        return self.name

    # --- elements -----------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def identity(self) -> GroupElement: ...

    @abc.abstractmethod
    def compose(self, a: GroupElement, b: GroupElement) -> GroupElement: ...

    @abc.abstractmethod
    def inverse(self, g: GroupElement) -> GroupElement: ...

    @property
    def elements(self) -> tuple[GroupElement, ...]:
        """All elements of a finite group (a fixed order; ``index`` gives the position)."""
        raise ValueError(f"{self.name} is continuous: use sample_elements(n) or testing_elements(n)")

    def index(self, g: GroupElement) -> int:
        """Position of ``g`` in :attr:`elements` (finite groups)."""
        self._check(g)
        return _index_table(self)[g]

    def sample_elements(self, n: int, seed: int = 0) -> tuple[GroupElement, ...]:
        """``n`` elements drawn from the Haar measure (uniformly for a finite group)."""
        _check_count(n)
        if not self.is_finite:
            raise NotImplementedError(f"{type(self).__name__} must implement sample_elements")
        rng = np.random.default_rng(seed)
        return tuple(self.elements[i] for i in rng.integers(0, len(self.elements), size=n))

    def testing_elements(self, n: int = 8, seed: int = 0) -> tuple[GroupElement, ...]:
        """The elements a test should check: all of a finite group, ``n`` Haar samples of a continuous one."""
        return self.elements if self.is_finite else self.sample_elements(n, seed)

    def _check(self, g: object) -> None:
        if not isinstance(g, GroupElement) or g.group != self:
            raise TypeError(f"expected an element of {self.name}, got {g!r}")

    # --- irreps -------------------------------------------------------------------------------
    @abc.abstractmethod
    def irrep_ids(self) -> tuple[IrrepId, ...]:
        """All irreps of a finite group; those of frequency <= the band limit of a continuous one."""

    @abc.abstractmethod
    def irrep_dim(self, irrep: IrrepId) -> int: ...

    @abc.abstractmethod
    def irrep_matrix(self, irrep: IrrepId, g: GroupElement) -> np.ndarray:
        """The (read-only, float64, orthogonal) matrix of the real irrep ``irrep`` at ``g``."""

    def irrep_matrices(self, irrep: IrrepId, elements) -> np.ndarray:
        """``irrep_matrix(irrep, g)`` for many elements at once, shape ``(n, d, d)``."""
        d = self.irrep_dim(irrep)
        return np.stack([self.irrep_matrix(irrep, g) for g in elements]) if len(elements) else np.zeros((0, d, d))

    @property
    def trivial_irrep_id(self) -> IrrepId:
        """The id of the trivial irrep (by convention the first of :meth:`irrep_ids`)."""
        return self.irrep_ids()[0]

    def irrep_frequency(self, irrep: IrrepId) -> int:
        """The band-limit degree of an irrep (planar: k; SO(3): l; 0 for finite groups without one)."""
        return 0

    def check_irrep(self, irrep: object) -> IrrepId:
        """``irrep`` as a tuple of ints if it names an irrep of this group, else ValueError."""
        if type(irrep) is tuple:
            try:
                return _VALID[(self, irrep)]
            except (KeyError, TypeError):
                pass
        try:
            ident = tuple(int(v) for v in irrep) if not isinstance(irrep, (str, bytes)) else None
            if ident is not None and any(int(v) != v for v in irrep):
                ident = None
        except (TypeError, ValueError):
            ident = None
        if ident is None or not self._is_irrep(ident):
            raise ValueError(f"{irrep!r} is not an irrep of {self.name}; valid: {self.irrep_ids()}"
                             + ("" if self.is_finite else " (and higher frequencies)"))
        _VALID[(self, ident)] = ident
        return ident

    def _is_irrep(self, irrep: IrrepId) -> bool:
        return irrep in self.irrep_ids()

    def irrep_ids_upto(self, max_frequency: int) -> tuple[IrrepId, ...]:
        """The irreps of frequency <= ``max_frequency`` (finite groups: all of them)."""
        return self.irrep_ids()

    def endomorphism_basis(self, irrep: IrrepId) -> tuple[np.ndarray, ...]:
        """An orthogonal basis (identity first, each of Frobenius norm sqrt(d)) of the matrices commuting
        with the real irrep: 1, 2 or 4 matrices for real, complex or quaternionic type."""
        return _numerical_endomorphisms(self, self.check_irrep(irrep))

    def generators(self, max_frequency: int | None = None) -> tuple[GroupElement, ...]:
        """Elements whose constraints imply the whole group's (for reps of frequency <= max_frequency)."""
        raise NotImplementedError(f"{type(self).__name__} must implement generators")

    def averaging(self, max_frequency: int) -> tuple[tuple[GroupElement, ...], np.ndarray]:
        """Elements and weights (summing to 1) whose weighted mean equals the Haar mean on every matrix
        entry of a representation of frequency <= 2 * max_frequency (finite groups: all elements)."""
        if not self.is_finite:
            raise NotImplementedError(f"{type(self).__name__} must implement averaging")
        n = len(self.elements)
        return self.elements, np.full(n, 1.0 / n)

    # --- representations ----------------------------------------------------------------------
    @property
    def trivial(self) -> "Representation":
        from .representation import trivial
        return trivial(self)

    @property
    def regular(self) -> "Representation":
        from .representation import regular
        return regular(self)

    def irrep(self, *irrep: int) -> "Representation":
        """The irrep with this id as a :class:`~epdo.groups.Representation` (``D.irrep(1, 1)``)."""
        from .representation import irrep as _irrep
        return _irrep(self, *irrep)

    def quotient(self, subgroup: "Group") -> "Representation":
        """The permutation representation on the cosets G/H."""
        from .representation import quotient
        return quotient(self, subgroup)

    @property
    def irreps(self) -> list["Representation"]:
        """All irreps (up to the band limit) as representations, in ``irrep_ids()`` order."""
        return [self.irrep(*i) for i in self.irrep_ids()]

    # --- subgroups ----------------------------------------------------------------------------
    def subgroup(self, subgroup: "Group") -> "Group":
        """``subgroup`` itself, after checking that it embeds into this group (planar groups instead take
        ``subgroup(N, reflections)``)."""
        self.check_subgroup(subgroup)
        return subgroup

    def embed(self, h: GroupElement, subgroup: "Group") -> GroupElement:
        """The image in ``self`` of an element ``h`` of ``subgroup``."""
        raise ValueError(f"{subgroup.name} is not a subgroup of {self.name}")

    def check_subgroup(self, subgroup: "Group") -> None:
        """ValueError unless ``subgroup`` embeds into this group (checked on its generators)."""
        if not isinstance(subgroup, Group):
            raise TypeError(f"expected a subgroup (an epdo.groups.Group) of {self.name}, got {subgroup!r}")
        for h in tuple(subgroup.generators()) + (subgroup.identity,):
            self.embed(h, subgroup)


_VALID: dict = {}  # (group, irrep id) -> the id as a tuple of ints, for ids already checked


def _check_count(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"the number of elements must be a non-negative integer, got {n!r}")


@lru_cache(maxsize=None)
def _index_table(group: Group) -> dict:
    return {g: i for i, g in enumerate(group.elements)}


def _canonical_basis(v: np.ndarray) -> np.ndarray:
    """An orthonormal basis (columns) of span(v) that does not depend on which basis LAPACK returned.

    ``v``: (n, k) with orthonormal columns. Gram-Schmidt on the projections P e_i of the standard basis
    vectors (P = v v^T is unique for the subspace), each step taking the first i whose residual has at
    least half the largest squared norm (ties between equal norms, common in symmetric representations,
    go to the lowest index, not to rounding noise). Computed in the k coordinates of v: P e_i = v r_i with
    r_i the i-th row of v. SVD / eigh bases of a subspace of dimension > 1 differ between BLAS kernels
    (OpenBLAS picks them by CPU: AVX2 and AVX-512 machines return different null-space bases), and every
    Hom basis, hence the meaning of every stored weight, would differ with them.
    """
    n, k = v.shape
    res = np.array(v, dtype=np.float64)
    dirs = []
    for _ in range(k):
        norms = np.einsum("ij,ij->i", res, res)
        top = norms.max()
        if top <= 1e-20:
            raise RuntimeError(f"canonical basis: found {len(dirs)} of {k} directions")
        i = int(np.argmax(norms >= 0.5 * top))
        d = res[i] / np.sqrt(norms[i])
        for e in dirs:  # re-orthogonalise (rounding)
            d = d - (e @ d) * e
        d = d / np.linalg.norm(d)
        dirs.append(d)
        res -= np.outer(res @ d, d)
    return v @ np.stack(dirs, axis=1) if dirs else np.zeros((n, 0))


def _nullspace(a: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Orthonormal basis (rows) of {v : a v = 0}, canonical (:func:`_canonical_basis`): the same on every CPU."""
    if a.shape[0] == 0:
        return np.eye(a.shape[1])
    _, s, vt = np.linalg.svd(a)
    scale = max(1.0, s[0]) if len(s) else 1.0
    rank = int(np.sum(s > tol * scale))
    return _canonical_basis(vt[rank:].T).T


@lru_cache(maxsize=None)
def _numerical_endomorphisms(group: Group, irrep: IrrepId) -> tuple[np.ndarray, ...]:
    """Solve X psi(g) = psi(g) X on the generators; orthonormalise (Frobenius) starting from the identity."""
    d = group.irrep_dim(irrep)
    gens = group.generators(group.irrep_frequency(irrep))
    rows = [np.kron(m, np.eye(d)) - np.kron(np.eye(d), m.T) for m in (group.irrep_matrix(irrep, g) for g in gens)]
    null = _nullspace(np.concatenate(rows) if rows else np.zeros((0, d * d)))
    basis = [np.eye(d)]
    for v in null:
        x = v.reshape(d, d)
        for b in basis:
            x = x - np.sum(x * b) / np.sum(b * b) * b
        if np.linalg.norm(x) > 1e-6:
            basis.append(x * np.sqrt(d) / np.linalg.norm(x))
    out = []
    for b in basis:
        b = np.where(np.abs(b) < 1e-12, 0.0, b)
        out.append(readonly(b))
    return tuple(out)
