"""FieldType as a value: immutable, hashable with its domain, repr evaluates back, clear errors."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

import epdo
from epdo import diffops, fields, groups


def _types():
    C4, C8, D8, D16 = groups.cyclic(4), groups.cyclic(8), groups.dihedral(8), groups.dihedral(16)
    S, O = groups.so2(3), groups.o2(2)
    return [
        fields.FieldType(groups.cyclic(16), [groups.cyclic(16).regular] * 8),
        fields.FieldType(C4, [C4.regular, C4.trivial, C4.irrep(0, 1), C4.irrep(0, 2)]),
        fields.FieldType(D8, [D8.regular] * 2 + [D8.trivial] + [D8.quotient(D8.subgroup(4))]
                         + [D8.quotient(D8.subgroup(2, True))] + [D8.irrep(1, 0), D8.irrep(1, 4)]),
        fields.FieldType(D16, [diffops.derivative_representation(D16, 2), D16.regular]),  # non-orthogonal rho_hat
        fields.FieldType(S, S.irreps),
        fields.FieldType(O, O.irreps + [O.trivial] * 3),
        fields.FieldType(D8, [D8.regular], fields.Ring(16)),
        fields.FieldType(C8, [C8.regular, C8.trivial], fields.Ring(8)),
        fields.FieldType(D8, [D8.regular, D8.irrep(1, 1)]).restrict(C8),  # restricted representations
        fields.FieldType(C4, [C4.regular.tensor(C4.irrep(0, 1))]),
    ]


@pytest.mark.parametrize("t", _types(), ids=str)
def test_repr_evaluates_back_and_values_compare_exactly(t):
    assert repr(t).startswith("epdo.fields.FieldType(")
    back = eval(repr(t), {"epdo": epdo})
    assert back == t and hash(back) == hash(t) and back.domain == t.domain
    for clone in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t), copy.copy(t)):
        assert clone == t and hash(clone) == hash(t)
    assert len(str(t)) < 120 and str(t).startswith(f"FieldType({t.group.name}: ")


def test_repr_and_str_examples():
    C16 = groups.cyclic(16)
    t = fields.FieldType(C16, [C16.regular] * 8)
    assert repr(t) == "epdo.fields.FieldType(epdo.groups.cyclic(16), [epdo.groups.cyclic(16).regular] * 8)"
    assert str(t) == "FieldType(C16: 8xregular; size=128)"
    D4 = groups.dihedral(4)
    r = fields.FieldType(D4, [D4.regular, D4.regular, D4.trivial], fields.Ring(8))
    assert repr(r) == ("epdo.fields.FieldType(epdo.groups.dihedral(4), [epdo.groups.dihedral(4).regular] * 2 + "
                       "[epdo.groups.dihedral(4).trivial], domain=epdo.fields.Ring(8))")
    assert str(r) == "FieldType(D4: 2xregular, trivial; size=17 on Ring(8))"
    assert f"{r}" == str(r)  # error messages format with str


def test_domain_is_part_of_the_value():
    D4 = groups.dihedral(4)
    plane = fields.FieldType(D4, [D4.regular])
    assert plane.domain == fields.Plane() and fields.FieldType(D4, [D4.regular], fields.Plane()) == plane
    ring8, ring16 = plane.on(fields.Ring(8)), plane.on(fields.Ring(16))
    assert len({plane, ring8, ring16, fields.FieldType(D4, [D4.regular], fields.Ring(8))}) == 3
    assert ring8 != plane and ring8 != ring16 and ring8.representations == plane.representations
    assert ring8.restrict(groups.cyclic(4)).domain == fields.Ring(8)
    assert (ring8 + ring8).domain == fields.Ring(8) and (ring8 + ring8).size == 16


def test_immutable_so_caches_cannot_be_corrupted():
    D4 = groups.dihedral(4)
    t = fields.FieldType(D4, [D4.regular, D4.trivial])
    h, size = hash(t), t.size
    cache = {t: "built for D4 regular + trivial"}
    for name, value in (("group", groups.cyclic(4)), ("representations", (D4.trivial,)), ("domain", fields.Ring(8)),
                        ("_hash", 0), ("new_attribute", 1)):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(t, name, value)
    with pytest.raises(AttributeError, match="immutable"):
        del t.group
    with pytest.raises(AttributeError, match="immutable"):
        t.representations += (D4.regular,)
    assert isinstance(t.representations, tuple)
    assert hash(t) == h and t.size == size and cache[fields.FieldType(D4, [D4.regular, D4.trivial])]
    rho = t.representation  # built lazily once, then the same object
    assert t.representation is rho and rho.size == size and hash(t) == h
    for d in (fields.Plane(), fields.Ring(8)):
        with pytest.raises(AttributeError, match="immutable"):
            d.M = 3
    assert fields.Ring(8).M == 8


def test_adding_types_of_different_groups_or_domains_names_both():
    C4, C8 = groups.cyclic(4), groups.cyclic(8)
    a, b = fields.FieldType(C4, [C4.regular]), fields.FieldType(C8, [C8.regular])
    with pytest.raises(ValueError, match=r"same group: FieldType\(C4: regular; size=4\) is of C4, "
                                         r"FieldType\(C8: regular; size=8\) of C8"):
        a + b
    with pytest.raises(ValueError, match="same domain: .* lives on Plane, .* on Ring\\(8\\)"):
        a + a.on(fields.Ring(8))
    with pytest.raises(TypeError):
        a + 1


def test_construction_errors():
    C4, C8 = groups.cyclic(4), groups.cyclic(8)
    with pytest.raises(TypeError, match="epdo.groups.Group"):
        fields.FieldType("C4", [C4.regular])
    with pytest.raises(TypeError, match="list of Representations"):
        fields.FieldType(C4, C4.regular)
    with pytest.raises(ValueError, match="of group C8, not of C4"):
        fields.FieldType(C4, [C8.regular])
    with pytest.raises(ValueError, match="at least one"):
        fields.FieldType(C4, [])
    with pytest.raises(TypeError, match="domain must be an epdo.fields.Domain"):
        fields.FieldType(C4, [C4.regular], domain="ring")
    with pytest.raises(ValueError, match=r"Ring\(6\) is acted on by C_N or D_N with N dividing 6, got C4"):
        fields.FieldType(C4, [C4.regular], fields.Ring(6))
    S = groups.so2(2)
    with pytest.raises(ValueError, match="got SO\\(2\\)"):
        fields.FieldType(S, [S.trivial], fields.Ring(8))


def test_check_and_transform_messages():
    D4 = groups.dihedral(4)
    t = fields.FieldType(D4, [D4.regular], fields.Ring(8))
    with pytest.raises(ValueError, match=r"layer: expected a tensor of shape \(B, 8, 8\) for FieldType\(D4: regular; "
                                         r"size=8 on Ring\(8\)\), got shape \(2, 8, 9\)"):
        t.check(torch.zeros(2, 8, 9), "layer")
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        t.check(np.zeros((2, 8, 8)))
    with pytest.raises(TypeError, match="element of D4"):
        t.transform(torch.zeros(1, 8, 8), groups.dihedral(8).identity)
    p = t.on(fields.Plane())
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(B, 8, H, W\) for FieldType\(D4: regular; size=8\)"):
        p.check(torch.zeros(2, 8, 8))
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    assert torch.equal(p.transform(x, D4.element(0, 1), mode="bilinear"), p.transform(x, D4.element(0, 1)))
