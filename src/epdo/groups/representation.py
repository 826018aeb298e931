r"""Representations as first-class values (paper 003; escnn / e3nn style).

A :class:`Representation` of a group G on R^d is stored in decomposed form

.. math:: \rho(g) = Q \Big(\bigoplus_i \psi_i(g)\Big) Q^{-1}, \qquad Q \in GL(d),

with ``irreps = (psi_1, psi_2, ...)`` and ``change_of_basis = Q`` (orthogonal for orthogonal representations
such as regular and quotient ones; not for the derivative representation rho_hat of Lemma 1). Finite groups also keep the exact
defining matrices (permutation matrices for regular and quotient reps), so grid symmetries act exactly.
Two representations are equal when group, irreps and Q are equal (exact comparison, no registry).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np

from .group import Group, GroupElement
from .irreps import endomorphism_basis, irrep_dim, irrep_ids, irrep_matrix

__all__ = ["Representation", "decompose", "directsum", "regular", "quotient", "trivial", "irrep"]

_TOL = 1e-9


def _blockdiag(blocks: Sequence[np.ndarray]) -> np.ndarray:
    n = sum(b.shape[0] for b in blocks)
    m = sum(b.shape[1] for b in blocks)
    out = np.zeros((n, m))
    i = j = 0
    for b in blocks:
        out[i : i + b.shape[0], j : j + b.shape[1]] = b
        i += b.shape[0]
        j += b.shape[1]
    return out


def _nullspace(a: np.ndarray, tol: float = _TOL) -> np.ndarray:
    """Orthonormal basis (rows) of {v : a v = 0}."""
    if a.shape[0] == 0:
        return np.eye(a.shape[1])
    _, s, vt = np.linalg.svd(a)
    scale = max(1.0, s[0]) if len(s) else 1.0
    rank = int(np.sum(s > tol * scale))
    return vt[rank:]


def decompose(group: Group, matrix: Callable[[GroupElement], np.ndarray], size: int,
              max_frequency: int | None = None) -> tuple[tuple[tuple[int, int], ...], np.ndarray]:
    r"""Decompose a representation into irreps numerically.

    A non-orthogonal rho is first made orthogonal, :math:`\rho_o = S\rho S^{-1}` with
    :math:`S = (\mathrm{mean}_g \rho(g)^\top\rho(g))^{1/2}` averaged over the group (for continuous groups
    over 2L+1 equispaced rotations, which averages trigonometric polynomials of degree 2L exactly).

    For each irrep psi, the intertwiners {X : rho(g) X = X psi(g)} on the group's generators span
    ``multiplicity x dim End(psi)`` dimensions; orthonormal copies are extracted one at a time, projecting
    out those found so far (the projector commutes with rho, so the remainder is still an intertwiner).

    Returns ``(irreps, Q)`` with ``rho(g) = Q blockdiag(psi_i(g)) Q^{-1}``. Continuous groups need
    ``max_frequency``, a bound on the frequencies present. Raises ValueError if the result is not a
    complete decomposition (rho not a homomorphism, or the bound too low).
    """
    if not group.is_finite and max_frequency is None:
        raise ValueError(f"decomposing a representation of {group.name} needs max_frequency")
    L = max_frequency if max_frequency is not None else group.N // 2
    candidates = irrep_ids(group) if group.is_finite else irrep_ids(Group(0, group.reflections, L))
    gens = group.generators(L)
    avg_elems = group.elements if group.is_finite else tuple(
        group.element(s, 2 * np.pi * k / (2 * L + 1)) for s in ((0, 1) if group.reflections else (0,))
        for k in range(2 * L + 1))
    all_mats = [np.asarray(matrix(g), dtype=np.float64) for g in avg_elems]
    gram = sum(m.T @ m for m in all_mats) / len(avg_elems)
    chars = np.array([np.trace(m) for m in all_mats])
    orthogonal = np.allclose(gram, np.eye(size), atol=1e-10)
    if orthogonal:
        sq, sq_inv = np.eye(size), np.eye(size)
    else:
        w, u = np.linalg.eigh((gram + gram.T) / 2)
        if w.min() <= 1e-12:
            raise ValueError(f"the {size}-dimensional matrices given for {group.name} are singular: not a representation")
        sq, sq_inv = u @ np.diag(np.sqrt(w)) @ u.T, u @ np.diag(1 / np.sqrt(w)) @ u.T
    mats = [sq @ np.asarray(matrix(g), dtype=np.float64) @ sq_inv for g in gens]
    irreps: list[tuple[int, int]] = []
    cols: list[np.ndarray] = []
    proj = np.zeros((size, size))
    for psi in candidates:
        d = irrep_dim(group, psi)
        chi_psi = np.array([np.trace(irrep_matrix(group, psi, g)) for g in avg_elems])
        if abs(chars @ chi_psi) < 1e-6 * len(avg_elems):  # multiplicity zero (character orthogonality)
            continue
        rows = [np.kron(m, np.eye(d)) - np.kron(np.eye(size), irrep_matrix(group, psi, g).T)
                for m, g in zip(mats, gens)]
        null = _nullspace(np.concatenate(rows, axis=0) if rows else np.zeros((0, size * d)))
        for v in null:
            x = v.reshape(size, d)
            x = x - proj @ x
            gram = x.T @ x
            if np.linalg.norm(x) < 1e-6:
                continue
            w, u = np.linalg.eigh(gram)
            if w.min() < 1e-8:
                continue
            x = x @ (u @ np.diag(w**-0.5) @ u.T)
            irreps.append(psi)
            cols.append(x)
            proj = proj + x @ x.T
    q = np.concatenate(cols, axis=1) if cols else np.zeros((size, 0))
    if q.shape != (size, size) or not np.allclose(q.T @ q, np.eye(size), atol=1e-8):
        raise ValueError(
            f"could not decompose a {size}-dimensional representation of {group.name} into irreps "
            f"(found {q.shape[1]} dimensions): it must be an orthogonal homomorphism"
            + ("" if group.is_finite else f" with frequencies <= {L}"))
    q = sq_inv @ q
    q[np.abs(q) < 1e-14] = 0.0
    # the intertwiners were solved on the generators only: check rho(g) = Q psi(g) Q^-1 on all sampled elements
    # (continuous groups: also at a few random angles, which catches a frequency bound that is too low)
    q_inv = np.linalg.inv(q)
    extra = () if group.is_finite else group.testing_elements(4, seed=12345)
    for m, g in list(zip(all_mats, avg_elems)) + [(np.asarray(matrix(e), dtype=np.float64), e) for e in extra]:
        if not np.allclose(q @ _blockdiag([irrep_matrix(group, psi, g) for psi in irreps]) @ q_inv, m,
                           rtol=1e-8, atol=1e-8 * max(1.0, np.abs(m).max())):
            raise ValueError(f"the matrices given for {group.name} are not a homomorphism"
                             + ("" if group.is_finite else f" with frequencies <= {L}")
                             + f": at {g!r} they differ from the decomposition found on the generators")
    return tuple(irreps), q


class Representation:
    """A real orthogonal representation ``rho(g) = Q (+)_i psi_i(g) Q^T`` of a planar group.

    >>> from epdo import groups
    >>> G = groups.cyclic(4)
    >>> G.regular.size, G.regular.irreps
    (4, ((0, 0), (0, 1), (0, 2)))
    """

    __slots__ = ("group", "irreps", "change_of_basis", "change_of_basis_inv", "name", "_table", "_hash")

    def __init__(self, group: Group, irreps: Iterable[tuple[int, int]], change_of_basis: np.ndarray | None = None,
                 name: str | None = None, table: np.ndarray | None = None):
        irreps = tuple(tuple(int(v) for v in i) for i in irreps)
        size = sum(irrep_dim(group, i) for i in irreps)
        q = np.eye(size) if change_of_basis is None else np.array(change_of_basis, dtype=np.float64)
        q[q == 0] = 0.0  # no -0.0: equality and hashing compare bytes
        if q.shape != (size, size):
            raise ValueError(f"change_of_basis must be {size}x{size} for irreps {irreps}, got {q.shape}")
        if np.allclose(q.T @ q, np.eye(size), atol=1e-12):
            q_inv = q.T.copy()
        else:
            try:
                q_inv = np.linalg.inv(q)
            except np.linalg.LinAlgError:
                q_inv = None
            if q_inv is None or not np.allclose(q_inv @ q, np.eye(size), atol=1e-8):
                raise ValueError("change_of_basis must be an invertible matrix")
        q.setflags(write=False)
        q_inv.setflags(write=False)
        if table is not None:
            table = np.array(table, dtype=np.float64)
            table.setflags(write=False)
        self.group = group
        self.irreps = irreps
        self.change_of_basis = q
        self.change_of_basis_inv = q_inv
        self.name = name or "+".join(f"({j},{k})" for j, k in irreps)
        self._table = table
        self._hash = hash((group, irreps, q.tobytes()))

    # --- values ---------------------------------------------------------------------------------
    @classmethod
    def from_matrices(cls, group: Group, matrix: Callable[[GroupElement], np.ndarray], size: int,
                      name: str | None = None, max_frequency: int | None = None) -> "Representation":
        """A representation given by its matrices, decomposed numerically (see :func:`decompose`)."""
        irreps, q = decompose(group, matrix, size, max_frequency)
        table = np.stack([matrix(g) for g in group.elements]) if group.is_finite else None
        return cls(group, irreps, q, name, table)

    @property
    def size(self) -> int:
        return self.change_of_basis.shape[0]

    @property
    def max_frequency(self) -> int:
        return max((k for _, k in self.irreps), default=0)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Representation) and self._hash == other._hash and self.group == other.group
                and self.irreps == other.irreps and np.array_equal(self.change_of_basis, other.change_of_basis))

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"{self.group.name}.{self.name}"

    def __reduce__(self):
        return (Representation, (self.group, self.irreps, np.array(self.change_of_basis), self.name,
                                 None if self._table is None else np.array(self._table)))

    # --- matrices -------------------------------------------------------------------------------
    def __call__(self, g: GroupElement) -> np.ndarray:
        """rho(g) as a float64 matrix (exact table for finite groups)."""
        if not isinstance(g, GroupElement) or g.group != self.group:
            raise TypeError(f"{self!r} takes elements of {self.group.name}, got {g!r}")
        if self._table is not None:
            return self._table[self.group.index(g)]
        return (self.change_of_basis @ _blockdiag([irrep_matrix(self.group, i, g) for i in self.irreps])
                @ self.change_of_basis_inv)

    def character(self, g: GroupElement) -> float:
        return float(np.trace(self(g)))

    def multiplicities(self) -> dict[tuple[int, int], int]:
        return dict(Counter(self.irreps))

    def irrep_slices(self) -> list[tuple[tuple[int, int], slice]]:
        """(irrep, slice of the irrep coordinates) for each irrep in order."""
        out, i = [], 0
        for psi in self.irreps:
            d = irrep_dim(self.group, psi)
            out.append((psi, slice(i, i + d)))
            i += d
        return out

    # --- constructions --------------------------------------------------------------------------
    def __add__(self, other: "Representation") -> "Representation":
        return directsum(self, other)

    def tensor(self, other: "Representation") -> "Representation":
        """Tensor (Kronecker) product rho_1 (x) rho_2, decomposed through the irreps' Clebsch-Gordan maps."""
        if other.group != self.group:
            raise ValueError(f"tensor product of representations of {self.group.name} and {other.group.name}")
        d2 = other.size
        perm: list[int] = []
        blocks: list[np.ndarray] = []
        irreps: list[tuple[int, int]] = []
        for a, sa in self.irrep_slices():
            for b, sb in other.irrep_slices():
                for p in range(sa.start, sa.stop):
                    for q in range(sb.start, sb.stop):
                        perm.append(p * d2 + q)
                ids, c = _irrep_tensor(self.group, a, b)
                irreps += ids
                blocks.append(c)
        q = np.kron(self.change_of_basis, other.change_of_basis)[:, perm] @ _blockdiag(blocks)
        q[np.abs(q) < 1e-14] = 0.0
        table = None
        if self._table is not None and other._table is not None:
            table = np.einsum("gij,gkl->gikjl", self._table, other._table).reshape(len(self._table), *q.shape)
        return Representation(self.group, irreps, q, f"({self.name})x({other.name})", table)

    @property
    def is_orthogonal(self) -> bool:
        return np.array_equal(self.change_of_basis_inv, self.change_of_basis.T)

    def dual(self) -> "Representation":
        """The contragredient representation g -> rho(g^{-1})^T (equal to rho when rho is orthogonal)."""
        table = None
        if self._table is not None:
            table = np.stack([self._table[self.group.index(self.group.inverse(g))].T for g in self.group.elements])
        return Representation(self.group, self.irreps, self.change_of_basis_inv.T, f"dual({self.name})", table)

    def restrict(self, subgroup: Group) -> "Representation":
        """The restriction to a subgroup (D_N -> C_N, C_N -> C_M for M | N, O(2) -> SO(2), ...)."""
        g = self.group
        if subgroup.reflections and not g.reflections or (g.is_finite and (not subgroup.is_finite or g.N % subgroup.N)):
            raise ValueError(f"{subgroup.name} is not a subgroup of {g.name}")
        return Representation.from_matrices(subgroup, lambda h: self(g.embed(h, subgroup)), self.size,
                                            f"res({self.name})", self.max_frequency)

    def change_basis(self, p: np.ndarray, name: str | None = None) -> "Representation":
        """The equivalent representation P rho(g) P^{-1} for an invertible P."""
        p = np.asarray(p, dtype=np.float64)
        if p.shape != (self.size, self.size) or np.linalg.cond(p) > 1e8:
            raise ValueError(f"change of basis must be an invertible {self.size}x{self.size} matrix")
        table = None if self._table is None else p @ self._table @ np.linalg.inv(p)
        return Representation(self.group, self.irreps, p @ self.change_of_basis, name, table)


