r"""Feature field types: a group and a list of representations, one per field (paper 000 Eq. 2).

A tensor ``x`` of shape ``(B, size, H, W)`` is a :class:`FieldType`-field when its channels are the
concatenation of the fields' fibres. The group acts by

.. math:: (g \cdot f)(x) = \rho(g)\, f(g^{-1} x),

exactly (torch.rot90 / flip) for rotations by multiples of 90 degrees and reflections, and by interpolation
(``grid_sample``) for other angles.
"""

from __future__ import annotations

from functools import cached_property
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..groups import Group, GroupElement, Representation, directsum

__all__ = ["FieldType"]


class FieldType:
    """An immutable list of representations of one group; ``size`` channels in all.

    >>> from epdo import groups, fields
    >>> G = groups.cyclic(8)
    >>> t = fields.FieldType(G, [G.regular] * 3)
    >>> t.size, len(t)
    (24, 3)
    """

    def __init__(self, group: Group, representations: Iterable[Representation]):
        if not isinstance(group, Group):
            raise TypeError(f"FieldType expects an epdo.groups.Group, got {type(group).__name__}")
        reps = tuple(representations)
        if not reps:
            raise ValueError("a FieldType needs at least one representation")
        for r in reps:
            if not isinstance(r, Representation):
                raise TypeError(f"FieldType expects Representations, got {type(r).__name__}")
            if r.group != group:
                raise ValueError(f"representation {r!r} is of group {r.group.name}, not of {group.name}")
        self.group = group
        self.representations = reps
        self._hash = hash((group, reps))

    # --- values ---------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return sum(r.size for r in self.representations)

    def __len__(self) -> int:
        return len(self.representations)

    def __iter__(self):
        return iter(self.representations)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldType) and self.group == other.group and self.representations == other.representations

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        parts: list[str] = []
        prev, count = None, 0
        for r in self.representations + (None,):
            if r is not None and prev is not None and r == prev:
                count += 1
                continue
            if prev is not None:
                parts.append(f"{count}x{prev.name}" if count > 1 else prev.name)
            prev, count = r, 1
        return f"FieldType({self.group.name}: {', '.join(parts)}; size={self.size})"

    def __add__(self, other: "FieldType") -> "FieldType":
        if not isinstance(other, FieldType) or other.group != self.group:
            raise ValueError(f"can only add FieldTypes of {self.group.name}")
        return FieldType(self.group, self.representations + other.representations)

    @cached_property
    def representation(self) -> Representation:
        """The direct sum of all fields' representations (size x size)."""
        return directsum(*self.representations)

    def slices(self) -> list[slice]:
        out, i = [], 0
        for r in self.representations:
            out.append(slice(i, i + r.size))
            i += r.size
        return out

    def restrict(self, subgroup: Group) -> "FieldType":
        """The same fields seen as fields of a subgroup (e.g. D16 -> C16)."""
        return FieldType(subgroup, [r.restrict(subgroup) for r in self.representations])

    @property
    def is_trivial(self) -> bool:
        return all(r.irreps == ((0, 0),) for r in self.representations)

    # --- checks ---------------------------------------------------------------------------------
    def check(self, x: torch.Tensor, who: str = "input") -> None:
        """Raise ValueError unless ``x`` is a tensor of shape (B, size, H, W)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{who}: expected a torch.Tensor of field type {self}, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.size:
            raise ValueError(f"{who}: expected a tensor of shape (B, {self.size}, H, W) for {self}, "
                             f"got shape {tuple(x.shape)}")

    # --- the group action -----------------------------------------------------------------------
    def fiber_matrix(self, g: GroupElement) -> np.ndarray:
        """rho(g) on all channels (block diagonal, float64)."""
        return self.representation(g)

    def transform(self, x: torch.Tensor, g: GroupElement, mode: str = "bicubic") -> torch.Tensor:
        """(g . f)(p) = rho(g) f(g^{-1} p) for a tensor (B, size, H, W) about the image centre.

        Exact for rotations by multiples of 90 degrees (square images) and reflections; other angles use
        ``grid_sample`` (``mode`` 'bicubic' or 'bilinear', zeros outside), exact only inside a disc and up to
        interpolation error.
        """
        self.check(x, "transform")
        if not isinstance(g, GroupElement) or g.group != self.group:
            raise TypeError(f"transform takes an element of {self.group.name}, got {g!r}")
        rho = torch.as_tensor(np.array(self.fiber_matrix(g)), dtype=x.dtype, device=x.device)  # writable copy
        y = torch.einsum("oc,bchw->bohw", rho, x)
        return transform_plane(y, g.matrix, mode)


def transform_plane(x: torch.Tensor, matrix: np.ndarray, mode: str = "bicubic") -> torch.Tensor:
    """Move the plane only: ``out(p) = x(A^{-1} p)`` for an orthogonal 2x2 A in the (x right, y up) frame."""
    a = np.asarray(matrix, dtype=np.float64)
    r90 = np.array([[0.0, -1.0], [1.0, 0.0]])
    flip = np.diag([1.0, -1.0])
    for s in (0, 1):
        for k in range(4):
            cand = np.linalg.matrix_power(r90, k) @ (flip if s else np.eye(2))
            if np.allclose(a, cand, atol=1e-12) and (k % 2 == 0 or x.shape[-1] == x.shape[-2]):
                y = torch.flip(x, dims=(-2,)) if s else x
                return torch.rot90(y, k, dims=(-2, -1)) if k else y
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotating by a non-grid angle needs square images, got {tuple(x.shape[-2:])}")
    s = np.diag([1.0, -1.0])
    theta = s @ np.linalg.inv(a) @ s
    th = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype, device=x.device)
    th[:, :, :2] = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
    grid = F.affine_grid(th, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
