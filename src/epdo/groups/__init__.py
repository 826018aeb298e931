"""Groups acting on the plane and their representations (theory layer; numpy only).

>>> from epdo import groups
>>> G = groups.cyclic(16)
>>> G.regular.size
16
>>> groups.dihedral(4).quotient(groups.dihedral(4).subgroup(4)).size   # D4/C4
2
"""

from .group import Group, GroupElement, cyclic, dihedral, o2, so2
from .intertwiners import hom_basis, hom_dimension
from .irreps import endomorphism_basis, irrep_dim, irrep_ids, irrep_matrix
from .representation import Representation, decompose, directsum, irrep, quotient, regular, trivial


def _install_group_shortcuts() -> None:
    """``G.trivial``, ``G.regular``, ``G.irrep(j, k)``, ``G.quotient(H)``, ``G.irreps`` on every Group."""
    Group.trivial = property(trivial)
    Group.regular = property(regular)
    Group.irrep = irrep
    Group.quotient = quotient
    Group.irreps = property(lambda g: [irrep(g, *i) for i in irrep_ids(g)])


_install_group_shortcuts()

__all__ = [
    "Group", "GroupElement", "Representation", "cyclic", "decompose", "dihedral", "directsum",
    "endomorphism_basis", "hom_basis", "hom_dimension", "irrep", "irrep_dim", "irrep_ids", "irrep_matrix",
    "o2", "quotient", "regular", "so2", "trivial",
]
