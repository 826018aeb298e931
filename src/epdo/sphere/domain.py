r"""The sphere as a domain of the core protocol (:mod:`epdo.fields.domain`): icosphere signals.

:class:`Sphere` ``(orientations=1)`` holds **scalar fields** ``(B, C, V)``; :class:`Sphere` ``(N)`` with N > 1
holds **orientation fields** ``(B, C, N, V)``: functions on the frame bundle S^2 x C_N, the value at
``[:, :, i, p]`` being the field at the frame :math:`s(P)\,Z(2\pi i/N)` (:mod:`epdo.sphere.mesh`). V must
be an icosphere size :math:`10\cdot 4^L + 2`: the level is read from the signal (pooling changes it, the
domain stays the same), and the ``size`` argument of the protocol (``input_shape``) *is* the level.

Rotations R (elements of :func:`epdo.groups.icosahedral` or :func:`epdo.groups.so3`, i.e. anything with a 3x3
rotation ``matrix``) act by :math:`(R\cdot f)(RP) = f(P)` on scalar fields and by
:math:`(R\cdot\psi)(RP, A_R(P) A) = \psi(P, A)` on orientation fields (the convention of
:mod:`epdo.sphere.mesh`: :math:`R s(P) = s(RP) A_R(P)`). Icosahedral rotations permute the vertices; the
orientation axis then moves by :math:`a_R(P)`, in general *not* a multiple of :math:`2\pi/N`, so the shift
is a band-limited (Fourier) interpolation along the orientation axis: exact on orientation fields whose
angular frequencies are below N/2 (e.g. the output of :class:`~epdo.sphere.SphereLifting` for N >= 5), an
approximation otherwise. :meth:`Sphere.is_exact` is True only when R permutes the vertices and (orientation
fields) every shift is on the C_N grid. Other rotations interpolate linearly (barycentric) in the face that
contains :math:`R^{-1}Q`, with the orientations transported from that point to the face's vertices.

>>> import epdo, torch
>>> from epdo.sphere import Sphere
>>> I = epdo.groups.icosahedral()
>>> t = epdo.fields.FieldType(I, [I.trivial], Sphere())
>>> x = torch.randn(1, 1, 42, dtype=torch.float64)
>>> y = t.transform(x, I.element(5))
>>> Sphere().is_exact(I.element(5), x.shape), bool(torch.equal(y.sort().values, x.sort().values))
(True, True)
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch

from ..fields import Domain
from .mesh import MAX_LEVEL, _check_rotation, icosphere, nearest_vertex, section

__all__ = ["Sphere", "level_of", "shift_orientations", "transport_angles", "smooth_sphere_signal"]

_SIZES = {10 * 4 ** L + 2: L for L in range(MAX_LEVEL + 1)}


def level_of(num_vertices: int, who: str = "signal") -> int:
    """The icosphere level with ``num_vertices`` vertices (ValueError naming the valid sizes otherwise)."""
    if num_vertices not in _SIZES:
        raise ValueError(f"{who}: {num_vertices} points is not an icosphere size; expected 10 * 4**L + 2 "
                         f"vertices ({', '.join(str(n) for n in list(_SIZES)[:7])}, ...)")
    return _SIZES[num_vertices]


def _rotation_of(g) -> np.ndarray:
    return _check_rotation(getattr(g, "matrix", g))


def shift_orientations(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    r"""``out[..., i, v] = x~(2 pi i / N - shift[v])`` with x~ the band-limited (trigonometric) interpolation
    of ``x[..., :, v]`` over the N orientations (axis -2); ``shift`` broadcasts against the last axis."""
    n = x.shape[-2]
    k = torch.arange(n // 2 + 1, dtype=x.dtype, device=x.device)[:, None]
    X = torch.fft.rfft(x, dim=-2)
    phase = -k * shift.to(dtype=x.dtype, device=x.device)
    if n % 2 == 0:  # the Nyquist term of a real signal stays real: cos
        X = torch.cat([X[..., :-1, :] * torch.polar(torch.ones_like(phase[:-1]), phase[:-1]),
                       X[..., -1:, :] * torch.cos(phase[-1:])], dim=-2)
    else:
        X = X * torch.polar(torch.ones_like(phase), phase)
    return torch.fft.irfft(X, n=n, dim=-2)


def transport_angles(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    r"""Angles :math:`\delta` with :math:`T_{PQ}\, s(P) = s(Q)\, Z(\delta)`: the frame of P carried to Q by
    parallel transport along the great circle, seen in Q's frame (points ``(..., 3)``)."""
    sp, sq = section(p), section(q)
    e1 = sp[..., 0]
    c = (e1 * q).sum(-1, keepdims=True) / (1.0 + (p * q).sum(-1, keepdims=True))
    v = e1 - c * (p + q)
    return np.arctan2((sq[..., 1] * v).sum(-1), (sq[..., 0] * v).sum(-1))


