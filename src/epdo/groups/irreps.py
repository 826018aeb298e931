r"""Module-level access to the real irreps of any :class:`~epdo.groups.Group` (delegates to its methods).

Irrep ids are tuples of ints whose meaning each group documents: ``(j, k)`` for C_N, D_N, SO(2), O(2)
(:mod:`.planar`); ``(i,)`` for the polyhedral groups (:mod:`.polyhedral`); ``(l,)`` for SO(3) and ``(l, p)``
for O(3) (:mod:`.so3`).

>>> from epdo import groups
>>> groups.irrep_dim(groups.cyclic(8), (0, 2)), groups.irrep_dim(groups.dihedral(8), (1, 0))
(2, 1)
"""

from __future__ import annotations

import numpy as np

from .group import Group, GroupElement, IrrepId

__all__ = ["irrep_ids", "irrep_dim", "irrep_matrix", "endomorphism_basis", "irrep_name"]


def _group(group: object) -> Group:
    if not isinstance(group, Group):
        raise TypeError(f"expected an epdo.groups.Group, got {group!r}")
    return group


def irrep_ids(group: Group) -> tuple[IrrepId, ...]:
    """All irreps of a finite group; those of frequency <= the band limit for a continuous one."""
    return _group(group).irrep_ids()


def irrep_dim(group: Group, irrep: IrrepId) -> int:
    return _group(group).irrep_dim(irrep)


def irrep_name(group: Group, irrep: IrrepId) -> str:
    return f"{group.name}.irrep({','.join(str(v) for v in irrep)})"


def irrep_matrix(group: Group, irrep: IrrepId, g: GroupElement) -> np.ndarray:
    """The matrix of ``irrep`` at element ``g`` (float64, read-only)."""
    return _group(group).irrep_matrix(irrep, g)


def endomorphism_basis(group: Group, irrep: IrrepId) -> tuple[np.ndarray, ...]:
    """An orthogonal basis of the matrices commuting with the irrep: (I,) for real type, (I, J) for complex
    type (J^2 = -I), four matrices for quaternionic type."""
    return _group(group).endomorphism_basis(irrep)
