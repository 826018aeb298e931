"""The one image resampling (epdo._warp) behind the group action, the rotated data and the perturbations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from epdo._warp import warp_images
from epdo.data import rotate_images
from epdo.fields import transform_plane


def _rotation(theta: float) -> np.ndarray:
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


@pytest.mark.parametrize("shape", [(21, 41), (41, 21), (28, 28)])
def test_a_pixel_lands_where_the_rotation_says(shape):
    """A bright pixel at p = (x, y) (centred frame, y up) lands at R(theta) p, on square and non-square images."""
    h, w = shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    i0, j0 = h // 2 - 3, w // 2 + 6  # a pixel at p = (j0 - cx, cy - i0) in the centred frame
    x0, y0 = j0 - cx, cy - i0
    img = torch.zeros(1, 1, h, w, dtype=torch.float64)
    img[0, 0, i0, j0] = 1.0
    for deg in (90.0, 180.0, 270.0):
        t = math.radians(deg)
        x1, y1 = _rotation(t) @ np.array([x0, y0])
        for out in (rotate_images(img, t), transform_plane(img, _rotation(t), mode="bilinear")):
            i, j = np.unravel_index(int(out[0, 0].argmax()), (h, w))
            assert (i, j) == (round(cy - y1), round(cx + x1)) and float(out.max()) == pytest.approx(1.0, abs=1e-12)


def test_group_action_and_data_rotation_are_one_function():
    """At a non-grid angle the fields' action and rotate_images resample the same way (non-square included)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 21, 41, generator=g, dtype=torch.float64)
    t = math.radians(30.0)
    for mode in ("bilinear", "bicubic"):
        torch.testing.assert_close(transform_plane(x, _rotation(t), mode=mode), rotate_images(x, t, mode=mode),
                                   rtol=0, atol=1e-12)
    # a reflection after a rotation: out(p) = x(A^-1 p), checked against warp_images with A^-1 directly
    a = _rotation(t) @ np.diag([1.0, -1.0])
    torch.testing.assert_close(transform_plane(x, a, mode="bicubic"),
                               warp_images(x, torch.as_tensor(np.linalg.inv(a)), None, "bicubic"), rtol=0, atol=0)


def test_warp_rejects_bad_input():
    with pytest.raises(ValueError, match="mode must be one of"):
        warp_images(torch.zeros(1, 1, 3, 3), torch.eye(2), None, "cubic")
    with pytest.raises(ValueError, match=r"expected matrices \(N, 2, 2\)"):
        warp_images(torch.zeros(2, 1, 3, 3), torch.eye(2).expand(3, 2, 2), None)
    with pytest.raises(ValueError, match=r"expected images \(N, C, H, W\)"):
        warp_images(torch.zeros(3, 3), torch.eye(2), None)
