"""Test-time perturbation scenarios of EqPdeNet (paper 001): test / iso / sca."""

import math

import pytest
import torch

from epdo.data.perturb import SCENARIOS, apply_scenario, scenario_parameters, warp_images


def blobs(n, size=28, sigma=1.5):
    """Gaussian blobs at known off-centre positions (x right, y up, pixels from the centre)."""
    c = (size - 1) / 2
    i = torch.arange(size, dtype=torch.float64)
    pos = torch.tensor([[4.0, 2.0], [-3.0, 5.0], [2.5, -4.5], [0.0, 6.0]], dtype=torch.float64)[torch.arange(n) % 4]
    x, y = (i - c).view(1, 1, size), (c - i).view(1, size, 1)
    img = torch.exp(-((x - pos[:, 0, None, None]) ** 2 + (y - pos[:, 1, None, None]) ** 2) / (2 * sigma**2))
    return img.unsqueeze(1), pos


def centroid(img):
    size = img.shape[-1]
    c = (size - 1) / 2
    i = torch.arange(size, dtype=img.dtype)
    w = img[:, 0]
    m = w.sum((1, 2))
    return torch.stack(((w * (i - c).view(1, 1, -1)).sum((1, 2)) / m, (w * (c - i).view(1, -1, 1)).sum((1, 2)) / m), -1)


def test_test_scenario_returns_the_images_unchanged():
    x = torch.rand(3, 1, 28, 28)
    assert apply_scenario(x, "test", torch.Generator().manual_seed(0)) is x


@pytest.mark.parametrize("scenario", ["iso", "sca"])
def test_draws_are_seeded_and_preserve_dtype_range_and_shape(scenario):
    x = torch.rand(8, 1, 28, 28)
    a = apply_scenario(x, scenario, torch.Generator().manual_seed(3))
    b = apply_scenario(x, scenario, torch.Generator().manual_seed(3))
    c = apply_scenario(x, scenario, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype and a.min() >= 0 and a.max() <= 1
    assert apply_scenario(x.double(), scenario, torch.Generator().manual_seed(3)).dtype == torch.float64


def test_parameter_distributions():
    g = torch.Generator().manual_seed(0)
    iso = scenario_parameters(20000, "iso", g)
    for key, bound in (("angle_deg", 30.0), ("t_h", 2.0), ("t_v", 2.0)):
        v = iso[key]
        assert v.abs().max() <= bound and v.abs().max() > 0.99 * bound
        assert abs(v.mean()) < 0.02 * bound and abs(v.var() - bound**2 / 3) < 0.03 * bound**2  # U(-b, b)
    lam = scenario_parameters(20000, "sca", g)["scale"]
    assert lam.min() >= 2 / 3 and lam.max() <= 1 and abs(lam.mean() - 5 / 6) < 0.005
    assert scenario_parameters(5, "test", g) == {}


def test_iso_moves_each_blob_where_the_drawn_isometry_says():
    """Centroid of a Gaussian blob after rotation by theta (counter-clockwise) then translation by
    (t_h, t_v): R(theta) p + t, within 0.02 px (bilinear resampling of a sigma = 1.5 px blob)."""
    x, pos = blobs(16)
    out = apply_scenario(x, "iso", torch.Generator().manual_seed(7))
    p = scenario_parameters(16, "iso", torch.Generator().manual_seed(7))
    a = p["angle_deg"] * math.pi / 180
    expect = torch.stack((torch.cos(a) * pos[:, 0] - torch.sin(a) * pos[:, 1] + p["t_h"],
                          torch.sin(a) * pos[:, 0] + torch.cos(a) * pos[:, 1] + p["t_v"]), -1)
    assert (centroid(out) - expect).abs().max() < 0.02


def test_sca_shrinks_each_blob_about_the_centre():
    """Centroid lambda p within 0.05 px (measured 0.024: the shrunk blob is resampled bilinearly); the mass
    (area) scales by lambda^2 within 0.02 (measured 0.010)."""
    x, pos = blobs(16, sigma=2.0)
    out = apply_scenario(x, "sca", torch.Generator().manual_seed(11))
    lam = scenario_parameters(16, "sca", torch.Generator().manual_seed(11))["scale"]
    assert (centroid(out) - lam[:, None] * pos).abs().max() < 0.05
    mass_ratio = out.sum((1, 2, 3)) / x.sum((1, 2, 3))  # area scales by lambda^2
    assert (mass_ratio - lam**2).abs().max() < 0.02


def test_warp_conventions_match_rot90_and_integer_shifts():
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    r = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64).expand(2, 2, 2)  # R(-90): out(p) = in(R(-90) p)
    torch.testing.assert_close(warp_images(x, r, torch.zeros(2, 2)), torch.rot90(x, 1, (-2, -1)), atol=1e-12, rtol=0)
    eye = torch.eye(2, dtype=torch.float64).expand(2, 2, 2)
    shifted = warp_images(x, eye, torch.tensor([[-2.0, 1.0]] * 2))  # out(p) = in(p - (2, -1)): right 2, down 1
    torch.testing.assert_close(shifted[..., 1:, 2:], x[..., :-1, :-2], atol=1e-12, rtol=0)
    assert shifted[..., :, :2].abs().max() < 1e-12 and shifted[..., :1, :].abs().max() < 1e-12  # zero fill


def test_unknown_scenario_and_bad_images_are_clear_errors():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"unknown scenario 'rot'; expected one of \('test', 'iso', 'sca'\)"):
        apply_scenario(torch.rand(1, 1, 28, 28), "rot", g)
    with pytest.raises(ValueError, match=r"expected images \(N, 1, H, W\), got \(1, 28, 28\)"):
        apply_scenario(torch.rand(1, 28, 28), "iso", g)
    with pytest.raises(ValueError, match=r"got \(1, 3, 28, 28\)"):
        apply_scenario(torch.rand(1, 3, 28, 28), "test", g)
    with pytest.raises(ValueError, match="floating-point"):
        apply_scenario(torch.zeros(1, 1, 28, 28, dtype=torch.uint8), "sca", g)
    assert SCENARIOS == ("test", "iso", "sca")
