"""Theory layer: group axioms, representations (homomorphism, orthogonality, dimensions, characters),
the Hom solver against the character formula, decomposition errors, and FieldType's group action."""

import functools
import itertools
import math
import pickle

import numpy as np
import pytest
import torch

import epdo
from epdo import diffops, fields, groups
from epdo.groups import Representation, decompose, hom_basis, hom_dimension, irrep_matrix

FINITE = {f"{'D' if r else 'C'}{n}": (groups.dihedral(n) if r else groups.cyclic(n))
          for r in (False, True) for n in (1, 2, 3, 4, 8, 16)}
CONTINUOUS = {"SO2": groups.so2(3), "O2": groups.o2(3)}


def _blockdiag(blocks):
    n = sum(b.shape[0] for b in blocks)
    out, i = np.zeros((n, n)), 0
    for b in blocks:
        out[i:i + b.shape[0], i:i + b.shape[0]] = b
        i += b.shape[0]
    return out


def sample_elements(G):
    """All elements of a finite group; 6 random ones (rotations and flips) of a continuous one."""
    return G.elements if G.is_finite else G.testing_elements(6, seed=1)


def haar_elements(G, L):
    """Elements averaging trig. polynomials of degree <= 2L exactly (finite: all elements)."""
    if G.is_finite:
        return G.elements
    n = 4 * L + 3
    return [G.element(s, 2 * math.pi * k / n) for s in ((0, 1) if G.reflections else (0,)) for k in range(n)]


def inner(a, b, els):
    """<chi_a, chi_b> = mean_g chi_a(g) chi_b(g) (real characters)."""
    return float(np.mean(_chars(a, tuple(els)) * _chars(b, tuple(els))))


@functools.lru_cache(maxsize=None)
def _chars(rep, els):
    return np.array([rep.character(g) for g in els])


