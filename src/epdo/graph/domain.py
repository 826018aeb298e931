r"""Point clouds as a domain of the core protocol (:class:`epdo.fields.Domain`), and e3nn irreps as field types.

A signal on :class:`PointCloud` is the tuple ``(features (N, C), positions (N, 3), edge_index (2, E))``; a
batch of graphs is their disjoint union. A rotation or rotation-inversion g (3x3 matrix ``g.matrix``, of
``epdo.groups.o3(L)``, ``so3(L)`` or a finite subgroup such as ``icosahedral()``) acts by

.. math:: (g\cdot f)_i = \rho(g) f_i, \qquad x_i \mapsto g x_i, \qquad \text{edges unchanged},

i.e. :math:`(g\cdot f)(p) = \rho(g) f(g^{-1}p)` on the moved points (paper 000 Eq. 2). Every element is
exact (no resampling). The equivariance checker measures errors on :meth:`PointCloud.features`, the features
and the positions side by side, so that layers that move points (EGNN) are checked on both.

:class:`PositionOrientationCloud` is the lifted domain :math:`\mathbb{R}^3 \times S^2` of paper 003
section 9: features ``(N, O, C)`` of scalar fields on O orientations shared by all nodes, which the group
rotates with the positions: the signal is ``(features, positions, orientations (O, 3), edge_index)``.

Translations and node permutations are not group elements here; :meth:`PointCloud.translate` and
:meth:`PointCloud.permute` apply them and :func:`epdo.graph.check_euclidean` measures them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..fields import Domain, FieldType
from .construction import GraphError, check_edge_index, check_positions, fully_connected_graph

__all__ = ["PointCloud", "PositionOrientationCloud", "irreps_field_type", "field_type_irreps"]


def _matrix3(g) -> np.ndarray | None:
    m = getattr(g, "matrix", None)
    if m is None:
        return None
    m = np.asarray(m, dtype=np.float64)
    return m if m.shape == (3, 3) else None


def _feature_tensor(x, who: str, field_type) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: expected features as a torch.Tensor for {field_type}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{who}: expected floating features for {field_type}, got dtype {x.dtype}")


class PointCloud(Domain):
    """Points in R^3 with node features and a graph: signals ``(features (N, C), positions (N, 3), edge_index)``.

    Acted on by groups of 3x3 orthogonal matrices (O(3), SO(3), the polyhedral groups); every element is exact.

    >>> import epdo, torch
    >>> from epdo.graph import PointCloud
    >>> G = epdo.groups.o3(1)
    >>> t = epdo.fields.FieldType(G, [G.trivial, G.irrep(1, -1)], PointCloud())
    >>> x = (torch.randn(4, 4), torch.randn(4, 3), epdo.graph.fully_connected_graph(4))
    >>> f, pos, ei = t.transform(x, G.inversion)
    >>> torch.equal(pos, -x[1]) and torch.equal(f[:, 1:], -x[0][:, 1:]) and torch.equal(f[:, 0], x[0][:, 0])
    True
    """

    __slots__ = ()

    #: number of tensors in a signal
    arity = 3

    def _key(self) -> tuple:
        return ()

    def __repr__(self) -> str:
        return "epdo.graph.PointCloud()"

    def __str__(self) -> str:
        return "PointCloud"

    def __reduce__(self):
        return (PointCloud, ())

    def check_group(self, group) -> None:
        ident = getattr(group, "identity", None)
        if ident is None:
            raise TypeError(f"{self}: expected an epdo.groups group, got {type(group).__name__}")
        if _matrix3(ident) is None:
            raise ValueError(f"{self} is acted on by groups of 3x3 orthogonal matrices (O(3), SO(3), polyhedral), "
                             f"got {getattr(group, 'name', group)!r}")

    def signal_shape(self, size: int) -> str:
        return f"(features (N, {size}), positions (N, 3), edge_index (2, E))"

    def _fiber_shape(self, field_type) -> str:
        return f"(N, {field_type.size})"

    def check(self, x: Any, field_type, who: str = "input") -> None:
        if not isinstance(x, (tuple, list)) or len(x) != self.arity:
            got = f"a {type(x).__name__} of length {len(x)}" if isinstance(x, (tuple, list)) else type(x).__name__
            raise TypeError(f"{who}: expected a tuple {self.signal_shape(field_type.size)} for {field_type}, got {got}")
        f, pos, ei = x[0], x[1], x[-1]
        _feature_tensor(f, who, field_type)
        check_positions(pos, f"{who}: positions")
        n = pos.shape[0]
        self._check_features(f, n, field_type, who)
        check_edge_index(ei, n, f"{who}: edge_index")

    def _check_features(self, f: torch.Tensor, n: int, field_type, who: str) -> None:
        if f.dim() != 2 or f.shape != (n, field_type.size):
            raise GraphError(f"{who}: expected features of shape ({n}, {field_type.size}) for {field_type} "
                             f"on {n} nodes, got shape {tuple(f.shape)}")

    def features(self, x: Any) -> torch.Tensor:
        """Features and positions side by side, ``(N, C + 3)``: what equivariance errors are measured on."""
        f, pos = x[0], x[1]
        return torch.cat([f.reshape(f.shape[0], -1), pos], dim=1)

    def apply_fiber(self, x: Any, matrix: torch.Tensor) -> Any:
        f = x[0]
        return (f @ matrix.to(dtype=f.dtype, device=f.device).T, *x[1:])

    def transform(self, x: Any, g, **options) -> Any:
        m = _matrix3(g)
        if m is None:
            raise TypeError(f"{self}.transform takes an element with a 3x3 matrix, got {g!r}")
        a = torch.tensor(m, dtype=x[1].dtype, device=x[1].device)
        return (x[0], x[1] @ a.T, *x[2:])

    def translate(self, x: Any, t: torch.Tensor) -> Any:
        """The signal with every position moved by the vector ``t`` (3,)."""
        return (x[0], x[1] + t.to(x[1]), *x[2:])

    def permute(self, x: Any, perm: torch.Tensor) -> Any:
        """Node i of the result is node ``perm[i]`` of ``x`` (features, positions and edges relabelled)."""
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(len(perm), device=perm.device)
        return (x[0][perm], x[1][perm], *x[2:-1], inv[x[-1]])

    def is_exact(self, g, shape: Sequence[int]) -> bool:
        return True

    def input_shape(self, field_type, batch: int, size: int) -> tuple[int, ...]:
        """``(batch, size, C)``: ``batch`` fully connected graphs of ``size`` nodes."""
        return (batch, size, field_type.size)

    def _graph(self, shape, generator, dtype):
        b, n = shape[0], shape[1]
        pos = torch.randn(b * n, 3, generator=generator, dtype=dtype)
        batch = torch.arange(b).repeat_interleave(n)
        return pos, fully_connected_graph(batch)

    def sample(self, shape, kind="random", generator=None, dtype=torch.float64):
        if kind not in ("random", "smooth"):
            raise ValueError(f"{self}.sample: kind must be 'random' or 'smooth', got {kind!r}")
        f = torch.randn(shape[0] * shape[1], *shape[2:], generator=generator, dtype=dtype)
        pos, ei = self._graph(shape, generator, dtype)
        return (f, pos, ei)

    def reference_map(self, channels, generator, dtype, device=None):
        w = torch.randn(3, channels, generator=generator, dtype=dtype).to(device)

        def ref(x):  # features that depend on absolute positions: not equivariant
            f = x[0]
            return (f + (x[1] @ w).reshape(f.shape[0], *([1] * (f.dim() - 2)), channels), *x[1:])
        return ref


class PositionOrientationCloud(PointCloud):
    r"""The lifted domain :math:`\mathbb{R}^3 \times S^2`: signals ``(features (N, O, C), positions (N, 3),
    orientations (O, 3), edge_index)``, C scalar (or other) fields on each of the O orientations of every node.

    The group rotates positions *and* orientations (g . (x, o) = (g x, g o)), so invariants of pairs
    :math:`g_i^{-1} g_j` are unchanged; features are moved by their fibre representation per orientation.
    """

    __slots__ = ()
    arity = 4

    def __repr__(self) -> str:
        return "epdo.graph.PositionOrientationCloud()"

    def __str__(self) -> str:
        return "PositionOrientationCloud"

    def __reduce__(self):
        return (PositionOrientationCloud, ())

    def signal_shape(self, size: int) -> str:
        return f"(features (N, O, {size}), positions (N, 3), orientations (O, 3), edge_index (2, E))"

    def check(self, x: Any, field_type, who: str = "input") -> None:
        super().check(x, field_type, who)
        o = x[2]
        if not isinstance(o, torch.Tensor) or o.dim() != 2 or o.shape[1] != 3 or o.shape[0] != x[0].shape[1]:
            got = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
            raise GraphError(f"{who}: expected orientations of shape ({x[0].shape[1]}, 3) (O = features.shape[1]), "
                             f"got {got}")

    def _check_features(self, f, n, field_type, who):
        if f.dim() != 3 or f.shape[0] != n or f.shape[2] != field_type.size:
            raise GraphError(f"{who}: expected features of shape ({n}, O, {field_type.size}) for {field_type} "
                             f"on {n} nodes, got shape {tuple(f.shape)}")

    def transform(self, x, g, **options):
        out = super().transform(x, g)
        a = torch.tensor(_matrix3(g), dtype=x[2].dtype, device=x[2].device)
        return (out[0], out[1], x[2] @ a.T, out[3])

    def input_shape(self, field_type, batch, size):
        """``(batch, size, 12, C)``: ``batch`` fully connected graphs of ``size`` nodes, 12 orientations."""
        return (batch, size, 12, field_type.size)

    def sample(self, shape, kind="random", generator=None, dtype=torch.float64):
        f, pos, ei = super().sample(shape, kind, generator, dtype)
        o = torch.randn(shape[2], 3, generator=generator, dtype=dtype)
        return (f, pos, o / o.norm(dim=1, keepdim=True), ei)


def irreps_field_type(irreps, group, domain: Domain | None = None) -> FieldType:
    """The :class:`~epdo.fields.FieldType` of e3nn ``irreps`` (e.g. ``"4x0e + 2x1o"``) for
    ``epdo.groups.o3(L)`` (irrep (l, p)) or ``so3(L)`` (irrep (l,), parity ignored); default domain PointCloud.

    >>> import epdo
    >>> str(epdo.graph.irreps_field_type("2x0e + 1x1o", epdo.groups.o3(1)))
    'FieldType(O(3): 2xtrivial, irrep(1,-1); size=5 on PointCloud)'
    """
    from e3nn import o3

    reps = []
    for mul, ir in o3.Irreps(irreps):
        if ir.l > group.max_degree:
            raise ValueError(f"irreps_field_type: {ir} needs degree {ir.l}, {group!r} stops at {group.max_degree}")
        rep = group.irrep(ir.l, ir.p) if group.parity else group.irrep(ir.l)
        if ir.l == 0 and (ir.p == 1 or not group.parity):
            rep = group.trivial
        reps += [rep] * mul
    return FieldType(group, reps, PointCloud() if domain is None else domain)


def field_type_irreps(field_type: FieldType):
    """The e3nn ``Irreps`` of a field type of O(3) / SO(3) irreps (inverse of :func:`irreps_field_type`)."""
    from e3nn import o3

    G = field_type.group
    out = []
    for r in field_type.representations:
        if len(r.irreps) != 1 or not np.allclose(r.change_of_basis, np.eye(r.size)):
            raise ValueError(f"field_type_irreps: {r} is not a single irrep in e3nn's basis")
        ir = r.irreps[0]
        l, p = (ir[0], ir[1]) if G.parity else (ir[0], (-1) ** ir[0])
        out.append((1, (l, p)))
    return o3.Irreps(out).simplify()
