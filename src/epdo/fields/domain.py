r"""Domains: the base spaces that feature fields live on, and how a group moves their points.

A field of type ``t`` on a domain X is a map :math:`f: X \to \mathbb{R}^{t.size}`; a group element acts by

.. math:: (g \cdot f)(p) = \rho(g)\, f(g^{-1} p)

(paper 000, Eq. 2). :class:`~epdo.fields.FieldType` applies the fibre part :math:`\rho(g)` itself; everything
about the base space X belongs to its :class:`Domain`:

- ``check_group(group)``: which groups act on X (a clear error for any other);
- ``check(x, field_type, who)``: whether ``x`` is a signal of that type on X (messages name the expected
  shape and the field type);
- ``transform(x, g)``: the base-space part :math:`x \mapsto x \circ g^{-1}`;
- ``is_exact(g, shape)``: whether g maps the sampling points onto themselves (then ``transform`` is exact);
- ``measurement_mask(...)``: where a non-exact transform is trusted (None: everywhere);
- ``sample(...)`` / ``input_shape(...)``: random or smooth test signals;
- ``reference_map(...)``: a fixed random map of signals that is *not* equivariant, the scale of the
  equivariance reports.

The seam for new domains: a domain receives the **whole** input, which may be a tensor ``(B, C, ...)``
(:class:`Plane`, :class:`Ring`, a sphere's ``(B, C, V)``) or a tuple / dict (a point cloud's features
``(N, C)`` with positions ``(N, 3)``). Such a domain overrides :meth:`Domain.features` (the tensor that
carries the fibres and on which errors are measured), :meth:`Domain.apply_fiber` (where the channel axis
is) and :meth:`Domain.transform` (e.g. rotate the positions, leave the features alone); nothing in
``fields/`` or in the equivariance checker changes. The two domains here are the plane of images and a
ring of M points, which proves that nothing else assumes images.
"""

from __future__ import annotations

import abc
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._warp import warp_images

__all__ = ["Domain", "Plane", "Ring", "smooth_field", "transform_plane"]


def _planar_matrix(g) -> np.ndarray | None:
    """g's 2x2 matrix, or None when g does not act on R^2 by one."""
    m = getattr(g, "matrix", None)
    if m is None:
        return None
    m = np.asarray(m, dtype=np.float64)
    return m if m.shape == (2, 2) else None


def _group_name(group) -> str:
    return getattr(group, "name", repr(group))


class Domain(abc.ABC):
    """A base space for feature fields (see the module documentation for the protocol).

    Domains are immutable values: equal when of the same class with the same parameters (:meth:`_key`),
    hashable, and ``eval(repr(d)) == d`` with ``import epdo``. Attribute assignment raises; a subclass sets
    its parameters once in ``__init__`` with ``object.__setattr__`` (as :class:`Ring` does) and defines
    ``__reduce__`` for pickling.
    """

    __slots__ = ()

    # --- values ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def _key(self) -> tuple:
        """The parameters that define the domain (used by ``==`` and ``hash``)."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

    # --- which groups act -----------------------------------------------------------------------
    @abc.abstractmethod
    def check_group(self, group) -> None:
        """Raise ValueError (TypeError for a non-group) unless ``group`` acts on this domain."""

    # --- signals --------------------------------------------------------------------------------
    @abc.abstractmethod
    def signal_shape(self, size: int) -> str:
        """A human description of the expected shape with ``size`` channels, e.g. ``(B, 8, H, W)``."""

    @abc.abstractmethod
    def check(self, x: Any, field_type, who: str = "input") -> None:
        """Raise TypeError / ValueError unless ``x`` is a signal of ``field_type`` on this domain."""

    def check_output(self, y: Any, field_type, who: str = "output") -> None:
        """Like :meth:`check`, for a module's output in an equivariance measurement."""
        self.check(y, field_type, who)

    def features(self, x: Any) -> torch.Tensor:
        """The tensor carrying the fibres (the whole input for tensor domains)."""
        return x

    def apply_fiber(self, x: Any, matrix: torch.Tensor) -> Any:
        """Multiply every point's fibre by ``matrix`` (C x C); the channel axis is dim 1 here."""
        f = self.features(x)
        return torch.einsum("oc,bc...->bo...", matrix.to(dtype=f.dtype, device=f.device), f)

    # --- the group action on the base space -----------------------------------------------------
    @abc.abstractmethod
    def transform(self, x: Any, g, **options) -> Any:
        """The base-space part of the action: ``out(p) = x(g^{-1} p)`` (fibres untouched)."""

    @abc.abstractmethod
    def is_exact(self, g, shape: Sequence[int]) -> bool:
        """True when g maps the sampling points of signals of ``shape`` onto themselves."""

    def measurement_mask(self, g, out_shape: Sequence[int], in_shape: Sequence[int], margin: float,
                         dtype: torch.dtype, device=None) -> torch.Tensor | None:
        """A 0/1 weight, broadcastable to the output features, of where a non-exact ``g`` is measured;
        None: everywhere (default, and always for exact elements)."""
        return None

    def input_mask(self, g, in_shape: Sequence[int], margin: float, dtype: torch.dtype,
                   device=None) -> torch.Tensor | None:
        """A 0/1 weight for the *input* such that a non-exact ``g`` loses no content (used when the output
        is invariant and cannot be masked); None: no mask needed."""
        return None

    # --- test signals ---------------------------------------------------------------------------
    @abc.abstractmethod
    def input_shape(self, field_type, batch: int, size: int) -> tuple[int, ...]:
        """The shape of a test signal of ``field_type`` (``size`` points per side where that applies)."""

    @abc.abstractmethod
    def sample(self, shape: Sequence[int], kind: str = "random", generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64) -> Any:
        """A test signal: ``"random"`` (i.i.d. N(0, 1)) or ``"smooth"`` (band-limited, unit std)."""

    @abc.abstractmethod
    def reference_map(self, channels: int, generator: torch.Generator, dtype: torch.dtype,
                      device=None):
        """A fixed random linear map of signals with ``channels`` channels that is not equivariant
        (an unconstrained local filter); reports show the error of ``module`` after it as a scale."""


