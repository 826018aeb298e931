"""Euclidean groups R^2 x| H: the semidirect product law against homogeneous matrices, associativity, inverses,
the action on points, and representations pulled back from the point group."""

import itertools

import numpy as np
import pytest

from epdo import groups
from epdo.groups import hom_dimension

CASES = {"SE2": groups.se2(2), "E2": groups.e2(2), "R2:C4": groups.euclidean(groups.cyclic(4)),
         "R2:D8": groups.euclidean(groups.dihedral(8))}


@pytest.mark.parametrize("name", list(CASES))
def test_semidirect_product(name):
    G = CASES[name]
    assert not G.is_finite and G.name == {"SE2": "SE(2)", "E2": "E(2)"}.get(name, name)
    els = G.sample_elements(6, seed=2) + (G.identity,)
    x = np.array([0.3, -1.7])
    for a in els:
        m = a.matrix
        assert m.shape == (3, 3) and np.array_equal(m[2], [0.0, 0.0, 1.0])
        np.testing.assert_allclose(m[:2, :2], a.point.matrix, atol=0)
        np.testing.assert_allclose((m @ np.append(x, 1.0))[:2], a.point.matrix @ x + a.translation, atol=1e-14)
        inv = a.inverse()
        np.testing.assert_allclose((a * inv).matrix, np.eye(3), atol=1e-14)
        np.testing.assert_allclose((inv * a).matrix, np.eye(3), atol=1e-14)
        assert a * G.identity == a == G.identity * a
        for b in els:
            ab = a * b
            np.testing.assert_allclose(ab.matrix, a.matrix @ b.matrix, atol=1e-14)
            np.testing.assert_allclose(ab.translation, a.translation + a.point.matrix @ b.translation, atol=1e-14)
            assert ab.point == a.point * b.point
    for a, b, c in itertools.combinations(els, 3):
        np.testing.assert_allclose(((a * b) * c).matrix, (a * (b * c)).matrix, atol=1e-13)
    # a rotation conjugates a translation t into the translation A t
    rot = G.lift(G.point_group.generators()[0])
    t = G.element([1.0, 2.0])
    conj = rot * t * rot.inverse()
    np.testing.assert_allclose(conj.translation, rot.point.matrix @ [1.0, 2.0], atol=1e-14)
    assert conj.point == G.point_group.identity


def test_point_group_representations():
    G = CASES["R2:D8"]
    H = G.point_group
    rep = G.irrep(1, 1) + G.trivial + G.irrep(1, 2)
    els = G.sample_elements(5, seed=4)
    for a, b in itertools.product(els, els):
        np.testing.assert_allclose(rep(a * b), rep(a) @ rep(b), atol=1e-12)
    for a in els:  # translations act trivially: rho(t, A) = psi(A)
        np.testing.assert_allclose(rep(a), (H.irrep(1, 1) + H.trivial + H.irrep(1, 2))(a.point), atol=1e-12)
    assert hom_dimension(rep, rep) == hom_dimension(*(H.irrep(1, 1) + H.trivial + H.irrep(1, 2),) * 2) == 3
    assert G.embed(H.element(1, 3), H) == G.element([0.0, 0.0], H.element(1, 3))
    sub = groups.euclidean(groups.dihedral(4))
    assert G.embed(sub.element([1.0, 2.0], sub.point_group.element(1, 1)), sub).point == H.element(1, 2)
    # a representation that does not factor through the point group is refused, not mis-decomposed
    with pytest.raises(ValueError, match="not a homomorphism"):
        groups.Representation.from_matrices(G, lambda g: np.array([[np.cos(g.translation[0]), 0.0], [0.0, 1.0]]), 2,
                                            max_frequency=0)


def test_errors():
    G = CASES["SE2"]
    with pytest.raises(TypeError, match="point must be an element of SO\\(2\\)"):
        G.element([0.0, 0.0], groups.cyclic(4).identity)
    with pytest.raises(ValueError, match="finite 2-vector"):
        G.element([0.0, 0.0, 1.0])
    with pytest.raises(TypeError, match="planar group"):
        groups.euclidean(groups.icosahedral())
    with pytest.raises(TypeError, match="expected an element of SE\\(2\\)"):
        G.compose(G.identity, CASES["E2"].identity)
