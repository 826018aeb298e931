"""EGNN, SEGNN and the lifted layer: equivariance in float64 under rotations, rotation-inversions,
translations and node permutations (<= 1e-9), parameter counts against independent formulas, gradients
against finite differences, field types, extra_repr and bad input."""

from __future__ import annotations

import math

import pytest
import torch

import epdo
from epdo import graph
from epdo.graph import EGNNLayer, GraphError, LiftedConvLayer, PositionOrientationCloud, SEGNNLayer
from epdo.graph.layers import tensor_product_weights
from epdo.testing import assert_equivariant

pytest.importorskip("e3nn")

G = epdo.groups.o3(2)
ELEMENTS = G.sample_elements(6, seed=5) + (G.inversion,)


def _layers():
    torch.manual_seed(0)
    return {
        "egnn": EGNNLayer(3, 3, hidden=8, edge_channels=1, group=G, dtype=torch.float64),
        "segnn": SEGNNLayer("1x0e + 1x1o + 1x2e", "2x0e + 1x1o", "4x0e + 2x1o + 1x2e", lmax_attr=2, edge_scalars=1,
                            dtype=torch.float64),
        "lifted": LiftedConvLayer(3, hidden=8, edge_scalars=1, group=G, dtype=torch.float64),
    }


LAYERS = _layers()


def _signal(layer, seed=0):
    dom = layer.in_type.domain
    return dom.sample(dom.input_shape(layer.in_type, 2, 5), generator=torch.Generator().manual_seed(seed))


