"""SO(3) and O(3) through e3nn: axioms on Haar samples, real Wigner-D irreps (homomorphism, orthogonality, the
degree-1 irrep against the 3x3 matrices), the quadrature against Schur orthogonality, tensor products against
the Clebsch-Gordan rule, Hom dimensions against characters, restriction to I and SO(2), and the missing extra."""

import builtins
import itertools

import numpy as np
import pytest

pytest.importorskip("e3nn")

from epdo import groups  # noqa: E402
from epdo.groups import hom_basis, hom_dimension  # noqa: E402

SO3, O3 = groups.so3(2), groups.o3(2)


def _blockdiag(blocks):
    n = sum(b.shape[0] for b in blocks)
    out, k = np.zeros((n, n)), 0
    for b in blocks:
        out[k:k + len(b), k:k + len(b)] = b
        k += len(b)
    return out


@pytest.mark.parametrize("G", [SO3, O3], ids=["SO3", "O3"])
def test_axioms(G):
    els = G.testing_elements(8, seed=3)
    assert not G.is_finite and G.order is None and len(set(els)) == 8
    dets = {round(float(np.linalg.det(g.matrix))) for g in els}
    assert dets == ({1, -1} if G is O3 else {1})
    e = G.identity
    for a in els:
        assert a * e == a == e * a
        np.testing.assert_allclose((a * a.inverse()).matrix, np.eye(3), atol=1e-14)
        np.testing.assert_allclose(a.matrix.T @ a.matrix, np.eye(3), atol=1e-14)
        for b in els:
            np.testing.assert_allclose((a * b).matrix, a.matrix @ b.matrix, atol=1e-14)
    for a, b, c in itertools.combinations(els, 3):
        np.testing.assert_allclose(((a * b) * c).matrix, (a * (b * c)).matrix, atol=1e-14)
    m = np.mean([g.matrix for g in G.sample_elements(2000, seed=0)], axis=0)  # Haar: E[g] = 0
    assert np.abs(m).max() < 0.1
    with pytest.raises(ValueError, match="orthogonal"):
        G.element(np.diag([1.0, 2.0, 1.0]))
    if G is SO3:
        with pytest.raises(ValueError, match="determinant"):
            G.element(-np.eye(3))


@pytest.mark.parametrize("G", [SO3, O3], ids=["SO3", "O3"])
def test_irreps_homomorphism_and_vector(G):
    els = G.testing_elements(6, seed=1) + (G.identity,)
    assert G.irrep_ids()[0] == G.trivial.irreps[0]
    for i in G.irrep_ids():
        d = G.irrep_dim(i)
        assert d == 2 * i[0] + 1 and len(G.endomorphism_basis(i)) == 1
        np.testing.assert_allclose(G.irrep_matrix(i, G.identity), np.eye(d), atol=1e-14)
        for a in els:
            m = G.irrep_matrix(i, a)
            np.testing.assert_allclose(m.T @ m, np.eye(d), atol=1e-12)
            for b in els:
                np.testing.assert_allclose(G.irrep_matrix(i, a * b), m @ G.irrep_matrix(i, b), atol=1e-12)
    # the degree-1 (odd) irrep is the matrix action in e3nn's vector basis P: D^1(g) = P g P^T
    vec = (1, -1) if G is O3 else (1,)
    p = groups.e3nn_vector_basis()
    np.testing.assert_allclose(p @ p.T, np.eye(3), atol=1e-12)
    for g in els:
        np.testing.assert_allclose(G.irrep_matrix(vec, g), p @ g.matrix @ p.T, atol=1e-12)
        if G is O3:  # the even degree-1 irrep is the pseudovector det(g) g
            np.testing.assert_allclose(G.irrep_matrix((1, 1), g), np.linalg.det(g.matrix) * p @ g.matrix @ p.T,
                                       atol=1e-12)
    action = groups.Representation.from_matrices(G, lambda g: g.matrix, 3, "vector", max_frequency=1)
    assert action.irreps == (vec,) and hom_dimension(action, G.irrep(*vec)) == 1


