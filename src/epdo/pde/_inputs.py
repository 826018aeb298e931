"""Input checks of the PDE classes, and instability errors that blame the input before the step size.

The PDE layers evolve real images in [0, 1]: the stencils are cast to the input's dtype (an integer input
would turn them into zeros), the invariants are real rational functions of the derivatives (no complex
input), and the scale invariants' guard ``eps`` is in the intensity units of [0, 1] images.
"""

from __future__ import annotations

from typing import TypeVar

import torch

__all__ = ["RANGE_LIMIT", "check_field", "blame_input"]

#: Inputs beyond ``[-RANGE_LIMIT, RANGE_LIMIT]`` are far outside [0, 1] (e.g. 0..255 pixels).
RANGE_LIMIT = 10.0


def check_field(x: object, who: str, finite: bool = True) -> None:
    """``TypeError`` unless ``x`` is a real floating tensor; ``ValueError`` if it holds NaN or inf
    (checked only with ``finite=True``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: expected a float tensor (B, C, H, W), got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{who}: expected a real float tensor, got dtype {x.dtype} (the invariants are real functions of the derivatives)")
    if not x.is_floating_point():
        raise TypeError(
            f"{who}: expected float images in [0, 1], got dtype {x.dtype} (the stencils would be cast to "
            f"{x.dtype} and vanish; convert uint8 images with x.float() / 255)"
        )
    if finite and x.numel() and not bool(torch.isfinite(x.detach()).all()):
        bad = int((~torch.isfinite(x.detach())).sum())
        raise ValueError(f"{who}: the input holds {bad} NaN/inf value(s) of {x.numel()}; expected finite images in [0, 1]")


E = TypeVar("E", bound=Exception)


def blame_input(err: E, x: torch.Tensor) -> E:
    """``err`` (a :class:`~epdo.pde.PDEStabilityError`) with the input named first when it is far outside [0, 1] (the step size is then not the
    first suspect), else ``err`` itself."""
    if x.numel() == 0 or getattr(err, "blames_input", False):
        return err
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if lo >= -RANGE_LIMIT and hi <= RANGE_LIMIT:
        return err
    new = type(err)(
        f"the input ranges over [{lo:g}, {hi:g}], far outside the images in [0, 1] the PDEs are made for (their "
        f"eps and coefficients are in those units): scale it (divide 0..255 pixels by 255); only for inputs in "
        f"[0, 1] is the step size at fault: {err}"
    )
    new.blames_input = True
    return new