def smooth_sphere_signal(points: np.ndarray, channels: int, generator: torch.Generator | None = None,
                         degree: int = 4) -> np.ndarray:
    """A random band-limited signal (C, V): polynomials of degree <= ``degree`` in (x, y, z) restricted to the
    sphere (spherical harmonics of degree <= ``degree``; a space closed under rotations), unit std."""
    exps = [(a, b, c) for a in range(degree + 1) for b in range(degree + 1 - a) for c in range(degree + 1 - a - b)]
    mono = np.stack([points[:, 0] ** a * points[:, 1] ** b * points[:, 2] ** c for a, b, c in exps])  # (M, V)
    coef = torch.randn(channels, len(exps), generator=generator, dtype=torch.float64).numpy()
    out = coef @ mono
    out -= out.mean(1, keepdims=True) * 0.5
    return out / out.std(1, keepdims=True).clip(1e-12)


@lru_cache(maxsize=8)
def _vertex_faces(level: int) -> np.ndarray:
    f = icosphere(level).faces
    n = icosphere(level).num_vertices
    out = np.full((n, 6), -1, dtype=np.int64)
    fill = np.zeros(n, dtype=np.int64)
    for j, face in enumerate(f):
        for v in face:
            out[v, fill[v]] = j
            fill[v] += 1
    return out


