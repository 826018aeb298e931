r"""Pooling: over the group (each permutation field -> one invariant channel) and over space.

Spatial pooling commutes with the grid symmetries (rotations by 90 degrees, reflections) exactly when the
pooling windows are placed symmetrically, i.e. when ``(H + 2 padding - kernel_size)`` is divisible by
``stride`` (e.g. 17x17 with kernel 3, stride 2; 16x16 with kernel 2, stride 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..fields import FieldType, Plane
from .base import EquivariantModule
from .nonlinearities import require_permutation_fields

__all__ = ["GroupPool", "MaxPool2d", "AvgPool2d"]


class GroupPool(EquivariantModule):
    r"""Max or mean over the channels of each permutation field: one invariant (trivial) channel per field.

    A permutation :math:`\rho(g)` only reorders the channels of a field, so their max and mean are invariant.

    Args:
        in_type: field type whose representations are permutation representations (regular, quotient,
            trivial); ValueError otherwise.
        mode: "max" or "mean".

    Shape:
        (B, in_type.size, H, W) -> (B, len(in_type), H, W), out_type =
        ``FieldType(G, [G.trivial] * len(in_type), in_type.domain)``; any trailing spatial dims, e.g.
        (B, C, M) on an :class:`~epdo.fields.Ring`.

    >>> from epdo import groups, fields
    >>> G = groups.cyclic(4)
    >>> pool = GroupPool(fields.FieldType(G, [G.regular] * 2))
    >>> pool(torch.arange(8.0).view(1, 8, 1, 1)).flatten().tolist()
    [3.0, 7.0]
    """

    MODES = ("max", "mean")

    def __init__(self, in_type: FieldType, mode: str = "max"):
        require_permutation_fields(in_type, "GroupPool")
        if mode not in self.MODES:
            raise ValueError(f"GroupPool: mode must be one of {self.MODES}, got {mode!r}")
        G = in_type.group
        super().__init__(in_type, FieldType(G, [G.trivial] * len(in_type), in_type.domain))
        self.mode = mode
        sizes = {r.size for r in in_type.representations}
        self._uniform = sizes.pop() if len(sizes) == 1 else None
        self._slices = [(s.start, s.stop) for s in in_type.slices()]

    def _reduce(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.amax(dim=dim) if self.mode == "max" else x.mean(dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self._uniform is not None:  # any trailing spatial dims
            return self._reduce(x.reshape(x.shape[0], len(self.in_type), self._uniform, *x.shape[2:]), 2)
        return torch.stack([self._reduce(x[:, i:j], 1) for i, j in self._slices], dim=1)

    def extra_repr(self) -> str:
        return f"{self.in_type}, mode={self.mode!r}"


def _pool_args(who: str, kernel_size, stride, padding) -> tuple[int, int, int]:
    def as_int(name, v, minimum):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"{who}: {name} must be an int >= {minimum} (square windows keep rotation "
                             f"equivariance), got {v!r}")
        return int(v)

    k = as_int("kernel_size", kernel_size, 1)
    s = k if stride is None else as_int("stride", stride, 1)
    p = as_int("padding", padding, 0)
    if p > k // 2:
        raise ValueError(f"{who}: padding must be at most kernel_size // 2 = {k // 2}, got {p}")
    return k, s, p


class _SpatialPool(EquivariantModule):
    def __init__(self, in_type: FieldType, kernel_size: int, stride: int | None = None, padding: int = 0):
        if isinstance(in_type, FieldType) and not isinstance(in_type.domain, Plane):
            raise ValueError(f"{type(self).__name__} pools (B, C, H, W) images: expected a field type on the "
                             f"Plane, got one on {in_type.domain}")
        super().__init__(in_type, in_type)
        self.kernel_size, self.stride, self.padding = _pool_args(type(self).__name__, kernel_size, stride, padding)

    def extra_repr(self) -> str:
        return f"{self.in_type}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_SpatialPool):
    r"""Channel-wise spatial max pooling, for permutation fields only (max does not commute with other
    :math:`\rho(g)`).

    Args:
        in_type: field type of permutation representations (ValueError otherwise).
        kernel_size, stride (default kernel_size), padding: square windows as in ``torch.nn.MaxPool2d``.

    Shape:
        (B, C, H, W) -> (B, C, H', W'), :math:`H' = \lfloor (H + 2p - k)/s \rfloor + 1`; exactly equivariant
        to grid rotations when ``(H + 2p - k) % s == 0``.
    """

    def __init__(self, in_type: FieldType, kernel_size: int, stride: int | None = None, padding: int = 0):
        require_permutation_fields(in_type, "MaxPool2d")
        super().__init__(in_type, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_SpatialPool):
    r"""Channel-wise spatial average pooling (linear, so equivariant for any fields).

    Zero padding is counted in the average (``count_include_pad=True``, as in torch), which keeps the
    windows symmetric.

    Args:
        in_type: field type (any representations).
        kernel_size, stride (default kernel_size), padding: square windows as in ``torch.nn.AvgPool2d``.

    Shape:
        (B, C, H, W) -> (B, C, H', W'), :math:`H' = \lfloor (H + 2p - k)/s \rfloor + 1`; exactly equivariant
        to grid rotations when ``(H + 2p - k) % s == 0``.

    >>> from epdo import groups, fields
    >>> G = groups.so2(1)
    >>> AvgPool2d(fields.FieldType(G, [G.irrep(0, 1)]), 3, 2)(torch.randn(1, 2, 9, 9)).shape
    torch.Size([1, 2, 4, 4])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)
