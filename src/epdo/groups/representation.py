r"""Representations as first-class values (paper 003; escnn / e3nn style), for every group of the protocol.

A :class:`Representation` of a group G on R^d is stored in decomposed form

.. math:: \rho(g) = Q \Big(\bigoplus_i \psi_i(g)\Big) Q^{-1}, \qquad Q \in GL(d),

with ``irreps = (psi_1, psi_2, ...)`` and ``change_of_basis = Q`` (orthogonal for orthogonal representations
such as regular and quotient ones; not for the derivative representation rho_hat of Lemma 1). Finite groups
also keep the exact defining matrices (permutation matrices for regular and quotient reps), so grid
symmetries act exactly. Two representations are equal when group, irreps and Q are equal (exact comparison,
no registry). Values are immutable: attributes cannot be assigned and every array is read-only.
``repr(rep)`` evaluates back to an equal representation (``eval(repr(rep), {"epdo": epdo}) == rep``);
``str(rep)`` is short (``"C16.regular"``).

>>> import epdo
>>> from epdo import groups
>>> r = groups.cyclic(4).regular
>>> r, str(r), eval(repr(r), {"epdo": epdo}) == r
(epdo.groups.cyclic(4).regular, 'C4.regular', True)
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np

from .group import Group, GroupElement, IrrepId, _nullspace, readonly

__all__ = ["Representation", "decompose", "directsum", "regular", "quotient", "trivial", "irrep"]


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


def _check_group(group: object) -> Group:
    if not isinstance(group, Group):
        raise TypeError(f"expected an epdo.groups.Group, got {group!r}")
    return group


def decompose(group: Group, matrix: Callable[[GroupElement], np.ndarray], size: int,
              max_frequency: int | None = None) -> tuple[tuple[IrrepId, ...], np.ndarray]:
    r"""Decompose a representation into irreps numerically.

    A non-orthogonal rho is first made orthogonal, :math:`\rho_o = S\rho S^{-1}` with
    :math:`S = (\mathrm{mean}_g \rho(g)^\top\rho(g))^{1/2}` averaged over the group (finite groups: all
    elements; continuous groups: the group's quadrature :meth:`~epdo.groups.Group.averaging`, exact for
    frequencies <= 2L).

    For each irrep psi, the intertwiners {X : rho(g) X = X psi(g)} on the group's generators span
    ``multiplicity x dim End(psi)`` dimensions; orthonormal copies are extracted one at a time, projecting
    out those found so far (the projector commutes with rho, so the remainder is still an intertwiner).

    Returns ``(irreps, Q)`` with ``rho(g) = Q blockdiag(psi_i(g)) Q^{-1}``. Continuous groups need
    ``max_frequency``, a bound on the frequencies present. Raises ValueError if the result is not a
    complete decomposition (rho not a homomorphism, or the bound too low).
    """
    _check_group(group)
    if not group.is_finite and max_frequency is None:
        raise ValueError(f"decomposing a representation of {group.name} needs max_frequency")
    L = int(max_frequency) if max_frequency is not None else 0
    candidates = group.irrep_ids() if group.is_finite else group.irrep_ids_upto(L)
    gens = group.generators(L)
    avg_elems, weights = group.averaging(L)
    all_mats = [np.asarray(matrix(g), dtype=np.float64) for g in avg_elems]
    if any(m.shape != (size, size) for m in all_mats):
        raise ValueError(f"the matrices given for {group.name} must be {size}x{size}, got "
                         f"{next(m.shape for m in all_mats if m.shape != (size, size))}")
    gram = sum(w * m.T @ m for w, m in zip(weights, all_mats))
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
    irreps: list[IrrepId] = []
    cols: list[np.ndarray] = []
    proj = np.zeros((size, size))
    for psi in candidates:
        d = group.irrep_dim(psi)
        chi_psi = np.trace(group.irrep_matrices(psi, avg_elems), axis1=1, axis2=2)
        if abs(np.sum(weights * chars * chi_psi)) < 1e-6:  # multiplicity zero (character orthogonality)
            continue
        rows = [np.kron(m, np.eye(d)) - np.kron(np.eye(size), group.irrep_matrix(psi, g).T)
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
    # (continuous groups: also at a few random elements, which catches a frequency bound that is too low)
    q_inv = np.linalg.inv(q)
    extra = () if group.is_finite else group.testing_elements(4, seed=12345)
    check = tuple(avg_elems) + tuple(extra)
    check_mats = all_mats + [np.asarray(matrix(e), dtype=np.float64) for e in extra]
    psi_mats = {psi: group.irrep_matrices(psi, check) for psi in set(irreps)}
    for i, (m, g) in enumerate(zip(check_mats, check)):
        if not np.allclose(q @ _blockdiag([psi_mats[psi][i] for psi in irreps]) @ q_inv, m,
                           rtol=1e-8, atol=1e-8 * max(1.0, np.abs(m).max())):
            raise ValueError(f"the matrices given for {group.name} are not a homomorphism"
                             + ("" if group.is_finite else f" with frequencies <= {L}")
                             + f": at {g} they differ from the decomposition found on the generators")
    return tuple(irreps), q


def _floats(a: np.ndarray) -> str:
    return repr(np.asarray(a).tolist())


class Representation:
    """A real representation ``rho(g) = Q (+)_i psi_i(g) Q^{-1}`` of any :class:`~epdo.groups.Group`.

    ``irreps``: irrep ids of ``group`` (tuples of ints); ``change_of_basis``: Q (identity if omitted);
    ``table`` (finite groups): the exact matrices rho(g) in ``group.elements`` order.

    >>> from epdo import groups
    >>> G = groups.cyclic(4)
    >>> G.regular.size, G.regular.irreps
    (4, ((0, 0), (0, 1), (0, 2)))
    """

    __slots__ = ("group", "irreps", "change_of_basis", "change_of_basis_inv", "name", "_table", "_hash", "_expr")

    def __init__(self, group: Group, irreps: Iterable[IrrepId], change_of_basis: np.ndarray | None = None,
                 name: str | None = None, table: np.ndarray | None = None):
        _check_group(group)
        if isinstance(irreps, (str, bytes)) or not isinstance(irreps, Iterable):
            raise TypeError(f"irreps must be a sequence of irrep ids of {group.name} (e.g. {group.irrep_ids()[:2]}), "
                            f"got {irreps!r}")
        irreps = tuple(group.check_irrep(i) for i in irreps)
        size = sum(group.irrep_dim(i) for i in irreps)
        q = np.eye(size) if change_of_basis is None else np.array(change_of_basis, dtype=np.float64)
        if q.shape != (size, size):
            raise ValueError(f"change_of_basis must be {size}x{size} for irreps {irreps}, got {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError("change_of_basis must be finite")
        q[q == 0] = 0.0  # no -0.0: equality and hashing compare bytes
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
            if not group.is_finite:
                raise ValueError(f"a table of matrices needs a finite group, {group.name} is continuous")
            table = np.array(table, dtype=np.float64)
            if table.shape != (len(group.elements), size, size):
                raise ValueError(f"table must have shape {(len(group.elements), size, size)} "
                                 f"(one matrix per element of {group.name}), got {table.shape}")
            table.setflags(write=False)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        s = object.__setattr__
        s(self, "group", group)
        s(self, "irreps", irreps)
        s(self, "change_of_basis", q)
        s(self, "change_of_basis_inv", q_inv)
        s(self, "name", name or "+".join("(" + ",".join(str(v) for v in i) + ")" for i in irreps))
        s(self, "_table", table)
        s(self, "_hash", hash((group, irreps, q.tobytes())))
        s(self, "_expr", None)

    def __setattr__(self, key, value):
        raise AttributeError(f"Representation is immutable: cannot set {key!r}")

    def __delattr__(self, key):
        raise AttributeError(f"Representation is immutable: cannot delete {key!r}")

    def _with_expr(self, expr: str) -> "Representation":
        object.__setattr__(self, "_expr", expr)
        return self

    # --- values ---------------------------------------------------------------------------------
    @classmethod
    def from_matrices(cls, group: Group, matrix: Callable[[GroupElement], np.ndarray], size: int,
                      name: str | None = None, max_frequency: int | None = None, *,
                      expr: str | None = None) -> "Representation":
        """A representation given by its matrices, decomposed numerically (see :func:`decompose`).

        ``expr``: optionally, a Python expression (with ``epdo`` in scope) that rebuilds this representation,
        e.g. ``"epdo.diffops.derivative_representation(epdo.groups.dihedral(4), 2)"``; it becomes the repr
        (otherwise the repr spells out irreps, Q and the exact table).
        """
        irreps, q = decompose(group, matrix, size, max_frequency)
        table = np.stack([matrix(g) for g in group.elements]) if group.is_finite else None
        rep = cls(group, irreps, q, name, table)
        if expr is not None:
            if not isinstance(expr, str):
                raise TypeError(f"expr must be a str, got {expr!r}")
            rep._with_expr(expr)
        return rep

    @property
    def size(self) -> int:
        return self.change_of_basis.shape[0]

    @property
    def max_frequency(self) -> int:
        """The largest frequency (degree) among the irreps (0 for groups without one)."""
        return max((self.group.irrep_frequency(i) for i in self.irreps), default=0)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Representation) and self._hash == other._hash and self.group == other.group
                and self.irreps == other.irreps and np.array_equal(self.change_of_basis, other.change_of_basis))

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        if self._expr is not None:
            return self._expr
        extra = "" if self._table is None else f", table={_floats(self._table)}"
        return (f"epdo.groups.Representation({self.group!r}, irreps={list(self.irreps)!r}, "
                f"change_of_basis={_floats(self.change_of_basis)}, name={self.name!r}{extra})")

    def __str__(self) -> str:
        return f"{self.group.name}.{self.name}"

    def __reduce__(self):
        return (_rebuild, (self.group, self.irreps, np.array(self.change_of_basis), self.name,
                           None if self._table is None else np.array(self._table), self._expr))

    # --- matrices -------------------------------------------------------------------------------
    def __call__(self, g: GroupElement) -> np.ndarray:
        """rho(g) as a read-only float64 matrix (exact table for finite groups)."""
        if not isinstance(g, GroupElement) or g.group != self.group:
            raise TypeError(f"{self} takes elements of {self.group.name}, got {g!r}")
        if self._table is not None:
            return self._table[self.group.index(g)]
        return readonly(self.change_of_basis @ _blockdiag([self.group.irrep_matrix(i, g) for i in self.irreps])
                        @ self.change_of_basis_inv)

    def character(self, g: GroupElement) -> float:
        return float(np.trace(self(g)))

    def multiplicities(self) -> dict[IrrepId, int]:
        return dict(Counter(self.irreps))

    def irrep_slices(self) -> list[tuple[IrrepId, slice]]:
        """(irrep, slice of the irrep coordinates) for each irrep in order."""
        out, i = [], 0
        for psi in self.irreps:
            d = self.group.irrep_dim(psi)
            out.append((psi, slice(i, i + d)))
            i += d
        return out

    def is_permutation(self) -> bool:
        """True when every rho(g) is a permutation matrix.

        Finite groups: checked on all elements with the exact matrices (the table of regular and quotient
        representations; an entry must be 0 or 1 up to 1e-12). Continuous groups: only representations made
        of trivial irreps (rho(g) = I) qualify.
        """
        return _is_permutation(self)

    @property
    def is_orthogonal(self) -> bool:
        return np.array_equal(self.change_of_basis_inv, self.change_of_basis.T)

    # --- constructions --------------------------------------------------------------------------
    def __add__(self, other: "Representation") -> "Representation":
        return directsum(self, other)

    def tensor(self, other: "Representation") -> "Representation":
        """Tensor (Kronecker) product rho_1 (x) rho_2, decomposed through the irreps' Clebsch-Gordan maps."""
        if not isinstance(other, Representation):
            raise TypeError(f"tensor product needs a Representation, got {other!r}")
        if other.group != self.group:
            raise ValueError(f"tensor product of representations of {self.group.name} and {other.group.name}")
        d2 = other.size
        perm: list[int] = []
        blocks: list[np.ndarray] = []
        irreps: list[IrrepId] = []
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
        return Representation(self.group, irreps, q, f"({self.name})x({other.name})", table)._with_expr(
            f"{self!r}.tensor({other!r})")

    def dual(self) -> "Representation":
        """The contragredient representation g -> rho(g^{-1})^T (equal to rho when rho is orthogonal)."""
        table = None
        if self._table is not None:
            table = np.stack([self._table[self.group.index(self.group.inverse(g))].T for g in self.group.elements])
        return Representation(self.group, self.irreps, self.change_of_basis_inv.T, f"dual({self.name})",
                              table)._with_expr(f"{self!r}.dual()")

    def restrict(self, subgroup: Group) -> "Representation":
        """The restriction to a subgroup (D_N -> C_N, C_N -> C_M for M | N, O(2) -> SO(2), I -> T, ...)."""
        g = self.group
        g.check_subgroup(subgroup)
        bound = None if subgroup.is_finite else max(self.max_frequency, _max_frequency_of(subgroup))
        return Representation.from_matrices(subgroup, lambda h: self(g.embed(h, subgroup)), self.size,
                                            f"res({self.name})", bound)._with_expr(f"{self!r}.restrict({subgroup!r})")

    def change_basis(self, p: np.ndarray, name: str | None = None) -> "Representation":
        """The equivalent representation P rho(g) P^{-1} for an invertible P."""
        p = np.asarray(p, dtype=np.float64)
        if p.shape != (self.size, self.size) or np.linalg.cond(p) > 1e8:
            raise ValueError(f"change of basis must be an invertible {self.size}x{self.size} matrix")
        table = None if self._table is None else p @ self._table @ np.linalg.inv(p)
        return Representation(self.group, self.irreps, p @ self.change_of_basis, name, table)


