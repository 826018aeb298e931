r"""Real irreducible representations of C_N, D_N, SO(2) and O(2).

An irrep is named by ``(j, k)``: ``k`` is the frequency, ``j`` the reflection index.

- C_N, SO(2): ``(0, k)``; k = 0 trivial, k = N/2 the sign rep :math:`(-1)^m`, else the 2x2 rotation
  :math:`R(k\theta)` (complex type: its endomorphisms are spanned by I and R(pi/2)).
- D_N, O(2): ``(0, 0)`` trivial, ``(1, 0)`` the reflection sign :math:`(-1)^s`; for N even ``(0, N/2)`` and
  ``(1, N/2)`` (:math:`(-1)^m` and :math:`(-1)^{m+s}`); ``(1, k)`` the 2x2 :math:`R(k\theta) F^s` (real type).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .group import Group, GroupElement

__all__ = ["irrep_ids", "irrep_dim", "irrep_matrix", "endomorphism_basis", "irrep_name"]

_J = np.array([[0.0, -1.0], [1.0, 0.0]])


def irrep_ids(group: Group) -> tuple[tuple[int, int], ...]:
    """All irreps of a finite group; those of frequency <= max_frequency for a continuous one."""
    kmax = group.N // 2 if group.is_finite else group.max_frequency
    if not group.reflections:
        return tuple((0, k) for k in range(kmax + 1))
    ids = [(0, 0), (1, 0)]
    for k in range(1, kmax + 1):
        if group.is_finite and 2 * k == group.N:
            ids += [(0, k), (1, k)]
        else:
            ids.append((1, k))
    return tuple(ids)


def _check(group: Group, irrep: tuple[int, int]) -> None:
    j, k = irrep
    if group.is_finite:
        ok = irrep in irrep_ids(group)
    else:
        ok = (j, k) in irrep_ids(Group(0, group.reflections, max(k, 0))) if k >= 0 else False
    if not ok:
        raise ValueError(f"{irrep!r} is not an irrep of {group.name}; valid: {irrep_ids(group)}"
                         + ("" if group.is_finite else " (and higher frequencies)"))


def irrep_dim(group: Group, irrep: tuple[int, int]) -> int:
    _check(group, irrep)
    j, k = irrep
    if k == 0 or (group.is_finite and 2 * k == group.N):
        return 1
    return 2


def irrep_name(group: Group, irrep: tuple[int, int]) -> str:
    j, k = irrep
    return f"{group.name}.irrep({j},{k})"


def irrep_matrix(group: Group, irrep: tuple[int, int], g: GroupElement) -> np.ndarray:
    """The matrix of irrep ``(j, k)`` at element ``g`` (float64)."""
    j, k = irrep
    if irrep_dim(group, irrep) == 1:
        if k == 0:
            return np.array([[(-1.0) ** (j * g.flip)]])
        # frequency N/2: (-1)^m, times (-1)^s for j = 1
        return np.array([[(-1.0) ** (int(g.rotation) + j * g.flip)]])
    t = k * g.angle
    if group.is_finite and (4 * k * int(g.rotation)) % group.N == 0:
        c, s = float(round(np.cos(t))), float(round(np.sin(t)))
    else:
        c, s = np.cos(t), np.sin(t)
    m = np.array([[c, -s], [s, c]])
    return m @ np.diag([1.0, -1.0]) if g.flip else m


@lru_cache(maxsize=None)
def endomorphism_basis(group: Group, irrep: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """An orthogonal basis of the matrices commuting with the irrep: (I,) or (I, R(pi/2)) for complex type."""
    d = irrep_dim(group, irrep)
    if d == 2 and not group.reflections:
        return (np.eye(2), _J.copy())
    return (np.eye(d),)
