"""The shared PDO-layer base (validation, discretisation values, init, repr), NeuralEPDO's dense path against
its fast separable path, and the public rotated-PDO expansion (PDO-eConvs) for any set of group elements."""

import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermeval

from epdo import diffops, fields, groups
from epdo.nn import NeuralEPDO, PDOConv, PDOLayerBase, RotatedPDOExpansion
from epdo.nn import pdo_base

C4 = groups.cyclic(4)
T = fields.FieldType(C4, [C4.regular] * 2)
LAYERS = {"PDOConv": lambda **kw: PDOConv(T, T, **kw), "NeuralEPDO": lambda **kw: NeuralEPDO(T, **kw)}


def _grid_elements(G):
    els = [G.rotation(k * math.pi / 2) for k in range(4)]
    if G.reflections:
        els += [G.element(1, 0)]
    return els


# --- validation: the same rules for every PDO layer ---------------------------------------------------
@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("order", [True, False, -1, 2.0, "2", None])
def test_order_must_be_a_non_negative_int(name, order):
    with pytest.raises(ValueError, match=rf"{name}: order must be an integer >= 0, got {order!r}"):
        LAYERS[name](order=order, kernel_size=3)


@pytest.mark.parametrize("name", list(LAYERS))
def test_numpy_order_and_kernel_size_accepted(name):
    layer = LAYERS[name](order=np.int64(2), kernel_size=np.int64(3))
    assert type(layer.order) is int and layer.order == 2 and layer.kernel_size == 3
    assert isinstance(layer, PDOLayerBase)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("k", [True, 3.0, 0])
def test_kernel_size_must_be_an_int(name, k):
    with pytest.raises(ValueError, match="kernel_size"):
        LAYERS[name](order=2, kernel_size=k)


@pytest.mark.parametrize("padding", [-1, True, 1.5])
def test_pdoconv_padding_refused_at_construction(padding):
    with pytest.raises(ValueError, match=rf"PDOConv: padding must be an integer >= 0, got {padding!r}"):
        PDOConv(T, T, order=2, kernel_size=3, padding=padding)
    assert PDOConv(T, T, order=2, kernel_size=3, padding=0)(torch.randn(1, 8, 5, 5)).shape == (1, 8, 3, 3)


@pytest.mark.parametrize("name", list(LAYERS))
def test_discretization_value_or_name(name):
    disc = diffops.Discretization("gauss", 5, 0.8)
    torch.manual_seed(0)
    a = LAYERS[name](order=2, discretization=disc)
    torch.manual_seed(0)
    b = LAYERS[name](order=2, kernel_size=5, discretization="gauss", sigma=0.8)
    assert a.disc == b.disc == disc and a.kernel_size == 5
    x = torch.randn(1, 8, 7, 7)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert repr(a) == repr(b) and "discretization='gauss', sigma=0.8" in repr(a)
    with pytest.raises(ValueError, match="kernel_size=3 contradicts"):
        LAYERS[name](order=2, kernel_size=3, discretization=disc)
    with pytest.raises(ValueError, match="sigma=1.0 contradicts"):
        LAYERS[name](order=2, discretization=disc, sigma=1.0)
    with pytest.raises(TypeError, match="discretization must be a method name"):
        LAYERS[name](order=2, discretization=5)
    with pytest.raises(ValueError, match=rf"{name}: unknown discretization 'spline'"):
        LAYERS[name](order=2, discretization="spline")
    with pytest.raises(ValueError, match=rf"{name}: kernel_size=3 is too small"):
        LAYERS[name](order=4, kernel_size=3)


@pytest.mark.parametrize("name", list(LAYERS))
def test_num_params_and_init_scale(name):
    torch.manual_seed(0)
    layer = LAYERS[name](order=2, kernel_size=3)
    assert layer.num_params == sum(p.numel() for p in layer.parameters())
    with torch.no_grad():
        for p in layer.parameters():
            p.fill_(3.0)
    layer.reset_parameters()
    for expansion, expand, target in layer._init_groups():
        with torch.no_grad():
            m = expand()
        assert float(m.pow(2).flatten(1).sum(1).mean()) == pytest.approx(target, rel=1e-5)
    for b in layer._bias_parameters():
        assert torch.equal(b, torch.zeros_like(b))


