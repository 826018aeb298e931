"""PDOConv(partial=True): learned partial equivariance for the core's steerable PDO layer (issue 12)."""

from __future__ import annotations

import math

import pytest
import torch

from epdo import gconv, groups, nn
from epdo.fields import FieldType

D = torch.float64


def _types(G, c_in=2, c_out=3, lifting=False):
    t_in = FieldType(G, [G.trivial if lifting else G.regular] * c_in)
    return t_in, FieldType(G, [G.regular] * c_out)


def _element_index(G, u) -> list[int]:
    """G.elements index of each sampled element (rotation angle on the grid of G, then the flip)."""
    k = torch.round(torch.remainder(u.angle, 2 * math.pi) * G.N / (2 * math.pi)).long() % G.N
    return (u.flip.long() * G.N + k).tolist() if G.reflections else k.tolist()


@pytest.mark.parametrize("G", [groups.cyclic(4), groups.cyclic(8), groups.dihedral(4), groups.dihedral(1)], ids=str)
@pytest.mark.parametrize("lifting", [True, False], ids=["lifting", "regular"])
def test_full_theta_in_eval_mode_is_the_full_pdo_econv_layer(G, lifting):
    torch.manual_seed(0)
    t_in, t_out = _types(G, lifting=lifting)
    part = nn.PDOConv(t_in, t_out, order=2, kernel_size=5, partial=True, theta=1.0, prob=1.0, dtype=D).eval()
    full = nn.PDOConv(t_in, t_out, order=2, kernel_size=5, basis="pdo_econv", dtype=D).eval()
    with torch.no_grad():
        part.bias_term.bias.normal_()
    full.load_state_dict({k: v for k, v in part.state_dict().items() if not k.startswith("sampler.")})
    x = torch.randn(2, t_in.size, 11, 11, dtype=D)
    y = part(x)
    u = part.sampler.current
    assert len(u) == G.order and sorted(_element_index(G, u)) == list(range(G.order))
    ref = full(x).view(2, len(t_out), G.order, 11, 11)[:, :, _element_index(G, u)].reshape(y.shape)
    assert (y - ref).abs().max() <= 1e-12 * ref.abs().max()


def test_the_number_of_orientations_shrinks_with_theta_and_the_next_layer_reads_them():
    torch.manual_seed(0)
    G = groups.cyclic(8)
    t1, t = _types(G, c_in=1, c_out=2, lifting=True)
    lift = nn.PDOConv(t1, t, order=2, kernel_size=5, partial=True, theta=0.5, dtype=D)
    conv = nn.PDOConv(t, t, order=2, kernel_size=5, partial=True, theta=0.25, in_elements=lift.sampler, dtype=D)
    h = lift(torch.randn(2, 1, 9, 9, dtype=D))
    assert h.shape == (2, 2 * 4, 9, 9)  # ceil(8 * 0.5) orientations per field
    assert conv(h).shape == (2, 2 * 2, 9, 9)
    a, b = lift.sampler.current.angle, conv.sampler.current.angle
    assert a.abs().max() <= 0.5 * math.pi and b.abs().max() <= 0.25 * math.pi
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(B, 8, H, W\) for FieldType\(C8: 2xregular; "
                                         r"size=16\) on 4 input elements, got shape \(2, 16, 9, 9\)"):
        conv(torch.randn(2, 16, 9, 9, dtype=D))


@pytest.mark.parametrize("G", [groups.cyclic(4), groups.dihedral(4)], ids=str)
def test_gradients_reach_theta_and_the_flip_probability(G):
    torch.manual_seed(0)
    t1, t = _types(G, c_in=1, c_out=2, lifting=True)
    lift = nn.PDOConv(t1, t, order=2, kernel_size=5, partial=True, theta=0.7, prob=0.9, dtype=D).train()
    conv = nn.PDOConv(t, t, order=2, kernel_size=5, partial=True, theta=0.7, prob=0.9, in_elements=lift.sampler,
                      dtype=D).train()
    # the flip weight of a layer's draw is the quadrature weight of the next layer's sum: a projection ends the net
    pool = gconv.GroupProjection(conv.continuous_group, 2, in_elements=conv.sampler)
    out = pool(conv(torch.tanh(lift(torch.randn(2, 1, 9, 9, dtype=D)))))
    (out * torch.randn_like(out)).sum().backward()
    for layer in (lift, conv):
        for p in (layer.sampler.theta_raw, layer.sampler.prob_raw):
            if p is not None:
                assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs() > 0


