r"""The one place that applies stencils to tensors: all derivatives :math:`\partial^\alpha f`, alpha in Gamma_N.

``apply_stencils(x, order, disc)`` maps a field ``(..., H, W)`` to its derivatives ``(..., |Gamma_N|, H, W)``
(so images ``(B, C, H, W)`` give ``(B, C, |Gamma_N|, H, W)``), same size, in the (x right, y up) frame of
``docs/design.md``: output ``[..., alpha, i, j] = sum_{u,v} stencil[alpha][u, v] * xpad[..., i + u, j + v]``
(cross-correlation, as ``conv2d`` with ``padding=k//2``). Two paths compute the same numbers:

* ``"dense"``: one depthwise ``conv2d`` with the k x k stencils (any discretisation);
* ``"separable"``: for separable discretisations, 1-D passes along x (orders 0..N) and then along y (order b
  of each alpha = (a, b)): ``(N + 1) k + |Gamma_N| k`` instead of ``|Gamma_N| k^2`` multiply-adds per pixel.
  Equal to the dense path to float rounding for every padding, because each padding here maps the row and
  the column index independently (so padding and 1-D passes commute).

``path="auto"`` takes the separable path only for separable discretisations with k >= 11: measured on CPU
(torch 2.13, 1 thread, (8, 16, 28, 28) float32, order 4), oneDNN's depthwise k x k ``conv2d`` beat the two
1-D passes by 2.0x at k = 5, 1.2x at k = 7 and 1.15x at k = 9; the passes won by 1.1x at k = 11 (order 6).
(A banded-matrix GEMM formulation of the passes was 1.5-2x slower than the dense path too.)

Padding (outside the image): ``"zeros"`` (default, as the PDO layers), ``"replicate"``, ``"reflect"`` or
``"circular"`` (``torch.nn.functional.pad`` modes).

>>> import torch
>>> from epdo.diffops import Discretization, apply_stencils
>>> x = torch.arange(25.0).reshape(1, 1, 5, 5)  # f = 5 i + j = -5 y + x + const
>>> d = apply_stencils(x, 1, Discretization("fd", 3))
>>> d.shape, d[0, 0, 1:, 2, 2].tolist()  # (d/dx, d/dy) at the centre
(torch.Size([1, 1, 3, 5, 5]), [1.0, -5.0])
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .derivatives import multi_indices
from .stencils import _CACHES, Discretization, as_discretization, check_order, stencils, stencils_1d

__all__ = ["PADDINGS", "STENCIL_PATHS", "apply_stencils", "correlate", "correlate_separable", "stencil_tensor"]

PADDINGS = ("zeros", "replicate", "reflect", "circular")
STENCIL_PATHS = ("auto", "dense", "separable")
_SEPARABLE_FROM = 11  # smallest kernel size for which "auto" takes the separable path (module doc)


def stencil_tensor(
    order: int, disc: Discretization | str, *, dtype: torch.dtype = torch.float64, device=None
) -> torch.Tensor:
    """The stencils of :func:`epdo.diffops.stencils` as a new tensor ``(|Gamma_N|, k, k)`` (a conv2d weight
    after ``unsqueeze(1)``)."""
    disc = as_discretization(disc)
    return torch.tensor(np.array(stencils(order, disc)), dtype=dtype, device=device)


@lru_cache(maxsize=None)
def _cpu_weights(order: int, disc: Discretization, separable: bool) -> torch.Tensor:
    """float64 CPU copies of the (1-D or 2-D) stencils, created outside inference mode so that they can be used
    in autograd graphs later; callers cast them with ``.to`` (a new tensor unless dtype and device match)."""
    arr = stencils_1d(order, disc) if separable else stencils(order, disc)
    with torch.inference_mode(False):
        return torch.tensor(np.array(arr), dtype=torch.float64)


_CACHES.append(_cpu_weights.cache_clear)


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor (..., H, W), got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"expected a field (..., H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got dtype {x.dtype}: convert it (e.g. x.float()) first")


def _check_padding(padding: str) -> None:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


def _pad(x: torch.Tensor, pad: tuple[int, int, int, int], padding: str) -> torch.Tensor:
    if not any(pad):
        return x
    if padding == "zeros":
        return F.pad(x, pad)
    return F.pad(x, pad, mode=padding)


def _as_4d(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], int]:
    """``(..., H, W) -> (B', C, H, W)`` with C the size of dim -3 (1 for 2-D input)."""
    lead = tuple(x.shape[:-2])
    c = x.shape[-3] if x.dim() >= 3 else 1
    return x.reshape(-1, c, *x.shape[-2:]), lead, c


def correlate(x: torch.Tensor, weight: torch.Tensor, *, padding: str = "zeros") -> torch.Tensor:
    """Dense path: ``(..., H, W)`` and stencils ``(G, k, k)`` (or ``(G, 1, k, k)``) -> ``(..., G, H, W)``.

    One depthwise (grouped) ``conv2d`` over dim -3 (on CPU several times faster than a single-channel
    convolution of the flattened batch); the weight is cast to ``x``'s dtype and device.
    """
    _check_input(x)
    _check_padding(padding)
    if weight.dim() == 4 and weight.shape[1] == 1:
        weight = weight[:, 0]
    if weight.dim() != 3 or weight.shape[-1] != weight.shape[-2] or weight.shape[-1] % 2 == 0:
        raise ValueError(f"expected stencils (G, k, k) with k odd, got shape {tuple(weight.shape)}")
    x4, lead, c = _as_4d(x)
    g, k = weight.shape[0], weight.shape[-1]
    r = k // 2
    h, w = x.shape[-2:]
    wt = weight.to(dtype=x.dtype, device=x.device)[:, None]
    xp = _pad(x4, (r, r, r, r), padding)
    out = F.conv2d(xp, wt.repeat(c, 1, 1, 1) if c > 1 else wt, groups=c)
    return out.reshape(*lead, g, h, w)


def correlate_separable(
    x: torch.Tensor, weight_1d: torch.Tensor, alphas: tuple[tuple[int, int], ...], *, padding: str = "zeros"
) -> torch.Tensor:
    """Separable path: 1-D stencils ``(N + 1, k)`` (order n along +x, offsets -r..r) and multi-indices
    ``alphas`` -> ``(..., len(alphas), H, W)``, output ``alpha = (a, b)`` = order-a pass along x, then order-b
    pass along y (y up: the 1-D stencil reversed over the rows)."""
    _check_input(x)
    _check_padding(padding)
    if weight_1d.dim() != 2 or weight_1d.shape[-1] % 2 == 0:
        raise ValueError(f"expected 1-D stencils (N + 1, k) with k odd, got shape {tuple(weight_1d.shape)}")
    n1, k = weight_1d.shape
    if any(a >= n1 or b >= n1 for a, b in alphas):
        raise ValueError(f"multi-indices {alphas} need 1-D stencils of orders up to {max(max(al) for al in alphas)}, "
                         f"got {n1 - 1}")
    x4, lead, c = _as_4d(x)
    r = k // 2
    h, w = x.shape[-2:]
    s1 = weight_1d.to(dtype=x.dtype, device=x.device)
    wx = s1[:, None, None, :]  # (N + 1, 1, 1, k): order a along x (columns)
    gx = F.conv2d(_pad(x4, (r, r, 0, 0), padding), wx.repeat(c, 1, 1, 1) if c > 1 else wx, groups=c)
    a_idx = torch.tensor([a for a, _ in alphas], device=x.device)
    b_idx = torch.tensor([b for _, b in alphas], device=x.device)
    sel = (torch.arange(c, device=x.device)[:, None] * n1 + a_idx[None, :]).reshape(-1)
    gsel = gx.index_select(1, sel)  # (B', c * G, H, W)
    wy = s1.flip(-1)[b_idx][:, None, :, None]  # (G, 1, k, 1): order b along y, rows are y reversed
    wy = wy.repeat(c, 1, 1, 1) if c > 1 else wy
    out = F.conv2d(_pad(gsel, (0, 0, r, r), padding), wy, groups=wy.shape[0])
    return out.reshape(*lead, len(alphas), h, w)


def apply_stencils(
    x: torch.Tensor,
    order: int,
    disc: Discretization | str = "fd",
    *,
    padding: str = "zeros",
    path: str = "auto",
) -> torch.Tensor:
    r"""All derivatives :math:`\partial^\alpha x`, alpha in Gamma_N (``N = order``): ``(..., H, W) ->
    (..., |Gamma_N|, H, W)``, same size, ordered as :func:`multi_indices` (see the module doc).

    Args:
        x: floating-point field ``(..., H, W)``; images ``(B, C, H, W)`` give ``(B, C, |Gamma_N|, H, W)``.
        order: derivative order N.
        disc: a :class:`Discretization` or a registered name (kernel 5 then, see :func:`as_discretization`).
        padding: one of :data:`PADDINGS` (default ``"zeros"``).
        path: ``"auto"`` (separable when ``disc.separable`` and k >= 11, see the module doc), ``"dense"`` or
            ``"separable"``.
    """
    order = check_order(order)
    disc = as_discretization(disc)
    if path not in STENCIL_PATHS:
        raise ValueError(f"path must be one of {STENCIL_PATHS}, got {path!r}")
    if path == "separable" and not disc.separable:
        raise ValueError(f"path='separable' needs a separable discretization, got {disc!r}")
    _check_input(x)
    _check_padding(padding)
    disc.check_order(order)
    if path == "separable" or (path == "auto" and disc.separable and disc.kernel_size >= _SEPARABLE_FROM):
        return correlate_separable(x, _cpu_weights(order, disc, True), multi_indices(order), padding=padding)
    return correlate(x, _cpu_weights(order, disc, False), padding=padding)
