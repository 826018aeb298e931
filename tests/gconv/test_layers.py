"""Group convolutions (epdo.gconv): the convention, exactness on grid elements, the PDO kernels against the
core's RotatedPDOExpansion, the Monte Carlo error rate, bad input. The layer database runs the generic checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from epdo import fields, gconv, groups
from epdo.nn import RotatedPDOExpansion
from epdo.testing import assert_equivariant

D = torch.float64


def test_convention_is_cross_correlation_as_conv2d():
    """Lifting at the identity element = torch's conv2d (a correlation) with the kernel; the convolution
    (the flipped kernel, 004's psi(g) = k(g^-1)) differs, so the test can fail."""
    torch.manual_seed(0)
    G = groups.cyclic(4)
    layer = gconv.LiftingConv(G, 2, 3, 5, kernel="discrete", bias=False, dtype=D)
    x = torch.randn(2, 2, 11, 11, dtype=D)
    y = layer(x).reshape(2, 3, 4, 11, 11)[:, :, 0]  # element index 0 = identity
    k = layer.weight * layer._mask * math.sqrt(2.0 / layer._fan_in(1))
    assert torch.allclose(y, F.conv2d(x, k, padding=2), atol=1e-12)
    assert not torch.allclose(y, F.conv2d(x, k.flip(-1, -2), padding=2), atol=1e-3)
    # channel c * |G| + i is element G.elements[i]: the output for rotation r^1 is the kernel rotated by 90 degrees
    y1 = layer(x).reshape(2, 3, 4, 11, 11)[:, :, 1]
    assert torch.allclose(y1, F.conv2d(x, torch.rot90(k, 1, (-2, -1)), padding=2), atol=1e-12)


@pytest.mark.parametrize("kernel,kw", [("swish", {}), ("siren", {"embedding": "wrapped"}), ("discrete", {})])
def test_exact_on_grid_elements_other_kernels(kernel, kw):
    torch.manual_seed(1)
    G = groups.dihedral(4)
    lift = gconv.LiftingConv(G, 1, 2, 5, kernel=kernel, dtype=D)
    conv = gconv.GroupConv(G, 2, 2, 5, kernel=kernel, dtype=D, **kw)
    for m in (lift, conv, gconv.GroupProjection(G, 2, mode="max", dtype=D)):
        report = assert_equivariant(m, m.in_type, m.out_type, size=9, batch=1)
        assert report.reference.normalized > 1e-3


def test_pdo_kernels_agree_with_core_rotated_pdo_expansion():
    """kernel='pdo' lifting = the core's RotatedPDOExpansion coefficients W_g = rho_hat(g^-1)^T X, discretised
    with the layer's (degree-scaled) stencils, at grid and at sampled SO(2) elements."""
    torch.manual_seed(2)
    for G, samples in ((groups.dihedral(4), None), (groups.so2(2), 6)):
        layer = gconv.LiftingConv(G, 2, 3, 5, kernel="pdo", order=2, samples=samples, bias=False, dtype=D).eval()
        els = G.elements if G.is_finite else tuple(G.element(0, 2 * math.pi * j / 6) for j in range(6))
        core = RotatedPDOExpansion(fields.FieldType(G, [G.trivial] * 2), n_out=3, order=2, elements=els, dtype=D)
        with torch.no_grad():
            core.weight.copy_(layer.weight)
        w = torch.einsum("ogbc,bkl->ogckl", core(), layer._stencils) * layer._mask * math.sqrt(2 / layer._fan_in(1))
        ours, _ = layer.weights(eval_mode=True)
        assert torch.allclose(ours, w.reshape(ours.shape), atol=1e-12)


def test_derivative_rep_torch_matches_core_and_is_differentiable():
    from epdo.diffops import derivative_rep

    a = torch.randn(4, 2, 2, dtype=D, requires_grad=True)
    d = gconv.derivative_rep_torch(a, 3)
    for i in range(4):
        assert np.allclose(d[i].detach().numpy(), derivative_rep(a[i].detach().numpy(), 3), atol=1e-13)
    assert torch.autograd.gradcheck(lambda m: gconv.derivative_rep_torch(m, 2), (a,))


def _mc_net(n: int, group_conv: bool = True):
    G = groups.se2()
    lift = gconv.LiftingConv(G, 1, 3, 5, samples=n, dtype=D)
    if not group_conv:
        return torch.nn.Sequential(lift, torch.nn.Tanh(), gconv.GroupProjection(G, 3, in_elements=lift.sampler))
    conv = gconv.GroupConv(G, 3, 3, 5, in_elements=lift.sampler, samples=n, dtype=D)
    proj = gconv.GroupProjection(G, 3, in_elements=conv.sampler)
    return torch.nn.Sequential(lift, torch.nn.Tanh(), conv, proj)


def test_monte_carlo_equivariance_error_falls_with_the_sample_count():
    """004 Eq. 4: equivariant in expectation. Training mode (a fresh Haar draw per forward): the relative error
    at a 90-degree rotation (exact on the grid, so all of it is Monte Carlo error) of lifting -> tanh ->
    projection, mean of 16 draws, falls as a power of n; the fitted rate is printed (measured n^-0.5x; the i.i.d.
    Monte Carlo rate is n^-1/2). Eval mode uses the C_n grid: exact at 90 degrees for 4 | n (also through a group
    convolution)."""
    x = torch.randn(1, 1, 13, 13, dtype=D, generator=torch.Generator().manual_seed(0))
    ns, errs = [4, 8, 16, 32, 64], []
    for n in ns:
        torch.manual_seed(0)  # the same kernel for every n
        net = _mc_net(n, group_conv=False).train().requires_grad_(False)
        e = []
        for _ in range(16):
            y, yr = net(x), net(torch.rot90(x, 1, (-2, -1)))
            e.append(float((yr - torch.rot90(y, 1, (-2, -1))).norm() / y.norm()))
        errs.append(np.mean(e))
    slope = np.polyfit(np.log(ns), np.log(errs), 1)[0]
    print(f"Monte Carlo equivariance error vs samples {dict(zip(ns, np.round(errs, 4)))}: fitted rate n^{slope:.2f}")
    assert -0.8 < slope < -0.35 and errs[-1] < errs[0] / 3
    net = _mc_net(8).eval()
    y, yr = net(x), net(torch.rot90(x, 1, (-2, -1)))
    assert (yr - torch.rot90(y, 1, (-2, -1))).norm() <= 1e-9 * y.norm()
    assert torch.equal(net(x), y)  # deterministic in eval mode


def test_bad_input():
    G = groups.cyclic(4)
    with pytest.raises(ValueError, match="kernel_size must be an odd integer.*got 4"):
        gconv.LiftingConv(G, 1, 2, 4)
    with pytest.raises(ValueError, match="samples must be an integer >= 1, got 0"):
        gconv.LiftingConv(groups.se2(), 1, 2, 3, samples=0)
    with pytest.raises(ValueError, match="samples must be an integer >= 1, got True"):
        gconv.LiftingConv(groups.se2(), 1, 2, 3, samples=True)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        gconv.HaarSampler(groups.so2(0), -1)
    with pytest.raises(ValueError, match=r"theta is theta/pi and must lie in \[0, 1\].*got 1.5"):
        gconv.LiftingConv(groups.se2(), 1, 2, 3, samples=4, partial=True, theta=1.5)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*got -0.1"):
        gconv.PartialSampler(groups.so2(0), 4, theta=-0.1)
    with pytest.raises(ValueError, match="support C_N, D_N, SO\\(2\\), O\\(2\\).*icosahedral"):
        gconv.LiftingConv(groups.icosahedral(), 1, 2, 3)
    with pytest.raises(ValueError, match="supported groups are SO\\(2\\), O\\(2\\).*got C4"):
        gconv.PartialSampler(G, 4)
    with pytest.raises(ValueError, match="continuous: pass samples"):
        gconv.LiftingConv(groups.e2(), 1, 2, 3)
    with pytest.raises(ValueError, match="O\\(2\\) needs an even number"):
        gconv.LiftingConv(groups.e2(), 1, 2, 3, samples=5)
    with pytest.raises(ValueError, match="kernel='discrete' needs a finite group"):
        lift = gconv.LiftingConv(groups.se2(), 1, 2, 3, samples=4)
        gconv.GroupConv(groups.se2(), 2, 2, 3, kernel="discrete", in_elements=lift.sampler, samples=4)
    with pytest.raises(ValueError, match="kernel must be one of"):
        gconv.LiftingConv(G, 1, 2, 3, kernel="gauss")
    # the group axis: wrong number of elements / channels, elements of another group
    conv = gconv.GroupConv(G, 2, 2, 3)
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(B, 8, H, W\).*2 channels x 4 input elements.*"
                                         r"got \(1, 6, 5, 5\)"):
        conv(torch.randn(1, 6, 5, 5))
    lift8 = gconv.LiftingConv(groups.cyclic(8), 1, 2, 3)
    with pytest.raises(ValueError, match="group axis holds elements of C8, the layer's group is C4"):
        gconv.GroupConv(G, 2, 2, 3, in_elements=lift8.sampler)
    with pytest.raises(ValueError, match="group axis holds elements of C8"):
        gconv.GroupProjection(G, 2, in_elements=lift8.sampler)
    with pytest.raises(TypeError, match="floating"):
        conv(torch.ones(1, 8, 5, 5, dtype=torch.int64))
