"""SteerableConv (epdo.nn.steerable): the kernel constraint in the continuum, exact equivariance on grid
elements, parameter counts against characters (and against e2cnn's R2Conv where installed), the kernel
against a float64 reference, gradients against finite differences, export, errors.

The generic checks (float32, non-grid angles on smooth input with measured bounds, pickle, eval cache,
autocast, ...) run through the layer database entries ``steerable_conv*`` (tests/nn/test_module_db.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import epdo
from epdo import fields, groups
from epdo.export import export
from epdo.nn import SteerableConv
from epdo.nn.steerable import default_ring_frequencies, harmonic_representation, steerable_basis
from epdo.testing import assert_equivariant


def _vec(G):
    return G.irrep(1, 1) if G.reflections else G.irrep(0, 1)


def _types(G):
    """A mix of field kinds: regular (finite groups), trivial, frequency 1 and 2 irreps, a quotient."""
    j = 1 if G.reflections else 0
    if G.is_finite:
        ti = [G.regular, G.trivial, _vec(G)]
        to = [G.regular, _vec(G), G.quotient(G.subgroup(2)) if not G.reflections else G.irrep(1, 0)]
    else:
        ti = [G.trivial, G.irrep(j, 1), G.irrep(j, 2)]
        to = [G.irrep(j, 1), G.trivial, G.irrep(j, 3)] + ([G.irrep(1, 0)] if G.reflections else [])
    return fields.FieldType(G, ti), fields.FieldType(G, to)


ALL_GROUPS = {"C4": groups.cyclic(4), "D4": groups.dihedral(4), "C8": groups.cyclic(8), "D6": groups.dihedral(6),
              "SO2": groups.so2(3), "O2": groups.o2(3)}


# --- the kernel ----------------------------------------------------------------------------------

def _phi(layer: SteerableConv, y: np.ndarray) -> np.ndarray:
    """The basis functions at arbitrary points ``y`` (n, 2) in float64, written out independently."""
    r = np.hypot(y[:, 0], y[:, 1])
    th = np.arctan2(y[:, 1], y[:, 0])
    rows = []
    for ri, s, f in zip(layer.radii, layer.sigmas, layer.frequencies):
        prof = np.exp(-((r - ri) ** 2) / (2 * s * s))
        rows.append(prof)
        for k in range(1, f + 1):
            rows += [prof * np.cos(k * th) * (r > 0), prof * np.sin(k * th) * (r > 0)]
    return np.stack(rows)  # (J, n)


def _kernel_at(layer: SteerableConv, y: np.ndarray) -> np.ndarray:
    """K(y) (n, C_out, C_in) from the layer's coefficients W and the basis functions of :func:`_phi`."""
    J = layer.basis_size
    with torch.no_grad():
        w = layer.expansion().double().numpy()  # (C_out, sum_fields J d) in per-field (j, c) order
    out = np.zeros((len(y), layer.out_type.size, layer.in_type.size))
    phi = _phi(layer, y)
    col = 0
    for sl in layer.in_type.slices():
        d = sl.stop - sl.start
        block = w[:, col:col + J * d].reshape(-1, J, d)
        out[:, :, sl] = np.einsum("ojc,jn->noc", block, phi)
        col += J * d
    return out


