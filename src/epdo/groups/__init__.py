"""Groups and their representations (theory layer; numpy only).

Every group implements the :class:`Group` protocol (elements or Haar samples, composition, real irreps,
generators, regular / quotient representations, subgroups): the planar family C_N, D_N, SO(2), O(2)
(:mod:`.planar`), the rotation groups of the tetrahedron, octahedron and icosahedron (:mod:`.polyhedral`),
SO(3) and O(3) with e3nn's Wigner-D irreps (:mod:`.so3`, extra ``epdo[3d]``) and the Euclidean groups
SE(2), E(2) (:mod:`.euclidean`). Groups, elements and representations are frozen values whose ``repr``
evaluates back.

>>> from epdo import groups
>>> G = groups.cyclic(16)
>>> G.regular.size
16
>>> groups.dihedral(4).quotient(groups.dihedral(4).subgroup(4)).size   # D4/C4
2
"""

from .euclidean import EuclideanElement, EuclideanGroup, e2, euclidean, se2
from .group import Group, GroupElement
from .intertwiners import hom_basis, hom_dimension, hom_structure
from .irreps import endomorphism_basis, irrep_dim, irrep_ids, irrep_matrix
from .planar import PlanarElement, PlanarGroup, cyclic, dihedral, o2, so2
from .polyhedral import PolyhedralElement, PolyhedralGroup, icosahedral, octahedral, tetrahedral
from .representation import Representation, decompose, directsum, irrep, quotient, regular, trivial
from .so3 import RotationElement, SO3Group, e3nn_vector_basis, o3, so3

__all__ = [
    "EuclideanElement", "EuclideanGroup", "Group", "GroupElement", "PlanarElement", "PlanarGroup",
    "PolyhedralElement", "PolyhedralGroup", "Representation", "RotationElement", "SO3Group", "cyclic", "decompose",
    "dihedral", "directsum", "e2", "e3nn_vector_basis", "endomorphism_basis", "euclidean", "hom_basis",
    "hom_dimension", "hom_structure", "icosahedral", "irrep", "irrep_dim", "irrep_ids", "irrep_matrix", "o2", "o3",
    "octahedral", "quotient", "regular", "se2", "so2", "so3", "tetrahedral", "trivial",
]
