r"""The equivariant linear-map solver: bases of :math:`\mathrm{Hom}_G(\rho_{in}, \rho_{out})`.

:math:`\{W : W\rho_{in}(g) = \rho_{out}(g) W\ \forall g\}`. With both representations decomposed,
:math:`W = Q_{out} M Q_{in}^{-1}` where M is block-sparse in irrep coordinates: the block between an
output copy and an input copy of the same irrep psi is any endomorphism of psi (1 parameter for real-type
irreps, 2 for complex-type ones such as those of C_N and SO(2), 4 for quaternionic type); all other blocks vanish
(Schur's lemma). This holds for every group of the protocol: the decompositions of finite groups are solved on
their generators, those of continuous groups through their (band-limited) irreps. Everything is computed once
in float64 and cached per (group, rho_in, rho_out) (a representation carries its group); every cached array
is read-only, so no caller can corrupt the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .group import readonly
from .representation import Representation

__all__ = ["HomStructure", "hom_structure", "hom_basis", "hom_dimension"]


@dataclass(frozen=True, eq=False)
class HomStructure:
    """Sparse description of Hom(rho_in, rho_out) in irrep coordinates.

    ``M[row[e], col[e]] += value[e] * w[param[e]]`` for a parameter vector ``w`` of length ``n_params``
    gives M; ``W = q_out @ M @ q_in_inv``.
    """

    n_params: int
    param: np.ndarray
    row: np.ndarray
    col: np.ndarray
    value: np.ndarray
    q_out: np.ndarray
    q_in_inv: np.ndarray


@lru_cache(maxsize=None)
def hom_structure(rho_in: Representation, rho_out: Representation) -> HomStructure:
    """The Schur-block structure of Hom_G(rho_in, rho_out) (cached; arrays read-only)."""
    for r in (rho_in, rho_out):
        if not isinstance(r, Representation):
            raise TypeError(f"hom_structure takes two epdo.groups.Representation values, got {r!r}")
    if rho_in.group != rho_out.group:
        raise ValueError(f"representations of different groups: {rho_in.group.name} and {rho_out.group.name}")
    group = rho_in.group
    param, row, col, value = [], [], [], []
    n = 0
    for psi_o, so in rho_out.irrep_slices():
        for psi_i, si in rho_in.irrep_slices():
            if psi_o != psi_i:
                continue
            for e in group.endomorphism_basis(psi_o):
                rr, cc = np.nonzero(e)
                param += [n] * len(rr)
                row += list(so.start + rr)
                col += list(si.start + cc)
                value += list(e[rr, cc])
                n += 1
    ints = [np.array(v, dtype=np.int64) for v in (param, row, col)]
    for a in ints:
        a.setflags(write=False)
    return HomStructure(n, *ints, readonly(value), rho_out.change_of_basis, rho_in.change_of_basis_inv)


def hom_dimension(rho_in: Representation, rho_out: Representation) -> int:
    """dim Hom_G(rho_in, rho_out) = sum over irreps of m_in * m_out * dim End(psi)."""
    return hom_structure(rho_in, rho_out).n_params


@lru_cache(maxsize=None)
def _hom_basis(rho_in: Representation, rho_out: Representation) -> np.ndarray:
    s = hom_structure(rho_in, rho_out)
    m = np.zeros((s.n_params, rho_out.size, rho_in.size))
    m[s.param, s.row, s.col] = s.value
    out = s.q_out @ m @ s.q_in_inv
    out.setflags(write=False)
    return out


def hom_basis(rho_in: Representation, rho_out: Representation) -> np.ndarray:
    """A basis of Hom_G(rho_in, rho_out) as a float64 array ``(n, d_out, d_in)``.

    Orthogonal in the Frobenius inner product when both representations are orthogonal.
    """
    return _hom_basis(rho_in, rho_out)
