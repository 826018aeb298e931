"""RingPDOConv: PDO layers on the ring domain (signals (B, C, M), C_N / D_N with N | M)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import epdo
from epdo import fields, groups
from epdo.nn import HomExpansion, RingPDOConv
from epdo.nn.ring import ring_stencils


def _types(G, ring):
    vec = G.irrep(1, 1) if G.reflections else G.irrep(0, 1)
    extra = [G.irrep(1, 0)] if G.reflections else [G.irrep(0, G.N // 2)] if G.N % 2 == 0 else []
    ti = fields.FieldType(G, [G.regular, G.trivial, vec] + extra, ring)
    to = fields.FieldType(G, [G.regular, vec, G.trivial] + extra, ring)
    return ti, to


CASES = [(groups.cyclic(8), 8), (groups.dihedral(8), 8), (groups.cyclic(4), 12), (groups.dihedral(4), 12),
         (groups.dihedral(3), 12), (groups.dihedral(2), 6)]


@pytest.mark.parametrize("G,M", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("order,kernel", [(0, 1), (1, 3), (2, 5), (3, 7)])
def test_exact_equivariance_on_every_element_float64(G, M, order, kernel):
    ti, to = _types(G, fields.Ring(M))
    torch.manual_seed(order)
    layer = RingPDOConv(ti, to, order=order, kernel_size=kernel, dtype=torch.float64)
    report = epdo.check_equivariance(layer, batch=3)
    assert len(report) == len(G.elements) and all(r.exact for r in report)
    assert report.max_error() <= 1e-9, str(report)
    assert report.reference.normalized > 0.05  # the same layer after an unconstrained filter is caught


@pytest.mark.parametrize("G", [groups.dihedral(8), groups.dihedral(4)], ids=str)
def test_the_reflection_twist_is_needed(G):
    """Odd derivatives change sign under i -> -i: W_1 in Hom(rho_in, rho_out) (no sign twist) breaks D_N."""
    ring = fields.Ring(8)
    ti, to = _types(G, ring)
    torch.manual_seed(0)
    plain = HomExpansion(list(ti), list(to), dtype=torch.float64)  # an intertwiner of rho_in, rho_out
    st = torch.tensor(ring_stencils(1, 3), dtype=torch.float64)
    w = plain()

    class Wrong(torch.nn.Module):
        in_type, out_type = ti, to

        def forward(self, x):
            return F.conv1d(F.pad(x, (1, 1), mode="circular"), w[:, :, None] * st[1])

    report = epdo.check_equivariance(Wrong())
    rotations = [r for r in report if r.flip == 0]
    assert max(r.error for r in rotations) <= 1e-12  # shifts commute with every stencil
    assert min(r.error for r in report if r.flip == 1) > 0.1


def _hom_dim_by_characters(G, a, b, n):
    """(1/|G|) sum_g chi_a(g) det(g)^n chi_b(g): dim Hom_G(a (x) sign^n, b), independent of the solver."""
    return round(sum(np.trace(a(g)) * np.linalg.det(g.matrix) ** n * np.trace(b(g)) for g in G.elements)
                 / len(G.elements))


@pytest.mark.parametrize("G,M", CASES, ids=lambda v: str(v))
def test_parameter_count_from_characters(G, M):
    ti, to = _types(G, fields.Ring(M))
    for order in (0, 1, 2, 3):
        layer = RingPDOConv(ti, to, order=order)
        expected = sum(_hom_dim_by_characters(G, a, b, n) for n in range(order + 1) for a in ti for b in to)
        expected += sum(1 for r in to for psi in r.irreps if psi == (0, 0))  # bias on trivial components
        assert layer.num_params == expected, (order, layer.num_params, expected)
    assert RingPDOConv(ti, to, order=2, bias=False).num_params == expected - sum(
        1 for r in to for psi in r.irreps if psi == (0, 0)) - sum(_hom_dim_by_characters(G, a, b, 3) for a in ti for b in to)


def test_stencils_are_central_differences():
    for n in range(5):
        k = 2 * ((n + 1) // 2) + 1
        s = ring_stencils(n, k + 2)[n]
        assert np.array_equal(s[::-1], (-1) ** n * s)  # exactly (anti)symmetric
        t = np.arange(-(k // 2) - 1, k // 2 + 2, dtype=np.float64)
        for p in range(n + 2):  # exact on polynomials of degree n + 1: sum_t s[t] t^p = p! delta_{pn}
            assert math.isclose(float(s @ t**p), math.factorial(n) if p == n else 0.0, abs_tol=1e-10)
    # on a smooth periodic signal: derivatives approach the exact ones
    M = 64
    G = groups.cyclic(1)
    t = fields.FieldType(G, [G.trivial], fields.Ring(M))
    layer = RingPDOConv(t, t, order=2, bias=False, dtype=torch.float64)
    with torch.no_grad():
        for e in layer.expansions:
            e.weights[0].fill_(0.0)
        layer.expansions[2].weights[0].fill_(1.0)
        layer.expansions[2]._scale0.fill_(1.0)
    i = torch.arange(M, dtype=torch.float64)
    w = 2 * math.pi / M
    y = layer.eval()(torch.sin(w * i).view(1, 1, M))
    assert torch.allclose(y.flatten(), -w**2 * torch.sin(w * i), atol=1e-5)


def test_gradcheck_and_gradients():
    G = groups.dihedral(4)
    ring = fields.Ring(8)
    ti, to = fields.FieldType(G, [G.regular, G.irrep(1, 0)], ring), fields.FieldType(G, [G.regular], ring)
    torch.manual_seed(0)
    layer = RingPDOConv(ti, to, order=2, dtype=torch.float64)
    x = torch.randn(1, ti.size, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: layer(x), (x, *layer.parameters()), eps=1e-6, atol=1e-7)
    layer(x).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_eval_cache_and_state_dict():
    G = groups.cyclic(4)
    ti, to = _types(G, fields.Ring(8))
    layer = RingPDOConv(ti, to, order=2, dtype=torch.float64)
    x = torch.randn(2, ti.size, 8, dtype=torch.float64)
    y = layer(x)
    assert torch.equal(layer.eval()(x), y) and list(layer.state_dict()) == list(layer.train().state_dict())
    assert all("stencils" not in k for k in layer.state_dict())
    assert layer(x[:0]).shape == (0, to.size, 8)
    assert "order=2, kernel_size=3" in repr(layer)


def test_errors():
    G = groups.dihedral(4)
    ti, to = _types(G, fields.Ring(8))
    with pytest.raises(ValueError, match="same epdo.fields.Ring"):
        RingPDOConv(ti.on(fields.Plane()), to.on(fields.Plane()))
    with pytest.raises(ValueError, match="same epdo.fields.Ring"):
        RingPDOConv(ti, to.on(fields.Ring(16)))
    with pytest.raises(ValueError, match="order must be a non-negative integer, got True"):
        RingPDOConv(ti, to, order=True)
    with pytest.raises(ValueError, match="odd integer >= 5 for order 3, got 3"):
        RingPDOConv(ti, to, order=3, kernel_size=3)
    with pytest.raises(ValueError, match="too large"):
        RingPDOConv(ti, to, order=2, kernel_size=19)
    C = groups.cyclic(4)
    with pytest.raises(ValueError, match="in_type is of D4 but out_type of C4"):
        RingPDOConv(ti, fields.FieldType(C, [C.regular], fields.Ring(8)))
    layer = RingPDOConv(ti, to)
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(B, 12, 8\) for FieldType\(D4: .*got shape \(2, 15, 9\)"):
        layer(torch.randn(2, 15, 9))


def test_pointwise_layers_on_the_ring():
    """The pointwise layers take ring signals (B, C, M): PointwiseLinear is W x(p) + b at every point (float64
    einsum reference), GroupPool's invariant output stays on the ring, the spatial pools refuse it."""
    G = groups.dihedral(4)
    ring = fields.Ring(8)
    ti, to = _types(G, ring)
    torch.manual_seed(0)
    lin = epdo.nn.PointwiseLinear(ti, to, dtype=torch.float64)
    with torch.no_grad():
        lin.bias_term.bias.normal_()
    x = torch.randn(3, ti.size, 8, dtype=torch.float64)
    w, b = lin.weight_and_bias()
    assert torch.allclose(lin(x), torch.einsum("oc,bcm->bom", w, x) + b[:, None], rtol=1e-12, atol=1e-12)
    assert lin(x[:0]).shape == (0, to.size, 8)
    with pytest.raises(ValueError, match=r"in_type lives on Ring\(8\) but out_type on Plane"):
        epdo.nn.PointwiseLinear(ti, to.on(fields.Plane()))
    t = fields.FieldType(G, [G.regular, G.trivial], ring)
    pool = epdo.nn.GroupPool(t, "mean")
    assert pool.out_type == fields.FieldType(G, [G.trivial] * 2, ring)
    y = pool(torch.randn(2, t.size, 8, dtype=torch.float64))
    assert y.shape == (2, 2, 8)
    for cls in (epdo.nn.MaxPool2d, epdo.nn.AvgPool2d):
        with pytest.raises(ValueError, match=r"expected a field type on the Plane, got one on Ring\(8\)"):
            cls(t, 2)


def test_planar_only_layers_refuse_ring_types():
    """CenterCrop would silently crop the channel axis of (B, C, M) ring signals: it refuses ring types."""
    from epdo import fields, groups
    from epdo.nn import CenterCrop, RestrictToRotations

    G = groups.dihedral(4)
    t = fields.FieldType(G, [G.regular], fields.Ring(8))
    with pytest.raises(ValueError, match="plane.*Ring"):
        CenterCrop(t, 1)
    assert RestrictToRotations(t).out_type.domain == fields.Ring(8)  # keeps the domain
