"""PDO-eS2CNN on the icosphere (paper 002): meshes, tangent-plane derivatives, rotated PDO layers.

See :mod:`epdo.sphere.mesh` (the icosphere, the section and the convention for A_R),
:mod:`epdo.sphere.derivatives`, :mod:`epdo.sphere.domain` (the :class:`Sphere` domain) and
:mod:`epdo.sphere.layers`.
"""

from .domain import Sphere
from .layers import (SphereGroupPool, SphereLifting, SpherePDOConv, SpherePool, rotated_operator,
                     rotation_matrices, sphere_type)
from .mesh import Icosphere, icosphere, num_vertices, section

__all__ = ["Icosphere", "icosphere", "num_vertices", "section", "Sphere", "SphereLifting", "SpherePDOConv",
           "SphereGroupPool", "SpherePool", "sphere_type", "rotated_operator", "rotation_matrices"]