def reps_of(G):
    """(name, representation) pairs: irreps, trivial, regular, quotients, sums, tensor products, restrictions."""
    out = [(f"irrep{r.irreps[0]}", r) for r in G.irreps] + [("trivial", G.trivial)]
    two = G.irreps[-1]
    out += [("sum", G.irreps[0] + two + G.trivial), ("tensor", two.tensor(two))]
    if G.is_finite:
        out += [("regular", G.regular), ("regular+irrep", G.regular + two), ("regular(x)irrep", G.regular.tensor(two)),
                ("rho_hat", diffops.derivative_representation(G, 2))]
        if G.N % 2 == 0:
            out.append(("quotient/C2", G.quotient(G.subgroup(2))))
        if G.N % 4 == 0:
            out.append(("quotient/C4", G.quotient(G.subgroup(4))))
        if G.reflections:
            out += [("quotient/CN", G.quotient(G.subgroup(G.N))), ("quotient/flip", G.quotient(G.subgroup(1, True))),
                    ("res(regular)->CN", G.regular.restrict(G.subgroup(G.N)))]
        if G.N % 4 == 0:
            out.append(("res(regular)->C_N/4", G.regular.restrict(G.subgroup(G.N // 4))))
    else:
        out.append(("rho_hat", diffops.derivative_representation(G, 2)))
        if G.reflections:
            out.append(("res(sum)->SO2", (G.irreps[2] + G.irreps[1] + G.irreps[3]).restrict(G.subgroup(0))))
    return out


ALL_REPS = [(gname, name, r) for gname, G in {**FINITE, **CONTINUOUS}.items() for name, r in reps_of(G)]
REP_IDS = [f"{g}-{n}" for g, n, _ in ALL_REPS]


# --- groups ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gname", list(FINITE) + list(CONTINUOUS))
def test_group_axioms(gname):
    G = {**FINITE, **CONTINUOUS}[gname]
    els = sample_elements(G)
    e = G.identity
    if G.is_finite:
        assert len(els) == G.order == len(set(els)) and [G.index(g) for g in els] == list(range(G.order))
    for a in els:
        assert a * e == a == e * a
        assert a * a.inverse() == e == a.inverse() * a or not G.is_finite
        np.testing.assert_allclose((a * a.inverse()).matrix, np.eye(2), atol=1e-12)
        m = a.matrix
        np.testing.assert_allclose(m.T @ m, np.eye(2), atol=1e-12)
        assert np.linalg.det(m) == pytest.approx((-1) ** a.flip)
        for b in els:
            ab = a * b
            assert isinstance(ab, groups.GroupElement) and ab.group == G  # closure
            if G.is_finite:
                assert ab in els
            np.testing.assert_allclose(ab.matrix, a.matrix @ b.matrix, atol=1e-12)  # acts on the plane
    triples = itertools.product(els, repeat=3) if len(els) <= 16 else (
        [els[i] for i in np.random.default_rng(0).integers(0, len(els), 3)] for _ in range(300))
    for a, b, c in triples:
        if G.is_finite:
            assert (a * b) * c == a * (b * c)
        else:
            np.testing.assert_allclose(((a * b) * c).matrix, (a * (b * c)).matrix, atol=1e-12)


def test_group_values_and_grid_matrices():
    for G in list(FINITE.values()) + list(CONTINUOUS.values()):
        assert eval(repr(G), {"epdo": epdo}) == G and hash(pickle.loads(pickle.dumps(G))) == hash(G)
    G = FINITE["D8"]
    r90 = G.rotation(math.pi / 2)
    assert np.array_equal(r90.matrix, np.array([[0.0, -1.0], [1.0, 0.0]]))  # exact, counterclockwise
    assert np.array_equal(G.element(1, 0).matrix, np.diag([1.0, -1.0]))  # y -> -y
    with pytest.raises(ValueError, match="not a rotation of D8"):
        G.rotation(0.1)
    with pytest.raises(ValueError, match="flip must be 0"):
        FINITE["C8"].element(1, 0)


# --- representations ------------------------------------------------------------------------------

@pytest.mark.parametrize("gname,name,rep", ALL_REPS, ids=REP_IDS)
def test_representation_homomorphism_and_decomposition(gname, name, rep):
    G = rep.group
    els = sample_elements(G)
    mats = {g: rep(g) for g in els}
    np.testing.assert_allclose(mats[G.identity] if G.is_finite else rep(G.identity), np.eye(rep.size), atol=1e-12)
    for a, b in itertools.product(els, els):  # rho(ab) = rho(a) rho(b) on all pairs (random ones if continuous)
        np.testing.assert_allclose(rep(a * b), mats[a] @ mats[b], atol=1e-10, err_msg=f"{a} {b}")
    q, q_inv = rep.change_of_basis, rep.change_of_basis_inv
    np.testing.assert_allclose(q @ q_inv, np.eye(rep.size), atol=1e-10)
    for g in els:  # the stored matrices agree with the decomposed form Q (+) psi_i(g) Q^-1
        psi = _blockdiag([irrep_matrix(G, i, g) for i in rep.irreps])
        np.testing.assert_allclose(mats[g], q @ psi @ q_inv, atol=1e-10)
        if name != "rho_hat":
            np.testing.assert_allclose(mats[g].T @ mats[g], np.eye(rep.size), atol=1e-10)
    assert rep.is_orthogonal == (name != "rho_hat" or (G.is_finite and G.N in (1, 2, 4)))  # 90-degree grids
    assert sum(groups.irrep_dim(G, i) for i in rep.irreps) == rep.size
    # multiplicities from characters: m_psi = <chi_rho, chi_psi> / <chi_psi, chi_psi>
    h = haar_elements(G, max(rep.max_frequency, G.max_frequency))
    for psi in (G.irreps if G.is_finite else [groups.irrep(G, *i) for i in set(rep.irreps)] + G.irreps):
        m = inner(rep, psi, h) / inner(psi, psi, h)
        assert m == pytest.approx(rep.multiplicities().get(psi.irreps[0], 0), abs=1e-9), psi


def test_dimension_counts():
    for G in FINITE.values():
        assert G.regular.size == G.order
        assert G.trivial.size == 1
        assert sum(groups.irrep_dim(G, i) * m for i, m in G.regular.multiplicities().items()) == G.order
        if G.N % 2 == 0:
            assert G.quotient(G.subgroup(2)).size == G.order // 2
        if G.reflections:
            assert G.quotient(G.subgroup(G.N)).size == 2 and G.quotient(G.subgroup(1, True)).size == G.N
            assert G.regular.restrict(G.subgroup(G.N)).size == G.order
        a, b = G.irreps[-1], G.regular
        assert (a + b).size == a.size + b.size and a.tensor(b).size == a.size * b.size
    # named quotients of the brief
    C16 = FINITE["C16"]
    assert C16.quotient(C16.subgroup(2)).size == 8 and C16.quotient(C16.subgroup(4)).size == 4
    assert C16.quotient(C16.subgroup(4)).name == "quotient(C16/C4)"


def test_restriction_matches_embedding():
    cases = [(FINITE["D8"], groups.cyclic(8)), (FINITE["C16"], groups.cyclic(4)), (FINITE["D16"], groups.dihedral(4)),
             (FINITE["D4"], groups.dihedral(1))]
    for G, H in cases:
        for rep in (G.regular, G.irreps[-1] + G.trivial):
            res = rep.restrict(H)
            assert res.group == H
            for h in H.elements:
                np.testing.assert_allclose(res(h), rep(G.embed(h, H)), atol=1e-12)
    O2 = CONTINUOUS["O2"]
    rep = O2.irreps[2] + O2.irreps[1]  # (1,1) + sign
    res = rep.restrict(O2.subgroup(0))
    assert res.group == groups.so2(3) and sorted(res.irreps) == [(0, 0), (0, 1)]
    for h in res.group.testing_elements(5):
        np.testing.assert_allclose(res(h), rep(O2.embed(h, res.group)), atol=1e-12)


def test_subgroup_errors():
    with pytest.raises(ValueError, match="not a subgroup"):
        FINITE["D4"].regular.restrict(groups.cyclic(3))
    with pytest.raises(ValueError, match="not a subgroup"):
        FINITE["C4"].regular.restrict(groups.dihedral(2))
    with pytest.raises(ValueError, match="C8 is not a subgroup of D4"):
        FINITE["D4"].quotient(groups.cyclic(8))
    with pytest.raises(ValueError, match="does not divide"):
        FINITE["C16"].subgroup(3)
    with pytest.raises(ValueError, match="continuous"):
        CONTINUOUS["SO2"].regular


# --- the Hom solver -------------------------------------------------------------------------------

HOM_GROUPS = ["C4", "C8", "C16", "D4", "D8", "D16", "C3", "D2", "SO2", "O2"]


@pytest.mark.parametrize("gname", HOM_GROUPS)
def test_hom_dimension_and_basis(gname):
    G = {**FINITE, **CONTINUOUS}[gname]
    reps = [r for n, r in reps_of(G) if not n.startswith("res")]
    els = sample_elements(G)
    for a, b in itertools.product(reps, reps):
        n = hom_dimension(a, b)
        assert n == pytest.approx(inner(a, b, haar_elements(G, max(a.max_frequency, b.max_frequency))), abs=1e-9)
        basis = hom_basis(a, b)
        assert basis.shape == (n, b.size, a.size)
        if n:
            flat = basis.reshape(n, -1)
            assert np.linalg.matrix_rank(flat @ flat.T) == n  # linearly independent
        for g in els:
            if n:
                assert np.abs(basis @ a(g) - b(g) @ basis).max() <= 1e-10, g
        if a.is_orthogonal and b.is_orthogonal and n:
            gram = np.einsum("nij,mij->nm", basis, basis)
            np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-10)


# --- decomposition errors -------------------------------------------------------------------------

def test_decompose_rejects_bad_input():
    C4 = FINITE["C4"]
    r30 = np.array([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]])
    with pytest.raises(ValueError, match="could not decompose"):  # rho(r)^4 != I: not a homomorphism
        decompose(C4, lambda g: np.linalg.matrix_power(r30, int(g.rotation)), 2)
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="not a homomorphism"):  # right on the generator, wrong at r^3
        Representation.from_matrices(C4, lambda g: swap if g.rotation == 3 else np.eye(2), 2)
    with pytest.raises(ValueError, match="singular"):
        decompose(C4, lambda g: np.zeros((2, 2)), 2)
    with pytest.raises(ValueError, match="could not decompose"):  # neither orthogonal nor a homomorphism
        decompose(C4, lambda g: np.array([[1.0, 0.3 * g.rotation], [0.0, 1.0]]) @ np.diag([1.0, 2.0]), 2)
    so2 = CONTINUOUS["SO2"]
    with pytest.raises(ValueError, match="max_frequency"):
        decompose(so2, lambda g: so2.irrep(0, 2)(g), 2)
    with pytest.raises(ValueError, match="with frequencies <= 1"):  # bound too low: frequency 2 aliases to 1
        decompose(so2, lambda g: so2.irrep(0, 2)(g), 2, max_frequency=1)


def test_decompose_non_orthogonal_homomorphism():
    """Accepted by design (rho_hat of Lemma 1 is not orthogonal): rho = Q (+) psi Q^-1 with Q not orthogonal."""
    C2 = FINITE["C2"]
    m = np.array([[1.0, 0.7], [0.0, -1.0]])  # an involution, not orthogonal
    rep = Representation.from_matrices(C2, lambda g: m if g.rotation else np.eye(2), 2)
    assert sorted(rep.irreps) == [(0, 0), (0, 1)] and not rep.is_orthogonal
    g = C2.element(0, 1)
    psi = _blockdiag([irrep_matrix(C2, i, g) for i in rep.irreps])
    np.testing.assert_allclose(rep.change_of_basis @ psi @ rep.change_of_basis_inv, m, atol=1e-12)


# --- FieldType ------------------------------------------------------------------------------------

def _grid(G):
    els = [G.rotation(k * math.pi / 2) for k in range(4)]
    return els + ([G.element(1, 0), G.element(1, G.rotation(math.pi / 2).rotation)] if G.reflections else [])


@pytest.mark.parametrize("gname", ["C4", "C8", "D4", "D16", "SO2", "O2"])
def test_field_transform_is_group_action(gname):
    G = {**FINITE, **CONTINUOUS}[gname]
    reps = [G.irreps[-1], G.trivial] + ([G.regular] if G.is_finite else [G.irreps[1]])
    t = fields.FieldType(G, reps)
    x = torch.randn(2, t.size, 7, 7, dtype=torch.float64)
    assert torch.equal(t.transform(x, G.identity), x)
    for a, b in itertools.product(_grid(G), _grid(G)):
        lhs = t.transform(t.transform(x, b), a)
        assert (lhs - t.transform(x, a * b)).abs().max().item() <= 1e-12, (a, b)


def test_field_transform_conventions():
    G = FINITE["C4"]
    t = fields.FieldType(G, [G.trivial])
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 2] = 1.0  # right of the centre (x = 1, y = 0)
    y = t.transform(x, G.rotation(math.pi / 2))
    assert y[0, 0, 0, 1] == 1.0 and y.sum() == 1.0  # moved above the centre: counterclockwise
    D = FINITE["D4"]
    up = torch.zeros(1, 1, 3, 3)
    up[0, 0, 0, 1] = 1.0
    assert fields.FieldType(D, [D.trivial]).transform(up, D.element(1, 0))[0, 0, 2, 1] == 1.0  # y -> -y
    v = fields.FieldType(G, [G.irrep(0, 1)])  # frequency 1: vectors of the plane
    const = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 3, 3)
    rotated = v.transform(const, G.rotation(math.pi / 2))
    assert torch.equal(rotated[0, :, 1, 1], torch.tensor([0.0, 1.0]))


