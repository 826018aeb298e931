"""Rotation of image batches about the image centre (bilinear or bicubic, zero fill outside).

Angles are counter-clockwise in the plane frame of ``docs/design.md`` (x = column to the right,
y = -row, i.e. up), about the centre ``((H - 1) / 2, (W - 1) / 2)`` in pixel indices. Rotating by
``pi / 2`` on a square image therefore equals ``numpy.rot90`` exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from .._warp import MODES as _MODES, warp_images

__all__ = ["rotate_images"]



def _rotate_chunk(images: torch.Tensor, angles: torch.Tensor, mode: str) -> torch.Tensor:
    """output(p) = input(R(-theta) p), through the one resampling :func:`epdo._warp.warp_images`."""
    c, s = torch.cos(angles), torch.sin(angles)
    inverse = torch.stack((torch.stack((c, s), -1), torch.stack((-s, c), -1)), -2)  # R(-theta), (N, 2, 2)
    return warp_images(images, inverse, None, mode)


def rotate_images(
    images: np.ndarray | torch.Tensor,
    angles: np.ndarray | torch.Tensor | float,
    *,
    mode: str = "bilinear",
    chunk: int = 4096,
) -> torch.Tensor:
    """Rotate each image counter-clockwise by its angle (radians) about the image centre.

    ``images``: ``(N, H, W)`` or ``(N, C, H, W)``, any real dtype (computed in float64 when the input
    is float64, float32 otherwise). ``angles``: scalar or ``(N,)``. Returns a float tensor of the input's
    layout; pixels that come from outside the image are 0. ``bicubic`` output is not clamped.
    """
    if mode not in _MODES:
        raise ValueError(f"rotate_images: mode must be one of {_MODES}, got {mode!r}")
    x = torch.as_tensor(images)
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"rotate_images: expected (N, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    n = x.shape[0]
    a = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
    if a.numel() == 1:
        a = a.expand(n)
    if a.numel() != n:
        raise ValueError(f"rotate_images: got {a.numel()} angles for {n} images")
    if chunk < 1:
        raise ValueError(f"rotate_images: chunk must be positive, got {chunk}")
    out = torch.cat([_rotate_chunk(x[k : k + chunk], a[k : k + chunk], mode) for k in range(0, n, chunk)]) if n else x.clone()
    return out.squeeze(1) if squeeze else out