def _edge_attr(x, seed=1):
    return torch.randn(x[-1].shape[1], 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", LAYERS)
def test_equivariance_rotations_inversion_translations_permutations(name):
    layer = LAYERS[name]
    x = _signal(layer)
    ea = _edge_attr(x)
    wrapped = _WithEdgeAttr(layer, ea)
    report = assert_equivariant(wrapped, elements=ELEMENTS, size=5, batch=2, rtol=1e-9)  # the same graph as x
    assert len(report) == len(ELEMENTS) and report.max_error() <= 1e-9
    errs = graph.check_euclidean(wrapped, x)
    assert errs["translation"] <= 1e-9 and errs["permutation"] <= 1e-12, errs
    # the checks can fail: absolute positions in the features break all three
    report = epdo.check_equivariance(wrapped, elements=ELEMENTS[:2], size=5, batch=2)
    assert report.reference.normalized > 0.05


class _WithEdgeAttr(torch.nn.Module):
    """The layer with fixed invariant edge attributes (permuted edges keep their attribute)."""

    def __init__(self, layer, edge_attr):
        super().__init__()
        self.layer, self.edge_attr = layer, edge_attr
        self.in_type, self.out_type = layer.in_type, layer.out_type

    def forward(self, x):
        return self.layer(x, edge_attr=self.edge_attr)


def test_egnn_velocity_and_static_coordinates():
    torch.manual_seed(0)
    layer = EGNNLayer(2, 2, hidden=8, velocity=True, group=G, dtype=torch.float64)
    x = _signal(layer)
    vel = torch.randn(10, 3, dtype=torch.float64)
    for g in ELEMENTS:
        R = torch.tensor(g.matrix)
        h, pos, _ = layer(x[0], x[1] @ R.T, x[2], vel=vel @ R.T)
        h0, pos0, _ = layer(*x, vel=vel)
        assert (h - h0).abs().max() <= 1e-12 and (pos - pos0 @ R.T).abs().max() <= 1e-12
    static = EGNNLayer(2, 5, hidden=8, update_coords=False, group=G, dtype=torch.float64)
    h, pos, _ = static(x)
    assert h.shape == (10, 5) and torch.equal(pos, x[1]) and not static.residual
    with pytest.raises(GraphError, match=r"expected vel of shape \(10, 3\), got None"):
        layer(x)


def test_parameter_counts_against_formulas():
    egnn = EGNNLayer(3, 5, hidden=7, edge_channels=2, velocity=True)
    # edge (2*3+1+2)*7+7 + 7*7+7; node (3+7)*7+7 + 7*5+5; coord 7*7+7 + 7; vel 3*7+7 + 7+1
    assert sum(p.numel() for p in egnn.parameters()) == 70 + 56 + 77 + 40 + 56 + 7 + 28 + 8
    assert EGNNLayer.count_parameters(3, 5, 7, 2, velocity=True) == 342
    lifted = LiftedConvLayer(4, hidden=6, edge_scalars=1)
    assert sum(p.numel() for p in lifted.parameters()) == (3 * 6 + 6 + 6 * 4 + 4) + (6 + 6 + 24 + 4) + (24 + 6 + 24 + 4)
    seg = LAYERS["segnn"]
    tps = [seg.msg1, seg.msg2, seg.upd1, seg.upd2]
    assert tps[0].tp.weight_numel == tensor_product_weights("1x0e+1x1o+1x2e+1x0e+1x1o+1x2e+2x0e", "0e+1o+2e",
                                                             "4x0e+3x0e+2x1o+1x2e")
    # by hand: the even-scalar-only triples of the first product; 0e x 0e -> 0e: 4 fields (1 + 1 + 2) x 1 x 7
    assert tensor_product_weights("4x0e", "1x0e", "7x0e") == 28 and tensor_product_weights("1x1o", "1x1o", "1x1e") == 1
    biases = sum(t.bias.numel() for t in tps if t.bias is not None)
    assert biases == 7 + 7 + 7 + 2  # the even scalars of each product's output
    assert sum(p.numel() for p in seg.parameters()) == sum(t.tp.weight_numel for t in tps) + biases


def test_gradients_against_finite_differences():
    for name in ("egnn", "lifted", "segnn"):
        layer = LAYERS[name]
        dom = layer.in_type.domain
        x = dom.sample(dom.input_shape(layer.in_type, 1, 3), generator=torch.Generator().manual_seed(0))
        ea = _edge_attr(x)
        f = x[0].clone().requires_grad_(True)
        pos = x[1].clone().requires_grad_(True)

        def fn(f, pos):
            out = layer((f, pos, *x[2:]), edge_attr=ea)
            return layer.out_type.domain.features(out)
        assert torch.autograd.gradcheck(fn, (f, pos), eps=1e-6, atol=1e-6, fast_mode=True), name


def test_field_types_and_extra_repr():
    seg = LAYERS["segnn"]
    assert seg.in_type == graph.irreps_field_type("1x0e + 1x1o + 1x2e", G) and seg.out_type.size == 5
    assert "1x0e+1x1o+1x2e -> 2x0e+1x1o" in repr(seg) and "attr=1x0e+1x1o+1x2e" in repr(seg)
    assert "3 -> 3, hidden=8, edge_channels=1" in repr(LAYERS["egnn"])
    assert "channels=3, hidden=8, edge_scalars=1" in repr(LAYERS["lifted"])
    assert LAYERS["lifted"].in_type.domain == PositionOrientationCloud()
    so3 = SEGNNLayer("1x0e + 1x1o", "1x0e + 1x1o", "2x0e + 1x1o", group=epdo.groups.so3(2))
    assert so3.in_type.group == epdo.groups.so3(2)
    with pytest.raises(ValueError, match="degree <= 2 at least"):
        SEGNNLayer("1x0e", "1x0e", "2x0e + 1x1o", group=epdo.groups.o3(1))
    with pytest.raises(ValueError, match="positive int"):
        EGNNLayer(0, 3)
    with pytest.raises(ValueError, match="aggregation must be 'mean' or 'sum', got 'max'"):
        SEGNNLayer("1x0e", "1x0e", "2x0e", aggregation="max")
    summed = SEGNNLayer("1x0e + 1x1o", "1x0e + 1x1o", "2x0e + 1x1o", aggregation="sum", dist_scale=2.0,
                        dtype=torch.float64)
    assert "aggregation='sum', dist_scale=2" in repr(summed)
    assert_equivariant(summed, elements=ELEMENTS[:3], size=4, batch=1)


def test_bad_input_names_expected_and_received():
    egnn, seg = LAYERS["egnn"], LAYERS["segnn"]
    x = _signal(egnn)
    with pytest.raises(GraphError, match=r"EGNNLayer: positions: expected a tensor of shape \(N, 3\), got shape \(10, 2\)"):
        egnn(x[0], x[1][:, :2], x[2])
    with pytest.raises(GraphError, match=r"expected edge_attr of shape \(40, 1\), got None"):
        egnn(x)
    with pytest.raises(GraphError, match=r"node indices must lie in \[0, 10\) for 10 nodes, got entries in \[0, 10\]"):
        egnn(x[0], x[1], torch.cat([x[2], torch.tensor([[10], [0]])], 1), edge_attr=torch.zeros(41, 1))
    with pytest.raises(GraphError, match=r"empty graph"):
        egnn(x[0][:0], x[1][:0], x[2][:, :0])
    nan = x[1].clone()
    nan[3] = float("nan")
    with pytest.raises(GraphError, match=r"got NaN or inf at node\(s\) \[3\]"):
        egnn(x[0], nan, x[2])
    xs = _signal(seg)
    with pytest.raises(GraphError, match=r"expected features of shape \(10, 9\) for FieldType\(O\(3\)"):
        seg(xs[0][:, :5], xs[1], xs[2], edge_attr=_edge_attr(xs))  # irreps that do not match the features
    with pytest.raises(TypeError, match="expected 3 tensors"):
        seg(xs[0], xs[1])
    lx = _signal(LAYERS["lifted"])
    with pytest.raises(GraphError, match=r"expected orientations of shape \(12, 3\)"):
        LAYERS["lifted"](lx[0], lx[1], lx[2][:5], lx[3], edge_attr=_edge_attr(lx))


def test_lifted_grid_is_permuted_by_the_icosahedral_group():
    V = graph.icosahedron_vertices()
    for g in epdo.groups.icosahedral().elements:
        W = V @ torch.tensor(g.matrix).T
        d = torch.cdist(W, V)
        assert (d.min(dim=1).values <= 1e-12).all() and len(set(d.argmin(dim=1).tolist())) == 12
    assert torch.cdist(-V, V).min(dim=1).values.max() <= 1e-12  # and the inversion
    s = graph.sphere_grid(50)
    assert torch.allclose(s.norm(dim=1), torch.ones(50, dtype=torch.float64)) and s.mean(0).norm() < 0.05


def test_tensor_product_parameterisation_moves_path_weights_like_linear_layers():
    # SEGNN's O3TensorProduct: the stored weight is the path weight times fan_in^-1/2 of its output field, so
    # Adam's first step (lr times the gradient's sign per parameter) moves a path weight by lr * sqrt(fan_in)
    from e3nn import o3

    from epdo.graph.layers import _GatedTP

    torch.manual_seed(0)
    layer = _GatedTP("3x0e + 2x1o", o3.Irreps.spherical_harmonics(1), "4x0e + 2x1o", True, dtype=torch.float64)
    fan = {}  # independent count: mul_in1 * mul_in2 over the allowed paths into each output field
    for ins in layer.tp.instructions:
        m1, m2 = layer.tp.irreps_in1[ins.i_in1].mul, layer.tp.irreps_in2[ins.i_in2].mul
        fan[ins.i_out] = fan.get(ins.i_out, 0) + m1 * m2
    expect = torch.cat([torch.full((math.prod(ins.path_shape),), math.sqrt(fan[ins.i_out]), dtype=torch.float64)
                        for ins in layer.tp.instructions])
    assert torch.equal(layer._weight_scale, expect)
    before = layer.path_weights().detach().clone()
    opt = torch.optim.Adam([layer.weight], lr=1e-3)
    x, a = torch.randn(5, layer.tp.irreps_in1.dim, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    layer(x, a).pow(2).sum().backward()
    opt.step()
    step = (layer.path_weights().detach() - before).abs()
    assert torch.allclose(step, 1e-3 * expect, rtol=1e-6)


def test_segnn_spherical_harmonics_normalisation_option():
    torch.manual_seed(0)
    pos = torch.randn(6, 3, dtype=torch.float64)
    ei = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
    comp = SEGNNLayer("1x0e", "1x0e", "2x0e + 1x1o", lmax_attr=2, dtype=torch.float64)
    integ = SEGNNLayer("1x0e", "1x0e", "2x0e + 1x1o", lmax_attr=2, sh_normalization="integral", dtype=torch.float64)
    a, b = comp.edge_attributes(pos, ei), integ.edge_attributes(pos, ei)
    assert torch.allclose(b, a / math.sqrt(4 * math.pi), rtol=1e-12, atol=0)
    assert "sh_normalization='integral'" in repr(integ) and "sh_normalization" not in repr(comp)
    with pytest.raises(ValueError, match="sh_normalization must be 'component' or 'integral', got 'norm'"):
        SEGNNLayer("1x0e", "1x0e", "1x0e", sh_normalization="norm")