@lru_cache(maxsize=None)
def _irrep_tensor(group: Group, a: tuple[int, int], b: tuple[int, int]):
    da, db = irrep_dim(group, a), irrep_dim(group, b)
    return decompose(group, lambda g: np.kron(irrep_matrix(group, a, g), irrep_matrix(group, b, g)),
                     da * db, max_frequency=a[1] + b[1])


def directsum(*reps: Representation, name: str | None = None) -> Representation:
    """rho_1 (+) rho_2 (+) ... (block-diagonal)."""
    if not reps:
        raise ValueError("directsum needs at least one representation")
    g = reps[0].group
    if any(r.group != g for r in reps):
        raise ValueError(f"direct sum of representations of different groups: {[r.group.name for r in reps]}")
    irreps = tuple(i for r in reps for i in r.irreps)
    q = _blockdiag([r.change_of_basis for r in reps])
    table = None
    if g.is_finite:  # keep exact matrices: a summand without a table (irreps, trivial) is exact on its own
        tables = [r._table if r._table is not None else np.stack([r(e) for e in g.elements]) for r in reps]
        table = np.stack([_blockdiag([t[k] for t in tables]) for k in range(len(g.elements))])
    return Representation(g, irreps, q, name or "+".join(r.name for r in reps), table)


@lru_cache(maxsize=None)
def trivial(group: Group) -> Representation:
    return Representation(group, [(0, 0)], None, "trivial")