def _max_frequency_of(group: Group) -> int:
    return max((group.irrep_frequency(i) for i in group.irrep_ids()), default=0)


def _rebuild(group, irreps, q, name, table, expr):
    return Representation(group, irreps, q, name, table)._with_expr(expr) if expr else \
        Representation(group, irreps, q, name, table)


@lru_cache(maxsize=None)
def _is_permutation(rep: Representation) -> bool:
    group = rep.group
    if not group.is_finite:
        return all(psi == group.trivial_irrep_id for psi in rep.irreps)
    for g in group.elements:
        m = np.asarray(rep(g))
        p = np.round(m)
        if not np.allclose(m, p, rtol=0, atol=1e-12) or not np.isin(p, (0.0, 1.0)).all():
            return False
        if not (np.all(p.sum(0) == 1) and np.all(p.sum(1) == 1)):
            return False
    return True


@lru_cache(maxsize=None)
def _irrep_tensor(group: Group, a: IrrepId, b: IrrepId) -> tuple[tuple[IrrepId, ...], np.ndarray]:
    """psi_a (x) psi_b = C (+) psi_c C^T: the irreps and the (read-only) orthogonal Clebsch-Gordan matrix."""
    bound = group.irrep_frequency(a) + group.irrep_frequency(b)
    known = {}
    if not group.is_finite:  # batch the irrep matrices on the quadrature (one call per irrep, not per element)
        els, _ = group.averaging(bound)
        known = dict(zip(els, np.einsum("nij,nkl->nikjl", group.irrep_matrices(a, els),
                                        group.irrep_matrices(b, els)).reshape(len(els), *(2 * [
                                            group.irrep_dim(a) * group.irrep_dim(b)]))))

    def kron(g):
        m = known.get(g)
        return np.kron(group.irrep_matrix(a, g), group.irrep_matrix(b, g)) if m is None else m

    ids, c = decompose(group, kron, group.irrep_dim(a) * group.irrep_dim(b), max_frequency=bound)
    return ids, readonly(c)


