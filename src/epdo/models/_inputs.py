"""The input contract of every registered model: float images in [0, 1] of shape ``(B, C, H, W)``.

:func:`check_images` rejects what a model cannot use correctly (a non-tensor, integer, boolean or complex
dtype, a wrong shape, NaN/inf pixels) with a message naming what was expected and what was received, and
warns once per model (:class:`InputRangeWarning`) about float images far outside [0, 1], e.g. uint8
pixels 0..255 converted with ``.float()`` but not divided by 255.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

__all__ = ["InputRangeWarning", "check_images", "RANGE_LIMIT"]

#: Values beyond ``[-RANGE_LIMIT, RANGE_LIMIT]`` are "far outside [0, 1]" (0..255 pixels are; normalised
#: images, about -0.5..3, are not).
RANGE_LIMIT = 10.0


class InputRangeWarning(UserWarning):
    """Float input images far outside [0, 1] (each model warns once)."""


def check_images(
    module: nn.Module,
    x: object,
    channels: int,
    size: Sequence[int] | None = None,
    *,
    who: str | None = None,
) -> None:
    """Check ``x`` against the contract "float images in [0, 1], ``(B, channels, *size)``".

    ``size``: the required ``(H, W)``, or ``None`` for any. ``TypeError`` for a non-tensor or a non-float
    dtype, ``ValueError`` for a wrong shape or NaN/inf pixels; an :class:`InputRangeWarning` (once per
    ``module``) if ``|x| > RANGE_LIMIT`` somewhere. A module with ``check_values = False`` (a network used
    after another layer, e.g. the head of :class:`~epdo.models.eqpdenet.EqPdeNet`) checks dtype and shape only.
    """
    who = who or getattr(module, "epdo_model_name", None) or type(module).__name__
    hw = "H, W" if size is None else ", ".join(str(int(s)) for s in size)
    contract = f"float images in [0, 1] of shape (B, {channels}, {hw})"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: expected {contract}, got {type(x).__name__}")
    if not x.is_floating_point():
        hint = " (convert uint8 images with x.float() / 255)" if not (x.is_complex() or x.dtype == torch.bool) else ""
        raise TypeError(f"{who}: expected {contract}, got dtype {x.dtype}{hint}")
    if x.dim() != 4 or x.shape[1] != channels or (size is not None and tuple(x.shape[2:]) != tuple(size)):
        raise ValueError(f"{who}: expected images (B, {channels}, {hw}), got {tuple(x.shape)} ({contract})")
    if not getattr(module, "check_values", True) or x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if not (abs(lo) < float("inf") and abs(hi) < float("inf")):  # NaN compares false
        bad = int((~torch.isfinite(x.detach())).sum())
        raise ValueError(f"{who}: the input holds {bad} NaN/inf value(s); expected {contract}")
    if (lo < -RANGE_LIMIT or hi > RANGE_LIMIT) and not getattr(module, "_epdo_range_warned", False):
        module._epdo_range_warned = True
        warnings.warn(
            f"{who}: input values in [{lo:g}, {hi:g}] are far outside [0, 1]; the model expects {contract} "
            "(divide 0..255 pixels by 255). Warned once per model.",
            InputRangeWarning,
            stacklevel=3,
        )
