r"""PDO-eS2CNN layers (paper 002): rotated differential operators on the icosphere, orientations C_N.

**The rotated operator** (paper 002, Eq. 4-5), for :math:`A \in SO(2)` and six weights w:

.. math:: \chi^{(A)} = w_1 + (w_2, w_3)\, A^{-1}\nabla + \Big\langle A \begin{bmatrix} w_4 & w_5/2 \\ w_5/2 & w_6
          \end{bmatrix} A^{-1}, \nabla^2 \Big\rangle ,

with :math:`\nabla, \nabla^2` the chart derivatives of :mod:`epdo.sphere.derivatives` in the frame s(P). In
terms of the derivatives in the rotated frame s(P)A (:func:`rotation_matrices`):
:math:`\chi^{(A)} = w \cdot (f, f_1', f_2', f_{11}', f_{12}', f_{22}')` with
:math:`\nabla' = A^T\nabla`, :math:`\nabla'^2 = A^T\nabla^2 A`. With :math:`R s(P) = s(RP) A_R(P)`
(:mod:`epdo.sphere.mesh`) it satisfies :math:`\chi^{(A_R A)}[f\circ R^{-1}](RP) = \chi^{(A)}[f](P)` exactly for
rotations that permute the vertices (tested for the 60 icosahedral ones).

**Layers**, orientations :math:`\theta_i = 2\pi i/N` (C_N acting regularly on the orientation axis):

- :class:`SphereLifting`: :math:`\psi_o(P, \theta_i) = \sum_c \chi^{(\theta_i)}_{w_{oc}}[f_c](P)` (+ bias).
- :class:`SpherePDOConv`: :math:`\psi'_o(P, \theta_i) = \sum_{c, j} \chi^{(\theta_i)}_{w_{ocj}}
  [\tilde\psi_c(\cdot, \theta_i + \theta_j)](P)`, the discretised orientation integral, where
  :math:`\tilde\psi(Q, \phi) = \psi(Q, \phi + \delta_{PQ})` carries the neighbour's orientations into P's frame by
  parallel transport along the great circle (:func:`~epdo.sphere.domain.transport_angles`; done in the Fourier
  basis of the orientation axis, exact for band-limited fields). Without it the derivative of an orientation
  field would mix frames that differ by up to :math:`\pi` near the section's singular point.
- :class:`SphereGroupPool` (max / mean over orientations), :class:`SpherePool` (level L -> L-1: the first
  vertices, by nesting); batch norm and nonlinearities per field are :class:`epdo.nn.FieldBatchNorm`,
  :class:`epdo.nn.ReLU`, ... on trivial fields of the sphere domains (they take any trailing dims).

Derivatives are in units of the mesh spacing h (first order times h, second times h^2), the analogue of
pixel units; this rescales w and changes no equivariance.

>>> import epdo, torch
>>> from epdo.sphere import SphereLifting, SpherePDOConv, SphereGroupPool, sphere_type
>>> I = epdo.groups.icosahedral()
>>> lift = SphereLifting(sphere_type(I, 1), sphere_type(I, 4, orientations=8), level=2)
>>> conv = SpherePDOConv(lift.out_type, sphere_type(I, 4, orientations=8), level=2)
>>> y = SphereGroupPool(conv.out_type)(conv(lift(torch.randn(2, 1, 162))))
>>> y.shape
torch.Size([2, 4, 162])
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from ..fields import FieldType
from ..nn.base import EquivariantModule
from .derivatives import stencils
from .domain import Sphere, level_of, transport_angles
from .mesh import _check_level, icosphere

__all__ = ["sphere_type", "rotation_matrices", "rotated_operator", "SphereLifting", "SpherePDOConv",
           "SphereGroupPool", "SpherePool", "fourier_matrix"]


def sphere_type(group, channels: int, orientations: int = 1) -> FieldType:
    """``channels`` trivial fields of ``group`` on :class:`Sphere` ``(orientations)``."""
    return FieldType(group, [group.trivial] * int(channels), Sphere(orientations))


def rotation_matrices(angles) -> torch.Tensor:
    r"""(..., 6, 6) float64 maps from (f, f_1, f_2, f_11, f_12, f_22) in the frame s(P) to the same in the frame
    s(P) Z(angle): :math:`\nabla' = A^T\nabla`, :math:`\nabla'^2 = A^T \nabla^2 A`."""
    a = torch.as_tensor(angles, dtype=torch.float64)
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    rows = [
        [o, z, z, z, z, z],
        [z, c, s, z, z, z],
        [z, -s, c, z, z, z],
        [z, z, z, c * c, 2 * c * s, s * s],
        [z, z, z, -c * s, c * c - s * s, c * s],
        [z, z, z, s * s, -2 * c * s, c * c],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def _csr_buffers(rows, cols, vals, shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows, cols])), torch.as_tensor(vals, dtype=torch.float64),
                                      shape, check_invariants=False).coalesce().to_sparse_csr()
    return coo.crow_indices(), coo.col_indices(), coo.values()


@lru_cache(maxsize=8)
def _scalar_operator(level: int):
    """CSR buffers of the stacked (5V x V) derivative operator."""
    st = stencils(level)
    mesh = icosphere(level)
    h = mesh.spacing()
    rows, cols = st.rows, st.cols
    coef = st.coef * np.array([h, h, h * h, h * h, h * h])[:, None]  # spacing units
    n = mesh.num_vertices
    diag = np.arange(n)
    R, C, Vv = [], [], []
    for k in range(5):
        R += [rows + k * n, diag + k * n]
        C += [cols, diag]
        Vv += [coef[k], -np.bincount(rows, coef[k], n)]
    return _csr_buffers(np.concatenate(R), np.concatenate(C), np.concatenate(Vv), (5 * n, n))


def fourier_matrix(n: int) -> np.ndarray:
    """(N, N) real Fourier analysis of the orientation axis: rows c0, (a_1, b_1), ..., [Nyquist]; orthogonal
    up to row scaling (the inverse is ``np.linalg.inv``)."""
    th = 2 * np.pi * np.arange(n) / n
    rows = [np.ones(n) / n]
    for k in range(1, (n - 1) // 2 + 1):
        rows += [2 * np.cos(k * th) / n, 2 * np.sin(k * th) / n]
    if n % 2 == 0:
        rows.append(np.cos(n // 2 * th) / n)
    return np.stack(rows)


#: from this level on SpherePDOConv works in a locality order of the vertices (:func:`_locality_order`): the
#: nested order scatters neighbours, and from level 6 on the right-hand block no longer fits in cache (measured
#: on the 2-core EPYC: the level-7 band product 1.8-2.1x faster in Morton order; no gain at level 5)
_LOCAL_ORDER_MIN_LEVEL = 6


def _locality_order(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Vertex indices sorted along a Morton (Z-order) curve of the 3-D positions: nearby points, nearby indices."""
    q = np.clip(((points + 1.0) / 2.0 * (2 ** bits - 1)).astype(np.int64), 0, 2 ** bits - 1)
    code = np.zeros(len(points), dtype=np.int64)
    for b in range(bits):
        for d in range(3):
            code |= ((q[:, d] >> b) & 1) << (3 * b + d)
    return np.argsort(code, kind="stable")