def directsum(*reps: Representation, name: str | None = None) -> Representation:
    """rho_1 (+) rho_2 (+) ... (block-diagonal)."""
    if not reps:
        raise ValueError("directsum needs at least one representation")
    if not all(isinstance(r, Representation) for r in reps):
        raise TypeError(f"directsum takes Representations, got {[type(r).__name__ for r in reps]}")
    g = reps[0].group
    if any(r.group != g for r in reps):
        raise ValueError(f"direct sum of representations of different groups: {[r.group.name for r in reps]}")
    irreps = tuple(i for r in reps for i in r.irreps)
    q = _blockdiag([r.change_of_basis for r in reps])
    table = None
    if g.is_finite:  # keep exact matrices: a summand without a table (irreps, trivial) is exact on its own
        tables = [r._table if r._table is not None else np.stack([r(e) for e in g.elements]) for r in reps]
        table = np.stack([_blockdiag([t[k] for t in tables]) for k in range(len(g.elements))])
    expr = ", ".join(repr(r) for r in reps) + ("" if name is None else f", name={name!r}")
    return Representation(g, irreps, q, name or "+".join(r.name for r in reps), table)._with_expr(
        f"epdo.groups.directsum({expr})")


@lru_cache(maxsize=None)
def trivial(group: Group) -> Representation:
    """The trivial representation rho(g) = 1."""
    _check_group(group)
    return Representation(group, [group.trivial_irrep_id], None, "trivial")._with_expr(f"{group!r}.trivial")


