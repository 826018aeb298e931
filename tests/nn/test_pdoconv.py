"""PDOConv: exact grid equivariance, parameter counts, export, eval cache, gradients, bad input."""

import io
import math

import numpy as np
import pytest
import torch

from epdo import diffops, fields, groups
from epdo.groups import hom_dimension
from epdo.nn import PDOConv

GROUPS = {"C4": groups.cyclic(4), "C8": groups.cyclic(8), "C16": groups.cyclic(16),
          "D4": groups.dihedral(4), "D8": groups.dihedral(8), "D16": groups.dihedral(16)}
DISCS = [("fd", None), ("gauss", 1.0)]


def _grid_elements(G):
    els = [G.rotation(math.pi / 2), G.rotation(math.pi)]
    if G.reflections:
        els += [G.element(1, 0), G.element(1, G.N // 4)]
    return els


def _rel_err(layer, ti, to, x, g):
    y = layer(x)
    return ((layer(ti.transform(x, g)) - to.transform(y, g)).norm() / y.norm()).item()


@pytest.mark.parametrize("gname", list(GROUPS))
@pytest.mark.parametrize("disc,sigma", DISCS)
def test_exact_grid_equivariance_float32(gname, disc, sigma):
    G = GROUPS[gname]
    ti = fields.FieldType(G, [G.regular, G.irreps[1]])
    to = fields.FieldType(G, [G.regular, G.trivial])
    torch.manual_seed(0)
    layer = PDOConv(ti, to, order=4, kernel_size=5, discretization=disc, sigma=sigma)
    x = torch.randn(2, ti.size, 11, 11)
    for g in _grid_elements(G):
        assert _rel_err(layer, ti, to, x, g) <= 1e-5, (gname, disc, g)


@pytest.mark.parametrize("G", [groups.so2(3), groups.o2(3)], ids=["SO2", "O2"])
def test_continuous_groups_grid_equivariance(G):
    ti = fields.FieldType(G, G.irreps)
    to = fields.FieldType(G, G.irreps[::-1])
    layer = PDOConv(ti, to, order=3, kernel_size=5)
    x = torch.randn(1, ti.size, 11, 11)
    els = [G.rotation(math.pi / 2)] + ([G.element(1, 0)] if G.reflections else [])
    for g in els:
        assert _rel_err(layer, ti, to, x, g) <= 1e-5


@pytest.mark.parametrize("c,N,gname", [(1, 2, "C4"), (2, 4, "C8"), (3, 3, "C16"), (2, 4, "D4"), (1, 4, "D16")])
def test_parameter_count_matches_table1(c, N, gname):
    """Steerable PDO between c regular fields: c^2 (N+1)(N+2) n / 2 parameters (Table 1, paper 000)."""
    G = GROUPS[gname]
    t = fields.FieldType(G, [G.regular] * c)
    layer = PDOConv(t, t, order=N, kernel_size=2 * math.ceil(N / 2) + 1, bias=False)
    n = G.order
    assert layer.num_params == c * c * (N + 1) * (N + 2) * n // 2


def _hom_dim_by_characters(G, rho_in, rho_out):
    return round(sum(np.trace(rho_in(g)) * np.trace(rho_out(g)) for g in G.elements) / G.order)


def test_parameter_count_general_fields_equals_character_formula():
    G = groups.dihedral(4)
    ti = fields.FieldType(G, [G.regular, G.irreps[2], G.trivial])
    to = fields.FieldType(G, [G.quotient(G.subgroup(4)), G.irreps[3]])
    layer = PDOConv(ti, to, order=3, kernel_size=5, bias=False)
    rho_hat = diffops.derivative_representation(G, 3)
    expected = sum(_hom_dim_by_characters(G, rho_hat.tensor(ri), ro) for ri in ti for ro in to)
    assert layer.num_params == expected == sum(hom_dimension(rho_hat.tensor(ri), ro) for ri in ti for ro in to)


@pytest.mark.parametrize("gname", ["C4", "C16", "D4"])
def test_pdo_econv_basis_is_equivariant_with_steerable_count(gname):
    """The PDO-eConv parameterisation spans Hom(rho_hat (x) rho_in, regular): same count, exact equivariance."""
    G = GROUPS[gname]
    ti = fields.FieldType(G, [G.trivial, G.regular])
    to = fields.FieldType(G, [G.regular] * 2)
    a = PDOConv(ti, to, order=4, kernel_size=5, basis="pdo_econv")
    b = PDOConv(ti, to, order=4, kernel_size=5)
    assert a.num_params == b.num_params
    x = torch.randn(2, ti.size, 11, 11)
    for g in _grid_elements(G):
        assert _rel_err(a, ti, to, x, g) <= 1e-5
    if G.order > 8:
        return  # the rank check below is slow for big groups; C4 and D4 cover it
    # the filters of random PDO-eConv layers span the whole steerable space (dimension = parameter count)
    a = PDOConv(ti, to, order=4, kernel_size=5, basis="pdo_econv", dtype=torch.float64)
    with torch.no_grad():
        samples = []
        for _ in range(a.expansion.weight.numel() + 5):
            a.expansion.weight.normal_()
            samples.append(a._expand_filter().flatten())
        rank = torch.linalg.matrix_rank(torch.stack(samples)).item()
    assert rank == a.expansion.weight.numel()


def test_pdo_econv_basis_needs_regular_outputs():
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.irreps[1]])
    with pytest.raises(ValueError, match="regular output fields"):
        PDOConv(t, t, order=2, kernel_size=3, basis="pdo_econv")
    with pytest.raises(ValueError, match="unknown basis"):
        PDOConv(t, t, order=2, kernel_size=3, basis="hermite")