def test_theta_gradient_equals_finite_differences_on_the_eval_grid():
    # in eval mode the orientations are the grid theta (-1 + 2j / n): a smooth function of theta while the count
    # stays fixed, so d loss / d theta_raw can be checked against central differences
    torch.manual_seed(0)
    G = groups.cyclic(8)
    t1, t = _types(G, c_in=1, c_out=2, lifting=True)
    # (different theta per layer: equal grids would put relative angles exactly on the interpolation's kinks)
    lift = nn.PDOConv(t1, t, order=2, kernel_size=5, partial=True, theta=0.6, dtype=D).eval()
    conv = nn.PDOConv(t, t, order=2, kernel_size=5, partial=True, theta=0.45, in_elements=lift.sampler, dtype=D).eval()
    x = torch.randn(1, 1, 9, 9, dtype=D)
    w = torch.randn(1, 2 * 4, 9, 9, dtype=D)  # ceil(8 * 0.45) = 4 orientations per field

    def loss():
        return (conv(torch.tanh(lift(x))) * w).sum()

    loss().backward()
    for layer in (lift, conv):
        p = layer.sampler.theta_raw
        g, h = float(p.grad), 1e-6
        with torch.no_grad():
            p += h
            up = float(loss())
            p -= 2 * h
            down = float(loss())
            p += h
        assert g == pytest.approx((up - down) / (2 * h), rel=1e-5), layer


def test_a_partial_layer_after_a_full_layer_reads_the_whole_group():
    torch.manual_seed(0)
    G = groups.cyclic(4)
    t1, t = _types(G, c_in=1, c_out=2, lifting=True)
    full = nn.PDOConv(t1, t, order=2, kernel_size=5, dtype=D)
    part = nn.PDOConv(t, t, order=2, kernel_size=5, partial=True, theta=0.5, dtype=D).train()
    y = part(full(torch.randn(2, 1, 9, 9, dtype=D)))
    assert y.shape == (2, 2 * 2, 9, 9) and torch.isfinite(y).all()


def test_export_computes_the_eval_function():
    torch.manual_seed(0)
    G = groups.dihedral(2)
    t1, t = _types(G, c_in=1, c_out=2, lifting=True)
    lift = nn.PDOConv(t1, t, order=2, kernel_size=5, partial=True, theta=0.5, prob=0.9, dtype=D).eval()
    x = torch.randn(2, 1, 9, 9, dtype=D)
    conv = lift.export()
    assert isinstance(conv, torch.nn.Conv2d) and torch.allclose(conv(x), lift(x), rtol=0, atol=1e-12)
    assert "partial=True" in repr(lift) and "theta" in repr(lift.sampler)


