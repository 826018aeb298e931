"""NeuralEPDO: exact grid equivariance (diag / full, FD / Gauss), parameter counts (Table 1), the PDO product
kernels against a conv2d reference, gradients, state_dict, bad input."""

import copy
import io
import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import epdo.nn._epdo_kernels as K
from epdo import diffops, fields, groups
from epdo.groups import hom_dimension
from epdo.nn import NeuralEPDO
from epdo.nn.neural_epdo import expected_num_params

GROUPS = {"C4": groups.cyclic(4), "C8": groups.cyclic(8), "C16": groups.cyclic(16),
          "D4": groups.dihedral(4), "D8": groups.dihedral(8), "D16": groups.dihedral(16)}
DISCS = [("fd", None), ("gauss", 1.0)]


def _grid_elements(G):
    els = [G.rotation(math.pi / 2), G.rotation(math.pi), G.rotation(3 * math.pi / 2)]
    if G.reflections:
        els += [G.element(1, 0), G.element(1, G.N // 4)]
    return els


def _max_rel_err(layer, x):
    ti, to = layer.in_type, layer.out_type
    with torch.no_grad():
        y = layer(x)
        return max(((layer(ti.transform(x, g)) - to.transform(y, g)).norm() / y.norm()).item()
                   for g in _grid_elements(ti.group))


def _kernel_backend(name: str) -> str:
    if name == "cpp" and not K.cpp_extension_available(build=os.environ.get("EPDO_BUILD_CPP") == "1"):
        if K.cpp_kernel_required():  # CI with a compiler: a missing kernel is a broken build, not a skip
            pytest.fail("C++ kernel not available under CI although a compiler is present (epdo build-ext failed?)")
        pytest.skip("C++ kernel not built (epdo build-ext, or EPDO_BUILD_CPP=1 to compile it here)")
    return name


def _reference_product(f, w, order, disc):
    """sum_alpha w[c mod C0, alpha] * d^alpha f[c] with the 2-D stencils and conv2d (plain autograd)."""
    b, c, h, wd = f.shape
    c0, n_alpha = w.shape[1], w.shape[2]
    st = torch.tensor(diffops.stencils(order, disc), dtype=f.dtype)[:, None]
    d = F.conv2d(f.reshape(b * c, 1, h, wd), st, padding=disc.kernel_size // 2).view(b, c // c0, c0, n_alpha, h, wd)
    return (d * w[:, None]).sum(3).reshape(b, c, h, wd)


def _stencils(order, disc):
    return K.PDOStencils(diffops.stencils_1d(order, disc), diffops.multi_indices(order))


# --- equivariance -------------------------------------------------------------------------------------
@pytest.mark.parametrize("gname", list(GROUPS))
@pytest.mark.parametrize("disc,sigma", DISCS)
def test_diag_exact_grid_equivariance_float32(gname, disc, sigma):
    G = GROUPS[gname]
    t = fields.FieldType(G, [G.regular, G.quotient(G.subgroup(G.N // 2)), G.regular, G.quotient(G.subgroup(G.N // 2))])
    torch.manual_seed(0)
    layer = NeuralEPDO(t, order=4, kernel_size=5, discretization=disc, sigma=sigma, reduction=2, partition=2)
    with torch.no_grad():  # non-trivial biases
        for b in (layer.bias1, layer.bias2):
            b.bias.normal_()
    assert _max_rel_err(layer, torch.randn(2, t.size, 9, 9)) <= 1e-5


@pytest.mark.parametrize("gname", list(GROUPS))
@pytest.mark.parametrize("disc,sigma", DISCS)
def test_full_exact_grid_equivariance_float32(gname, disc, sigma):
    G = GROUPS[gname]
    small = G.order <= 8
    ti = fields.FieldType(G, [G.irreps[-1], G.trivial] + ([G.regular] if small else []))
    to = fields.FieldType(G, [G.irreps[1], G.irreps[2]] + ([G.quotient(G.subgroup(G.N // 2))] if small else []))
    torch.manual_seed(0)
    layer = NeuralEPDO(ti, to, order=2, kernel_size=5, discretization=disc, sigma=sigma, mode="full")
    with torch.no_grad():
        for b in (layer.bias1, layer.bias2):
            if b.bias is not None:
                b.bias.normal_()
    assert _max_rel_err(layer, torch.randn(2, ti.size, 9, 9)) <= 1e-5


def test_full_mode_partition_block_diagonal_equivariant():
    G = GROUPS["D4"]
    ti = fields.FieldType(G, [G.irrep(1, 1), G.trivial] * 2)
    to = fields.FieldType(G, [G.regular] * 2)
    layer = NeuralEPDO(ti, to, order=3, kernel_size=5, mode="full", partition=2, reduction=2)
    x = torch.randn(2, ti.size, 9, 9)
    assert _max_rel_err(layer, x) <= 1e-5
    # block diagonal: output partition k only sees input partition k
    x2 = x.clone()
    x2[:, ti.size // 2:] = 0
    with torch.no_grad():
        y, y2 = layer(x), layer(x2)
        coef = layer.coefficients(x)
    assert coef.shape == (2, to.size // 2, 10, ti.size // 2, 9, 9)
    assert not torch.allclose(y[:, : to.size // 2], y2[:, : to.size // 2])  # generator sees all inputs


def test_cpp_backend_equivariant_when_available():
    _kernel_backend("cpp")
    G = GROUPS["D4"]
    t = fields.FieldType(G, [G.regular] * 2)
    layer = NeuralEPDO(t, order=4, reduction=2, partition=2, backend="cpp")
    assert _max_rel_err(layer, torch.randn(2, t.size, 9, 9)) <= 1e-5


# --- parameter counts ---------------------------------------------------------------------------------
COUNT_GRID = [(c, N, gname, r, p) for c, r, p in ((1, 1, 1), (2, 1, 2), (2, 2, 1), (4, 2, 2), (4, 4, 4), (6, 3, 2))
              for N, gname in ((1, "C2"), (2, "C4"), (3, "D2"), (4, "C3"), (2, "D4"))]
SMALL = {"C2": groups.cyclic(2), "C3": groups.cyclic(3), "C4": groups.cyclic(4), "D2": groups.dihedral(2),
         "D4": groups.dihedral(4)}


@pytest.mark.parametrize("c,N,gname,r,p", COUNT_GRID)
def test_diag_parameter_count_equals_table1(c, N, gname, r, p):
    """c^2 n / r + c^2 (N+1)(N+2) n / (2 r p) generator weights (Table 1, paper 000)."""
    G = SMALL[gname]
    n = G.order
    layer = NeuralEPDO(fields.FieldType(G, [G.regular] * c), order=N, kernel_size=5, reduction=r, partition=p)
    table1 = c * c * n // r + c * c * (N + 1) * (N + 2) * n // (2 * r * p)
    assert layer.num_generator_params == table1 == expected_num_params("diag", c, N, n, r, p)
    # biases, counted apart: one per hidden regular field, |Gamma_N| per field of the shared partition
    assert layer.num_bias_params == c // r + (c // p) * (N + 1) * (N + 2) // 2
    assert layer.num_params == layer.num_generator_params + layer.num_bias_params


@pytest.mark.parametrize("c,N,gname,r,p", [(1, 1, "C2", 1, 1), (2, 2, "C4", 2, 1), (2, 1, "D2", 1, 2),
                                           (4, 2, "C3", 2, 2), (2, 3, "C2", 1, 1), (4, 1, "C2", 4, 4)])
def test_full_parameter_count_derived_formula(c, N, gname, r, p):
    """c^2 n / r + c^3 (N+1)(N+2) n^2 / (2 r p^2): Table 1's full formula with the missing n (see docstring)."""
    G = SMALL[gname]
    n = G.order
    t = fields.FieldType(G, [G.regular] * c)
    layer = NeuralEPDO(t, t, order=N, kernel_size=5, reduction=r, partition=p, mode="full", bias=False)
    derived = c * c * n // r + c**3 * (N + 1) * (N + 2) * n * n // (2 * r * p * p)
    assert layer.num_generator_params == derived == expected_num_params("full", c, N, n, r, p)
    table1 = c * c * n // r + c**3 * (N + 1) * (N + 2) * n // (2 * r * p)
    assert (derived == table1) == (n == 1 and p == 1)
    assert layer.num_bias_params == 0


def test_quotient_fields_count_and_general_full_count_by_hom_dimension():
    G = GROUPS["D4"]
    q = G.quotient(G.subgroup(4))  # size n = 2
    layer = NeuralEPDO(fields.FieldType(G, [q] * 4), order=2, kernel_size=3, reduction=2, partition=2)
    assert layer.num_generator_params == expected_num_params("diag", 4, 2, q.size, 2, 2)
    ti = fields.FieldType(G, [G.irrep(1, 1), G.trivial])
    to = fields.FieldType(G, [G.irrep(1, 0), G.regular])
    full = NeuralEPDO(ti, to, order=2, kernel_size=3, mode="full", bias=False)
    rho_hat = diffops.derivative_representation(G, 2)
    w2 = sum(hom_dimension(G.regular, ro.tensor(rho_hat.dual().tensor(ri.dual()))) for ro in to for ri in ti)
    assert full.num_generator_params == 2 * ti.size + 2 * w2 == 2 * ti.size + 2 * to.size * 6 * ti.size


# --- the product kernels ------------------------------------------------------------------------------
@pytest.mark.parametrize("order,disc", [(4, diffops.Discretization("fd", 5)), (3, diffops.Discretization("gauss", 7, 1.2)),
                                        (2, diffops.Discretization("fd", 3)), (0, diffops.Discretization("fd", 1))])
@pytest.mark.parametrize("shape", [(3, 6, 9, 7), (2, 4, 3, 2), (1, 4, 13, 11)])  # 13x11: two full blocks of the C++ kernel + a tail
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_pdo_product_matches_conv2d_reference(order, disc, shape, backend, monkeypatch):
    backend = _kernel_backend(backend)
    monkeypatch.setattr(K, "_CHUNK_ELEMENTS", 64)  # several chunks
    b, c, h, w = shape
    st = _stencils(order, disc)
    torch.manual_seed(0)
    f = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    coef = torch.randn(b, c // 2, len(st.alphas), h, w, dtype=torch.float64, requires_grad=True)
    ref = _reference_product(f, coef, order, disc)
    out = K.pdo_product(f, coef, st, backend)
    g = torch.randn_like(ref)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for a, e in zip(torch.autograd.grad(out, (f, coef), g), torch.autograd.grad(ref, (f, coef), g)):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_generated_product_matches_explicit_coefficients(backend, monkeypatch):
    backend = _kernel_backend(backend)
    monkeypatch.setattr(K, "_CHUNK_ELEMENTS", 300)
    disc = diffops.Discretization("fd", 5)
    st = _stencils(4, disc)
    torch.manual_seed(1)
    f = torch.randn(3, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    h = torch.randn(3, 5, 6, 6, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(2 * 15, 5, dtype=torch.float64, requires_grad=True)
    b2 = torch.randn(2 * 15, dtype=torch.float64, requires_grad=True)
    out = K.generated_pdo_product(f, h, w2, b2, st, backend)
    coef = (torch.einsum("ok,bkhw->bohw", w2, h) + b2[:, None, None]).view(3, 2, 15, 6, 6)
    ref = _reference_product(f, coef, 4, disc)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-11)
    g = torch.randn_like(ref)
    for a, e in zip(torch.autograd.grad(out, (f, h, w2, b2), g), torch.autograd.grad(ref, (f, h, w2, b2), g)):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-10)
    assert torch.autograd.gradcheck(lambda *a: K.generated_pdo_product(*a, st, backend), (f, h, w2, b2))


def test_cpp_kernel_matches_torch_kernel():
    _kernel_backend("cpp")
    torch.manual_seed(2)
    for order, disc, shape in ((4, diffops.Discretization("fd", 5), (2, 6, 9, 7)),
                               (3, diffops.Discretization("gauss", 5, 1.0), (2, 4, 3, 2)),
                               (2, diffops.Discretization("fd", 3), (1, 2, 5, 5))):
        st = _stencils(order, disc)
        b, c, h, w = shape
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            f = torch.randn(b, c, h, w, dtype=dtype, requires_grad=True)
            hid = torch.randn(b, 3, h, w, dtype=dtype, requires_grad=True)
            w2 = torch.randn(c // 2 * len(st.alphas), 3, dtype=dtype, requires_grad=True)
            b2 = torch.randn(c // 2 * len(st.alphas), dtype=dtype, requires_grad=True)
            outs = [K.generated_pdo_product(f, hid, w2, b2, st, backend) for backend in ("torch", "cpp")]
            torch.testing.assert_close(outs[1], outs[0], rtol=tol, atol=tol)
            g = torch.randn_like(outs[0])
            grads = [torch.autograd.grad(o, (f, hid, w2, b2), g) for o in outs]
            for a, e in zip(grads[1], grads[0]):
                torch.testing.assert_close(a, e, rtol=tol, atol=tol * max(1.0, e.abs().max().item()))
        if order == 4:
            x = f.detach().double().requires_grad_()
            assert torch.autograd.gradcheck(lambda a, b_, c_, d: K.generated_pdo_product(a, b_, c_, d, st, "cpp"),
                                            (x, hid.detach().double().requires_grad_(),
                                             w2.detach().double().requires_grad_(), b2.detach().double().requires_grad_()))


# --- gradients, state, numerics -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["diag", "full"])
def test_gradcheck_float64(mode):
    G = GROUPS["C4"]
    t = fields.FieldType(G, [G.regular] * 2)
    torch.manual_seed(0)
    layer = NeuralEPDO(t, order=2, kernel_size=3, reduction=2, partition=2 if mode == "diag" else 1, mode=mode,
                       dtype=torch.float64)
    with torch.no_grad():
        for b in (layer.bias1, layer.bias2):
            b.bias.normal_()
    params = list(layer.parameters())
    x = torch.randn(1, t.size, 5, 5, dtype=torch.float64, requires_grad=True)

    def fn(x, *ps):
        with torch.no_grad():
            saved = [p.clone() for p in params]
            for p, v in zip(params, ps):
                p.copy_(v)
        try:
            return torch.func.functional_call(layer, dict(zip([n for n, _ in layer.named_parameters()], ps)), (x,))
        finally:
            with torch.no_grad():
                for p, v in zip(params, saved):
                    p.copy_(v)

    inputs = (x, *[p.detach().clone().requires_grad_() for p in params])
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-6)


def test_every_parameter_gets_a_gradient_and_init_scale():
    G = GROUPS["C8"]
    t = fields.FieldType(G, [G.regular] * 4)
    torch.manual_seed(0)
    layer = NeuralEPDO(t, order=4, reduction=2, partition=2)
    x = torch.randn(4, t.size, 16, 16)
    y = layer(x)
    y.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert 0.1 < y.std().item() < 10.0  # per-order coefficient scaling keeps white-noise outputs O(1)


def test_partition_shares_coefficients():
    G = GROUPS["C4"]
    t = fields.FieldType(G, [G.regular] * 4)
    layer = NeuralEPDO(t, order=2, kernel_size=3, reduction=2, partition=2)
    x = torch.randn(1, t.size, 7, 7)
    with torch.no_grad():
        coef = layer.coefficients(x)  # (1, 8, 6, 7, 7): channel c uses row c mod 8
        ref = _reference_product(x, coef, 2, layer.disc)
        torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)
    assert coef.shape == (1, 8, 6, 7, 7)


def test_state_dict_train_eval_cache_pickle_repr():
    G = GROUPS["D4"]
    t = fields.FieldType(G, [G.regular] * 2)
    layer = NeuralEPDO(t, order=2, kernel_size=3, discretization="gauss", sigma=0.8, reduction=2, partition=2)
    keys = set(layer.state_dict())
    assert keys == {n for n, _ in layer.named_parameters()}  # bases, stencils, scales are not persistent
    x = torch.randn(1, t.size, 7, 7)
    y_train = layer(x)
    layer.eval()
    assert set(layer.state_dict()) == keys
    torch.testing.assert_close(layer(x), y_train)
    with torch.no_grad():
        layer.generator2.weights[0].mul_(2.0)  # in-place change invalidates the eval cache
    assert not torch.allclose(layer(x), y_train)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    other = NeuralEPDO(t, order=2, kernel_size=3, discretization="gauss", sigma=0.8, reduction=2, partition=2).eval()
    other.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(other(x), layer(x))
    clone = pickle.loads(pickle.dumps(layer))
    torch.testing.assert_close(clone(x), layer(x))
    torch.testing.assert_close(copy.deepcopy(layer)(x), layer(x))
    r = repr(layer)
    assert "reduction=2" in r and "partition=2" in r and "mode='diag'" in r and "sigma=0.8" in r


# --- bad input ----------------------------------------------------------------------------------------
@pytest.fixture
def c4():
    G = GROUPS["C4"]
    return G, fields.FieldType(G, [G.regular] * 2)


def test_error_wrong_channels(c4):
    _, t = c4
    layer = NeuralEPDO(t, order=2, kernel_size=3)
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        layer(torch.randn(1, 7, 9, 9))
    with pytest.raises(ValueError, match="shape"):
        layer(torch.randn(8, 9, 9))


def test_error_diag_needs_permutation_fields(c4):
    G, _ = c4
    t = fields.FieldType(G, [G.regular, G.irrep(0, 1)])
    with pytest.raises(ValueError, match="permutation fields"):
        NeuralEPDO(t, order=2, kernel_size=3)
    NeuralEPDO(t, order=2, kernel_size=3, mode="full")  # fine in full mode


def test_error_diag_out_type_must_equal_in_type(c4):
    G, t = c4
    with pytest.raises(ValueError, match="out_type must equal in_type"):
        NeuralEPDO(t, fields.FieldType(G, [G.regular]), order=2, kernel_size=3)


def test_error_kernel_too_small(c4):
    _, t = c4
    with pytest.raises(ValueError, match="too small"):
        NeuralEPDO(t, order=4, kernel_size=3)


def test_error_unknown_discretization(c4):
    _, t = c4
    with pytest.raises(ValueError, match="unknown discretization 'nope'.*fd.*gauss.*rbf"):
        NeuralEPDO(t, order=2, kernel_size=3, discretization="nope")
    # gauss without sigma takes the documented per-kernel-size default
    from epdo.diffops import default_sigma
    assert NeuralEPDO(t, order=2, kernel_size=3, discretization="gauss").disc.sigma == default_sigma(3)


def test_auto_backend_resolution(monkeypatch):
    """'auto' runs the C++ kernel only when it is loaded or cached, never compiles, and keeps dtypes the kernel
    does not handle on torch."""
    f32 = torch.zeros(1, 2, 3, 3)
    assert K.resolve_backend("torch", f32) == "torch"
    assert K.resolve_backend("cpp", f32.half()) == "torch"
    assert K.resolve_backend("auto", f32.to(torch.bfloat16)) == "torch"
    monkeypatch.setattr(K, "_CPP_STATE", {"auto": False})
    monkeypatch.setattr(K, "load_cpp_extension", lambda *a, **k: pytest.fail("'auto' must not compile"))
    assert K.resolve_backend("auto", f32) == "torch"
    monkeypatch.setattr(K, "_CPP_STATE", {"module": object()})
    assert K.resolve_backend("auto", f32) == "cpp"
    assert K.resolve_backend("auto", f32.double()) == "cpp"
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        K.resolve_backend("gpu", f32)


def test_error_unknown_mode_and_backend(c4):
    _, t = c4
    with pytest.raises(ValueError, match="unknown mode 'dense'.*'diag', 'full'"):
        NeuralEPDO(t, order=2, kernel_size=3, mode="dense")
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        NeuralEPDO(t, order=2, kernel_size=3, backend="cuda")


def test_error_reduction_partition(c4):
    G, t = c4
    with pytest.raises(ValueError, match="reduction must be a positive integer dividing"):
        NeuralEPDO(t, order=2, kernel_size=3, reduction=3)
    with pytest.raises(ValueError, match="partition must be a positive integer dividing"):
        NeuralEPDO(t, order=2, kernel_size=3, partition=0)
    mixed = fields.FieldType(G, [G.regular, G.quotient(G.subgroup(2))])
    with pytest.raises(ValueError, match="2 copies"):
        NeuralEPDO(mixed, order=2, kernel_size=3, partition=2)


def test_error_continuous_group_and_dtype(c4):
    S = groups.so2(2)
    with pytest.raises(ValueError, match="finite group"):
        NeuralEPDO(fields.FieldType(S, S.irreps), order=2, kernel_size=3, mode="full")
    _, t = c4
    layer = NeuralEPDO(t, order=2, kernel_size=3)
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(1, 8, 5, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(1, 8, 5, 5, dtype=torch.long))
