r"""The one resampling of image batches on the plane: ``out(p) = in(M p + b)`` (torch only).

Every image motion of epdo goes through :func:`warp_images`: the group action on planar fields at non-grid
angles (:func:`epdo.fields.transform_plane`), the rotated-digit data (:func:`epdo.data.rotate_images`), the
test-time perturbations (:mod:`epdo.data.perturb`) and the command line's augmentation and rotated
evaluation. Frame (``docs/design.md``): p = (x, y) with x the column to the right and y up, about the centre
``((H - 1) / 2, (W - 1) / 2)`` in pixel indices, so non-square images rotate about their true centre.
Sampling: ``grid_sample`` at the transformed pixel centres (``align_corners=True`` with the grid normalised by
``W - 1`` and ``H - 1``), zero fill outside.

>>> import torch
>>> x = torch.zeros(1, 1, 21, 41); x[0, 0, 10, 30] = 1.0         # 10 px right of the centre (10, 20)
>>> c, s = 0.0, 1.0                                             # rotation by 90 degrees: R^-1 = [[c, s], [-s, c]]
>>> y = warp_images(x, torch.tensor([[[c, s], [-s, c]]]), torch.zeros(1, 2))
>>> [int(v) for v in (y[0, 0] > 0.5).nonzero()[0]]              # now 10 px above the centre
[0, 20]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["warp_images", "MODES"]

MODES = ("bilinear", "bicubic", "nearest")


def warp_images(images: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor | None = None,
                mode: str = "bilinear") -> torch.Tensor:
    r"""``out(p) = in(matrix @ p + offset)`` per image, p in the centred (x right, y up) pixel frame.

    ``images (N, C, H, W)``; ``matrix (N, 2, 2)`` or ``(2, 2)`` (broadcast); ``offset (N, 2)`` pixels or None.
    The sampling grid is computed in float64 on the CPU, then moved to the images' device and dtype.
    """
    if mode not in MODES:
        raise ValueError(f"warp_images: mode must be one of {MODES}, got {mode!r}")
    if images.dim() != 4:
        raise ValueError(f"warp_images: expected images (N, C, H, W), got shape {tuple(images.shape)}")
    n, _, h, w = images.shape
    m = torch.as_tensor(matrix, dtype=torch.float64).cpu()
    if m.dim() == 2:
        m = m.expand(n, 2, 2)
    if m.shape != (n, 2, 2):
        raise ValueError(f"warp_images: expected matrices (N, 2, 2) or (2, 2) for {n} images, got {tuple(m.shape)}")
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    x = (torch.arange(w, dtype=torch.float64) - cx).view(1, 1, w)
    y = (cy - torch.arange(h, dtype=torch.float64)).view(1, h, 1)
    xs = m[:, 0, 0, None, None] * x + m[:, 0, 1, None, None] * y
    ys = m[:, 1, 0, None, None] * x + m[:, 1, 1, None, None] * y
    if offset is not None:
        b = torch.as_tensor(offset, dtype=torch.float64).cpu()
        xs = xs + b[:, 0, None, None]
        ys = ys + b[:, 1, None, None]
    gx = 2.0 * (xs + cx) / max(w - 1, 1) - 1.0
    gy = 2.0 * (cy - ys) / max(h - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=-1).to(device=images.device, dtype=images.dtype)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=True)