def test_bad_arguments_are_clear_errors():
    G = groups.cyclic(4)
    t1, t = _types(G, c_in=1, c_out=2, lifting=True)
    with pytest.raises(ValueError, match="uses basis='pdo_econv'"):
        nn.PDOConv(t1, t, order=2, kernel_size=5, partial=True, basis="steerable")
    with pytest.raises(ValueError, match="in_elements is an argument of partial layers"):
        nn.PDOConv(t, t, order=2, kernel_size=5, in_elements=nn.sampling.FiniteElements(G))
    with pytest.raises(ValueError, match="trivial input fields live on the plane only"):
        nn.PDOConv(t1, t, order=2, kernel_size=5, partial=True, in_elements=nn.sampling.FiniteElements(G))
    with pytest.raises(ValueError, match="out_type must be regular fields"):
        nn.PDOConv(t, FieldType(G, [G.trivial]), order=2, kernel_size=5, partial=True)
    C1 = groups.cyclic(1)
    with pytest.raises(ValueError, match=r"needs field types of C_N \(N >= 2\) or D_N, got C1"):
        nn.PDOConv(FieldType(C1, [C1.trivial]), FieldType(C1, [C1.regular]), order=2, kernel_size=5, partial=True)
    with pytest.raises(ValueError, match="theta is theta/pi and must lie in"):
        nn.PDOConv(t1, t, order=2, kernel_size=5, partial=True, theta=1.5)
    with pytest.raises(ValueError, match=r"in_elements are elements of O\(2\); this layer.s input lives on SO\(2\)"):
        nn.PDOConv(t, t, order=2, kernel_size=5, partial=True, in_elements=nn.sampling.HaarSampler(groups.o2(0), 8))


# --- NeuralEPDO(partial=True) -----------------------------------------------------------------------------------

def _randomise_biases(layer):
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith("bias"):
                p.normal_()


@pytest.mark.parametrize("G", [groups.cyclic(4), groups.cyclic(8), groups.dihedral(4)], ids=str)
@pytest.mark.parametrize("backend,reduction,partition", [("torch", 2, 1), ("dense", 1, 2), ("auto", 1, 1)])
def test_neural_epdo_on_all_elements_is_the_full_layer(G, backend, reduction, partition):
    torch.manual_seed(0)
    t = FieldType(G, [G.regular] * 2)
    part = nn.NeuralEPDO(t, order=2, kernel_size=5, reduction=reduction, partition=partition, backend=backend,
                         partial=True, dtype=D).eval()
    _randomise_biases(part)
    full = nn.NeuralEPDO(t, order=2, kernel_size=5, reduction=reduction, partition=partition, dtype=D).eval()
    full.load_state_dict(part.state_dict())
    x = torch.randn(2, t.size, 9, 9, dtype=D)
    ref = full(x)
    assert (part(x) - ref).abs().max() <= 1e-12 * ref.abs().max()


@pytest.mark.parametrize("G", [groups.cyclic(8), groups.dihedral(4)], ids=str)
def test_partial_pdo_network_at_full_theta_is_the_full_network(G):
    torch.manual_seed(0)
    t1, t = _types(G, c_in=1, c_out=2, lifting=True)
    lift = nn.PDOConv(t1, t, order=2, kernel_size=5, partial=True, prob=1.0, dtype=D).eval()
    neural = nn.NeuralEPDO(t, order=2, kernel_size=5, reduction=2, partial=True, in_elements=lift.sampler,
                           dtype=D).eval()
    _randomise_biases(lift)
    _randomise_biases(neural)
    full_lift = nn.PDOConv(t1, t, order=2, kernel_size=5, basis="pdo_econv", dtype=D).eval()
    full_lift.load_state_dict({k: v for k, v in lift.state_dict().items() if not k.startswith("sampler.")})
    full_neural = nn.NeuralEPDO(t, order=2, kernel_size=5, reduction=2, dtype=D).eval()
    full_neural.load_state_dict(neural.state_dict())
    x = torch.randn(2, 1, 11, 11, dtype=D)
    y = neural(torch.tanh(lift(x)))
    order = _element_index(G, lift.sampler.current)
    ref = full_neural(torch.tanh(full_lift(x))).view(2, 2, G.order, 11, 11)[:, :, order].reshape(y.shape)
    assert (y - ref).abs().max() <= 1e-12 * ref.abs().max()


