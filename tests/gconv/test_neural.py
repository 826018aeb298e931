"""NeuralGroupPDO (partial equivariance for Neural ePDOs): exactness on grid elements runs through the layer
database (``gconv_neural_epdo``); here the fast product against the plain-torch export, equivariance of the
Monte Carlo layer on its own grid, theta's gradient against finite differences, the partial layer at theta = pi
against the full Monte Carlo layer in distribution, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from epdo import gconv, groups

D = torch.float64
_DRAWS = 50


def _grid_input(n=8):
    """SO(2) input elements: the deterministic C_n grid (a Haar sampler in eval mode)."""
    return gconv.HaarSampler(groups.so2(0), n, dtype=D).eval()


def test_fast_product_equals_the_export_and_the_finite_reference():
    torch.manual_seed(0)
    for G in (groups.cyclic(4), groups.dihedral(2)):
        layer = gconv.NeuralGroupPDO(G, 2, 4, order=3, kernel_size=7, reduction=2, dtype=D).eval()
        x = torch.randn(2, layer.in_type.size, 9, 9, dtype=D)
        assert torch.allclose(layer(x), layer.export()(x), atol=1e-12, rtol=0)
        for backend in ("torch",):
            other = gconv.NeuralGroupPDO(G, 2, 4, order=3, kernel_size=7, reduction=2, backend=backend, dtype=D)
            other.load_state_dict(layer.state_dict())
            assert torch.allclose(other.eval()(x), layer(x), atol=1e-12, rtol=0)
    # a partial SE(2) layer in eval mode (theta = 0.5: 4 of 8 elements)
    inp = _grid_input()
    layer = gconv.NeuralGroupPDO(groups.se2(), 2, 3, in_elements=inp, samples=8, partial=True, theta=0.5,
                                 dtype=D).eval()
    x = torch.randn(1, 16, 9, 9, dtype=D)
    y = layer(x)
    assert y.shape == (1, 12, 9, 9)
    assert torch.allclose(y, layer.export()(x), atol=1e-12, rtol=0)


def test_monte_carlo_layer_is_exact_on_its_grid_rotations():
    """SE(2) with the C_8 grid in and out (eval): rotating the input by 90 degrees (a grid element that is exact
    on the pixel grid) and shifting the group axis by 2 rotates the output the same way."""
    torch.manual_seed(1)
    inp = _grid_input()
    layer = gconv.NeuralGroupPDO(groups.se2(), 2, 3, in_elements=inp, samples=8, dtype=D).eval()
    x = torch.randn(1, 2, 8, 11, 11, dtype=D)

    def act(t):  # rotation by 90 degrees: positions rot90 (counter-clockwise, y up), elements v -> r v
        return torch.rot90(torch.roll(t, 2, dims=2), 1, (-2, -1))

    y = layer(x.flatten(1, 2)).unflatten(1, (3, 8))
    y_rot = layer(act(x).flatten(1, 2)).unflatten(1, (3, 8))
    err = (y_rot - act(y)).abs().max() / y.abs().max()
    assert err < 1e-9, float(err)
    assert (y_rot - y).abs().max() / y.abs().max() > 0.1  # not trivially invariant


def test_theta_gradient_matches_finite_differences():
    torch.manual_seed(2)
    lift = gconv.LiftingConv(groups.se2(), 1, 2, 5, samples=8, partial=True, theta=0.7, kernel="pdo", dtype=D)
    layer = gconv.NeuralGroupPDO(groups.se2(), 2, 2, in_elements=lift.sampler, samples=8, partial=True,
                                 theta=0.6, dtype=D)
    net = torch.nn.Sequential(lift, torch.nn.Tanh(), layer).eval()  # eval: the angles theta * grid, deterministic
    x = torch.randn(1, 1, 9, 9, dtype=D)
    c = torch.randn_like(net(x))
    loss = (net(x) * c).sum()
    loss.backward()
    for s in (lift.sampler, layer.sampler):
        g = float(s.theta_raw.grad)
        h = 1e-6
        with torch.no_grad():
            s.theta_raw += h
            up = float((net(x) * c).sum())
            s.theta_raw -= 2 * h
            down = float((net(x) * c).sum())
            s.theta_raw += h
        fd = (up - down) / (2 * h)
        assert g != 0 and abs(g - fd) <= 1e-6 * max(1.0, abs(fd)), (g, fd)


@pytest.mark.parametrize("G", [groups.e2(), groups.se2()], ids=str)
def test_gradients_reach_theta_and_the_flip_probability_in_training(G):
    torch.manual_seed(3)
    lift = gconv.LiftingConv(G, 1, 2, 5, samples=8, partial=True, theta=0.8, prob=0.9, kernel="pdo", dtype=D)
    layer = gconv.NeuralGroupPDO(G, 2, 2, in_elements=lift.sampler, samples=8, partial=True, theta=0.8, prob=0.9,
                                 dtype=D)
    proj = gconv.GroupProjection(G, 2, in_elements=layer.sampler)
    out = torch.nn.Sequential(lift, layer, proj).train()(torch.randn(2, 1, 9, 9, dtype=D))
    (out * torch.randn_like(out)).sum().backward()
    for p in (layer.sampler.theta_raw, layer.sampler.prob_raw):
        if p is not None:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs() > 0


def test_theta_pi_equals_the_full_layer_in_distribution():
    """SE(2), the C_8 grid in, 8 output samples: the partial layer at theta = pi and the Haar Monte Carlo layer
    with the same weights; statistic: the output sum, 50 seeded draws each; two-sample z of the means < 4,
    variance ratio in [0.5, 2] (about 2 standard errors of a log variance ratio at 50 draws); the same statistic
    separates theta = pi / 2 (measured at 100 draws: z = 0.12, ratio 0.92 at theta = pi; z = 104 at pi / 2;
    bound 8), so the test can fail."""
    torch.manual_seed(4)
    G = groups.se2()
    full = gconv.NeuralGroupPDO(G, 1, 1, in_elements=_grid_input(), samples=8, dtype=D).train()
    x = torch.randn(1, 8, 7, 7, dtype=D, generator=torch.Generator().manual_seed(5))
    stats = {}
    for name, theta in (("pi", 1.0), ("half", 0.5)):
        part = gconv.NeuralGroupPDO(G, 1, 1, in_elements=_grid_input(), samples=8, partial=True, theta=theta,
                                    dtype=D).train()
        part.load_state_dict(full.state_dict(), strict=False)
        with torch.no_grad():
            a = torch.stack([full(x).sum() for _ in range(_DRAWS)])
            b = torch.stack([part(x).sum() for _ in range(_DRAWS)])
        z = float((a.mean() - b.mean()).abs() / (a.var() / _DRAWS + b.var() / _DRAWS).sqrt())
        stats[name] = (z, float(a.var() / b.var()))
    print(f"z, variance ratio: {stats}")
    z, ratio = stats["pi"]
    assert z < 4 and 0.5 < ratio < 2.0
    assert stats["half"][0] > 8


def test_bad_input():
    G = groups.cyclic(4)
    with pytest.raises(ValueError, match="reduction must be a positive integer dividing out_channels"):
        gconv.NeuralGroupPDO(G, 2, 3, reduction=2)
    with pytest.raises(ValueError, match="kernel_size must be an odd"):
        gconv.NeuralGroupPDO(G, 2, 2, kernel_size=4)
    with pytest.raises(ValueError, match="order must be a non-negative integer"):
        gconv.NeuralGroupPDO(G, 2, 2, order=-1)
    with pytest.raises(ValueError, match="separable"):
        gconv.NeuralGroupPDO(G, 2, 2, discretization="rbf")
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(B, 8, H, W\)"):
        gconv.NeuralGroupPDO(G, 2, 2)(torch.randn(1, 6, 9, 9))
    with pytest.raises(ValueError, match="continuous"):
        gconv.NeuralGroupPDO(groups.se2(), 2, 2, samples=8)
    with pytest.raises(ValueError, match="theta"):
        gconv.NeuralGroupPDO(groups.se2(), 2, 2, in_elements=_grid_input(), samples=8, partial=True, theta=1.5)
    with torch.no_grad():
        assert math.isfinite(float(gconv.NeuralGroupPDO(G, 2, 2)(torch.randn(1, 8, 7, 7)).sum()))
