"""Groups, elements and representations are values: repr evaluates back to an equal value for every family,
pickle / deepcopy round-trip, nothing can be assigned, every array is read-only, the caches cannot be corrupted;
bad input gets a clear error."""

import copy
import dataclasses
import pickle

import numpy as np
import pytest

import epdo
from epdo import diffops, groups
from epdo.groups import hom_basis, hom_structure
from epdo.groups.representation import _irrep_tensor

FAMILIES = [groups.cyclic(16), groups.dihedral(16), groups.cyclic(1), groups.so2(3), groups.o2(2),
            groups.tetrahedral(), groups.octahedral(), groups.icosahedral(), groups.se2(1), groups.e2(0),
            groups.euclidean(groups.dihedral(4))]
try:
    import e3nn  # noqa: F401
    FAMILIES += [groups.so3(2), groups.o3(1)]
except ImportError:  # pragma: no cover
    pass

IDS = [repr(G) for G in FAMILIES]


def roundtrip(x):
    return eval(repr(x), {"epdo": epdo})


def reps_of(G):
    """Several representations: irreps, trivial, sums, tensors, duals, restrictions, regular and quotients."""
    ir = G.irreps
    out = [G.trivial, ir[-1], ir[0] + ir[-1], ir[-1].tensor(ir[-1]), ir[-1].dual(), groups.directsum(ir[-1], ir[0], name="mine")]
    if G.is_finite:
        out += [G.regular, G.regular.tensor(ir[-1]), G.regular.dual()]
    if isinstance(G, groups.PlanarGroup):
        out.append(diffops.derivative_representation(G, 2))  # from_matrices: the explicit form (non-orthogonal)
        if G.is_finite and G.N % 4 == 0:
            out += [G.quotient(G.subgroup(4)), G.regular.restrict(G.subgroup(G.N // 4))]
        if not G.is_finite and G.reflections:
            out.append((ir[2] + ir[1]).restrict(G.subgroup(0)))
    if isinstance(G, groups.PolyhedralGroup) and G.name != "T":
        out += [G.quotient(groups.tetrahedral()), G.regular.restrict(groups.tetrahedral())]
    if isinstance(G, groups.SO3Group) and not G.parity:
        out.append(ir[1].restrict(groups.icosahedral()))
    return out


@pytest.mark.parametrize("G", FAMILIES, ids=IDS)
def test_group_and_element_values(G):
    assert roundtrip(G) == G and hash(roundtrip(G)) == hash(G)
    assert pickle.loads(pickle.dumps(G)) == G and copy.deepcopy(G) == G
    assert isinstance(G, groups.Group) and str(G) == G.name
    with pytest.raises(AttributeError):
        G.name = "x"
    with pytest.raises(AttributeError):
        setattr(G, dataclasses.fields(G)[0].name, 3)
    for g in G.testing_elements(4, seed=0)[:6] + (G.identity,):
        assert roundtrip(g) == g and hash(roundtrip(g)) == hash(g) and pickle.loads(pickle.dumps(g)) == g
        assert isinstance(g, groups.GroupElement) and g.group == G
        m = g.matrix
        assert not m.flags.writeable
        with pytest.raises(ValueError):
            m[0, 0] = 5.0
        with pytest.raises(AttributeError):
            g.group = None
        for i in G.irrep_ids()[:4]:
            assert not G.irrep_matrix(i, g).flags.writeable
    for i in G.irrep_ids():
        assert all(not e.flags.writeable for e in G.endomorphism_basis(i))


@pytest.mark.parametrize("G", FAMILIES, ids=IDS)
def test_representation_values(G):
    for rep in reps_of(G):
        back = roundtrip(rep)
        assert back == rep and hash(back) == hash(rep) and back.name == rep.name, repr(rep)
        els = rep.group.testing_elements(3, seed=1)
        for g in els[:8]:
            np.testing.assert_allclose(back(g), rep(g), atol=1e-12)
            if rep.group.is_finite:
                assert np.array_equal(back(g), rep(g))  # exact tables survive the round trip
        for other in (pickle.loads(pickle.dumps(rep)), copy.deepcopy(rep)):
            assert other == rep and repr(other) == repr(rep)
        assert str(rep) == f"{rep.group.name}.{rep.name}" and len(str(rep)) < 80
        for a in (rep.change_of_basis, rep.change_of_basis_inv, rep(els[0])):
            assert not a.flags.writeable
        with pytest.raises(AttributeError):
            rep.irreps = ()
        with pytest.raises(AttributeError):
            rep.name = "other"
        with pytest.raises(AttributeError):
            rep.extra = 1
        with pytest.raises(ValueError):
            rep.change_of_basis[0, 0] = 2.0


def test_reprs_read_well():
    G = groups.cyclic(16)
    assert repr(G) == "epdo.groups.cyclic(16)" and repr(G.regular) == "epdo.groups.cyclic(16).regular"
    assert repr(G.irrep(0, 1)) == "epdo.groups.cyclic(16).irrep(0, 1)" and str(G.regular) == "C16.regular"
    assert repr(groups.so2(3)) == "epdo.groups.so2(max_frequency=3)"
    assert repr(G.element(0, 3)) == "epdo.groups.cyclic(16).element(0, 3)" and str(G.element(0, 3)) == "C16[flip=0, rot=3]"
    assert repr(groups.icosahedral().element(7)) == "epdo.groups.icosahedral().element(7)"
    D = groups.dihedral(4)
    assert repr(D.quotient(D.subgroup(4))) == "epdo.groups.dihedral(4).quotient(epdo.groups.cyclic(4))"
    explicit = D.irrep(1, 1).change_basis(np.array([[0.0, 1.0], [1.0, 0.0]]), name="swapped")
    assert repr(explicit).startswith("epdo.groups.Representation(epdo.groups.dihedral(4), irreps=[(1, 1)], "
                                     "change_of_basis=[[0.0, 1.0], [1.0, 0.0]], name='swapped'")
    assert roundtrip(explicit) == explicit and str(explicit) == "D4.swapped"
    expr = "epdo.diffops.derivative_representation(epdo.groups.dihedral(4), 1)"
    named = groups.Representation.from_matrices(D, lambda g: diffops.derivative_representation(D, 1)(g), 3,
                                                "rho_hat(N=1)", expr=expr)
    assert repr(named) == expr and roundtrip(named) == named


def test_caches_cannot_be_corrupted():
    G = groups.dihedral(8)
    a, b = G.regular, G.irrep(1, 1) + G.trivial
    basis = hom_basis(a, b)
    before = basis.copy()
    with pytest.raises(ValueError):
        basis[0, 0, 0] = 7.0
    s = hom_structure(a, b)
    for arr in (s.param, s.row, s.col, s.value, s.q_out, s.q_in_inv):
        assert not arr.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_params = 0
    ids, c = _irrep_tensor(G, (1, 1), (1, 3))
    assert isinstance(ids, tuple) and not c.flags.writeable
    with pytest.raises(ValueError):
        G.regular(G.element(1, 2))[0, 0] = 3.0
    with pytest.raises(ValueError):
        G.endomorphism_basis((1, 1))[0][0, 0] = 3.0
    with pytest.raises(ValueError):
        groups.icosahedral().irrep_matrix((4,), groups.icosahedral().element(3))[0, 0] = 1.0
    # after all these attempts, everything recomputed from scratch agrees with the cached values
    assert np.array_equal(hom_basis(a, b), before)
    hom_structure.cache_clear()
    fresh = groups.Representation(G, a.irreps, np.array(a.change_of_basis))
    assert fresh == a and np.array_equal(hom_basis(fresh, b), before)
    assert hom_structure(a, b) is hom_structure(fresh, b)  # one cache entry per (group, rho_in, rho_out)


def test_is_permutation():
    D = groups.dihedral(4)
    assert D.regular.is_permutation() and D.quotient(D.subgroup(4)).is_permutation()
    assert (D.regular + D.trivial).is_permutation() and D.trivial.is_permutation()
    assert not D.irrep(1, 1).is_permutation() and not D.irrep(1, 0).is_permutation()
    assert not D.regular.change_basis(np.diag(np.arange(1.0, 9.0))).is_permutation()
    assert groups.icosahedral().regular.is_permutation() and not groups.icosahedral().irrep(1).is_permutation()
    assert groups.so2(2).trivial.is_permutation() and not groups.so2(2).irrep(0, 1).is_permutation()


def test_validation_errors():
    with pytest.raises(ValueError, match=r"so2\(max_frequency\) needs an integer >= 0, got 2.7"):
        groups.so2(2.7)
    with pytest.raises(ValueError, match=r"o2\(max_frequency\) needs an integer >= 0, got 'a' \(str\)"):
        groups.o2("a")
    with pytest.raises(ValueError, match="got True"):
        groups.cyclic(True)
    with pytest.raises(ValueError, match="needs an integer >= 1, got 0"):
        groups.dihedral(0)
    G, H = groups.cyclic(4), groups.cyclic(8)
    with pytest.raises(ValueError, match=r"\(5, 5\) is not an irrep of C4; valid: \(\(0, 0\), \(0, 1\), \(0, 2\)\)"):
        groups.Representation(G, [(5, 5)])
    with pytest.raises(ValueError, match="is not an irrep of C4"):
        G.irrep(1)
    with pytest.raises(TypeError, match="irreps must be a sequence of irrep ids of C4"):
        groups.Representation(G, "(0,0)")
    with pytest.raises(TypeError, match="expected an epdo.groups.Group, got 'C4'"):
        groups.Representation("C4", [(0, 0)])
    with pytest.raises(ValueError, match="representations of different groups: C4 and C8"):
        hom_basis(G.regular, H.regular)
    with pytest.raises(ValueError, match="direct sum of representations of different groups"):
        G.regular + H.regular
    with pytest.raises(TypeError, match="C4.regular takes elements of C4, got epdo.groups.cyclic\\(8\\).element"):
        G.regular(H.identity)
    with pytest.raises(ValueError, match="change_of_basis must be 3x3"):
        groups.Representation(G, [(0, 0), (0, 1)], np.eye(2))
    with pytest.raises(ValueError, match="table must have shape"):
        groups.Representation(G, [(0, 0)], table=np.ones((3, 1, 1)))
    with pytest.raises(TypeError, match="rotation must be a number"):
        G.element(0, "x")


@pytest.mark.parametrize("G", FAMILIES, ids=IDS)
def test_module_functions_delegate(G):
    assert groups.irrep_ids(G) == G.irrep_ids() and G.irreps[0] == G.trivial
    g = G.testing_elements(2, seed=3)[0]
    for i in G.irrep_ids():
        assert groups.irrep_dim(G, i) == G.irrep_dim(i) == G.irrep(*i).size
        assert np.array_equal(groups.irrep_matrix(G, i, g), G.irrep_matrix(i, g))
        assert all(np.array_equal(a, b) for a, b in zip(groups.endomorphism_basis(G, i), G.endomorphism_basis(i)))
        assert groups.hom_dimension(G.irrep(*i), G.irrep(*i)) == len(G.endomorphism_basis(i))  # Schur
    with pytest.raises(TypeError, match="expected an epdo.groups.Group"):
        groups.irrep_ids("C4")