def test_neural_epdo_passes_gradients_to_the_previous_layers_theta():
    torch.manual_seed(0)
    G = groups.dihedral(4)
    t1, t = _types(G, c_in=1, c_out=2, lifting=True)
    lift = nn.PDOConv(t1, t, order=2, kernel_size=5, partial=True, theta=0.6, prob=0.9, dtype=D).train()
    neural = nn.NeuralEPDO(t, order=2, kernel_size=5, partial=True, in_elements=lift.sampler, dtype=D).train()
    pool = gconv.GroupProjection(lift.continuous_group, 2, in_elements=lift.sampler)
    h = lift(torch.randn(2, 1, 9, 9, dtype=D))
    out = pool(neural(h))
    assert neural(h).shape == h.shape  # the output lives on the input's elements
    (out * torch.randn_like(out)).sum().backward()
    for p in (lift.sampler.theta_raw, lift.sampler.prob_raw):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs() > 0
    assert "partial=True" in repr(neural)


def test_neural_epdo_partial_bad_arguments():
    G = groups.cyclic(4)
    t = FieldType(G, [G.regular] * 2)
    with pytest.raises(ValueError, match="needs mode='diag'"):
        nn.NeuralEPDO(t, t, order=2, kernel_size=5, mode="full", partial=True)
    q = FieldType(G, [G.trivial] * 2)
    with pytest.raises(ValueError, match="needs regular fields of C_N or D_N"):
        nn.NeuralEPDO(q, order=2, kernel_size=5, partial=True)
    with pytest.raises(ValueError, match="in_elements is an argument of partial layers"):
        nn.NeuralEPDO(t, order=2, kernel_size=5, in_elements=nn.sampling.FiniteElements(G))
    with pytest.raises(ValueError, match=r"in_elements are elements of O\(2\); this layer.s input lives on SO\(2\) \(or all of C4\)"):
        nn.NeuralEPDO(t, order=2, kernel_size=5, partial=True, in_elements=nn.sampling.HaarSampler(groups.o2(0), 8))
    layer = nn.NeuralEPDO(t, order=2, kernel_size=5, partial=True)
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(B, 8, H, W\) for FieldType\(C4: 2xregular; "
                                         r"size=8\) on 4 elements, got shape \(1, 6, 9, 9\)"):
        layer(torch.randn(1, 6, 9, 9))
    with pytest.raises(TypeError, match="expected a real floating-point tensor"):
        layer(torch.ones(1, 8, 9, 9, dtype=torch.int64))


def test_export_of_a_partial_pdo_network_computes_its_eval_function():
    import epdo

    torch.manual_seed(0)
    G = groups.cyclic(8)
    t1, t = _types(G, c_in=1, c_out=2, lifting=True)
    lift = nn.PDOConv(t1, t, order=2, kernel_size=5, partial=True, theta=0.6, dtype=D)
    neural = nn.NeuralEPDO(t, order=2, kernel_size=5, partition=2, partial=True, in_elements=lift.sampler, dtype=D)
    net = torch.nn.Sequential(lift, neural).eval()
    _randomise_biases(net)
    x = torch.randn(2, 1, 9, 9, dtype=D)
    plain = epdo.export(net)
    assert torch.allclose(plain(x), net(x), rtol=0, atol=1e-12)


def test_the_eval_cache_follows_the_previous_layers_theta():
    # a partial layer's cached filter depends on its input elements, i.e. on the previous layer's theta
    torch.manual_seed(0)
    G = groups.cyclic(8)
    t1, t = _types(G, c_in=1, c_out=2, lifting=True)
    lift = nn.PDOConv(t1, t, order=2, kernel_size=5, partial=True, theta=0.6, dtype=D).eval()
    conv = nn.PDOConv(t, t, order=2, kernel_size=5, partial=True, theta=0.5, in_elements=lift.sampler, dtype=D).eval()
    x = torch.randn(1, 1, 9, 9, dtype=D)
    with torch.no_grad():
        conv(lift(x))  # fills conv's cache
        assert conv._eval_cache is not None
        lift.sampler.theta_raw.data.fill_(0.55)  # same count (5 orientations), other angles
        y = conv(lift(x))
    ref = conv(lift(x))  # with grad enabled: no cache
    assert torch.equal(y, ref.detach())