@pytest.mark.parametrize("gname", ["C8", "D6", "SO2", "O2"])
def test_kernel_satisfies_the_constraint_in_the_continuum(gname):
    """K(g y) = rho_out(g) K(y) rho_in(g)^-1 at random points and elements (also non-grid ones), float64 1e-10:
    the Hom solution is exact; only sampling on the pixel grid breaks equivariance at non-grid angles."""
    G = ALL_GROUPS[gname]
    ti, to = _types(G)
    torch.manual_seed(0)
    layer = SteerableConv(ti, to, 5, expansion="hom", dtype=torch.float64)
    rng = np.random.default_rng(0)
    y = rng.uniform(-2.5, 2.5, size=(12, 2))
    elements = G.testing_elements(6, seed=1)
    k_y = _kernel_at(layer, y)
    scale = np.abs(k_y).max()
    assert scale > 1e-3
    for g in elements:
        gy = y @ np.asarray(g.matrix).T
        lhs = _kernel_at(layer, gy)
        rhs = np.einsum("ab,nbc,cd->nad", to.representation(g), k_y, np.linalg.inv(ti.representation(g)))
        assert np.abs(lhs - rhs).max() <= 1e-10 * scale, (g, np.abs(lhs - rhs).max())


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_filter_equals_the_float64_reference_at_the_taps(dtype, tol):
    """The fast path (sparse Hom expansion, einsum with the sampled basis) against K evaluated tap by tap."""
    G = groups.dihedral(4)
    ti, to = _types(G)
    torch.manual_seed(1)
    layer = SteerableConv(ti, to, 7, expansion="hom", dtype=torch.float64)
    k = layer.kernel_size
    c = k // 2
    taps = np.array([[b - c, c - a] for a in range(k) for b in range(k)], dtype=np.float64)  # (x, y) per tap
    ref = _kernel_at(layer, taps).reshape(k, k, to.size, ti.size).transpose(2, 3, 0, 1)
    layer = layer.to(dtype)
    with torch.no_grad():
        w, _ = layer.filter_and_bias()
    assert w.dtype == dtype
    assert np.abs(w.double().numpy() - ref).max() <= tol * np.abs(ref).max()


def test_basis_is_e2cnns_default_grid_and_rings():
    """Rings at integer radii, sigma 0.6 / 0.4 (0.005 at the centre), e2cnn's cut-off rule, y up."""
    assert default_ring_frequencies(3) == (0, 2)
    assert default_ring_frequencies(5) == (0, 2, 2)
    assert default_ring_frequencies(7) == (0, 2, 3, 2)
    assert default_ring_frequencies(9) == (0, 2, 3, 6, 2)
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.trivial])
    layer = SteerableConv(t, t, 5)
    assert layer.radii == (0.0, 1.0, 2.0) and layer.sigmas == (0.005, 0.6, 0.4)
    b = steerable_basis(3, (1.0,), (0.6,), (1,))
    assert b.shape == (3, 3, 3)
    assert b[1, 1, 2] > 0 and b[1, 1, 0] < 0  # cos theta: right positive
    assert b[2, 0, 1] > 0 and b[2, 2, 1] < 0  # sin theta: up (row 0) positive
    assert b[1, 1, 1] == 0 and b[2, 1, 1] == 0  # no angle at the centre


def test_harmonic_representations_alias_on_finite_groups_and_are_values():
    C4 = groups.cyclic(4)
    assert harmonic_representation(C4, 1) == C4.irrep(0, 1)
    assert harmonic_representation(C4, 3).irreps == ((0, 1),)  # frequency 3 = -1 on C4 (a reflected copy)
    assert harmonic_representation(C4, 4).irreps == ((0, 0), (0, 0))
    r = harmonic_representation(groups.dihedral(6), 5)
    assert eval(repr(r), {"epdo": epdo}) == r
    for g in groups.dihedral(6).elements:  # psi_k(r_a f^s) = R(k a) F^s
        t = 5 * g.angle
        m = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]) @ np.linalg.matrix_power(np.diag([1.0, -1.0]), g.flip)
        assert np.allclose(r(g), m, atol=1e-12)


# --- equivariance ------------------------------------------------------------------------------

@pytest.mark.parametrize("gname", ["C4", "D4", "SO2", "O2"])
def test_exact_on_grid_elements_float64(gname):
    """90-degree rotations and the reflections act exactly on the pixel grid: <= 1e-9 (also for SO(2), O(2))."""
    G = ALL_GROUPS[gname]
    ti, to = _types(G)
    torch.manual_seed(0)
    layer = SteerableConv(ti, to, 5, dtype=torch.float64)
    if G.is_finite:
        els = G.elements
    else:
        els = [G.element(s, a * math.pi / 2) for s in ((0, 1) if G.reflections else (0,)) for a in range(4)]
    report = assert_equivariant(layer, elements=els, size=11)
    assert all(r.exact for r in report) and report.reference.normalized > 1e-2


