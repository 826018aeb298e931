"""Companion layers: grid equivariance (C4..D16, SO(2)/O(2)), parameter counts from characters, export,
gradients, batch-norm statistics, pickling, state_dict, torch.compile, bfloat16 autocast and bad input."""

import io
import math
import pickle
import time

import numpy as np
import pytest
import torch

import epdo
from epdo import diffops, fields, groups
from epdo.nn import (ELU, AvgPool2d, EquivariantModule, FieldBatchNorm, FieldDropout, GroupPool, MaxPool2d,
                     NormNonlinearity, PointwiseLinear, ReLU, Sequential)
from epdo.nn.nonlinearities import is_permutation_representation

GROUPS = {"C4": groups.cyclic(4), "C8": groups.cyclic(8), "C16": groups.cyclic(16),
          "D4": groups.dihedral(4), "D8": groups.dihedral(8), "D16": groups.dihedral(16)}
CONTINUOUS = {"SO2": groups.so2(2), "O2": groups.o2(2)}
SIZE = 9  # (9 - 3) % 2 == 0: stride-2 pooling windows are symmetric


def perm_type(G):
    """A regular field and a quotient field (C_N/C_2, or D_N/D_1 = D_N/flip)."""
    sub = G.subgroup(1, True) if G.reflections else G.subgroup(2)
    return fields.FieldType(G, [G.regular, G.quotient(sub)])