def test_bias_only_on_trivial_components():
    G = groups.cyclic(4)
    to = fields.FieldType(G, [G.regular, G.irreps[1], G.trivial])
    layer = PDOConv(fields.FieldType(G, [G.trivial]), to, order=2, kernel_size=3)
    assert layer.bias_term.num_params == 2  # one per regular field (its trivial irrep) + the trivial field
    with torch.no_grad():
        layer.bias_term.bias.fill_(1.0)
    b = layer.bias_term().detach()
    np.testing.assert_allclose(b[:4].numpy(), 0.5, rtol=1e-6)  # Q column of the trivial irrep: 1/sqrt(4)
    assert torch.all(b[4:6] == 0) and b[6] == 1


@pytest.mark.parametrize("disc,sigma", DISCS)
def test_export_matches_layer(disc, sigma):
    G = groups.cyclic(8)
    t = fields.FieldType(G, [G.regular] * 2)
    layer = PDOConv(t, t, order=4, kernel_size=5, discretization=disc, sigma=sigma)
    with torch.no_grad():
        layer.bias_term.bias.normal_()
    x = torch.randn(2, t.size, 12, 12)
    conv = layer.export()
    assert isinstance(conv, torch.nn.Conv2d)
    torch.testing.assert_close(conv(x), layer(x), atol=1e-6, rtol=1e-6)
    traced = torch.jit.trace(conv, x)
    torch.testing.assert_close(traced(x), layer(x), atol=1e-6, rtol=1e-6)


def test_state_dict_identical_in_train_and_eval_and_cache_invalidation():
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.regular] * 2)
    layer = PDOConv(t, t, order=2, kernel_size=3)
    keys_train = list(layer.state_dict())
    x = torch.randn(1, t.size, 9, 9)
    layer.eval()
    with torch.no_grad():
        y1 = layer(x)
    assert layer._eval_cache is not None  # no weight gradient needed: the cached filter, built without a graph
    assert layer(x).requires_grad  # eval mode keeps gradients where they may be needed
    assert list(layer.state_dict()) == keys_train
    assert all(k.startswith(("expansion.weights", "bias_term.bias")) for k in keys_train)
    with torch.no_grad():  # in-place change of the weights invalidates the cache
        layer.expansion.weights[0].mul_(2.0)
    y2 = layer(x)
    assert not torch.allclose(y1, y2)
    other = PDOConv(t, t, order=2, kernel_size=3)
    other.eval()
    other(x)
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(x), y2)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert set(sd) == set(keys_train)


