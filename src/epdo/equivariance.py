r"""Measure how equivariant a module is: :math:`\|f(g\cdot x) - g\cdot f(x)\| / \|f(x)\|` per group element.

Rotations by multiples of 90 degrees and reflections act exactly on square grids (``torch.rot90`` /
``flip``), so the error there should be round-off only. Other angles are applied by bicubic interpolation
(:meth:`epdo.fields.FieldType.transform`); the error then also contains discretisation and interpolation
error, is measured inside a centred disc (the corners leave the image) and is meaningful on ``"smooth"``
(band-limited) input only.

>>> import epdo
>>> from epdo import groups, fields, nn
>>> G = groups.cyclic(4)
>>> t = fields.FieldType(G, [G.regular])
>>> report = epdo.check_equivariance(nn.ReLU(t), size=9)
>>> report.max_error() < 1e-12
True
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from .fields import FieldType
from .groups import GroupElement

__all__ = ["check_equivariance", "EquivarianceReport", "EquivarianceRow", "smooth_field"]

_INPUTS = ("random", "smooth")


@dataclass(frozen=True)
class EquivarianceRow:
    """One group element's result: ``error`` = ||f(g.x) - g.f(x)|| / ||f(x)|| (inside the disc if not exact)."""

    element: GroupElement
    angle: float  # degrees, in [0, 360)
    flip: int
    error: float
    exact: bool  # the element maps the pixel grid onto itself (multiple of 90 degrees, square image)


class EquivarianceReport(list):
    """A list of :class:`EquivarianceRow` with a table as ``str`` and :meth:`max_error`."""

    def max_error(self, exact_only: bool = True) -> float:
        """Largest relative error over grid-exact elements (``exact_only``) or over all elements."""
        errs = [r.error for r in self if r.exact or not exact_only]
        return max(errs, default=0.0)

    def __str__(self) -> str:
        lines = [f"{'element':<28} {'angle':>8} {'flip':>4} {'rel. error':>11}  exact"]
        for r in self:
            lines.append(f"{r.element!r:<28} {r.angle:8.2f} {r.flip:>4d} {r.error:11.3e}  {'yes' if r.exact else 'no'}")
        return "\n".join(lines)

    def plot(self, path: str) -> None:
        """Save relative error vs angle (log scale) to ``path`` (needs matplotlib)."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("check_equivariance(plot=...) needs matplotlib: pip install matplotlib") from e
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for flip, marker in ((0, "o"), (1, "s")):
            rows = sorted((r for r in self if r.flip == flip), key=lambda r: r.angle)
            if rows:
                ax.semilogy([r.angle for r in rows], [max(r.error, 1e-17) for r in rows], marker=marker, ls="-",
                            label="rotation" if flip == 0 else "rotation after flip")
        ax.set_xlabel("angle (degrees)")
        ax.set_ylabel("relative equivariance error")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def smooth_field(shape: Sequence[int], sigma: float = 2.0, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Band-limited random field: white noise low-pass filtered with a Gaussian of ``sigma`` pixels
    (in Fourier space, periodic), rescaled to unit standard deviation per channel."""
    noise = torch.randn(*shape, generator=generator, dtype=torch.float64)
    h, w = shape[-2:]
    ky = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    gain = torch.exp(-2 * (math.pi * sigma) ** 2 * (kx**2 + ky**2))
    out = torch.fft.ifft2(torch.fft.fft2(noise) * gain).real
    out = out / out.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return out.to(dtype)


def _is_grid_exact(g: GroupElement, h: int, w: int) -> bool:
    m = torch.as_tensor(g.matrix)
    if not torch.allclose(m, m.round(), atol=1e-12):
        return False
    quarter = abs(float(m[0, 1])) > 0.5  # 90 or 270 degrees: needs a square image
    return h == w or not quarter


def _default_elements(group, n_angles: int = 24) -> tuple[GroupElement, ...]:
    if group.is_finite:
        return group.elements
    flips = (0, 1) if group.reflections else (0,)
    return tuple(group.element(s, 2 * math.pi * k / n_angles) for s in flips for k in range(n_angles))


def _disc(h: int, w: int, radius: float, dtype, device) -> torch.Tensor:
    i = torch.arange(h, dtype=dtype, device=device)[:, None] - (h - 1) / 2
    j = torch.arange(w, dtype=dtype, device=device)[None, :] - (w - 1) / 2
    return ((i**2 + j**2) <= radius**2).to(dtype)