@lru_cache(maxsize=8)
def _transport_pattern(level: int) -> dict[str, np.ndarray]:
    r"""The scalar (5V x V) derivative operator as CSR (``crow``, ``col``, ``val``) and each entry's transport angle
    :math:`\delta_{PQ}` (0 on the diagonal), built once per level. Every band of the orientation operator
    shares it."""
    crow, col, val = (t.numpy() for t in _scalar_operator(level))
    mesh = icosphere(level)
    nv = mesh.num_vertices
    rows = np.repeat(np.arange(5 * nv), np.diff(crow))
    delta = transport_angles(mesh.vertices[rows % nv], mesh.vertices[col])
    delta[rows % nv == col] = 0.0
    return {"crow": crow, "col": col, "val": val, "delta": delta}


def _orientation_operator(level: int, n: int):
    r"""CSR buffers of the stacked (5 N V x N V) operator on Fourier coefficients of the orientation axis
    (index r * V + P, r the Fourier row): derivative k of :math:`Q \mapsto \psi(Q, \phi + \delta_{PQ})`. The layer
    never builds it (it applies the bands one by one, :meth:`SpherePDOConv._derivatives`); it is the
    reference the tests and the dense benchmark row compare with."""
    pat = _transport_pattern(level)
    nv = icosphere(level).num_vertices
    rows = np.repeat(np.arange(5 * nv), np.diff(pat["crow"]))
    k, p, q, c, delta = rows // nv, rows % nv, pat["col"], pat["val"], pat["delta"]
    R, C, Vv = [], [], []

    def add(r_out, r_in, vals):
        R.append(k * n * nv + r_out * nv + p)
        C.append(r_in * nv + q)
        Vv.append(vals)

    add(0, 0, c)
    for f in range(1, (n - 1) // 2 + 1):
        ra, rb = 2 * f - 1, 2 * f
        cs, sn = np.cos(f * delta), np.sin(f * delta)
        add(ra, ra, c * cs)   # a' = a cos + b sin
        add(ra, rb, c * sn)
        add(rb, ra, -c * sn)  # b' = -a sin + b cos
        add(rb, rb, c * cs)
    if n % 2 == 0:
        add(n - 1, n - 1, c * np.cos(n // 2 * delta))
    return _csr_buffers(np.concatenate(R), np.concatenate(C), np.concatenate(Vv), (5 * n * nv, n * nv))


def rotated_operator(f: torch.Tensor, w: torch.Tensor, angles: torch.Tensor, level: int) -> torch.Tensor:
    r""":math:`\chi^{(A_v)}_w[f](v)` at every vertex v, for one scalar signal ``f`` (V,), weights ``w`` (6,) and
    one angle per vertex ``angles`` (V,) (float64; spacing units as in the layers)."""
    crow, col, val = _scalar_operator(level)
    n = icosphere(level).num_vertices
    D = _csr(crow, col, val, (5 * n, n))
    d = torch.cat([f[None], (D @ f.to(torch.float64)[:, None]).view(5, n)])  # (6, V)
    rot = rotation_matrices(angles)  # (V, 6, 6)
    return torch.einsum("k,vkl,lv->v", w.to(torch.float64), rot, d)


def _csr(crow, col, val, shape) -> torch.Tensor:
    """A CSR tensor without torch's beta / invariant-check warnings (the indices are ours, built once)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def _tracing() -> bool:
    return torch.fx._symbolic_trace.is_fx_symbolic_tracing()


class _SparseProduct(torch.autograd.Function):
    """``op @ x`` for a constant CSR ``op`` whose transpose ``op_t`` is given (gradient to x only)."""

    @staticmethod
    def forward(ctx, op, op_t, x):
        ctx.op_t = op_t
        ctx.dtype = x.dtype
        return _spmm(op, x)

    @staticmethod
    def backward(ctx, g):
        return None, None, _spmm(ctx.op_t, g).to(ctx.dtype)


def _autocast_on() -> bool:
    return torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")


def _spmm(op: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``op @ x`` for a CSR ``op`` in the operator's dtype (CPU sparse kernels have no bfloat16: under autocast
    the product runs with autocast off). Traceable by torch.fx (autocast is off while tracing)."""
    if _autocast_on():
        with torch.autocast(x.device.type, enabled=False):
            return op @ x.to(op.dtype)
    return op @ x.to(op.dtype)


@lru_cache(maxsize=8)
def _vertex_major_pattern(level: int, local: bool = False) -> dict[str, np.ndarray]:
    r"""The (6V x V) operator of :class:`SpherePDOConv`: row ``6 P + k`` holds term k at vertex P, k = 0 the
    value (the identity, transport angle 0) and k = 1..5 the five derivatives of :func:`_transport_pattern`, so
    that one product yields the (V, 6, K) block that the weight product reads; with the transposed pattern
    (``crow_t``, ``col_t``, ``val_t``, ``delta_t``: the entries in column-major order) for backward. With ``local`` the
    vertices are relabelled in :func:`_locality_order` (``order``: new -> old index, else None)."""
    pat = _transport_pattern(level)
    nv = icosphere(level).num_vertices
    rows = np.repeat(np.arange(5 * nv), np.diff(pat["crow"]))
    k, p, col = rows // nv, rows % nv, pat["col"]
    order = None
    if local:
        order = _locality_order(icosphere(level).vertices)
        inv = np.empty_like(order)
        inv[order] = np.arange(nv)
        p, col = inv[p], inv[col]
    diag = np.arange(nv)
    rows = np.concatenate([p * 6 + k + 1, diag * 6])
    col = np.concatenate([col, diag])
    val = np.concatenate([pat["val"], np.ones(nv)])
    delta = np.concatenate([pat["delta"], np.zeros(nv)])
    srt = np.lexsort((col, rows))
    rows, col, val, delta = rows[srt], col[srt], val[srt], delta[srt]
    perm = np.lexsort((rows, col))
    return {"crow": np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=6 * nv))]), "col": col, "val": val,
            "delta": delta, "crow_t": np.concatenate([[0], np.cumsum(np.bincount(col, minlength=nv))]),
            "col_t": rows[perm], "val_t": val[perm], "delta_t": delta[perm], "order": order}


