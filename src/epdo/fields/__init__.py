"""Typed feature fields and the domains they live on (the plane of images, a ring of points).

>>> import epdo
>>> G = epdo.groups.dihedral(4)
>>> str(epdo.fields.FieldType(G, [G.regular] * 2, epdo.fields.Ring(8)))
'FieldType(D4: 2xregular; size=16 on Ring(8))'
"""

from .domain import Domain, Plane, Ring, smooth_field, transform_plane
from .field_type import FieldType

__all__ = ["Domain", "FieldType", "Plane", "Ring", "smooth_field", "transform_plane"]