def irrep(group: Group, *irrep_id: int) -> Representation:
    """The irrep ``irrep_id`` (e.g. ``irrep(D8, 1, 1)``) as a representation with Q = I."""
    _check_group(group)
    return _irrep(group, group.check_irrep(irrep_id))


@lru_cache(maxsize=None)
def _irrep(group: Group, irrep_id: IrrepId) -> Representation:
    args = ", ".join(str(v) for v in irrep_id)
    return Representation(group, [irrep_id], None, f"irrep({','.join(str(v) for v in irrep_id)})")._with_expr(
        f"{group!r}.irrep({args})")


def quotient(group: Group, subgroup: Group) -> Representation:
    """The permutation representation of G on the cosets G/H (H = ``subgroup``); H trivial: regular."""
    _check_group(group)
    if not group.is_finite:
        raise ValueError(f"{group.name} is continuous: regular and quotient representations need a finite group")
    _check_group(subgroup)
    return _quotient(group, subgroup)


@lru_cache(maxsize=None)
def _quotient(group: Group, subgroup: Group | None) -> Representation:
    sub = [group.identity] if subgroup is None else [group.embed(h, subgroup) for h in subgroup.elements]
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
    regular = len(sub) == 1
    name = "regular" if regular else f"quotient({group.name}/{subgroup.name})"
    irreps, q = decompose(group, lambda g: table[group.index(g)], n)
    rep = Representation(group, irreps, q, name, table)
    return rep._with_expr(f"{group!r}.regular" if subgroup is None else f"{group!r}.quotient({subgroup!r})")


def regular(group: Group) -> Representation:
    """The regular representation of a finite group: rho(g) e_h = e_{gh}."""
    _check_group(group)
    if not group.is_finite:
        raise ValueError(f"{group.name} is continuous: regular and quotient representations need a finite group")
    return _quotient(group, None)