def test_non_grid_angles_continuous_group():
    """SO(2) with irrep fields at 15-75 degrees on smooth input; measured 0.0148-0.0177 (seed 0) here."""
    G = groups.so2(3)
    ti, to = _types(G)
    torch.manual_seed(0)
    layer = SteerableConv(ti, to, 5, dtype=torch.float64)
    els = [G.rotation(math.radians(a)) for a in (15, 30, 45, 60, 75)]
    report = epdo.check_equivariance(layer, elements=els, size=17)
    assert max(r.error for r in report) <= 0.03, report
    assert report.reference.error > 0.1


# --- parameter counts ------------------------------------------------------------------------------

def _char_P(layer, g) -> float:
    """The character of P in closed form: per ring 1 + sum_k 2 cos(k alpha) for rotations, 1 for reflections."""
    return sum(1 + (0 if g.flip else sum(2 * math.cos(k * g.angle) for k in range(1, f + 1)))
               for f in layer.frequencies)


def _hom_dim_by_characters(layer) -> int:
    """dim Hom_G(P (x) rho_in, rho_out) = mean over G of chi_P chi_in chi_out (real representations), summed over
    field pairs; continuous groups by an equispaced quadrature (exact for these trigonometric polynomials)."""
    G = layer.in_type.group
    if G.is_finite:
        els = G.elements
    else:
        n = 64
        els = [G.element(s, 2 * math.pi * i / n) for s in ((0, 1) if G.reflections else (0,)) for i in range(n)]
    total = 0.0
    for g in els:
        cp = _char_P(layer, g)
        ci = sum(np.trace(r(g)) for r in layer.in_type)
        co = sum(np.trace(r(g)) for r in layer.out_type)
        total += cp * ci * co
    return int(round(total / len(els)))


@pytest.mark.parametrize("gname", list(ALL_GROUPS))
@pytest.mark.parametrize("k", [3, 5, 7])
def test_parameter_count_by_characters(gname, k):
    G = ALL_GROUPS[gname]
    ti, to = _types(G)
    layer = SteerableConv(ti, to, k, bias=False)
    assert layer.num_params == layer.num_coefficients == _hom_dim_by_characters(layer)
    assert SteerableConv(ti, to, k, bias=False, expansion="hom").num_params == layer.num_params


def test_parameter_count_regular_fields_closed_form():
    """C_N regular -> regular: N J per pair (every harmonic block psi (x) reg is dim(psi) regular copies);
    trivial -> regular: J; with groups=2 the cross blocks are absent; bias: one per trivial component."""
    G = groups.cyclic(16)
    reg = fields.FieldType(G, [G.regular] * 2)
    for k, J in ((5, 11), (7, 18), (9, 31)):
        layer = SteerableConv(reg, reg, k, bias=False)
        assert layer.basis_size == J and layer.num_params == 4 * 16 * J
        assert SteerableConv(reg, reg, k, groups=2, bias=False).num_params == 2 * 16 * J
        assert SteerableConv(fields.FieldType(G, [G.trivial]), reg, k).num_params == 2 * J + 2


E2CNN_CASES = [("C16", 5, "regular", "regular"), ("C16", 7, "trivial", "regular"), ("C8", 9, "regular", "regular"),
               ("D8", 5, "regular", "regular"), ("D16", 7, "regular", "irrep1"), ("C8", 5, "quotient", "irrep2"),
               ("SO2", 5, "irrep1", "irrep2"), ("O2", 7, "irrep1", "trivial")]