@torch.no_grad()
def check_equivariance(module: torch.nn.Module, in_type: FieldType | None = None, out_type: FieldType | None = None,
                       elements: Iterable[GroupElement] | None = None, input: str = "random", size: int = 17,
                       batch: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64, plot: str | None = None,
                       margin: float = 3.0) -> EquivarianceReport:
    r"""Relative equivariance error of ``module`` for each group element.

    For each g: :math:`\|f(g\cdot x) - g\cdot f(x)\| / \|f(x)\|` on a ``(batch, in_type.size, size, size)``
    input. Elements that map the grid to itself are exact; for the others both norms are taken inside the
    centred disc of radius ``(size - 1)/2 - margin`` pixels (scaled to the output size), since the image
    corners leave the picture and bicubic interpolation needs ~2 pixels.

    The module runs in eval mode (its and its submodules' modes are restored afterwards), without
    autograd, in ``dtype``: if its floating parameters or buffers have another dtype, a converted deep copy is
    checked and the module itself is left untouched.

    Args:
        module: maps (B, in_type.size, H, W) tensors to (B, out_type.size, H', W') tensors (square, H' = W').
        in_type, out_type: default ``module.in_type`` / ``module.out_type``.
        elements: group elements of ``in_type.group``; default all elements of a finite group, and 24
            rotations (every 15 degrees, with and without flip for O(2)) of a continuous one.
        input: "random" (i.i.d. Gaussian) or "smooth" (:func:`smooth_field`, Gaussian low-pass, sigma 2 px).
        size, batch, seed: input shape and random seed (the global RNG is not touched).
        dtype: computation dtype.
        plot: if a path, save error vs angle there (matplotlib, imported lazily).
        margin: pixels between the measurement disc and the image border, for non-grid elements.

    Returns:
        :class:`EquivarianceReport`, a list of rows (element, angle in degrees, flip, error, exact).
    """
    in_type = getattr(module, "in_type", None) if in_type is None else in_type
    out_type = getattr(module, "out_type", None) if out_type is None else out_type
    for name, t in (("in_type", in_type), ("out_type", out_type)):
        if not isinstance(t, FieldType):
            raise TypeError(f"check_equivariance: {name} must be an epdo.fields.FieldType (the module has none), "
                            f"got {type(t).__name__}")
    if in_type.group != out_type.group:
        raise ValueError(f"check_equivariance: in_type is of {in_type.group.name}, out_type of {out_type.group.name}")
    if input not in _INPUTS:
        raise ValueError(f"check_equivariance: input must be one of {_INPUTS}, got {input!r}")
    if not isinstance(size, int) or size < 1 or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"check_equivariance: size and batch must be positive ints, got size={size!r}, batch={batch!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"check_equivariance: dtype must be a floating torch.dtype, got {dtype!r}")
    group = in_type.group
    elements = _default_elements(group) if elements is None else tuple(elements)
    for g in elements:
        if not isinstance(g, GroupElement) or g.group != group:
            raise TypeError(f"check_equivariance: elements must be elements of {group.name}, got {g!r}")

    tensors = list(module.parameters()) + list(module.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    target = module
    if any(t.is_floating_point() and t.dtype != dtype for t in tensors):
        target = copy.deepcopy(module).to(dtype)
    modes = {m: m.training for m in target.modules()}
    target.eval()
    try:
        gen = torch.Generator().manual_seed(seed)
        shape = (batch, in_type.size, size, size)
        x = torch.randn(*shape, generator=gen, dtype=dtype) if input == "random" else smooth_field(shape, generator=gen, dtype=dtype)
        x = x.to(device)
        y = target(x)
        if y.dim() != 4 or y.shape[1] != out_type.size or y.shape[-1] != y.shape[-2]:
            raise ValueError(f"check_equivariance: expected a square output of shape (B, {out_type.size}, H, H) "
                             f"for {out_type}, got {tuple(y.shape)}")
        radius_in = (size - 1) / 2 - margin
        mask = _disc(y.shape[-2], y.shape[-1], radius_in * y.shape[-1] / size, dtype, device)
        report = EquivarianceReport()
        for g in elements:
            exact = _is_grid_exact(g, size, size)
            gy = out_type.transform(y, g)
            ygx = target(in_type.transform(x, g))
            m = 1.0 if exact else mask
            num = torch.linalg.vector_norm((ygx - gy) * m)
            den = torch.linalg.vector_norm(y * m)
            err = float(num / den) if den > 0 else (0.0 if num == 0 else math.inf)
            report.append(EquivarianceRow(g, math.degrees(g.angle) % 360.0, int(g.flip), err, exact))
    finally:
        for m, mode in modes.items():
            m.training = mode
    if plot is not None:
        report.plot(plot)
    return report
