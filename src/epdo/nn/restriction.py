r"""Companions of the equivariant networks: restriction D_N -> C_N and the centre crop.

Moved here from :mod:`epdo.models.mnist_rot` (which still re-exports them, so checkpoints and the model
registry are unchanged: neither module has persistent state).
"""

from __future__ import annotations

import numpy as np
import torch

from ..fields import FieldType, Plane
from ..groups import Representation
from .base import EquivariantModule
from .nonlinearities import is_permutation_representation
from .pdo_base import check_int

__all__ = ["CenterCrop", "RestrictToRotations"]


class RestrictToRotations(EquivariantModule):
    r"""Restrict permutation fields of D_N to C_N and reorder channels so that they become C_N regular/quotient fields.

    A D_N regular field restricted to C_N is two C_N regular fields in a permuted basis (e2cnn's
    ``RestrictionModule`` followed by ``DisentangleModule``); each orbit of the rotations on a field's basis
    vectors becomes one C_N field: for the generator r (rotation by 2 pi / N), :math:`\rho(r) e_c = e_{\pi(c)}`,
    and the orbit :math:`(c, \pi(c), \pi^2(c), \dots)` of length L carries the regular representation of
    :math:`C_L`, i.e. the quotient :math:`C_N / C_{N/L}`. The output is a channel permutation of the input,
    exact in any precision.

    Shape: ``(B, in_type.size, ...) -> (B, in_type.size, ...)``.

    >>> from epdo import groups, fields
    >>> D = groups.dihedral(4)
    >>> m = RestrictToRotations(fields.FieldType(D, [D.regular]))
    >>> print(m.out_type)
    FieldType(C4: 2xregular; size=8)
    """

    def __init__(self, in_type: FieldType):
        if not isinstance(in_type, FieldType):
            raise TypeError(f"RestrictToRotations: in_type must be an epdo.fields.FieldType, "
                            f"got {type(in_type).__name__}")
        G = in_type.group
        if not (G.is_finite and G.reflections):
            raise ValueError(f"RestrictToRotations: expected fields of a dihedral group, got {in_type}")
        C = G.subgroup(G.N, False)
        r = G.element(0, 1)
        perm: list[int] = []
        out_reps: list[Representation] = []
        start = 0
        for rep in in_type:
            if not is_permutation_representation(rep):
                raise ValueError(f"RestrictToRotations: field {rep!r} is not a permutation representation")
            image = np.asarray(rep(r)).argmax(0)  # rho(r) e_c = e_image[c]
            seen = np.zeros(rep.size, bool)
            for b in range(rep.size):
                if seen[b]:
                    continue
                orbit = [b]
                while image[orbit[-1]] != b:
                    orbit.append(int(image[orbit[-1]]))
                seen[orbit] = True
                out_reps.append(C.regular if len(orbit) == C.N else C.quotient(C.subgroup(C.N // len(orbit))))
                perm.extend(start + c for c in orbit)
            start += rep.size
        super().__init__(in_type, FieldType(C, out_reps, in_type.domain))
        self.register_buffer("_perm", torch.as_tensor(perm, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x.index_select(1, self._perm)


class CenterCrop(EquivariantModule):
    r"""Drop ``margin`` pixels on every side of an image (a 'valid' layer after a 'same' one).

    Commutes with the grid rotations by 90 degrees and the flips (the crop is symmetric about the centre) and
    acts on no channel, so it is equivariant for any field type.

    Shape: ``(B, C, H, W) -> (B, C, H - 2 margin, W - 2 margin)``.

    >>> from epdo import groups, fields
    >>> G = groups.cyclic(4)
    >>> CenterCrop(fields.FieldType(G, [G.regular]), 2)(torch.zeros(1, 4, 9, 9)).shape
    torch.Size([1, 4, 5, 5])
    """

    def __init__(self, in_type: FieldType, margin: int):
        super().__init__(in_type, in_type)
        if not isinstance(in_type.domain, Plane):
            raise ValueError(f"CenterCrop crops images on the plane, got a field type on {in_type.domain!r}")
        self.margin = check_int(margin, "margin", "CenterCrop", 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        m = self.margin
        if not m:
            return x
        if min(x.shape[-2:]) <= 2 * m:
            raise ValueError(f"CenterCrop: margin {m} leaves nothing of an image of size {tuple(x.shape[-2:])}; "
                             f"expected H, W > {2 * m}")
        return x[..., m:-m, m:-m]

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