def test_field_type_values():
    G = FINITE["D8"]
    t = fields.FieldType(G, [G.regular, G.regular, G.trivial])
    assert t.size == 33 and len(t) == 3 and t.slices()[2] == slice(32, 33)
    assert str(t) == "FieldType(D8: 2xregular, trivial; size=33)"
    s = t + fields.FieldType(G, [G.irrep(1, 1)])
    assert s.representations == (G.regular, G.regular, G.trivial, G.irrep(1, 1)) and s.size == 35
    assert t == fields.FieldType(G, [G.regular] * 2 + [G.trivial]) and hash(t) == hash(pickle.loads(pickle.dumps(t)))
    with pytest.raises(ValueError, match="can only add"):
        t + fields.FieldType(groups.cyclic(8), [groups.cyclic(8).regular])
    res = t.restrict(groups.cyclic(8))
    assert res.group == groups.cyclic(8) and res.size == t.size
    x = torch.randn(1, t.size, 5, 5, dtype=torch.float64)
    H = res.group
    for h in _grid(H):
        assert torch.equal(res.transform(x, h), t.transform(x, G.embed(h, H)))
    assert fields.FieldType(G, [G.trivial] * 2).is_trivial and not t.is_trivial
    with pytest.raises(ValueError, match="expected a tensor of shape"):
        t.transform(torch.randn(1, 3, 5, 5), G.identity)
    with pytest.raises(TypeError, match="element of D8"):
        t.transform(x, groups.cyclic(8).identity)