@lru_cache(maxsize=None)
def irrep(group: Group, j: int, k: int) -> Representation:
    return Representation(group, [(j, k)], None, f"irrep({j},{k})")


@lru_cache(maxsize=None)
def quotient(group: Group, subgroup: Group) -> Representation:
    """The permutation representation of G on the cosets G/H (H = ``subgroup``); H trivial: regular."""
    if not group.is_finite:
        raise ValueError(f"{group.name} is continuous: regular and quotient representations need a finite group")
    sub = [group.embed(h, subgroup) for h in subgroup.elements]
    coset_of: dict[GroupElement, int] = {}
    reps: list[GroupElement] = []
    for g in group.elements:
        if g in coset_of:
            continue
        for h in sub:
            coset_of[group.compose(g, h)] = len(reps)
        reps.append(g)
    n = len(reps)
    table = np.zeros((len(group.elements), n, n))
    for gi, g in enumerate(group.elements):
        for c, r in enumerate(reps):
            table[gi, coset_of[group.compose(g, r)], c] = 1.0
    name = "regular" if len(sub) == 1 else f"quotient({group.name}/{subgroup.name})"
    irreps, q = decompose(group, lambda g: table[group.index(g)], n)
    return Representation(group, irreps, q, name, table)


def regular(group: Group) -> Representation:
    """The regular representation of a finite group: rho(g) e_h = e_{gh}."""
    return quotient(group, group.subgroup(1, False) if group.is_finite else group)