def general_type(G):
    """A 2-dim irrep, a 1-dim non-trivial irrep, a trivial field (and a regular field for finite groups)."""
    if G.is_finite:
        two, one = (G.irrep(1, 1), G.irrep(1, 0)) if G.reflections else (G.irrep(0, 1), G.irrep(0, G.N // 2))
        return fields.FieldType(G, [two, one, G.trivial, G.regular])
    two, one = (G.irrep(1, 1), G.irrep(1, 0)) if G.reflections else (G.irrep(0, 1), G.irrep(0, 2))
    return fields.FieldType(G, [two, one, G.trivial, G.irrep(1 if G.reflections else 0, 2)])


def grid_elements(G):
    """Elements mapping the pixel grid onto itself: rotations by multiples of 90 degrees (and flips)."""
    els = [G.rotation(k * math.pi / 2) for k in range(4)]
    if G.reflections:
        els += [G.element(1, 0), G.element(1, G.rotation(math.pi / 2).rotation)]
    return els


def _trained_bn(t, seed=0):
    """A FieldBatchNorm with non-trivial running statistics and affine parameters."""
    torch.manual_seed(seed)
    bn = FieldBatchNorm(t)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        if bn.bias_term.bias is not None:
            bn.bias_term.bias.normal_()
    for _ in range(3):
        bn(torch.randn(4, t.size, 5, 5) * 2 + 1)
    return bn


def make_layers(G):
    """(name, module) for every companion layer on fields of G (permutation-only layers for finite G)."""
    g_t = general_type(G)
    torch.manual_seed(0)
    layers = [("PointwiseLinear", PointwiseLinear(g_t, fields.FieldType(G, list(g_t)[::-1]))),
              ("NormNonlinearity-relu", NormNonlinearity(g_t, "relu")),
              ("NormNonlinearity-sigmoid", NormNonlinearity(g_t, "sigmoid")),
              ("FieldBatchNorm", _trained_bn(g_t)),
              ("AvgPool2d", AvgPool2d(g_t, 3, 2)),
              ("FieldDropout", FieldDropout(g_t, 0.5))]
    if G.is_finite:
        p_t = perm_type(G)
        layers += [("ReLU", ReLU(p_t)), ("ELU", ELU(p_t)),
                   ("FieldBatchNorm-perm", _trained_bn(p_t)),
                   ("GroupPool-max", GroupPool(p_t, "max")), ("GroupPool-mean", GroupPool(p_t, "mean")),
                   ("MaxPool2d", MaxPool2d(p_t, 3, 2, padding=1)),
                   ("Sequential", Sequential(PointwiseLinear(g_t, p_t), FieldBatchNorm(p_t), ReLU(p_t),
                                             MaxPool2d(p_t, 3, 2), GroupPool(p_t)))]
    return layers


# --- equivariance ---------------------------------------------------------------------------------

@pytest.mark.parametrize("gname", list(GROUPS) + list(CONTINUOUS))
def test_grid_equivariance_float32(gname):
    G = {**GROUPS, **CONTINUOUS}[gname]
    els = grid_elements(G)
    for name, layer in make_layers(G):
        report = epdo.check_equivariance(layer, elements=els, size=SIZE, dtype=torch.float32)
        assert len(report) == len(els) and all(r.exact for r in report)
        assert report.max_error() <= 1e-5, (gname, name, str(report))


@pytest.mark.parametrize("gname", ["C8", "D4", "SO2"])
def test_train_mode_equivariance(gname):
    """Batch statistics and the dropout mask (same seed) commute with the group too."""
    G = {**GROUPS, **CONTINUOUS}[gname]
    t = general_type(G)
    x = torch.randn(3, t.size, SIZE, SIZE)
    for layer in (FieldBatchNorm(t), FieldDropout(t, 0.5)):
        layer.train()
        for g in grid_elements(G)[1:]:
            torch.manual_seed(1)
            a = layer(t.transform(x, g))
            torch.manual_seed(1)
            b = t.transform(layer(x), g)
            assert ((a - b).norm() / b.norm()).item() <= 1e-5, (type(layer).__name__, g)


def test_non_orthogonal_fields():
    """rho_hat (the derivative representation, non-orthogonal): norms and statistics use Q^-1."""
    G = groups.dihedral(8)  # for D4 rho_hat is a signed permutation, hence orthogonal
    rho_hat = diffops.derivative_representation(G, 2)
    assert not rho_hat.is_orthogonal
    t = fields.FieldType(G, [rho_hat, G.regular])
    for layer in (NormNonlinearity(t, "relu"), NormNonlinearity(t, "sigmoid"), _trained_bn(t), PointwiseLinear(t, t)):
        report = epdo.check_equivariance(layer, elements=grid_elements(G), size=SIZE)
        assert report.max_error() <= 1e-10, type(layer).__name__


def test_smooth_input_non_grid_angles_reported():
    """Errors at non-grid angles on band-limited input: printed (interpolation error, not asserted loosely)."""
    cases = [("C16", GROUPS["C16"]), ("SO2", CONTINUOUS["SO2"])]
    for gname, G in cases:
        for name, layer in make_layers(G):
            if name in ("FieldDropout", "Sequential", "FieldBatchNorm-perm"):
                continue
            report = epdo.check_equivariance(layer, input="smooth", size=25, batch=1)
            non_grid = [r.error for r in report if not r.exact]
            print(f"{gname:4s} {name:26s} grid {report.max_error():.1e}   non-grid max {max(non_grid):.2e} "
                  f"median {float(np.median(non_grid)):.2e}")
            assert report.max_error() <= 1e-10 and all(math.isfinite(e) for e in non_grid)


# --- PointwiseLinear ------------------------------------------------------------------------------

def _char_hom_dim(a, b):
    """dim Hom_G(a, b) = mean_g chi_a(g) chi_b(g) (exact on 4L+1 equispaced angles for continuous groups)."""
    G = a.group
    if G.is_finite:
        els = G.elements
    else:
        n = 4 * max(a.max_frequency, b.max_frequency, 1) + 1
        els = [G.element(s, 2 * math.pi * k / n) for s in ((0, 1) if G.reflections else (0,)) for k in range(n)]
    return float(np.mean([a.character(g) * b.character(g) for g in els]))


@pytest.mark.parametrize("gname", list(GROUPS) + list(CONTINUOUS))
def test_pointwise_parameter_count_from_characters(gname):
    G = {**GROUPS, **CONTINUOUS}[gname]
    ti = general_type(G)
    to = fields.FieldType(G, list(ti)[:3]) + (perm_type(G) if G.is_finite else fields.FieldType(G, [G.trivial]))
    layer = PointwiseLinear(ti, to)
    expected = sum(_char_hom_dim(a, b) for a in ti for b in to)
    n_trivial = sum(_char_hom_dim(G.trivial, b) for b in to)
    assert layer.expansion.num_params == round(expected) and abs(expected - round(expected)) < 1e-9
    assert layer.bias_term.num_params == round(n_trivial)
    assert layer.num_params == round(expected + n_trivial)
    assert PointwiseLinear(ti, to, bias=False).num_params == round(expected)


def test_pointwise_weight_is_intertwiner_and_export():
    G = GROUPS["D8"]
    ti, to = general_type(G), perm_type(G)
    layer = PointwiseLinear(ti, to, dtype=torch.float64)
    with torch.no_grad():
        layer.bias_term.bias.normal_()
    w = layer.weight_and_bias()[0].detach().numpy()
    for g in G.elements:
        np.testing.assert_allclose(w @ ti.fiber_matrix(g), to.fiber_matrix(g) @ w, atol=1e-12)
    x = torch.randn(2, ti.size, 5, 4, dtype=torch.float64)
    conv = layer.export()
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
    assert (conv(x) - layer(x)).abs().max().item() <= 1e-6
    layer32 = PointwiseLinear(ti, to)
    x32 = x.float()
    assert (layer32.export()(x32) - layer32(x32)).abs().max().item() <= 1e-6


def test_pointwise_init_preserves_variance():
    G = GROUPS["C8"]
    ti = fields.FieldType(G, [G.regular] * 4 + [G.irrep(0, 1)] * 2)
    to = fields.FieldType(G, [G.regular] * 3 + [G.irrep(0, 3)] * 4)
    torch.manual_seed(0)
    ratios = []
    for _ in range(5):
        layer = PointwiseLinear(ti, to)
        ratios.append(layer(torch.randn(8, ti.size, 8, 8)).var().item())
    assert 0.6 < float(np.mean(ratios)) < 1.6, ratios
    layer.reset_parameters(gain=2.0)
    assert layer.expansion().pow(2).sum(1).mean().item() == pytest.approx(2.0, rel=1e-5)


def test_pointwise_gradcheck():
    G = GROUPS["C4"]
    ti = fields.FieldType(G, [G.regular])
    to = fields.FieldType(G, [G.trivial, G.irrep(0, 1)])
    layer = PointwiseLinear(ti, to, dtype=torch.float64)
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    params = tuple(layer.parameters())

    def f(inp, *ps):
        return torch.func.functional_call(layer, dict(zip([n for n, _ in layer.named_parameters()], ps)), (inp,))

    assert torch.autograd.gradcheck(f, (x, *params))


# --- nonlinearities, batch norm, pooling ----------------------------------------------------------

def test_permutation_detection():
    G = GROUPS["D8"]
    for r in (G.regular, G.trivial, G.quotient(G.subgroup(8)), G.quotient(G.subgroup(1, True)), G.regular + G.regular):
        assert is_permutation_representation(r), r
    for r in (G.irrep(1, 1), G.irrep(1, 0), G.regular.change_basis(np.linalg.qr(np.random.randn(16, 16))[0])):
        assert not is_permutation_representation(r), r
    S = CONTINUOUS["SO2"]
    assert is_permutation_representation(S.trivial) and not is_permutation_representation(S.irrep(0, 1))


def test_norm_nonlinearity_formula():
    G = CONTINUOUS["SO2"]
    t = fields.FieldType(G, [G.irrep(0, 1), G.trivial])
    x = torch.tensor([3.0, 4.0, -2.0]).view(1, 3, 1, 1)
    relu = NormNonlinearity(t, "relu")
    with torch.no_grad():
        relu.bias.copy_(torch.tensor([1.0, 3.0]))
    np.testing.assert_allclose(relu(x).detach().flatten().numpy(), [3 * 4 / 5, 4 * 4 / 5, 0.0], atol=1e-5)
    sig = NormNonlinearity(t, "sigmoid", bias=False)
    s5, s2 = 1 / (1 + math.exp(-5)), 1 / (1 + math.exp(-2))
    np.testing.assert_allclose(sig(x).detach().flatten().numpy(), [3 * s5, 4 * s5, -2 * s2], atol=1e-5)
    assert sig.bias is None and len(list(sig.parameters())) == 0
    z = torch.zeros(1, 3, 2, 2, requires_grad=True)
    relu(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_batchnorm_statistics():
    G = GROUPS["C4"]
    t = fields.FieldType(G, [G.regular, G.irrep(0, 1), G.trivial])
    bn = FieldBatchNorm(t, momentum=None)
    x = torch.randn(6, t.size, 5, 5, dtype=torch.float32) * 3 + torch.arange(t.size).view(1, -1, 1, 1)
    y = bn(x)
    reg, irr, triv = y[:, :4], y[:, 4:6], y[:, 6:]
    xr = x[:, :4]
    # regular field: mean and variance pooled over its 4 channels
    ref = (xr - xr.mean()) / torch.sqrt(((xr - xr.mean()) ** 2).mean() + bn.eps)
    assert torch.allclose(reg, ref, atol=1e-5)
    # irrep field: no mean subtracted, variance = mean squared norm / 2
    xi = x[:, 4:6]
    assert torch.allclose(irr, xi / torch.sqrt((xi**2).sum(1).mean() / 2 + bn.eps), atol=1e-5)
    assert abs(triv.mean().item()) < 1e-5 and abs(triv.var(unbiased=False).item() - 1) < 1e-3
    assert bn.num_batches_tracked.item() == 1 and bn.running_var.shape == (3,)
    n = 6 * 25
    assert bn.running_var[0].item() == pytest.approx(((xr - xr.mean()) ** 2).mean().item() * n / (n - 1), rel=1e-4)
    assert torch.allclose(bn.running_mean[:4], xr.mean().expand(4)) and (bn.running_mean[4:6] == 0).all()
    bn.eval()
    # eval: running statistics (one batch, cumulative) = batch mean and unbiased variance
    assert torch.allclose(bn(x), bn.bias_term().view(1, -1, 1, 1) + (y - bn.bias_term().view(1, -1, 1, 1))
                          * math.sqrt((n - 1) / n), atol=1e-4)


def test_batchnorm_affine_parameters():
    G = GROUPS["D4"]
    t = perm_type(G) + fields.FieldType(G, [G.irrep(1, 1)])
    bn = FieldBatchNorm(t)
    assert bn.weight.shape == (3,) and bn.bias_term.num_params == 2  # bias on the two trivial components only
    assert FieldBatchNorm(t, affine=False).weight is None
    assert len(list(FieldBatchNorm(t, affine=False).parameters())) == 0


def test_group_pool_values_and_type():
    G = GROUPS["C4"]
    t = fields.FieldType(G, [G.regular, G.quotient(G.subgroup(2))])
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert GroupPool(t, "max")(x).flatten().tolist() == [3.0, 5.0]
    assert GroupPool(t, "mean")(x).flatten().tolist() == [1.5, 4.5]
    assert GroupPool(t).out_type == fields.FieldType(G, [G.trivial] * 2)


def test_dropout_drops_whole_fields():
    G = GROUPS["C8"]
    t = fields.FieldType(G, [G.regular] * 50)
    drop = FieldDropout(t, 0.3)
    y = drop(torch.ones(4, t.size, 2, 2)).view(4, 50, 8, 4)
    per_field = y[..., 0, 0]
    assert torch.all((y == per_field[..., None, None]))  # constant within a field (and over space)
    assert all(v == 0 or v == pytest.approx(1 / 0.7) for v in per_field.unique().tolist())
    assert 0.1 < (per_field == 0).float().mean().item() < 0.5
    assert torch.equal(drop.eval()(torch.ones(1, t.size, 2, 2)), torch.ones(1, t.size, 2, 2))


# --- generic module checks (pickle, state_dict, gradients) ----------------------------------------

ALL_LAYERS = make_layers(GROUPS["D4"]) + [("SO2-" + n, m) for n, m in make_layers(CONTINUOUS["SO2"])]


@pytest.mark.parametrize("name,layer", ALL_LAYERS, ids=[n for n, _ in ALL_LAYERS])
def test_pickle_state_dict_repr_gradients(name, layer):
    x = torch.randn(2, layer.in_type.size, SIZE, SIZE)
    layer.eval()
    y = layer(x)
    clone = pickle.loads(pickle.dumps(layer))
    assert torch.equal(clone(x), y)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(clone(x), y)
    keys_eval = list(layer.state_dict())
    layer.train()
    assert list(layer.state_dict()) == keys_eval
    assert all(not k.startswith("_") and "._" not in k for k in keys_eval)  # no bases / indices persisted
    assert repr(layer).startswith(type(layer).__name__) and "FieldType(" in repr(layer)
    out = layer(x)
    assert out.shape[1] == layer.out_type.size
    if any(p.requires_grad for p in layer.parameters()):
        out.square().sum().backward()
        for pname, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
            if pname != "bias" or name != "NormNonlinearity-relu":
                assert p.grad.abs().sum() > 0, pname
    layer.eval()


def test_bfloat16_autocast():
    G = GROUPS["C8"]
    g_t, p_t = general_type(G), perm_type(G)
    torch.manual_seed(0)
    net = Sequential(PointwiseLinear(g_t, p_t), FieldBatchNorm(p_t), ELU(p_t), PointwiseLinear(p_t, g_t),
                     NormNonlinearity(g_t), AvgPool2d(g_t, 3, 2), FieldDropout(g_t, 0.2)).eval()
    x = torch.randn(2, g_t.size, SIZE, SIZE)
    ref = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
        gy = net(g_t.transform(x, G.rotation(math.pi / 2)))
    assert torch.isfinite(y).all()
    assert ((y.float() - ref).norm() / ref.norm()).item() < 5e-2
    assert ((gy.float() - g_t.transform(y.float(), G.rotation(math.pi / 2))).norm() / ref.norm()).item() < 5e-2


def test_torch_compile_sequential():
    """torch.compile (inductor, CPU) of a small Sequential with a PDOConv: same output, still equivariant."""
    from epdo.nn import PDOConv

    G = GROUPS["C4"]
    p_t = perm_type(G)
    torch.manual_seed(0)
    net = Sequential(PDOConv(p_t, p_t, order=2, kernel_size=3), PointwiseLinear(p_t, p_t), FieldBatchNorm(p_t),
                     ReLU(p_t), GroupPool(p_t)).eval()
    x = torch.randn(2, p_t.size, SIZE, SIZE)
    t0 = time.time()
    compiled = torch.compile(net)
    y = compiled(x)
    print(f"torch.compile + first call: {time.time() - t0:.1f} s")
    assert torch.allclose(y, net(x), atol=1e-5)
    g = G.rotation(math.pi / 2)
    assert torch.allclose(compiled(p_t.transform(x, g)), net.out_type.transform(y, g), atol=1e-5)


# --- bad input ------------------------------------------------------------------------------------

def test_error_wrong_channel_count():
    t = perm_type(GROUPS["C4"])
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(B, 6, H, W\)"):
        ReLU(t)(torch.randn(1, 5, 3, 3))
    with pytest.raises(ValueError, match="got shape"):
        PointwiseLinear(t, t)(torch.randn(1, 7, 3, 3))


def test_error_wrong_ndim():
    t = perm_type(GROUPS["C4"])
    for layer in (FieldBatchNorm(t), GroupPool(t), MaxPool2d(t, 2), NormNonlinearity(t)):
        with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
            layer(torch.randn(6, 3, 3))


def test_error_representation_of_another_group():
    C4, C8 = GROUPS["C4"], GROUPS["C8"]
    with pytest.raises(ValueError, match="not of C4"):
        fields.FieldType(C4, [C8.regular])
    with pytest.raises(ValueError, match="same group"):
        PointwiseLinear(fields.FieldType(C4, [C4.regular]), fields.FieldType(C8, [C8.regular]))
    with pytest.raises(TypeError, match="elements of C4"):
        epdo.check_equivariance(ReLU(fields.FieldType(C4, [C4.regular])), elements=[C8.identity])


def test_error_mixed_dtypes():
    t = perm_type(GROUPS["C4"])
    with pytest.raises(TypeError, match="does not match parameter dtype"):
        PointwiseLinear(t, t)(torch.randn(1, 6, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        ReLU(t)(torch.ones(1, 6, 3, 3, dtype=torch.long))


def test_error_non_permutation_representation():
    G = GROUPS["D4"]
    t = fields.FieldType(G, [G.regular, G.irrep(1, 1)])
    for cls in (ReLU, ELU, GroupPool):
        with pytest.raises(ValueError, match=r"field 1 .* is D4.irrep\(1,1\)"):
            cls(t)
    with pytest.raises(ValueError, match="permutation"):
        MaxPool2d(t, 2)
    AvgPool2d(t, 2)  # linear: any fields


def test_error_sequential_type_mismatch():
    G = GROUPS["C4"]
    a, b = perm_type(G), fields.FieldType(G, [G.regular])
    with pytest.raises(ValueError, match=r"module 1 \(ReLU\) expects in_type FieldType\(C4: regular; size=4\).*"
                                         r"module 0 \(PointwiseLinear\) returns out_type FieldType\(C4: regular, "):
        Sequential(PointwiseLinear(b, a), ReLU(b))
    with pytest.raises(TypeError, match="module 1"):
        Sequential(ReLU(a), torch.nn.ReLU())
    with pytest.raises(ValueError):
        Sequential()
    net = Sequential(PointwiseLinear(b, a), ReLU(a), GroupPool(a))
    assert net.in_type == b and net.out_type == fields.FieldType(G, [G.trivial] * 2)
    assert len(net) == 3 and isinstance(net[1], ReLU) and isinstance(net[1:], Sequential)
    assert isinstance(net, EquivariantModule)


def test_error_bad_arguments():
    t = perm_type(GROUPS["C4"])
    with pytest.raises(ValueError, match="function must be one of"):
        NormNonlinearity(t, "tanh")
    with pytest.raises(ValueError, match="mode must be one of"):
        GroupPool(t, "sum")
    with pytest.raises(ValueError, match="probability"):
        FieldDropout(t, 1.5)
    with pytest.raises(ValueError, match="kernel_size"):
        MaxPool2d(t, 0)
    with pytest.raises(ValueError, match="padding"):
        AvgPool2d(t, 3, padding=2)
    with pytest.raises(ValueError, match="momentum"):
        FieldBatchNorm(t, momentum=2.0)
    with pytest.raises(ValueError, match="more than one value"):
        FieldBatchNorm(t)(torch.randn(1, 6, 1, 1))
    with pytest.raises(TypeError, match="in_type must be"):
        ReLU("regular")
