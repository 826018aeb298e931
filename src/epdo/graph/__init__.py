r"""Equivariant message passing on point clouds (paper 003 sections 8-9).

- graph construction (:func:`radius_graph`, :func:`knn_graph`, :func:`fully_connected_graph`), batched, pure torch;
- the :class:`PointCloud` domain (signals ``(features, positions, edge_index)``) and the lifted
  :class:`PositionOrientationCloud`, with field types of ``epdo.groups.o3(L)`` / ``so3(L)`` irreps
  (:func:`irreps_field_type`);
- layers: :class:`EGNNLayer` (E(n)-invariant messages on distances, coordinate updates; Satorras et al. 2021),
  :class:`SEGNNLayer` (steerable messages from e3nn tensor products with the edges' spherical harmonics,
  gated nonlinearities; Brandstetter et al. 2022), :class:`LiftedConvLayer` (messages on invariants of
  :math:`g_i^{-1} g_j` on positions x orientations; Bekkers et al. 2024).

SEGNN and the lifted layer need e3nn (``pip install 'epdo[3d]'``); e3nn is imported when they are built.

>>> import torch, epdo
>>> from epdo.graph import EGNNLayer, fully_connected_graph
>>> layer = EGNNLayer(4, 4, hidden=8)
>>> h, x, ei = layer(torch.randn(5, 4), torch.randn(5, 3), fully_connected_graph(5))
>>> h.shape, x.shape
(torch.Size([5, 4]), torch.Size([5, 3]))
"""

from .construction import (GraphError, check_batch, check_edge_index, check_positions, fully_connected_graph,
                           knn_graph, radius_graph)
from .domain import PointCloud, PositionOrientationCloud, field_type_irreps, irreps_field_type
from .layers import EGNNLayer, LiftedConvLayer, SEGNNLayer, check_euclidean, icosahedron_vertices, sphere_grid

__all__ = [
    "GraphError", "check_batch", "check_edge_index", "check_positions", "fully_connected_graph", "knn_graph",
    "radius_graph", "PointCloud", "PositionOrientationCloud", "field_type_irreps", "irreps_field_type",
    "EGNNLayer", "SEGNNLayer", "LiftedConvLayer", "check_euclidean", "icosahedron_vertices", "sphere_grid",
]
