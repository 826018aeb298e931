"""The rotation groups T, O, I of 3-D space: group axioms against their 3x3 matrices, real irreps (homomorphism,
orthogonality, dimensions and characters against class counts), the regular representation's decomposition,
Hom dimensions against characters, subgroups and restriction."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from epdo import groups
from epdo.groups import hom_basis, hom_dimension

POLY = {"T": groups.tetrahedral(), "O": groups.octahedral(), "I": groups.icosahedral()}
ORDERS = {"T": 12, "O": 24, "I": 60}


def conjugacy_classes(G):
    els = G.elements
    seen, classes = set(), []
    for g in els:
        if g in seen:
            continue
        cls = {h * g * h.inverse() for h in els}
        seen |= cls
        classes.append(cls)
    return classes


def chars(rep, G):
    return np.array([rep.character(g) for g in G.elements])


@pytest.mark.parametrize("name", list(POLY))
def test_axioms_and_matrices(name):
    G = POLY[name]
    els = G.elements
    assert G.order == len(els) == len(set(els)) == ORDERS[name] and G.is_finite
    assert [G.index(g) for g in els] == list(range(G.order)) and els[0] == G.identity
    mats = np.stack([g.matrix for g in els])
    assert len({m.round(8).tobytes() for m in mats}) == G.order  # distinct matrices
    np.testing.assert_allclose(np.einsum("gji,gjk->gik", mats, mats), np.broadcast_to(np.eye(3), mats.shape), atol=1e-14)
    np.testing.assert_allclose(np.linalg.det(mats), 1.0, atol=1e-14)
    np.testing.assert_array_equal(G.identity.matrix, np.eye(3))
    table = G.cayley_table
    for a, b in itertools.product(els, els):  # closure and the Cayley table agree with matrix products
        ab = a * b
        assert ab.group == G and table[a.index, b.index] == ab.index
        np.testing.assert_allclose(ab.matrix, a.matrix @ b.matrix, atol=1e-14)
    for a in els:
        assert a * a.inverse() == G.identity == a.inverse() * a
    rng = np.random.default_rng(0)
    for i, j, k in rng.integers(0, G.order, size=(300, 3)):
        a, b, c = els[i], els[j], els[k]
        assert (a * b) * c == a * (b * c)
    # the generators generate: closure of the generators alone gives the whole group
    gens = G.generators()
    span = {G.identity}
    while True:
        new = span | {s * g for s in gens for g in span}
        if new == span:
            break
        span = new
    assert span == set(els)


def test_subgroups_share_matrices():
    T, O, I = POLY["T"], POLY["O"], POLY["I"]
    for big in (O, I):
        for h in T.elements:
            np.testing.assert_array_equal(big.embed(h, T).matrix, h.matrix)
        assert big.subgroup(T) == T
    # planar groups embed as rotations about z (the flip y -> -y as the half turn diag(1, -1, -1))
    D4 = groups.dihedral(4)
    for h in D4.elements:
        m = O.embed(h, D4).matrix
        np.testing.assert_allclose(m[:2, :2], h.matrix, atol=1e-15)
        assert m[2, 2] == np.linalg.det(h.matrix)
    with pytest.raises(ValueError, match="C3 is not a subgroup of T"):
        T.embed(groups.cyclic(3).element(0, 1), groups.cyclic(3))
    with pytest.raises(ValueError, match="O is not a subgroup of I"):
        I.quotient(O)
    with pytest.raises(ValueError, match="numbered 0..11"):
        T.element(12)


@pytest.mark.parametrize("name", list(POLY))
def test_irreps(name):
    G = POLY[name]
    n = G.order
    ids = G.irrep_ids()
    assert ids[0] == (0,) and G.trivial.irreps == ((0,),)
    classes = conjugacy_classes(G)
    # real irreps: sum of d^2 / dim End = |G|; complex irreps (a complex-type real irrep is a pair) = classes
    dims = [G.irrep_dim(i) for i in ids]
    ends = [len(G.endomorphism_basis(i)) for i in ids]
    assert sum(d * d / e for d, e in zip(dims, ends)) == n
    assert sum(2 if e == 2 else 1 for e in ends) == len(classes)
    assert sorted(dims) == {"T": [1, 2, 3], "O": [1, 1, 2, 3, 3], "I": [1, 3, 3, 4, 5]}[name]
    tables = {i: np.stack([G.irrep_matrix(i, g) for g in G.elements]) for i in ids}
    for i in ids:
        t = tables[i]
        np.testing.assert_allclose(t[0], np.eye(t.shape[1]), atol=1e-12)
        np.testing.assert_allclose(np.einsum("gji,gjk->gik", t, t), np.broadcast_to(np.eye(t.shape[1]), t.shape),
                                   atol=1e-12)
        for a, b in itertools.product(G.elements, G.elements):
            np.testing.assert_allclose(t[(a * b).index], t[a.index] @ t[b.index], atol=1e-12)
        for e in G.endomorphism_basis(i):  # the commutant, checked on every element
            np.testing.assert_allclose(np.einsum("ij,gjk->gik", e, t), np.einsum("gij,jk->gik", t, e), atol=1e-12)
        chi = np.trace(t, axis1=1, axis2=2)
        for cls in classes:  # characters are class functions
            assert np.ptp([chi[g.index] for g in cls]) < 1e-12
    for (i, a), (j, b) in itertools.product(enumerate(ids), enumerate(ids)):  # character orthogonality
        ip = np.mean(np.trace(tables[a], axis1=1, axis2=2) * np.trace(tables[b], axis1=1, axis2=2))
        assert ip == pytest.approx(ends[i] if i == j else 0.0, abs=1e-10)
    mats = np.stack([g.matrix for g in G.elements])
    np.testing.assert_array_equal(tables[G.defining_irrep_id], mats)  # the defining irrep is g.matrix itself


@pytest.mark.parametrize("name", list(POLY))
def test_regular_and_hom(name):
    G = POLY[name]
    reg = G.regular
    assert reg.size == G.order and reg.is_permutation() and reg.is_orthogonal
    for i in G.irrep_ids():  # multiplicity of a real irrep in the regular rep: d / dim End (complex: d)
        assert reg.multiplicities()[i] == G.irrep_dim(i) // len(G.endomorphism_basis(i))
    for g, h in itertools.product(G.elements, G.elements):
        np.testing.assert_array_equal(reg(g) @ reg(h), reg(g * h))
        if g.index > 8:
            break
    reps = [reg, G.trivial, G.irreps[-1], G.irreps[1] + G.irreps[-1], G.irreps[1].tensor(G.irreps[-1]),
            G.quotient(POLY["T"]) if name != "T" else G.quotient(groups.dihedral(2))]
    for r in reps:
        for g in G.elements:
            np.testing.assert_allclose(r(g), r.change_of_basis @ _blockdiag(G, r.irreps, g) @ r.change_of_basis_inv,
                                       atol=1e-10)
    for a, b in itertools.product(reps, reps):
        n = hom_dimension(a, b)
        assert n == pytest.approx(np.mean(chars(a, G) * chars(b, G)), abs=1e-9)
        basis = hom_basis(a, b)
        for g in G.elements:
            if n:
                assert np.abs(basis @ a(g) - b(g) @ basis).max() < 1e-10


def _blockdiag(G, irreps, g):
    blocks = [G.irrep_matrix(i, g) for i in irreps]
    n = sum(b.shape[0] for b in blocks)
    out, k = np.zeros((n, n)), 0
    for b in blocks:
        out[k:k + len(b), k:k + len(b)] = b
        k += len(b)
    return out


def test_quotients_and_restriction():
    T, O, I = POLY["T"], POLY["O"], POLY["I"]
    q = O.quotient(T)  # O/T = {T, O \\ T}: trivial + sign
    assert q.size == 2 and sorted(q.irreps) == [(0,), (1,)] and q.name == "quotient(O/T)"
    assert I.quotient(T).size == 5
    for G in (O, I):
        res = G.regular.restrict(T)
        assert res.group == T and res.multiplicities() == {i: m * G.order // T.order for i, m in T.regular.multiplicities().items()}
        for h in T.elements:
            np.testing.assert_array_equal(res(h), G.regular(G.embed(h, T)))
    # the 3-dim irreps of I restrict to the 3-dim irrep of T (its rotation matrices)
    res = I.irrep(1).restrict(T)
    assert res.irreps == (T.defining_irrep_id,)


def test_complex_type_endomorphisms():
    T = POLY["T"]
    i, j = T.endomorphism_basis((1,))  # the 2-dim real irrep built from the complex pair: End = C
    np.testing.assert_array_equal(i, np.eye(2))
    np.testing.assert_allclose(j @ j, -np.eye(2), atol=1e-12)
    np.testing.assert_allclose(j.T, -j, atol=1e-12)
    assert hom_dimension(T.irrep(1), T.irrep(1)) == 2 and hom_dimension(T.irrep(1), T.irrep(1) + T.irrep(1)) == 4


def test_nothing_is_computed_at_import():
    code = ("import sys, epdo\n"
            "from epdo.groups import polyhedral, so3\n"
            "assert polyhedral._data.cache_info().currsize == 0 and polyhedral._irrep_tables.cache_info().currsize == 0\n"
            "assert 'e3nn' not in sys.modules\n"
            "epdo.groups.icosahedral(); assert polyhedral._data.cache_info().currsize == 0\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
