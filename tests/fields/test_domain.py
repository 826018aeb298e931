"""Domains: Plane (today's images), Ring (M points on a circle), and a point cloud written here to show
that a new domain needs no change in epdo.fields or epdo.equivariance."""

from __future__ import annotations

import itertools
import re
import math
import pickle

import numpy as np
import pytest
import torch

import epdo
from epdo import fields, groups


# --- values ----------------------------------------------------------------------------------------

def test_domains_are_values():
    for d in (fields.Plane(), fields.Ring(8), fields.Ring(1)):
        assert eval(repr(d), {"epdo": epdo}) == d and hash(eval(repr(d), {"epdo": epdo})) == hash(d)
        assert pickle.loads(pickle.dumps(d)) == d
    assert fields.Ring(8) != fields.Ring(9) and fields.Ring(8) != fields.Plane()
    assert len({fields.Plane(), fields.Plane(), fields.Ring(8), fields.Ring(8)}) == 2
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="positive integer number of points"):
            fields.Ring(bad)


def test_protocol_is_abstract():
    class Half(fields.Domain):
        def _key(self):
            return ()

    with pytest.raises(TypeError, match="abstract"):
        Half()


class _NotPlanar:
    """Stands in for a group of 3-D rotations (3x3 matrices) until epdo.groups has one."""

    name = "I (icosahedral)"
    is_finite = True

    class identity:  # noqa: N801 - mimics the attribute
        matrix = np.eye(3)


def test_which_groups_act():
    plane, ring = fields.Plane(), fields.Ring(12)
    for G in (groups.cyclic(4), groups.dihedral(16), groups.so2(2), groups.o2(1)):
        plane.check_group(G)
    with pytest.raises(ValueError, match=r"Plane\(\) is acted on by subgroups of O\(2\).*got I \(icosahedral\)"):
        plane.check_group(_NotPlanar())
    with pytest.raises(TypeError, match="expected an epdo.groups group, got int"):
        plane.check_group(3)
    for G in (groups.cyclic(1), groups.cyclic(3), groups.dihedral(4), groups.cyclic(12), groups.dihedral(6)):
        ring.check_group(G)
    for G in (groups.cyclic(5), groups.dihedral(8), groups.cyclic(24), groups.so2(1), groups.o2(1)):
        with pytest.raises(ValueError, match=rf"Ring\(12\) is acted on by C_N or D_N with N dividing 12, got {re.escape(G.name)}"):
            ring.check_group(G)
    with pytest.raises(ValueError, match="got I"):
        ring.check_group(_NotPlanar())


# --- the ring --------------------------------------------------------------------------------------

@pytest.mark.parametrize("G", [groups.cyclic(8), groups.dihedral(8), groups.dihedral(4), groups.cyclic(2)], ids=str)
def test_ring_transform_is_an_exact_group_action(G):
    ring = fields.Ring(16)
    t = fields.FieldType(G, [G.regular, G.trivial] + ([G.irrep(1, 1)] if G.reflections else []), ring)
    x = torch.randn(3, t.size, 16, dtype=torch.float64)
    assert torch.equal(t.transform(x, G.identity), x)
    for a, b in itertools.product(G.elements, G.elements):
        lhs = t.transform(t.transform(x, b), a)
        assert (lhs - t.transform(x, a * b)).abs().max() <= 1e-12, (a, b)  # the irrep's 45-degree cosines
    assert all(ring.is_exact(g, x.shape) for g in G.elements)
    assert ring.measurement_mask(G.elements[-1], x.shape, x.shape, 3.0, torch.float64) is None


def test_ring_conventions():
    ring = fields.Ring(8)
    D4 = groups.dihedral(4)
    t = fields.FieldType(D4, [D4.trivial], ring)
    e1 = torch.zeros(1, 1, 8)
    e1[..., 1] = 1.0  # the point at 45 degrees
    r = D4.element(0, 1)  # 90 degrees: two points on
    assert t.transform(e1, r)[0, 0].nonzero().item() == 3
    assert t.transform(e1, D4.element(1, 0))[0, 0].nonzero().item() == 7  # y -> -y: index i -> -i
    assert t.transform(e1, D4.element(1, 1))[0, 0].nonzero().item() == 1  # r f: 1 -> -1 -> 1
    v = fields.FieldType(D4, [D4.irrep(1, 1)], ring)  # vectors: the fibre turns too
    const = torch.tensor([1.0, 0.0]).view(1, 2, 1).expand(1, 2, 8)
    assert torch.equal(v.transform(const, r)[0, :, 0], torch.tensor([0.0, 1.0]))


def test_ring_signals():
    ring = fields.Ring(32)
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.regular], ring)
    assert ring.input_shape(t, 2, 999) == (2, 4, 32)
    x = ring.sample((2, 4, 32), "smooth", torch.Generator().manual_seed(0))
    assert x.dtype == torch.float64 and torch.allclose(x.std(-1), torch.ones(2, 4, dtype=torch.float64))
    spec = torch.fft.fft(x).abs() ** 2
    high = torch.fft.fftfreq(32).abs() > 0.25
    assert spec[..., high].sum() / spec.sum() < 1e-3
    with pytest.raises(ValueError, match="kind must be"):
        ring.sample((1, 1, 32), "noise")
    ref = ring.reference_map(4, torch.Generator().manual_seed(0), torch.float64)
    assert ref(x).shape == x.shape