def test_eval_input_gradients_still_flow():
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.regular])
    layer = PDOConv(t, t, order=2, kernel_size=3).eval()
    x = torch.randn(1, 4, 7, 7, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradcheck_float64():
    """Gradients with respect to the input and to the free parameters against finite differences."""
    G = groups.dihedral(2)
    t = fields.FieldType(G, [G.regular])
    layer = PDOConv(t, t, order=2, kernel_size=3, dtype=torch.float64)
    x = torch.randn(1, t.size, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    w = layer.expansion.weights[0].detach().clone().requires_grad_(True)

    def by_weight(wv):
        return torch.func.functional_call(layer, {"expansion.weights.0": wv}, (x.detach(),))

    assert torch.autograd.gradcheck(by_weight, (w,))


def test_autocast_bfloat16_cpu():
    """Mixed field types (several parameter blocks): the filter is expanded in float32, conv runs in bf16."""
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.regular, G.irreps[1], G.trivial])
    layer = PDOConv(t, t, order=2, kernel_size=3)
    x = torch.randn(1, t.size, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), layer(x), atol=0.1, rtol=0.05)


# --- bad input --------------------------------------------------------------------------------------

@pytest.fixture
def c4_setup():
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.regular] * 2)
    return G, t


def test_wrong_channel_count(c4_setup):
    _, t = c4_setup
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\).*got shape \(1, 7, 9, 9\)"):
        PDOConv(t, t, order=2, kernel_size=3)(torch.randn(1, 7, 9, 9))


def test_wrong_ndim(c4_setup):
    _, t = c4_setup
    with pytest.raises(ValueError, match="expected a tensor of shape"):
        PDOConv(t, t, order=2, kernel_size=3)(torch.randn(8, 9, 9))


def test_representation_of_another_group(c4_setup):
    G, t = c4_setup
    H = groups.cyclic(8)
    with pytest.raises(ValueError, match="C8"):
        fields.FieldType(G, [H.regular])
    with pytest.raises(ValueError, match="in_type is of C4 but out_type of C8"):
        PDOConv(t, fields.FieldType(H, [H.regular]), order=2, kernel_size=3)


def test_even_kernel_size(c4_setup):
    _, t = c4_setup
    with pytest.raises(ValueError, match="odd"):
        PDOConv(t, t, order=2, kernel_size=4)


def test_kernel_too_small_for_order(c4_setup):
    _, t = c4_setup
    with pytest.raises(ValueError, match="too small"):
        PDOConv(t, t, order=4, kernel_size=3)


@pytest.mark.parametrize("disc", ["spline", "fdd"])  # not 'rbf': RBF-FD is registered by epdo.diffops (issue 9)
def test_unknown_discretization(c4_setup, disc):
    _, t = c4_setup
    with pytest.raises(ValueError, match="'fd'"):
        PDOConv(t, t, order=2, kernel_size=3, discretization=disc)


def test_mixed_dtypes(c4_setup):
    _, t = c4_setup
    with pytest.raises(TypeError, match="float64 does not match parameter dtype torch.float32"):
        PDOConv(t, t, order=2, kernel_size=3)(torch.randn(1, 8, 9, 9, dtype=torch.float64))


def test_integer_input(c4_setup):
    _, t = c4_setup
    with pytest.raises(TypeError, match="floating-point"):
        PDOConv(t, t, order=2, kernel_size=3)(torch.zeros(1, 8, 9, 9, dtype=torch.int64))
