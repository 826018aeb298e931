"""Icosphere meshes and tangent-plane derivative operators (issue 11)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import epdo
from epdo.sphere import icosphere, mesh as M
from epdo.sphere.derivatives import dense_reference, derivative_matrices, stencils


@pytest.mark.parametrize("level", range(7))
def test_counts_nesting_unit(level):
    m = icosphere(level)
    assert m.num_vertices == 10 * 4 ** level + 2 and len(m.faces) == 20 * 4 ** level
    assert m.vertices.dtype == np.float64 and np.allclose(np.linalg.norm(m.vertices, axis=1), 1, atol=1e-14)
    if level:
        assert (icosphere(level - 1).vertices == m.vertices[:icosphere(level - 1).num_vertices]).all()
    deg = np.diff(m.ring1[0])
    assert (deg == 5).sum() == 12 and (deg[deg != 5] == 6).all()  # Euler: 12 valence-5 vertices
    # faces outward, 1-ring = vertices sharing an edge
    v, f = m.vertices, m.faces
    assert (np.einsum("ij,ij->i", np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), v[f[:, 0]]) > 0).all()


def test_rings_small():
    m = icosphere(1)
    for i in (0, 20):
        r1 = set(m.neighbours(i, 1))
        r2 = set(m.neighbours(i, 2))
        two = set(j for k in r1 for j in m.neighbours(k, 1)) | r1
        assert r2 == two - {i} and r1 < r2


@pytest.mark.parametrize("level", range(5))
def test_icosahedral_rotations_permute_vertices(level):
    m = icosphere(level)
    perms = [m.permutation(g.matrix) for g in epdo.groups.icosahedral().elements]
    assert all(p is not None and len(set(p)) == m.num_vertices for p in perms)
    assert m.permutation(epdo.groups.so3(1).sample_elements(1)[0].matrix) is None


def test_frames_and_section_axis():
    for level in range(7):
        m = icosphere(level)
        s = m.frames
        assert np.abs(np.einsum("vji,vjk->vik", s, s) - np.eye(3)).max() < 1e-13
        assert np.allclose(np.linalg.det(s), 1) and (s[:, :, 2] == m.vertices).all()
        # no vertex on the section's singular points +-n (face centres): a margin that shrinks like the spacing
        assert np.arccos(np.abs(m.vertices @ M.SECTION_AXIS).max()) > 0.2 * m.spacing()
    with pytest.raises(ValueError, match="singular axis"):
        M.section(M.SECTION_AXIS)


def test_frame_rotation_convention():
    """R s(P) = s(RP) A_R(P) with A_R(P) a z-rotation by frame_rotation's angle."""
    m = icosphere(2)
    R = epdo.groups.so3(1).sample_elements(1, seed=3)[0].matrix
    a = m.frame_rotation(R)
    sp = M.section(m.vertices @ R.T)
    c, s = np.cos(a), np.sin(a)
    A = np.zeros((len(a), 3, 3))
    A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1], A[:, 2, 2] = c, -s, s, c, 1
    assert np.abs(R @ m.frames - sp @ A).max() < 1e-12


def test_bad_input():
    with pytest.raises(ValueError, match=r"level must be an integer in 0\.\.8, got 9"):
        icosphere(9)
    with pytest.raises(ValueError, match="got -1"):
        icosphere(-1)
    with pytest.raises(ValueError, match="rotation matrix"):
        icosphere(1).frame_rotation(np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        icosphere(1).permutation(np.eye(2))


# --- derivatives -----------------------------------------------------------------------------------

@pytest.mark.parametrize("level", [0, 1, 3])
def test_sparse_equals_dense_reference(level):
    ref = dense_reference(level)
    for k, D in enumerate(derivative_matrices(level)):
        assert D.layout == torch.sparse_csr and D.dtype == torch.float64
        assert np.abs(D.to_dense().numpy() - ref[k]).max() <= 1e-10 * np.abs(ref[k]).max()


@pytest.mark.parametrize("level", [0, 2, 5])
def test_constants_have_zero_derivatives(level):
    one = torch.ones(icosphere(level).num_vertices, 3, dtype=torch.float64)
    for D in derivative_matrices(level):
        assert float((D @ one).abs().max()) < 1e-10


def _harmonic(points: np.ndarray, l: int, seed: int = 0):
    """A random degree-l spherical harmonic: the harmonic homogeneous polynomial r^l Y_l (e3nn,
    normalize=False) with random coefficients; returns f, the chart's exact (f_1, f_2, f_11, f_12, f_22)."""
    o3 = pytest.importorskip("e3nn.o3")
    c = torch.randn(2 * l + 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def F(x):
        return (o3.spherical_harmonics(l, x, normalize=False, normalization="integral") * c).sum(-1)

    x = torch.as_tensor(points).requires_grad_(True)
    f = F(x)
    g = torch.autograd.grad(f.sum(), x, create_graph=True)[0]
    H = torch.stack([torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)[0] for i in range(3)], 1)
    return f.detach().numpy(), g.detach().numpy(), H.detach().numpy()


def _chart_derivatives(mesh, g, H, f, l):
    """Exact chart derivatives: f_i = e_i . grad F, f_ij = e_i^T Hess F e_j - delta_ij (grad F . P) with
    grad F . P = l f (Euler, degree-l homogeneous)."""
    e1, e2 = mesh.frames[:, :, 0], mesh.frames[:, :, 1]
    dot = lambda a, M, b: np.einsum("vi,vij,vj->v", a, M, b)
    return np.stack([(e1 * g).sum(1), (e2 * g).sum(1), dot(e1, H, e1) - l * f, dot(e1, H, e2),
                     dot(e2, H, e2) - l * f])


def test_convergence_on_spherical_harmonics(capsys):
    """Relative max error of each derivative vs level on a degree-3 harmonic; the fitted order (slope of
    log error vs log spacing) is printed. Measured: first derivatives ~2nd order, second ~1st-2nd order."""
    levels = [2, 3, 4, 5]
    errs, hs = [], []
    for L in levels:
        m = icosphere(L)
        f, g, H = _harmonic(m.vertices, 3)
        exact = _chart_derivatives(m, g, H, f, 3)
        est = np.stack([(D @ torch.as_tensor(f)[:, None]).numpy()[:, 0] for D in derivative_matrices(L)])
        errs.append(np.abs(est - exact).max(1) / np.abs(exact).max(1))
        hs.append(m.spacing())
    errs, hs = np.array(errs), np.array(hs)
    order = [np.polyfit(np.log(hs), np.log(errs[:, k]), 1)[0] for k in range(5)]
    with capsys.disabled():
        print("\nlevel  spacing   " + "  ".join(f"{n:>9}" for n in ("f_1", "f_2", "f_11", "f_12", "f_22")))
        for L, h, e in zip(levels, hs, errs):
            print(f"{L:5d}  {h:.5f}  " + "  ".join(f"{v:9.2e}" for v in e))
        print("order           " + "  ".join(f"{o:9.2f}" for o in order))
    assert (np.diff(errs, axis=0) < 0).all()  # strictly decreasing in every column
    assert min(order[:2]) > 1.8 and min(order[2:]) > 0.9
    assert errs[-1].max() < 0.02