# --- the plane -------------------------------------------------------------------------------------

def test_plane_exactness_masks_and_samples():
    plane = fields.Plane()
    D8 = groups.dihedral(8)
    flags = [plane.is_exact(g, (1, 1, 9, 9)) for g in D8.elements]
    assert flags == [k % 2 == 0 for k in range(8)] * 2
    r90 = D8.element(0, 2)
    assert plane.is_exact(r90, (1, 1, 9, 9)) and not plane.is_exact(r90, (1, 1, 9, 7))
    assert plane.is_exact(D8.element(0, 4), (1, 1, 9, 7))  # 180 degrees fits any rectangle
    assert plane.measurement_mask(r90, (1, 1, 9, 9), (1, 1, 9, 9), 3.0, torch.float64) is None
    m = plane.measurement_mask(D8.element(0, 1), (1, 1, 9, 9), (1, 1, 9, 9), 1.0, torch.float64)
    assert m.shape == (9, 9) and m[4, 4] == 1 and m[0, 0] == 0 and m.sum() == 29  # radius 3 disc: 29 pixel centres
    x = plane.sample((2, 3, 16, 16), "smooth", torch.Generator().manual_seed(0))
    assert torch.equal(x, fields.smooth_field((2, 3, 16, 16), generator=torch.Generator().manual_seed(0)))
    assert epdo.equivariance.smooth_field is fields.smooth_field  # old import path
    with pytest.raises(TypeError, match="2x2 matrix"):
        plane.transform(x, "not an element")


# --- a new domain without touching fields/: a planar point cloud (features (N, C), positions (N, 2)) -----

class PointCloud2D(fields.Domain):
    """Node features (N, C) with positions (N, 2); g moves the positions, rho(g) the features."""

    __slots__ = ()

    def _key(self):
        return ()

    def __repr__(self):
        return "PointCloud2D()"

    def check_group(self, group):
        if getattr(group, "identity", None) is None or np.asarray(group.identity.matrix).shape != (2, 2):
            raise ValueError(f"PointCloud2D is acted on by subgroups of O(2), got {group!r}")

    def signal_shape(self, size):
        return f"((N, {size}), (N, 2))"

    def check(self, x, field_type, who="input"):
        ok = isinstance(x, tuple) and len(x) == 2 and x[0].dim() == 2 and x[0].shape[1] == field_type.size \
            and x[1].shape == (x[0].shape[0], 2)
        if not ok:
            raise ValueError(f"{who}: expected (features, positions) of shapes {self.signal_shape(field_type.size)}")

    def features(self, x):
        return x[0]

    def apply_fiber(self, x, matrix):
        return (x[0] @ matrix.to(x[0].dtype).T, x[1])

    def transform(self, x, g, **options):
        a = torch.as_tensor(np.asarray(g.matrix), dtype=x[1].dtype)
        return (x[0], x[1] @ a.T)  # the node at p moves to g p, so (g.f)(p) = rho(g) f(g^-1 p)

    def is_exact(self, g, shape):
        return True  # positions are continuous: every rotation is exact up to round-off

    def input_shape(self, field_type, batch, size):
        return (size, field_type.size)

    def sample(self, shape, kind="random", generator=None, dtype=torch.float64):
        return (torch.randn(*shape, generator=generator, dtype=dtype),
                torch.randn(shape[0], 2, generator=generator, dtype=dtype))

    def reference_map(self, channels, generator, dtype, device=None):
        w = torch.randn(2, channels, generator=generator, dtype=dtype)
        return lambda x: (x[0] + x[1] @ w, x[1])  # features that depend on absolute positions


class _Messages(torch.nn.Module):
    """f_i + sum_j exp(-|p_i - p_j|^2) f_j, channel by channel: E(2)-equivariant for permutation fields."""

    def __init__(self, t):
        super().__init__()
        self.in_type = self.out_type = t

    def forward(self, x):
        self.in_type.check(x, "_Messages")
        f, p = x
        k = torch.exp(-torch.cdist(p, p) ** 2)
        return (f + k @ f, p)


def test_a_point_cloud_domain_plugs_in_without_changes():
    C8 = groups.cyclic(8)
    t = fields.FieldType(C8, [C8.regular, C8.trivial], PointCloud2D())
    assert str(t) == "FieldType(C8: regular, trivial; size=9 on PointCloud2D())"
    layer = _Messages(t)
    report = epdo.check_equivariance(layer, size=7)
    assert len(report) == 8 and all(r.exact for r in report)  # 45 degrees is exact on a point cloud
    assert report.max_error() < 1e-12 and report.reference.normalized > 0.1
    with pytest.raises(ValueError, match=r"expected \(features, positions\)"):
        layer((torch.zeros(7, 8), torch.zeros(7, 2)))
    x = PointCloud2D().sample((5, 9), generator=torch.Generator().manual_seed(0))
    g = C8.element(0, 3)
    moved = t.transform(x, g)
    assert torch.allclose(moved[1].norm(dim=1), x[1].norm(dim=1), atol=1e-12)
    assert torch.equal(moved[0][:, 8], x[0][:, 8])  # the trivial field is untouched
    assert math.isclose(report[0].angle, 0.0) and report[3].angle == pytest.approx(135.0)