def test_pdoconv_reset_parameters_gain():
    layer = PDOConv(T, T, order=2, kernel_size=3)
    layer.reset_parameters(gain=0.5)
    with torch.no_grad():
        k = layer._expand_filter()
    assert float(k.pow(2).sum((1, 2, 3)).mean()) == pytest.approx(0.5, rel=1e-5)


# --- NeuralEPDO: dense reference path vs the fast separable path -------------------------------------
def _pair(fast_backend, **kw):
    torch.manual_seed(0)
    fast = NeuralEPDO(T, dtype=torch.float64, backend=fast_backend, **kw)
    torch.manual_seed(0)
    dense = NeuralEPDO(T, dtype=torch.float64, backend="dense", **kw)
    with torch.no_grad():  # non-zero biases so that b2 is exercised
        for p in list(fast.parameters()):
            p.add_(0.1 * torch.randn_like(p))
        for p, q in zip(dense.parameters(), fast.parameters()):
            p.copy_(q)
    return fast, dense


@pytest.mark.parametrize("kw", [dict(order=2, kernel_size=3), dict(order=3, kernel_size=5, discretization="gauss",
                                                                   sigma=0.8, reduction=2, partition=2)],
                         ids=["fd", "gauss-r2-p2"])
@pytest.mark.parametrize("train", [True, False])
def test_dense_path_matches_fast_path_float64(kw, train):
    fast, dense = _pair("torch", **kw)
    assert not fast.uses_dense_path(torch.zeros(1, 8, 5, 5)) and dense.uses_dense_path(torch.zeros(1, 8, 5, 5))
    fast.train(train), dense.train(train)
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    outs = []
    for layer in (fast, dense):
        xi = x.clone().requires_grad_()
        y = layer(xi)
        (y * torch.sin(torch.arange(y.numel(), dtype=y.dtype)).view_as(y)).sum().backward()
        outs.append([y.detach(), xi.grad] + [p.grad for p in layer.parameters()])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_non_separable_discretisation_runs_the_dense_path(monkeypatch):
    """A discretisation declaring itself non-separable (as RBF-FD) gets no 1-D stencils: the dense path runs,
    and gives what the separable path gives for the same stencils; the 1-D kernels are refused."""
    torch.manual_seed(0)
    ref = NeuralEPDO(T, order=2, kernel_size=3, backend="torch", dtype=torch.float64)
    monkeypatch.setattr(pdo_base, "is_separable", lambda disc: False)
    torch.manual_seed(0)
    layer = NeuralEPDO(T, order=2, kernel_size=3, dtype=torch.float64)
    assert layer._stencils is None and layer.uses_dense_path(torch.zeros(1, 8, 5, 5))
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(layer(x), ref(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="needs a separable discretisation"):
        NeuralEPDO(T, order=2, kernel_size=3, backend="torch")
    with pytest.raises(ValueError, match="not separable"):
        pdo_base.discretization_stencils_1d(2, layer.disc)


@pytest.mark.parametrize("name", list(LAYERS))
def test_rbf_discretisation_when_registered(name):
    """RBF-FD (non-separable; registered by epdo.diffops once it exists): PDOConv and NeuralEPDO diag (through
    the dense path) are exactly equivariant on the grid in float64."""
    try:
        layer = LAYERS[name](order=2, kernel_size=5, discretization="rbf", dtype=torch.float64)
    except ValueError as e:
        if "unknown discretization" in str(e):
            pytest.skip("discretization 'rbf' not registered in this build")
        raise
    if name == "NeuralEPDO":
        assert layer.uses_dense_path(torch.zeros(1, 8, 5, 5))
    x = torch.randn(1, 8, 9, 9, dtype=torch.float64)
    y = layer(x)
    for g in _grid_elements(C4):
        torch.testing.assert_close(layer(T.transform(x, g)), T.transform(y, g), rtol=1e-9, atol=1e-9)


# --- RotatedPDOExpansion (PDO-eConvs for any set of elements) ----------------------------------------
def _explicit_filters(weight, G, elements, in_type, order):
    """W_g = rho_hat(g^-1)^T X rho_in(g^-1) element by element, in numpy (float64)."""
    rho_hat = diffops.derivative_representation(G, order)
    X = weight.detach().double().numpy()
    out = np.empty((X.shape[0], len(elements)) + X.shape[1:])
    for j, g in enumerate(elements):
        h = G.inverse(g)
        a, b = np.asarray(rho_hat(h)), np.asarray(in_type.representation(h))
        for o in range(X.shape[0]):
            out[o, j] = a.T @ X[o] @ b
    return out


@pytest.mark.parametrize("G", [groups.cyclic(4), groups.dihedral(4), groups.cyclic(8)], ids=["C4", "D4", "C8"])
def test_pdoconv_pdo_econv_filter_is_the_rotated_identity_filter(G):
    t_in = fields.FieldType(G, [G.regular, G.trivial])
    t_out = fields.FieldType(G, [G.regular] * 2)
    layer = PDOConv(t_in, t_out, order=2, kernel_size=3, basis="pdo_econv", dtype=torch.float64)
    assert isinstance(layer.expansion, RotatedPDOExpansion)
    w = _explicit_filters(layer.expansion.weight, G, G.elements, t_in, 2)  # (fields, |G|, alpha, C_in)
    k_ref = np.einsum("ogac,akl->ogckl", w, diffops.stencils(2, layer.disc)).reshape(t_out.size, t_in.size, 3, 3)
    with torch.no_grad():
        k, _ = layer.filter_and_bias()
    np.testing.assert_allclose(k.numpy(), k_ref, rtol=0, atol=1e-13)


def _linear_map_matrix(fn, params):
    """Columns: fn's flattened output for each unit vector of the (linear) parameters."""
    cols = []
    n = sum(p.numel() for p in params)
    for i in range(n):
        with torch.no_grad():
            flat = torch.zeros(n, dtype=torch.float64)
            flat[i] = 1.0
            off = 0
            for p in params:
                p.copy_(flat[off: off + p.numel()].view_as(p))
                off += p.numel()
            cols.append(fn().reshape(-1).clone())
    return torch.stack(cols, 1)


@pytest.mark.parametrize("G", [groups.cyclic(4), groups.dihedral(4)], ids=["C4", "D4"])
def test_rotated_expansion_over_all_elements_spans_the_steerable_space(G):
    t_in = fields.FieldType(G, [G.regular, G.irrep(1, 1) if G.reflections else G.irrep(0, 1)])
    t_out = fields.FieldType(G, [G.regular])
    order = 2
    econv = PDOConv(t_in, t_out, order=order, kernel_size=3, basis="pdo_econv", bias=False, dtype=torch.float64)
    steer = PDOConv(t_in, t_out, order=order, kernel_size=3, bias=False, dtype=torch.float64)
    fn = lambda layer: (lambda: layer.expansion()[:, layer._perm])  # W, alpha-major columns
    a = _linear_map_matrix(fn(econv), list(econv.parameters()))
    b = _linear_map_matrix(fn(steer), list(steer.parameters()))
    n_alpha = diffops.num_multi_indices(order)
    dim = n_alpha * t_in.size  # dim Hom(rho_hat (x) rho_in, rho_reg) = dim(rho_hat (x) rho_in) per regular field
    rank = lambda m: int(torch.linalg.matrix_rank(m, rtol=1e-10))
    assert rank(a) == dim == a.shape[1] and rank(b) == dim == steer.num_params
    assert rank(torch.cat([a, b], 1)) == dim  # the same space


def _gauss_derivative(alpha, u):
    """d_x^a d_y^b exp(-|u|^2 / 2) at points u (n, 2): (-1)^(a+b) He_a(u_x) He_b(u_y) exp(-|u|^2 / 2)."""
    a, b = alpha
    ea, eb = np.zeros(a + 1), np.zeros(b + 1)
    ea[a] = eb[b] = 1.0
    return (-1) ** (a + b) * hermeval(u[:, 0], ea) * hermeval(u[:, 1], eb) * np.exp(-0.5 * (u ** 2).sum(1))


def test_rotated_expansion_so2_sampled_rotations_are_the_rotated_operator():
    r"""For sampled angles t: :math:`\sum_\alpha (W_t)_\alpha \partial^\alpha f(x) = \sum_\alpha X_\alpha
    \partial^\alpha (f\circ t)(t^{-1}x)` (the identity operator applied to the rotated function), checked
    on shifted Gaussians f_c, whose derivatives are Hermite polynomials and f_c o t = f_{t^-1 c}: no
    derivative_rep on the right-hand side."""
    S = groups.so2(2)
    t_in = fields.FieldType(S, [S.trivial] * 2)
    order = 3
    rng = np.random.default_rng(0)
    calls = []

    def sampler():
        calls.append(1)
        return [S.rotation(a) for a in rng.uniform(0, 2 * np.pi, size=5)]

    e = RotatedPDOExpansion(t_in, n_out=3, order=order, sampler=sampler, dtype=torch.float64)
    w1 = e()
    els1 = e.last_elements
    w2 = e()
    assert len(calls) == 2 and els1 != e.last_elements and not torch.allclose(w1, w2)  # drawn anew
    X = e.weight.detach().numpy()  # (o, alpha, c)
    alphas = diffops.multi_indices(order)
    centres = rng.normal(size=(2, 2))  # one Gaussian per input channel
    pts = rng.normal(size=(7, 2))
    for j, g in enumerate(e.last_elements):
        R = g.matrix
        lhs = np.zeros((3, len(pts)))
        rhs = np.zeros((3, len(pts)))
        for ai, alpha in enumerate(alphas):
            for c in range(2):
                d_f = _gauss_derivative(alpha, pts - centres[c])
                d_rot = _gauss_derivative(alpha, pts @ R - R.T @ centres[c])  # at t^-1 x, of f_{t^-1 c}
                lhs += np.outer(w2[:, j, ai, c].detach().numpy(), d_f)
                rhs += np.outer(X[:, ai, c], d_rot)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_rotated_expansion_fixed_elements_and_errors():
    S = groups.so2(2)
    t = fields.FieldType(S, [S.trivial, S.irrep(0, 1)])
    els = [S.rotation(a) for a in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
    e = RotatedPDOExpansion(t, n_out=2, order=2, elements=els)
    assert e().shape == (2, 6, 6, 3) and e.last_elements == tuple(els)
    assert "elements=6" in repr(e)
    with pytest.raises(ValueError, match="not finite"):
        RotatedPDOExpansion(t, n_out=2, order=2)
    with pytest.raises(ValueError, match="not both"):
        RotatedPDOExpansion(t, n_out=2, order=2, elements=els, sampler=lambda: els)
    with pytest.raises(ValueError, match="empty"):
        RotatedPDOExpansion(t, n_out=2, order=2, elements=[])
    with pytest.raises(ValueError, match="not an element of SO"):
        RotatedPDOExpansion(t, n_out=2, order=2, elements=[C4.identity])
    with pytest.raises(TypeError, match="sampler must be callable"):
        RotatedPDOExpansion(t, n_out=2, order=2, sampler=3)
    with pytest.raises(ValueError, match="n_out must be an integer >= 1"):
        RotatedPDOExpansion(t, n_out=0, order=2, elements=els)
    with pytest.raises(ValueError, match="order must be an integer >= 0"):
        RotatedPDOExpansion(t, n_out=1, order=True, elements=els)