@pytest.mark.parametrize("case", E2CNN_CASES, ids=lambda c: "-".join(map(str, c)))
def test_parameter_count_equals_e2cnn_r2conv(case, monkeypatch):
    """Same default rings, widths and cut-off as e2cnn: the basis dimension of R2Conv for the same types."""
    e2 = pytest.importorskip("e2cnn", reason="e2cnn (not in the test extra) compares the basis dimension")
    from epdo.models.e2cnn_rows import patch_e2cnn_for_numpy2

    patch_e2cnn_for_numpy2(monkeypatch.setattr)
    gname, k, a, b = case
    N = int(gname[1:]) if gname[0] in "CD" else 0
    flip = gname[0] in "DO"
    G = (groups.dihedral(N) if flip else groups.cyclic(N)) if N else (groups.o2(4) if flip else groups.so2(4))
    kw = {} if N else dict(maximum_frequency=4)
    gs = e2.gspaces.FlipRot2dOnR2(N or -1, **kw) if flip else e2.gspaces.Rot2dOnR2(N or -1, **kw)
    j = 1 if flip else 0

    def ours(kind):
        return {"regular": lambda: G.regular, "trivial": lambda: G.trivial, "quotient": lambda: G.quotient(G.subgroup(2)),
                "irrep1": lambda: G.irrep(j, 1), "irrep2": lambda: G.irrep(j, 2)}[kind]()

    def theirs(kind):
        return {"regular": lambda: gs.regular_repr, "trivial": lambda: gs.trivial_repr,
                "quotient": lambda: gs.quotient_repr(2), "irrep1": lambda: gs.irrep(j, 1) if flip else gs.irrep(1),
                "irrep2": lambda: gs.irrep(j, 2) if flip else gs.irrep(2)}[kind]()

    layer = SteerableConv(fields.FieldType(G, [ours(a)]), fields.FieldType(G, [ours(b)]), k, bias=False)
    conv = e2.nn.R2Conv(e2.nn.FieldType(gs, [theirs(a)]), e2.nn.FieldType(gs, [theirs(b)]), k, bias=False)
    assert layer.num_params == conv.basisexpansion.dimension()


@pytest.mark.parametrize("gname", ["C4", "D4"])
def test_regular_output_fast_path_spans_the_hom_space(gname):
    """expansion='auto' (regular outputs from permutation inputs by rotating one orientation) against the Hom
    solver's basis: the same dimension, and every fast-path filter lies in the span of the Hom-path filters
    (relative least-squares residual ~1e-15, measured 2e-15 - 9e-15); exact on grid elements."""
    G = ALL_GROUPS[gname]
    ti = fields.FieldType(G, [G.quotient(G.subgroup(2)), G.trivial])
    to = fields.FieldType(G, [G.regular, _vec(G)])
    torch.manual_seed(0)
    fast = SteerableConv(ti, to, 3, dtype=torch.float64)
    hom = SteerableConv(ti, to, 3, expansion="hom", dtype=torch.float64)
    assert fast.regular_expansion is not None and hom.regular_expansion is None
    assert fast.num_params == hom.num_params
    with torch.no_grad():
        k = fast.filter_and_bias()[0].flatten()
        cols = []
        for p in hom.expansion.parameters():
            p.zero_()
        for p in hom.expansion.parameters():
            for i in range(p.numel()):
                p.view(-1)[i] = 1.0
                cols.append(hom._expand_filter().flatten().clone())
                p.view(-1)[i] = 0.0
        basis = torch.stack(cols, 1)
        sol = torch.linalg.lstsq(basis, k[:, None]).solution
    assert ((basis @ sol).flatten() - k).norm() <= 1e-10 * k.norm()
    assert torch.linalg.matrix_rank(basis) == hom.num_coefficients  # the Hom basis filters are independent
    assert_equivariant(fast, size=9)


# --- gradients, export, cache, repr ---------------------------------------------------------------

def test_gradients_match_finite_differences():
    G = groups.dihedral(4)
    ti = fields.FieldType(G, [G.trivial, _vec(G)])
    to = fields.FieldType(G, [_vec(G), G.trivial, G.irrep(1, 0)])
    torch.manual_seed(0)
    layer = SteerableConv(ti, to, 3, stride=2, dtype=torch.float64)
    with torch.no_grad():
        layer.bias_term.bias.normal_()
    x = torch.randn(1, ti.size, 5, 5, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    ps = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    assert len(ps) > 2 and torch.autograd.gradcheck(f, (x, *ps), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(dilation=2, bias=False), dict(groups=2)])