def _band_values(n: int, val: torch.Tensor, delta: torch.Tensor):
    """``(f, c cos(f delta), c sin(f delta) or None)`` for the bands f = 0 .. N // 2 of the orientation axis (the
    sine only for the pairs 1 .. (N - 1) // 2; band 0 and Nyquist have one coefficient)."""
    for f in range(n // 2 + 1):
        yield f, val * torch.cos(f * delta), (val * torch.sin(f * delta) if 0 < f <= (n - 1) // 2 else None)


#: bytes of one product's output block in :class:`_BandProducts` (rows of whole vertices): the block stays in
#: cache between the sparse product that writes it and the copy that reads it
_BLOCK_BYTES = 2 << 20


def _row_blocks(crow: torch.Tensor, rows_per_vertex: int, vertices_per_block: int):
    """``[(v0, v1, p0, p1, crow_block)]``: the CSR row pointer cut into blocks of whole vertices (rows
    ``rows_per_vertex * [v0, v1)``, entries ``[p0, p1)``), one block on devices other than the CPU."""
    nv = (crow.numel() - 1) // rows_per_vertex
    vb = nv if crow.device.type != "cpu" else max(1, min(nv, int(vertices_per_block)))
    bounds = list(range(0, nv, vb)) + [nv]
    ptr = crow[torch.tensor(bounds, device=crow.device) * rows_per_vertex].tolist()
    return [(v0, v1, p0, p1, crow[v0 * rows_per_vertex:v1 * rows_per_vertex + 1] - p0)
            for v0, v1, p0, p1 in zip(bounds[:-1], bounds[1:], ptr[:-1], ptr[1:])]


class _BandProducts(torch.autograd.Function):
    r"""(N, B, V, C) Fourier coefficients of the orientation axis -> the (B, V, N, 6, C) operand of the weight
    product, with the (6V x V) vertex-major operator (:func:`_vertex_major_pattern`) cut into row blocks of whole
    vertices (``_BLOCK_BYTES`` of output each). Per block: its band values :math:`c\cos(f\delta)`,
    :math:`c\sin(f\delta)` (computed in cache, never stored), then per band and batch element one sparse
    product into a reused buffer, copied into its slot (contiguous runs of 6 C values); pairs rotate,
    :math:`a' = C_f a + S_f b,\ b' = C_f b - S_f a`. A block of the pattern is read from memory once per pass
    and serves every band and batch element while it is in cache. Backward the same with the stored transposed
    pattern (``crow_t``, ``col_t`` and the values, angles in its order), in row blocks of input vertices
    (:math:`S \to -S^T`)."""

    @staticmethod
    def forward(ctx, xf, crow, col, val, delta, crow_t, col_t, val_t, delta_t):
        ctx.save_for_backward(crow_t, col_t, val_t, delta_t)
        ctx.dtype = xf.dtype
        n, b, v, c = xf.shape
        x = xf.to(val.dtype).contiguous()
        out = x.new_empty(b, v, n, 6, c)
        vb = _BLOCK_BYTES // (6 * c * x.element_size())
        t1, t2 = x.new_empty(6 * min(vb, v), c), x.new_empty(6 * min(vb, v), c)
        with torch.autocast(x.device.type, enabled=False):
            for v0, v1, p0, p1, cr in _row_blocks(crow, 6, vb):
                rows, cb = 6 * (v1 - v0), col[p0:p1]
                o1, o2, dst = t1[:rows], t2[:rows], out[:, v0:v1]
                for f, cs, sn in _band_values(n, val[p0:p1], delta[p0:p1]):
                    C = _csr(cr, cb, cs, (rows, v))
                    if sn is None:
                        r = 0 if f == 0 else n - 1
                        for i in range(b):
                            torch.mm(C, x[r, i], out=o1)
                            dst[i, :, r].copy_(o1.view(-1, 6, c))
                        continue
                    S = _csr(cr, cb, sn, (rows, v))
                    ra, rb = 2 * f - 1, 2 * f
                    for i in range(b):
                        torch.mm(C, x[ra, i], out=o1)
                        torch.mm(S, x[rb, i], out=o2)
                        dst[i, :, ra].copy_((o1.add_(o2)).view(-1, 6, c))
                        torch.mm(C, x[rb, i], out=o1)
                        torch.mm(S, x[ra, i], out=o2)
                        dst[i, :, rb].copy_((o1.sub_(o2)).view(-1, 6, c))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        crow_t, col_t, val_t, delta_t = ctx.saved_tensors
        b, v, n, _, c = g.shape
        gr = g.to(val_t.dtype).permute(2, 0, 1, 3, 4).reshape(n, b, 6 * v, c)  # (N, B, 6V, C): one copy
        gx = gr.new_empty(n, b, v, c)
        vb = _BLOCK_BYTES // (c * gr.element_size())
        t = gr.new_empty(min(vb, v), c)
        with torch.autocast(g.device.type, enabled=False):
            for v0, v1, p0, p1, cr in _row_blocks(crow_t, 1, vb):
                cb, tb, dst = col_t[p0:p1], t[:v1 - v0], gx[:, :, v0:v1]
                for f, cs, sn in _band_values(n, val_t[p0:p1], delta_t[p0:p1]):
                    Ct = _csr(cr, cb, cs, (v1 - v0, 6 * v))
                    if sn is None:
                        r = 0 if f == 0 else n - 1
                        for i in range(b):
                            torch.mm(Ct, gr[r, i], out=dst[r, i])
                        continue
                    St = _csr(cr, cb, sn, (v1 - v0, 6 * v))
                    ra, rb = 2 * f - 1, 2 * f  # [a; b] grads = [[C^T, -S^T], [S^T, C^T]] [g_a'; g_b']
                    for i in range(b):
                        torch.mm(Ct, gr[ra, i], out=dst[ra, i])
                        torch.mm(St, gr[rb, i], out=tb)
                        dst[ra, i] -= tb
                        torch.mm(Ct, gr[rb, i], out=dst[rb, i])
                        torch.mm(St, gr[ra, i], out=tb)
                        dst[rb, i] += tb
        return gx.to(ctx.dtype), None, None, None, None, None, None, None, None


class _SphereOperator(EquivariantModule):
    """Shared: the level, the mesh and CSR buffers (non-persistent: rebuilt from the level)."""

    def _set_operator(self, crow, col, val, shape, dtype, device) -> None:
        self._shape = tuple(shape)
        dd = dtype or torch.get_default_dtype()
        t = _csr(crow, col, val, shape).t().to_sparse_csr()  # the transpose, for backward
        for name, tensor in (("_crow", crow), ("_col", col), ("_val", val), ("_crow_t", t.crow_indices()),
                             ("_col_t", t.col_indices()), ("_val_t", t.values())):
            if tensor.is_floating_point():
                self.register_constant(name, tensor, device=device, dtype=dd)
            else:
                self.register_buffer(name, tensor.to(device=device), persistent=False)

    @property
    def _operator(self) -> torch.Tensor:
        return _csr(self._crow, self._col, self._val, self._shape)

    def _apply_operator(self, x: torch.Tensor) -> torch.Tensor:
        """``op @ x``; with a gradient, by :class:`_SparseProduct` (the transpose is stored: no CSR transposition
        and sort per backward). Plain ``op @ x`` while fx traces (export)."""
        if _tracing() or not (torch.is_grad_enabled() and x.requires_grad):
            return _spmm(self._operator, x)
        op_t = _csr(self._crow_t, self._col_t, self._val_t, self._shape[::-1])
        return _SparseProduct.apply(self._operator, op_t, x)

    def check_input(self, x: torch.Tensor) -> None:
        """The field type's check, then the number of vertices against the layer's level."""
        super().check_input(x)
        if x.shape[-1] != self.mesh.num_vertices:
            raise ValueError(f"{type(self).__name__}: expected a signal on the level-{self.level} icosphere "
                             f"({self.mesh.num_vertices} vertices), got {x.shape[-1]} points "
                             f"(level {level_of(x.shape[-1], type(self).__name__)})")

    @property
    def mesh(self):
        return icosphere(self.level)


def _check_types(who: str, in_type: FieldType, out_type: FieldType, n_in: int | None, n_out: int | None) -> None:
    for name, t, n in (("in_type", in_type, n_in), ("out_type", out_type, n_out)):
        if not isinstance(t, FieldType) or not isinstance(t.domain, Sphere):
            raise TypeError(f"{who}: {name} must be a FieldType on epdo.sphere.Sphere, got {t!r}")
        if not t.is_trivial:
            raise ValueError(f"{who}: {name} must consist of trivial fields (sphere_type), got {t}")
        if n is not None and t.domain.orientations != n:
            raise ValueError(f"{who}: {name} must live on {Sphere(n)!r}, got {t.domain!r}")
    if in_type.group != out_type.group:
        raise ValueError(f"{who}: in_type is of {in_type.group.name}, out_type of {out_type.group.name}")


class SphereLifting(_SphereOperator):
    r"""S^2 -> S^2 x C_N: :math:`\psi_o(P, \theta_i) = \sum_c \chi^{(\theta_i)}_{w_{oc}}[f_c](P) + b_o`.

    Args:
        in_type: scalar fields (``Sphere()``), out_type: orientation fields (``Sphere(N)``, N >= 1).
        level: icosphere level of the signals.
        bias: one bias per output field.

    Shape: (B, C_in, V) -> (B, C_out, N, V).
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, level: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_type, out_type)
        _check_types("SphereLifting", in_type, out_type, 1, None)
        self.level = _check_level(level)
        self.orientations = out_type.domain.orientations
        n, ci, co = self.orientations, in_type.size, out_type.size
        fk = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.randn(co, ci, 6, **fk) / math.sqrt(6 * ci))
        self.bias = nn.Parameter(torch.zeros(co, **fk)) if bias else None
        crow, col, val = _scalar_operator(self.level)
        self._set_operator(crow, col, val, (5 * self.mesh.num_vertices, self.mesh.num_vertices), dtype, device)
        rot = rotation_matrices(2 * math.pi * torch.arange(n, dtype=torch.float64) / n)
        self.register_constant("_rot", rot, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        b, c, v = x.shape[0], self.in_type.size, self.mesh.num_vertices
        d = self._apply_operator(x.permute(2, 1, 0).reshape(v, c * b)).view(5, v, c, b)
        e = torch.cat([x.permute(1, 2, 0).unsqueeze(1).to(d.dtype), d.permute(2, 0, 1, 3)], 1)  # (C, 6, V, B)
        w = torch.matmul(self.weight[:, None, :, None, :], self._rot.to(self.weight.dtype)[None, :, None])  # (O, N, C, 1, 6)
        w = w.reshape(self.out_type.size * self.orientations, c * 6)
        y = (w.to(e.dtype) @ e.reshape(c * 6, v * b)).view(self.out_type.size, self.orientations, v, b).permute(3, 0, 1, 2)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


class SpherePDOConv(_SphereOperator):
    r"""Orientation fields -> orientation fields (see the module doc):
    :math:`\psi'_o(P,\theta_i) = \sum_{c,j}\chi^{(\theta_i)}_{w_{ocj}}[\tilde\psi_c(\cdot,\theta_i+\theta_j)](P) + b_o`.

    Args:
        in_type, out_type: orientation fields on the same ``Sphere(N)``.
        level: icosphere level of the signals.
        bias: one bias per output field.

    Shape: (B, C_in, N, V) -> (B, C_out, N, V). Cost: per Fourier band of the orientation axis and batch
    element, sparse products with the level's (6V x V) vertex-major stencil pattern (row 6P + k: the value, then
    the five derivatives at P), values :math:`c_{PQ}\cos(f\delta_{PQ})` and :math:`c_{PQ}\sin(f\delta_{PQ})`
    (parallel transport rotates band f's pair of coefficients by :math:`f\delta_{PQ}`), written straight into
    the (B V) x (N 6 C_in) operand of one dense matrix product with the (N 6 C_in) x (C_out N) weights (the
    inverse Fourier transform of the axis folded in). Memory of the operator: the stencil pattern once (no
    N-fold stacked matrix). From level 6 on the vertices are relabelled along a Morton curve inside the layer
    (cache locality); outputs are in the mesh's order.
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, level: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_type, out_type)
        _check_types("SpherePDOConv", in_type, out_type, None, in_type.domain.orientations
                     if isinstance(in_type, FieldType) and isinstance(in_type.domain, Sphere) else None)
        n = in_type.domain.orientations
        if n < 2:
            raise ValueError(f"SpherePDOConv: needs orientation fields (Sphere(N), N >= 2), got {in_type.domain!r}")
        self.level = _check_level(level)
        self.orientations = n
        ci, co = in_type.size, out_type.size
        fk = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.randn(co, ci, n, 6, **fk) / math.sqrt(6 * ci * n))
        self.bias = nn.Parameter(torch.zeros(co, **fk)) if bias else None
        nv = self.mesh.num_vertices
        dd = dtype or torch.get_default_dtype()
        pat = _vertex_major_pattern(self.level, self.level >= _LOCAL_ORDER_MIN_LEVEL)
        self._shape = (6 * nv, nv)
        for name in ("crow", "col", "val", "delta", "crow_t", "col_t", "val_t", "delta_t"):
            t = torch.as_tensor(pat[name])
            if t.is_floating_point():
                self.register_constant(f"_{name}", pat[name], device=device, dtype=dd)
                continue
            # 32-bit CSR indices where they fit: the products stream the pattern, and it is a third smaller
            idx = torch.int32 if pat["col"].size < 2 ** 31 else None
            self.register_buffer(f"_{name}", t.to(device=device, dtype=idx), persistent=False)
        order = pat["order"]  # vertices inside the layer in locality order (new -> old), or None
        self.register_buffer("_order", None if order is None else torch.as_tensor(order, device=device),
                             persistent=False)
        self.register_buffer("_inv", None if order is None else torch.as_tensor(np.argsort(order), device=device),
                             persistent=False)
        F = fourier_matrix(n)
        self.register_constant("_F", F, device=device, dtype=dd)
        self.register_constant("_Finv", np.linalg.inv(F), device=device, dtype=dd)
        rot = rotation_matrices(2 * math.pi * torch.arange(n, dtype=torch.float64) / n)  # (N_i, 6, 6)
        # gather index: W2[o, i, c, m, l] = sum_k w[o, c, (m - i) % N, k] rot[i, k, l]
        self.register_constant("_rot", rot, device=device, dtype=dd)
        idx = (torch.arange(n)[None, :] - torch.arange(n)[:, None]) % n  # [i, m] -> j
        self.register_buffer("_jidx", idx.to(device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        b, c, n, v = x.shape[0], self.in_type.size, self.orientations, self.mesh.num_vertices
        # (N, B, V, C): per orientation and batch element a (V, C) matrix (rows: vertices)
        xt = x.permute(2, 0, 3, 1).reshape(n, -1)
        xf = (self._F.to(x.dtype) @ xt).view(n, b, v, c)  # Fourier coefficients of the orientation axis
        if self._order is not None:
            xf = xf.index_select(2, self._order)  # into the layer's vertex order
        e = self._derivatives(xf)  # (B, V, N_r, 6, C): value and five derivatives, Fourier basis r of the axis
        wj = self.weight[:, :, self._jidx]  # (O, C, N_i, N_m, 6)
        w2 = torch.matmul(wj.unsqueeze(-2), self._rot.to(wj.dtype)[:, None]).squeeze(-2)  # (O, C, N_i, N_m, 6)
        # the inverse Fourier transform folded into the weights: sum_m w2[.., m, l] Finv[m, r]
        w2 = torch.einsum("ocimk,mr->oirkc", w2, self._Finv.to(w2.dtype)).reshape(self.out_type.size * n, n * 6 * c)
        y = (e.reshape(-1, n * 6 * c) @ w2.to(e.dtype).t()).view(b, v, self.out_type.size * n)  # (B, V, O N)
        if self._inv is not None:
            y = y.index_select(1, self._inv)  # back to the mesh's vertex order
        y = y.transpose(1, 2).reshape(b, self.out_type.size, n, v)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def _band(self, f: int, sine: bool = False):
        """(op, op_t): the (6V x V) vertex-major operator with values c cos(f delta) (or c sin(f delta)) and its transpose."""
        trig = torch.sin if sine else torch.cos
        return (_csr(self._crow, self._col, self._val * trig(f * self._delta), self._shape),
                _csr(self._crow_t, self._col_t, self._val_t * trig(f * self._delta_t), self._shape[::-1]))

    def _product(self, f: int, sine: bool, x: torch.Tensor) -> torch.Tensor:
        op, op_t = self._band(f, sine)
        if _tracing() or not (torch.is_grad_enabled() and x.requires_grad):
            return _spmm(op, x)
        return _SparseProduct.apply(op, op_t, x)

    def _derivatives(self, xf: torch.Tensor) -> torch.Tensor:
        """(B, V, N, 6, C) value and transported derivatives: :class:`_BandProducts`, or its plain-torch
        reference while fx traces."""
        if _tracing():
            return self._transported_derivatives(xf)
        return _BandProducts.apply(xf, *self._band_buffers())

    def _band_buffers(self) -> tuple[torch.Tensor, ...]:
        """The pattern buffers :class:`_BandProducts` takes after the coefficients (operator, then transpose)."""
        return self._crow, self._col, self._val, self._delta, self._crow_t, self._col_t, self._val_t, self._delta_t

    def _transported_derivatives(self, xf: torch.Tensor) -> torch.Tensor:
        r"""(B, V, N, 6, C): the value and the derivatives of :math:`Q \mapsto \psi(Q, \phi + \delta_{PQ})` from
        the (N, B, V, C) Fourier coefficients: band 0 and Nyquist scale by :math:`\cos(f\delta)`, band f's pair
        (a, b) rotates: :math:`a' = C_f a + S_f b,\ b' = C_f b - S_f a`. The plain-torch reference of
        :class:`_BandProducts` (one product per matrix for the whole batch; the path fx traces for export)."""
        n, v, c = self.orientations, self.mesh.num_vertices, self.in_type.size  # the batch may be symbolic (fx)
        b = xf.shape[1]
        x = xf.permute(0, 2, 1, 3).reshape(n, v, -1)  # (N, V, B C)
        out = [None] * n
        out[0] = self._product(0, False, x[0])
        for f in range(1, (n - 1) // 2 + 1):
            a, bb = x[2 * f - 1], x[2 * f]
            out[2 * f - 1] = self._product(f, False, a) + self._product(f, True, bb)
            out[2 * f] = self._product(f, False, bb) - self._product(f, True, a)
        if n % 2 == 0:
            out[n - 1] = self._product(n // 2, False, x[n - 1])
        return torch.stack([o.view(v, 6, b, c) for o in out], 2).permute(3, 0, 2, 1, 4)

    def stacked_operator(self) -> torch.Tensor:
        """The (5 N V x N V) CSR operator on the Fourier coefficients that the bands apply together (a reference
        for tests and the dense benchmark row; float64)."""
        return _csr(*_orientation_operator(self.level, self.orientations),
                    (5 * self.orientations * self.mesh.num_vertices, self.orientations * self.mesh.num_vertices))


class SphereGroupPool(EquivariantModule):
    """Max or mean over the orientations: (B, C, N, V) on ``Sphere(N)`` -> (B, C, V) on ``Sphere()``."""

    def __init__(self, in_type: FieldType, mode: str = "max"):
        _check_types("SphereGroupPool", in_type, in_type, None, None)
        if mode not in ("max", "mean"):
            raise ValueError(f"SphereGroupPool: mode must be 'max' or 'mean', got {mode!r}")
        super().__init__(in_type, FieldType(in_type.group, in_type.representations, Sphere()))
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x.amax(2) if self.mode == "max" else x.mean(2)


class SpherePool(EquivariantModule):
    """Level L -> L-1 by restriction to the first (nested) vertices; any sphere field type (same out type)."""

    def __init__(self, in_type: FieldType, level: int):
        _check_types("SpherePool", in_type, in_type, None, None)
        super().__init__(in_type, in_type)
        self.level = _check_level(level)
        if self.level == 0:
            raise ValueError("SpherePool: level 0 has no coarser level")
        self.keep = icosphere(self.level - 1).num_vertices

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.shape[-1] != icosphere(self.level).num_vertices:
            raise ValueError(f"SpherePool: expected a signal on the level-{self.level} icosphere "
                             f"({icosphere(self.level).num_vertices} vertices), got {x.shape[-1]} points")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x[..., :self.keep]