def test_quadrature_is_exact():
    """mean over averaging(L) of D^l_ij D^m_kl = delta_lm delta_ik delta_jl / (2l+1) for l, m <= L (Schur)."""
    L = 2
    els, w = SO3.averaging(L)
    assert len(els) == (2 * L + 1) ** 2 * (L + 1) and w.sum() == pytest.approx(1.0, abs=1e-14)
    for l, m in itertools.product(range(L + 1), repeat=2):
        a, b = SO3.irrep_matrices((l,), els), SO3.irrep_matrices((m,), els)
        got = np.einsum("n,nij,nkl->ijkl", w, a, b)
        want = np.einsum("ik,jl->ijkl", np.eye(2 * l + 1), np.eye(2 * l + 1)) / (2 * l + 1) if l == m else 0.0
        np.testing.assert_allclose(got, want, atol=1e-12)
    els3, w3 = O3.averaging(1)
    assert np.einsum("n,nij->ij", w3, O3.irrep_matrices((0, -1), els3)) == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("G", [SO3, O3], ids=["SO3", "O3"])
def test_tensor_products_and_hom(G):
    ir = G.irreps
    pairs = itertools.product(ir, ir) if G is SO3 else itertools.combinations_with_replacement(ir[1:5], 2)
    for a, b in pairs:
        t = a.tensor(b)
        (la, *pa), (lb, *pb) = a.irreps[0], b.irreps[0]
        want = sorted((l, pa[0] * pb[0]) if G is O3 else (l,) for l in range(abs(la - lb), la + lb + 1))
        assert sorted(t.irreps) == want  # Clebsch-Gordan rule (and parities multiply)
        for g in G.testing_elements(3, seed=7):
            np.testing.assert_allclose(t(g), np.kron(a(g), b(g)), atol=1e-10)
    reps = [ir[0], ir[-1], ir[1] + ir[-1], ir[-1].tensor(ir[-1]), G.trivial + ir[2]]
    els, w = G.averaging(4)  # exact for the products of characters below (degree <= 8)
    chars = {r: np.array([r.character(g) for g in els]) for r in reps}
    for a, b in itertools.product(reps, reps):
        n = hom_dimension(a, b)
        chi = np.sum(w * chars[a] * chars[b])
        assert n == pytest.approx(chi, abs=1e-9)
        basis = hom_basis(a, b)
        for g in G.testing_elements(3, seed=5):
            if n:
                assert np.abs(basis @ a(g) - b(g) @ basis).max() < 1e-10


def test_restriction_to_icosahedral_and_so2():
    I = groups.icosahedral()
    G = groups.so3(3)
    for l, want in [(0, [(0,)]), (1, [I.defining_irrep_id]), (2, [(4,)]), (3, [(2,), (3,)])]:
        res = G.irrep(l).restrict(I)
        assert sorted(res.irreps) == sorted(want)
        chi = np.array([G.irrep(l).character(G.embed(h, I)) for h in I.elements])
        for psi in I.irreps:  # multiplicities by characters
            m = np.mean(chi * np.array([psi.character(h) for h in I.elements]))
            assert m == pytest.approx(res.multiplicities().get(psi.irreps[0], 0), abs=1e-9)
        for h in I.elements[:10]:
            np.testing.assert_allclose(res(h), G.irrep(l)(G.embed(h, I)), atol=1e-10)
    S = groups.so2(2)
    res = G.irrep(2).restrict(S)  # rotations about z: frequencies 0, 1, 2 once each
    assert sorted(res.irreps) == [(0, 0), (0, 1), (0, 2)]
    assert G.subgroup(I) == I and groups.o3(1).subgroup(G) == G
    with pytest.raises(ValueError, match="O\\(3\\) is not a subgroup of SO\\(3\\)"):
        G.check_subgroup(groups.o3(1))


def test_missing_e3nn_says_which_extra(monkeypatch):
    real_import = builtins.__import__

    def no_e3nn(name, *args, **kwargs):
        if name == "e3nn" or name.startswith("e3nn."):
            raise ImportError("No module named 'e3nn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_e3nn)
    with pytest.raises(ImportError, match=r"pip install 'epdo\[3d\]'"):
        groups.so3(3)
    with pytest.raises(ImportError, match=r"epdo\[3d\]"):
        groups.o3(1)


def test_validation():
    with pytest.raises(ValueError, match="integer >= 0, got 2.5"):
        groups.so3(2.5)
    with pytest.raises(ValueError, match="got -1"):
        groups.o3(-1)
    with pytest.raises(ValueError, match="not an irrep of O\\(3\\)"):
        O3.irrep(1)
    with pytest.raises(ValueError, match="not an irrep of SO\\(3\\)"):
        SO3.irrep(1, 1)