def _barycentric(level: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertex indices (Q, 3), weights (Q, 3)) of the face containing each unit vector (central projection)."""
    mesh = icosphere(level)
    near = nearest_vertex(mesh, points)
    cand = _vertex_faces(level)[near]  # (Q, 6)
    tri = mesh.vertices[mesh.faces[np.where(cand < 0, cand.max(1, keepdims=True), cand)]]  # (Q, 6, 3 verts, 3)
    lam = np.linalg.solve(tri.transpose(0, 1, 3, 2), np.broadcast_to(points[:, None, :], cand.shape + (3,))[..., None])[..., 0]
    score = np.where(cand < 0, -np.inf, lam.min(-1))
    best = score.argmax(1)
    idx = mesh.faces[cand[np.arange(len(points)), best]]
    w = lam[np.arange(len(points)), best]
    return idx, w / w.sum(1, keepdims=True)


class Sphere(Domain):
    """The unit sphere sampled on icosphere vertices; ``orientations`` > 1 for orientation fields (see the
    module doc). Immutable value; ``eval(repr(d)) == d``."""

    __slots__ = ("orientations",)

    def __init__(self, orientations: int = 1):
        if isinstance(orientations, bool) or not isinstance(orientations, (int, np.integer)) or orientations < 1:
            raise ValueError(f"Sphere(orientations) needs a positive integer, got {orientations!r}")
        object.__setattr__(self, "orientations", int(orientations))

    def _key(self) -> tuple:
        return (self.orientations,)

    def __repr__(self) -> str:
        return "epdo.sphere.Sphere()" if self.orientations == 1 else f"epdo.sphere.Sphere({self.orientations})"

    def __str__(self) -> str:
        return "Sphere" if self.orientations == 1 else f"Sphere x C{self.orientations}"

    def __reduce__(self):
        return (Sphere, (self.orientations,))

    # --- groups -------------------------------------------------------------------------------
    def check_group(self, group) -> None:
        ident = getattr(group, "identity", None)
        if ident is None:
            raise TypeError(f"Sphere: expected an epdo.groups group, got {type(group).__name__}")
        m = getattr(ident, "matrix", None)
        if m is None or np.asarray(m).shape != (3, 3) or getattr(group, "parity", False):
            raise ValueError(f"{self!r} is acted on by rotation groups of 3-D space (icosahedral(), so3(L): "
                             f"elements with 3x3 rotation matrices), got {getattr(group, 'name', group)!r}")

    # --- signals ------------------------------------------------------------------------------
    @property
    def _layout(self) -> str:
        return "(B, {c}, V)" if self.orientations == 1 else f"(B, {{c}}, {self.orientations}, V)"

    def signal_shape(self, size: int) -> str:
        return self._layout.format(c=size)

    def check(self, x: Any, field_type, who: str = "input") -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{who}: expected a torch.Tensor of field type {field_type}, got {type(x).__name__}")
        dims = 3 if self.orientations == 1 else 4
        expected = self.signal_shape(field_type.size) + " with V = 10 * 4**level + 2"
        if x.dim() != dims or x.shape[1] != field_type.size or (dims == 4 and x.shape[2] != self.orientations):
            raise ValueError(f"{who}: expected a tensor of shape {expected} for {field_type}, got shape {tuple(x.shape)}")
        level_of(x.shape[-1], who)

    def apply_fiber(self, x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """Multiply every point's fibre by ``matrix`` (channel axis 1): the identity (to 1e-12: trivial fields'
        matrices are computed numerically) is skipped, otherwise one matmul over the flattened points (the
        protocol's einsum is ~30x slower on (B, C, N, V))."""
        m = matrix.to(dtype=x.dtype, device=x.device)
        if torch.allclose(m, torch.eye(m.shape[0], dtype=m.dtype, device=m.device), rtol=0, atol=1e-12):
            return x
        return (m @ x.flatten(2)).view(x.shape[0], m.shape[0], *x.shape[2:])

    # --- the action ---------------------------------------------------------------------------
    def transform(self, x: torch.Tensor, g, **options) -> torch.Tensor:
        r = _rotation_of(g)
        level = level_of(x.shape[-1], "Sphere.transform")
        mesh = icosphere(level)
        perm = mesh.permutation(r)
        if self.orientations > 1 and x.dim() != 4:
            raise ValueError(f"Sphere.transform: {self!r} holds (B, C, {self.orientations}, V) signals, got {tuple(x.shape)}")
        if perm is not None:  # out[perm[p]] = (shifted) x[p]
            inv = torch.as_tensor(np.argsort(perm), device=x.device)
            y = x
            if self.orientations > 1:
                y = shift_orientations(x, torch.as_tensor(mesh.frame_rotation(r)))
            return y.index_select(-1, inv)
        src = mesh.vertices @ r  # R^{-1} q for every vertex q
        idx, w = _barycentric(level, src)
        wt = torch.as_tensor(w, dtype=x.dtype, device=x.device)
        gathered = x[..., torch.as_tensor(idx.ravel(), device=x.device)].unflatten(-1, idx.shape)  # (..., V, 3)
        if self.orientations > 1:
            a = mesh.frame_rotation(r, src)  # A_R at R^{-1} q
            delta = transport_angles(np.repeat(src[:, None], 3, 1), mesh.vertices[idx])  # (V, 3)
            shift = torch.as_tensor((a[:, None] - delta).ravel())
            gathered = shift_orientations(gathered.flatten(-2), shift).unflatten(-1, idx.shape)
        return (gathered * wt).sum(-1)

    def is_exact(self, g, shape: Sequence[int]) -> bool:
        r = _rotation_of(g)
        mesh = icosphere(level_of(shape[-1], "Sphere.is_exact"))
        if mesh.permutation(r) is None:
            return False
        if self.orientations == 1:
            return True
        k = mesh.frame_rotation(r) * self.orientations / (2 * math.pi)
        return bool(np.abs(k - np.round(k)).max() < 1e-9)

    # --- test signals -------------------------------------------------------------------------
    def input_shape(self, field_type, batch: int, size: int) -> tuple[int, ...]:
        v = icosphere(size).num_vertices  # size is the level
        return (batch, field_type.size, v) if self.orientations == 1 else (batch, field_type.size, self.orientations, v)

    def sample(self, shape, kind="random", generator=None, dtype=torch.float64):
        if kind == "random":
            return torch.randn(*shape, generator=generator, dtype=dtype)
        if kind != "smooth":
            raise ValueError(f"Sphere.sample: kind must be 'random' or 'smooth', got {kind!r}")
        pts = icosphere(level_of(shape[-1], "Sphere.sample")).vertices
        lead = int(np.prod(shape[:-1]))
        if self.orientations == 1:
            return torch.as_tensor(smooth_sphere_signal(pts, lead, generator)).reshape(shape).to(dtype)
        b, c, n, v = shape
        th = 2 * math.pi * np.arange(n) / n
        basis = np.stack([np.ones(n)] + [f(k * th) for k in (1, 2) for f in (np.cos, np.sin)])  # (5, N)
        coef = smooth_sphere_signal(pts, b * c * 5, generator).reshape(b, c, 5, v)
        return torch.as_tensor(np.einsum("bckv,kn->bcnv", coef, basis) / math.sqrt(3)).to(dtype)

    def reference_map(self, channels, generator, dtype, device=None):
        """Channel mixing times a fixed random positive weight per point (and orientation): not equivariant."""
        w = torch.randn(channels, channels, generator=generator, dtype=dtype).to(device) / math.sqrt(channels)
        seed = int(torch.randint(0, 2 ** 31, (1,), generator=generator))

        def apply(x):
            g = torch.Generator().manual_seed(seed)
            field = 0.5 + torch.rand(x.shape[2:], generator=g, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
            return torch.einsum("oc,bc...->bo...", w.to(x.dtype), x) * field
        return apply