def test_export_is_a_conv2d_computing_the_same_function(kw):
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.regular, G.trivial] * 2)
    torch.manual_seed(0)
    layer = SteerableConv(t, t, 5, **kw)
    with torch.no_grad():
        if layer.bias_term is not None:
            layer.bias_term.bias.normal_()
    for plain in (layer.export(), export(torch.nn.Sequential(layer))[0]):
        assert type(plain) is torch.nn.Conv2d and (plain.groups, plain.stride[0]) == (layer.groups, layer.stride)
        x = torch.randn(2, t.size, 13, 13)
        with torch.no_grad():
            ref, out = layer.eval()(x), plain(x)
        assert out.shape == ref.shape and torch.allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_extra_repr_names_the_non_defaults():
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.regular])
    s = repr(SteerableConv(t, t, 5))
    assert "kernel_size=5" in s and "frequencies=(0, 2, 2)" in s and "stride" not in s
    s = repr(SteerableConv(t + t, t + t, 3, stride=2, dilation=2, groups=2, bias=False, padding=1))
    assert all(p in s for p in ("stride=2", "dilation=2", "groups=2", "bias=False", "padding=1"))


def test_custom_rings_widths_and_cutoff():
    G = groups.so2(2)
    ti = fields.FieldType(G, [G.trivial])
    to = fields.FieldType(G, [G.irrep(0, 1)])
    layer = SteerableConv(ti, to, 5, rings=(0.0, 1.5), sigma=0.7, frequencies_cutoff=(0, 3))
    assert layer.frequencies == (0, 3) and layer.sigmas == (0.7, 0.7) and layer.num_params == 2
    layer = SteerableConv(ti, to, 5, frequencies_cutoff=0.5)  # k <= 0.5 r: frequencies 0, 0, 1
    assert layer.frequencies == (0, 0, 1) and layer.num_params == 2


# --- bad input ------------------------------------------------------------------------------------

def test_bad_arguments_raise_clear_errors():
    G = groups.cyclic(4)
    t = fields.FieldType(G, [G.regular])
    with pytest.raises(ValueError, match="kernel_size must be odd.*got 4"):
        SteerableConv(t, t, 4)
    with pytest.raises(ValueError, match="same group"):
        SteerableConv(t, fields.FieldType(groups.cyclic(8), [groups.cyclic(8).regular]), 5)
    with pytest.raises(ValueError, match="groups=2 must divide.*got 1 fields"):
        SteerableConv(t, t, 5, groups=2)
    with pytest.raises(ValueError, match="repetitions"):
        SteerableConv(fields.FieldType(G, [G.regular, G.trivial]), fields.FieldType(G, [G.regular] * 2), 5, groups=2)
    with pytest.raises(ValueError, match="exceed the kernel's extent"):
        SteerableConv(t, t, 3, rings=(0.0, 3.0))
    with pytest.raises(ValueError, match="sigma must be a positive number or one per ring"):
        SteerableConv(t, t, 5, sigma=(0.5, 0.5))
    with pytest.raises(ValueError, match="frequencies_cutoff has 1 entries for 3 rings"):
        SteerableConv(t, t, 5, frequencies_cutoff=(1,))
    with pytest.raises(ValueError, match="stride must be an integer >= 1"):
        SteerableConv(t, t, 5, stride=0)
    with pytest.raises(ValueError, match="no equivariant kernel"):  # frequency 2 output from trivial input, k <= 1
        SteerableConv(fields.FieldType(G, [G.trivial]), fields.FieldType(G, [G.irrep(0, 1)]), 1)
    with pytest.raises(TypeError, match="FieldType"):
        SteerableConv(G.regular, t, 5)
