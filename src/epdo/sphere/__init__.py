"""PDO-eS2CNN on the icosphere (paper 002): meshes, tangent-plane derivatives, rotated PDO layers."""

from .mesh import Icosphere, icosphere, num_vertices, section

__all__ = ["Icosphere", "icosphere", "num_vertices", "section"]