# --- the plane -------------------------------------------------------------------------------------

def smooth_field(shape: Sequence[int], sigma: float = 2.0, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Band-limited random field: white noise low-pass filtered with a Gaussian of ``sigma`` pixels
    (in Fourier space, periodic, over the last two axes), rescaled to unit standard deviation per channel."""
    noise = torch.randn(*shape, generator=generator, dtype=torch.float64)
    h, w = shape[-2:]
    ky = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    gain = torch.exp(-2 * (math.pi * sigma) ** 2 * (kx**2 + ky**2))
    out = torch.fft.ifft2(torch.fft.fft2(noise) * gain).real
    out = out / out.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return out.to(dtype)


def transform_plane(x: torch.Tensor, matrix: np.ndarray, mode: str = "bicubic") -> torch.Tensor:
    """Move the plane only: ``out(p) = x(A^{-1} p)`` for an orthogonal 2x2 A in the (x right, y up) frame.

    Exact (``rot90`` / ``flip``) for multiples of 90 degrees (square images for odd multiples) and
    reflections; otherwise :func:`epdo._warp.warp_images` (``mode`` 'bicubic' or 'bilinear', zeros outside).
    """
    a = np.asarray(matrix, dtype=np.float64)
    r90 = np.array([[0.0, -1.0], [1.0, 0.0]])
    flip = np.diag([1.0, -1.0])
    for s in (0, 1):
        for k in range(4):
            cand = np.linalg.matrix_power(r90, k) @ (flip if s else np.eye(2))
            if np.allclose(a, cand, atol=1e-12) and (k % 2 == 0 or x.shape[-1] == x.shape[-2]):
                y = torch.flip(x, dims=(-2,)) if s else x
                return torch.rot90(y, k, dims=(-2, -1)) if k else y
    # the one resampling of the package (epdo._warp): out(p) = x(A^-1 p), about the true centre of any H x W
    return warp_images(x, torch.as_tensor(np.linalg.inv(a)), None, mode)


def _disc(h: int, w: int, radius: float, dtype, device) -> torch.Tensor:
    i = torch.arange(h, dtype=dtype, device=device)[:, None] - (h - 1) / 2
    j = torch.arange(w, dtype=dtype, device=device)[None, :] - (w - 1) / 2
    return ((i**2 + j**2) <= radius**2).to(dtype)


class Plane(Domain):
    r"""The plane :math:`\mathbb{R}^2` sampled on a pixel grid: signals ``(B, C, H, W)``.

    Acted on by subgroups of O(2) (C_N, D_N, SO(2), O(2): elements with a 2x2 ``matrix`` in the
    (x right, y up) frame) about the image centre. Rotations by multiples of 90 degrees (odd multiples on
    square images) and the reflections among them map the grid onto itself and act exactly
    (``rot90`` / ``flip``); other elements interpolate (bicubic ``grid_sample``, zeros outside) and are
    measured inside the centred disc only.

    >>> import epdo
    >>> epdo.fields.Plane()
    epdo.fields.Plane()
    """

    __slots__ = ()

    def _key(self) -> tuple:
        return ()

    def __repr__(self) -> str:
        return "epdo.fields.Plane()"

    def __str__(self) -> str:
        return "Plane"

    def __reduce__(self):
        return (Plane, ())

    def check_group(self, group) -> None:
        ident = getattr(group, "identity", None)
        if ident is None:
            raise TypeError(f"Plane: expected an epdo.groups group, got {type(group).__name__}")
        if _planar_matrix(ident) is None:
            raise ValueError(f"Plane() is acted on by subgroups of O(2) (elements with 2x2 matrices: C_N, D_N, "
                             f"SO(2), O(2)), got {_group_name(group)}")

    def signal_shape(self, size: int) -> str:
        return f"(B, {size}, H, W)"

    def check(self, x: Any, field_type, who: str = "input") -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{who}: expected a torch.Tensor of field type {field_type}, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != field_type.size:
            raise ValueError(f"{who}: expected a tensor of shape (B, {field_type.size}, H, W) for {field_type}, "
                             f"got shape {tuple(x.shape)}")

    def check_output(self, y: Any, field_type, who: str = "output") -> None:
        if not isinstance(y, torch.Tensor) or y.dim() != 4 or y.shape[1] != field_type.size or y.shape[-1] != y.shape[-2]:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"{who}: expected a square output of shape (B, {field_type.size}, H, H) for {field_type}, "
                             f"got {got}")

    def transform(self, x: torch.Tensor, g, mode: str = "bicubic") -> torch.Tensor:
        m = _planar_matrix(g)
        if m is None:
            raise TypeError(f"Plane.transform takes an element with a 2x2 matrix, got {g!r}")
        return transform_plane(x, m, mode)

    def is_exact(self, g, shape: Sequence[int]) -> bool:
        m = _planar_matrix(g)
        if m is None or not np.allclose(m, np.round(m), atol=1e-12):
            return False
        quarter = abs(m[0, 1]) > 0.5  # 90 or 270 degrees: needs a square image
        return shape[-1] == shape[-2] or not quarter

    def measurement_mask(self, g, out_shape, in_shape, margin, dtype, device=None):
        """The centred disc of radius ``(in_size - 1)/2 - margin`` pixels, scaled to the output size."""
        if self.is_exact(g, in_shape):
            return None
        size = in_shape[-1]
        radius = ((size - 1) / 2 - margin) * out_shape[-1] / size
        return _disc(out_shape[-2], out_shape[-1], radius, dtype, device)

    def input_mask(self, g, in_shape, margin, dtype, device=None):
        if self.is_exact(g, in_shape):
            return None
        return _disc(in_shape[-2], in_shape[-1], (min(in_shape[-2:]) - 1) / 2 - margin, dtype, device)

    def input_shape(self, field_type, batch: int, size: int) -> tuple[int, ...]:
        return (batch, field_type.size, size, size)

    def sample(self, shape, kind="random", generator=None, dtype=torch.float64):
        if kind == "random":
            return torch.randn(*shape, generator=generator, dtype=dtype)
        if kind == "smooth":
            return smooth_field(shape, generator=generator, dtype=dtype)
        raise ValueError(f"Plane.sample: kind must be 'random' or 'smooth', got {kind!r}")

    def reference_map(self, channels, generator, dtype, device=None):
        w = torch.randn(channels, channels, 3, 3, generator=generator, dtype=dtype) / math.sqrt(9 * channels)
        w = w.to(device)
        return lambda x: F.conv2d(x, w, padding=1)


# --- the ring --------------------------------------------------------------------------------------

class Ring(Domain):
    r"""M equispaced points :math:`p_i = (\cos 2\pi i/M, \sin 2\pi i/M)` on a circle: signals ``(B, C, M)``.

    Acted on by C_N and D_N for N dividing M: the rotation by :math:`2\pi k/N` maps :math:`p_i` to
    :math:`p_{i + kM/N}`, so :math:`(r\cdot f)_i = f_{i - kM/N}` (a circular shift); the reflection
    y -> -y maps :math:`p_i` to :math:`p_{-i}`. Every element maps the points onto themselves, so every
    element acts exactly.

    >>> import epdo, torch
    >>> G = epdo.groups.dihedral(4)
    >>> t = epdo.fields.FieldType(G, [G.trivial], epdo.fields.Ring(8))
    >>> t.transform(torch.arange(8.0).view(1, 1, 8), G.element(0, 1)).flatten().tolist()   # shift by 2
    [6.0, 7.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    """

    __slots__ = ("M",)

    def __init__(self, M: int):
        if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 1:
            raise ValueError(f"Ring(M) needs a positive integer number of points M, got {M!r}")
        object.__setattr__(self, "M", int(M))

    def _key(self) -> tuple:
        return (self.M,)

    def __repr__(self) -> str:
        return f"epdo.fields.Ring({self.M})"

    def __str__(self) -> str:
        return f"Ring({self.M})"

    def __reduce__(self):
        return (Ring, (self.M,))

    def _shift_flip(self, g) -> tuple[int, int]:
        """(k, s) with g = (rotation by 2 pi k / M) after (reflection)^s; ValueError if g is not of that form."""
        m = _planar_matrix(g)
        if m is None:
            raise ValueError(f"{self!r} is acted on by C_N / D_N (2x2 matrices), got {g!r}")
        s = 1 if np.linalg.det(m) < 0 else 0
        k = math.atan2(m[1, 0], m[0, 0]) * self.M / (2 * math.pi)
        if abs(k - round(k)) > 1e-6:
            raise ValueError(f"{self!r}: {g!r} rotates by {math.degrees(math.atan2(m[1, 0], m[0, 0])):.4g} "
                             f"degrees, not a multiple of 360/{self.M}")
        return int(round(k)) % self.M, s

    def check_group(self, group) -> None:
        if getattr(group, "identity", None) is None:
            raise TypeError(f"Ring: expected an epdo.groups group, got {type(group).__name__}")
        expected = f"{self!r} is acted on by C_N or D_N with N dividing {self.M}"
        if not getattr(group, "is_finite", False) or _planar_matrix(group.identity) is None:
            raise ValueError(f"{expected}, got {_group_name(group)}")
        try:
            for g in group.elements:
                self._shift_flip(g)
        except ValueError:
            raise ValueError(f"{expected}, got {_group_name(group)}") from None

    def signal_shape(self, size: int) -> str:
        return f"(B, {size}, {self.M})"

    def check(self, x: Any, field_type, who: str = "input") -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{who}: expected a torch.Tensor of field type {field_type}, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[1] != field_type.size or x.shape[2] != self.M:
            raise ValueError(f"{who}: expected a tensor of shape (B, {field_type.size}, {self.M}) for {field_type}, "
                             f"got shape {tuple(x.shape)}")

    def transform(self, x: torch.Tensor, g, **options) -> torch.Tensor:
        k, s = self._shift_flip(g)
        if s:  # out_i = x_{k - i}
            idx = (k - torch.arange(self.M, device=x.device)) % self.M
            return x.index_select(-1, idx)
        return torch.roll(x, k, dims=-1) if k else x

    def is_exact(self, g, shape) -> bool:
        self._shift_flip(g)
        return True

    def input_shape(self, field_type, batch: int, size: int) -> tuple[int, ...]:
        return (batch, field_type.size, self.M)

    def sample(self, shape, kind="random", generator=None, dtype=torch.float64):
        if kind == "random":
            return torch.randn(*shape, generator=generator, dtype=dtype)
        if kind != "smooth":
            raise ValueError(f"Ring.sample: kind must be 'random' or 'smooth', got {kind!r}")
        noise = torch.randn(*shape, generator=generator, dtype=torch.float64)
        k = torch.fft.fftfreq(shape[-1], dtype=torch.float64)
        out = torch.fft.ifft(torch.fft.fft(noise) * torch.exp(-2 * (math.pi * 2.0 * k) ** 2)).real
        return (out / out.std(dim=-1, keepdim=True).clamp_min(1e-12)).to(dtype)

    def reference_map(self, channels, generator, dtype, device=None):
        w = torch.randn(channels, channels, 3, generator=generator, dtype=dtype) / math.sqrt(3 * channels)
        w = w.to(device)
        return lambda x: F.conv1d(F.pad(x, (1, 1), mode="circular"), w)
