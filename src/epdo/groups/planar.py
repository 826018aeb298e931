r"""Subgroups of O(2) acting on the plane: C_N, D_N, SO(2), O(2) (paper 003, part on group theory).

Every element is written ``r^k f^s`` (a rotation after an optional reflection) and acts on the plane's
(x right, y up) coordinates by :math:`R(\theta) F^s` with :math:`F = \mathrm{diag}(1, -1)` (the reflection
y -> -y) and :math:`\theta = 2\pi k / N` for finite groups or the angle itself for SO(2) and O(2).
Composition: :math:`(s_1, \theta_1)(s_2, \theta_2) = (s_1 \oplus s_2, \theta_1 + (-1)^{s_1}\theta_2)`.

Continuous groups carry a ``max_frequency`` L: the irreps up to frequency L are the ones representations
and fields of that group may use.

Real irreps are named ``(j, k)``: ``k`` is the frequency, ``j`` the reflection index.

- C_N, SO(2): ``(0, k)``; k = 0 trivial, k = N/2 the sign rep :math:`(-1)^m`, else the 2x2 rotation
  :math:`R(k\theta)` (complex type: its endomorphisms are spanned by I and R(pi/2)).
- D_N, O(2): ``(0, 0)`` trivial, ``(1, 0)`` the reflection sign :math:`(-1)^s`; for N even ``(0, N/2)`` and
  ``(1, N/2)`` (:math:`(-1)^m` and :math:`(-1)^{m+s}`); ``(1, k)`` the 2x2 :math:`R(k\theta) F^s` (real type).

>>> from epdo import groups
>>> D = groups.dihedral(8)
>>> g = D.element(1, 2)
>>> g, g * g == D.identity
(epdo.groups.dihedral(8).element(1, 2), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from math import pi

import numpy as np

from .group import Group, GroupElement, IrrepId, _check_count, readonly

__all__ = ["PlanarGroup", "PlanarElement", "cyclic", "dihedral", "so2", "o2"]

_J = readonly([[0.0, -1.0], [1.0, 0.0]])
_F = np.diag([1.0, -1.0])


@dataclass(frozen=True)
class PlanarElement(GroupElement):
    """``r^rotation f^flip``; ``rotation`` is an integer mod N for finite groups, an angle in [0, 2pi) else."""

    group: "PlanarGroup"
    flip: int
    rotation: float | int

    @property
    def angle(self) -> float:
        """Rotation angle in radians."""
        g = self.group
        return 2 * pi * self.rotation / g.N if g.is_finite else float(self.rotation)

    @property
    def matrix(self) -> np.ndarray:
        """Action on the plane, a 2x2 orthogonal matrix R(angle) F^flip in the (x right, y up) frame."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        if self.group.is_finite and (4 * self.rotation) % self.group.N == 0:
            c, s = round(c), round(s)  # exact for multiples of 90 degrees
        r = np.array([[c, -s], [s, c]], dtype=np.float64)
        return readonly(r @ _F if self.flip else r)

    def __repr__(self) -> str:
        return f"{self.group!r}.element({self.flip}, {self.rotation!r})"

    def __str__(self) -> str:
        rot = f"{self.rotation}" if self.group.is_finite else f"{self.rotation:.4f}rad"
        return f"{self.group.name}[flip={self.flip}, rot={rot}]"


@dataclass(frozen=True)
class PlanarGroup(Group):
    """A subgroup of O(2): ``N`` rotations (``N=0``: all of SO(2)) with or without reflections.

    Use the factories :func:`cyclic`, :func:`dihedral`, :func:`so2`, :func:`o2`.
    """

    N: int
    reflections: bool
    max_frequency: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.N, bool) or not isinstance(self.N, (int, np.integer)) or self.N < 0:
            raise ValueError(f"N must be a non-negative integer (0 = continuous), got {self.N!r}")
        if not isinstance(self.reflections, (bool, np.bool_)):
            raise TypeError(f"reflections must be a bool, got {self.reflections!r}")
        mf = self.max_frequency
        if self.N == 0 and (isinstance(mf, bool) or not isinstance(mf, (int, np.integer)) or mf < 0):
            raise ValueError(f"max_frequency must be a non-negative integer, got {mf!r}")
        if self.N > 0 and mf != 0:
            raise ValueError("max_frequency applies to continuous groups only")
        object.__setattr__(self, "N", int(self.N))
        object.__setattr__(self, "reflections", bool(self.reflections))
        object.__setattr__(self, "max_frequency", int(mf))

    # --- identity -----------------------------------------------------------------------------
    @property
    def is_finite(self) -> bool:
        return self.N > 0

    @property
    def name(self) -> str:
        if self.is_finite:
            return f"D{self.N}" if self.reflections else f"C{self.N}"
        return "O(2)" if self.reflections else "SO(2)"

    def __repr__(self) -> str:
        if self.is_finite:
            return f"epdo.groups.{'dihedral' if self.reflections else 'cyclic'}({self.N})"
        return f"epdo.groups.{'o2' if self.reflections else 'so2'}(max_frequency={self.max_frequency})"

    @property
    def order(self) -> int | None:
        """Number of elements, None for continuous groups."""
        return self.N * (2 if self.reflections else 1) if self.is_finite else None

    # --- elements -----------------------------------------------------------------------------
    def element(self, flip: int = 0, rotation: float | int = 0) -> PlanarElement:
        """The element r^rotation f^flip (rotation: an integer for finite groups, an angle otherwise)."""
        if flip not in (0, 1) or (flip and not self.reflections):
            raise ValueError(f"flip must be 0{' or 1' if self.reflections else ''} for {self.name}, got {flip!r}")
        try:
            float(rotation)
        except (TypeError, ValueError):
            raise TypeError(f"rotation must be a number, got {rotation!r}") from None
        if self.is_finite:
            if int(rotation) != rotation:
                raise ValueError(f"{self.name} rotations are integers k (angle 2 pi k / {self.N}), got {rotation!r}")
            return PlanarElement(self, int(flip), int(rotation) % self.N)
        return PlanarElement(self, int(flip), float(rotation) % (2 * pi))

    def rotation(self, angle: float) -> PlanarElement:
        """The rotation by ``angle`` radians; for finite groups the angle must be a multiple of 2 pi / N."""
        if self.is_finite:
            k = angle * self.N / (2 * pi)
            if abs(k - round(k)) > 1e-9:
                raise ValueError(f"{angle} rad is not a rotation of {self.name} (multiples of 2pi/{self.N})")
            return self.element(0, round(k))
        return self.element(0, angle)

    @property
    def identity(self) -> PlanarElement:
        return self.element(0, 0)

    @cached_property
    def elements(self) -> tuple[PlanarElement, ...]:
        """All elements (finite groups): rotations r^0..r^{N-1}, then r^k f."""
        if not self.is_finite:
            raise ValueError(f"{self.name} is continuous: use sample_elements(n) or testing_elements(n)")
        return tuple(self.element(s, k) for s in ((0, 1) if self.reflections else (0,)) for k in range(self.N))

    def index(self, g: PlanarElement) -> int:
        """Position of ``g`` in :attr:`elements`."""
        self._check(g)
        return g.flip * self.N + int(g.rotation)

    def compose(self, a: PlanarElement, b: PlanarElement) -> PlanarElement:
        self._check(a)
        self._check(b)
        sign = -1 if a.flip else 1
        return self.element(a.flip ^ b.flip, a.rotation + sign * b.rotation)

    def inverse(self, g: PlanarElement) -> PlanarElement:
        self._check(g)
        return g if g.flip else self.element(0, -g.rotation)

    def sample_elements(self, n: int, seed: int = 0) -> tuple[PlanarElement, ...]:
        """Haar samples: uniform angles (and flips); uniform elements of a finite group."""
        if self.is_finite:
            return super().sample_elements(n, seed)
        _check_count(n)
        rng = np.random.default_rng(seed)
        return tuple(self.element(int(s), float(t)) for s, t in zip(
            rng.integers(0, 2 if self.reflections else 1, size=n), rng.uniform(0, 2 * pi, size=n)))

    def testing_elements(self, n: int = 8, seed: int = 0) -> tuple[PlanarElement, ...]:
        """All elements of a finite group; ``n`` random rotations (and flipped ones) of a continuous group."""
        return self.elements if self.is_finite else self.sample_elements(n, seed)

    def generators(self, max_frequency: int | None = None) -> tuple[PlanarElement, ...]:
        """Elements whose constraints imply those of the whole group for reps of frequency <= max_frequency.

        Finite groups: r (and f). Continuous groups: the rotation by 2pi/(2L+1) (and f): a trigonometric
        polynomial of degree <= L that vanishes on 2L+1 equispaced angles vanishes everywhere.
        """
        flip = (self.element(1, 0),) if self.reflections else ()
        if self.is_finite:
            return ((self.element(0, 1),) if self.N > 1 else ()) + flip
        L = self.max_frequency if max_frequency is None else max_frequency
        return (self.element(0, 2 * pi / (2 * L + 1)),) + flip

    def averaging(self, max_frequency: int) -> tuple[tuple[PlanarElement, ...], np.ndarray]:
        """Finite: all elements. Continuous: 2L+1 equispaced rotations (and their flips), which average
        trigonometric polynomials of degree 2L exactly."""
        if self.is_finite:
            return super().averaging(max_frequency)
        n = 2 * max_frequency + 1
        els = tuple(self.element(s, 2 * np.pi * k / n) for s in ((0, 1) if self.reflections else (0,))
                    for k in range(n))
        return els, np.full(len(els), 1.0 / len(els))

    # --- irreps -------------------------------------------------------------------------------
    def irrep_ids(self) -> tuple[tuple[int, int], ...]:
        """All irreps of a finite group; those of frequency <= max_frequency for a continuous one."""
        return self.irrep_ids_upto(self.max_frequency)

    def irrep_ids_upto(self, max_frequency: int) -> tuple[tuple[int, int], ...]:
        return _ids(self.N, self.reflections, self.N // 2 if self.is_finite else int(max_frequency))

    def _is_irrep(self, irrep: IrrepId) -> bool:
        if len(irrep) != 2:
            return False
        if self.is_finite:
            return irrep in self.irrep_ids()
        return irrep[1] >= 0 and irrep in self.irrep_ids_upto(irrep[1])

    def irrep_frequency(self, irrep: IrrepId) -> int:
        return int(irrep[1])

    def irrep_dim(self, irrep: IrrepId) -> int:
        try:
            return _DIMS[(self, irrep)]
        except (KeyError, TypeError):  # not seen yet, or unhashable (a list): check it
            j, k = ident = self.check_irrep(irrep)
            d = 1 if k == 0 or (self.is_finite and 2 * k == self.N) else 2
            _DIMS[(self, ident)] = d
            return d

    def irrep_matrix(self, irrep: IrrepId, g: PlanarElement) -> np.ndarray:
        """The matrix of irrep ``(j, k)`` at element ``g`` (float64, read-only; a table for finite groups)."""
        self._check(g)
        if self.is_finite:
            return _table(self, self.check_irrep(irrep))[self.index(g)]
        return self._irrep_matrix(irrep, g)

    def irrep_matrices(self, irrep: IrrepId, elements) -> np.ndarray:
        if self.is_finite:
            return _table(self, self.check_irrep(irrep))[[self.index(g) for g in elements]]
        return super().irrep_matrices(irrep, elements)

    def _irrep_matrix(self, irrep: IrrepId, g: PlanarElement) -> np.ndarray:
        j, k = irrep
        if self.irrep_dim(irrep) == 1:
            if k == 0:
                return readonly([[(-1.0) ** (j * g.flip)]])
            # frequency N/2: (-1)^m, times (-1)^s for j = 1
            return readonly([[(-1.0) ** (int(g.rotation) + j * g.flip)]])
        t = k * g.angle
        if self.is_finite and (4 * k * int(g.rotation)) % self.N == 0:
            c, s = float(round(np.cos(t))), float(round(np.sin(t)))
        else:
            c, s = np.cos(t), np.sin(t)
        m = np.array([[c, -s], [s, c]])
        return readonly(m @ _F if g.flip else m)

    def endomorphism_basis(self, irrep: IrrepId) -> tuple[np.ndarray, ...]:
        """(I,) or (I, R(pi/2)) for the complex-type 2-dim irreps of C_N and SO(2)."""
        d = self.irrep_dim(irrep)
        if d == 2 and not self.reflections:
            return (readonly(np.eye(2)), _J)
        return (readonly(np.eye(d)),)

    # --- subgroups ----------------------------------------------------------------------------
    def subgroup(self, N: int, reflections: bool = False) -> "PlanarGroup":
        """The subgroup C_N or D_N (N | self.N; for continuous groups any N, or N=0 for SO(2) in O(2))."""
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 0:
            raise ValueError(f"subgroup(N) needs an integer N >= 0, got {N!r}")
        if reflections and not self.reflections:
            raise ValueError(f"{self.name} has no reflections, so no dihedral subgroup")
        if self.is_finite and (N <= 0 or self.N % N):
            raise ValueError(f"{N} does not divide {self.N}: no such subgroup of {self.name}")
        if N == 0:
            return PlanarGroup(0, bool(reflections), self.max_frequency)
        return PlanarGroup(int(N), bool(reflections))

    def embed(self, h: PlanarElement, subgroup: Group) -> PlanarElement:
        """The image in ``self`` of an element ``h`` of ``subgroup`` (rotations map to rotations)."""
        if not isinstance(subgroup, PlanarGroup):
            raise ValueError(f"{subgroup.name} is not a subgroup of {self.name}")
        if not isinstance(h, GroupElement) or h.group != subgroup:
            raise TypeError(f"{h!r} is not an element of {subgroup.name}")
        if (subgroup.reflections and not self.reflections) or (
                self.is_finite and (not subgroup.is_finite or self.N % subgroup.N)):
            raise ValueError(f"{subgroup.name} is not a subgroup of {self.name}")
        return self.element(h.flip, h.rotation * self.N // subgroup.N if self.is_finite
                            else h.angle)


_DIMS: dict = {}


@lru_cache(maxsize=None)
def _ids(N: int, reflections: bool, kmax: int) -> tuple[tuple[int, int], ...]:
    if not reflections:
        return tuple((0, k) for k in range(kmax + 1))
    ids = [(0, 0), (1, 0)]
    for k in range(1, kmax + 1):
        if N > 0 and 2 * k == N:
            ids += [(0, k), (1, k)]
        else:
            ids.append((1, k))
    return tuple(ids)


@lru_cache(maxsize=None)
def _table(group: PlanarGroup, irrep: IrrepId) -> np.ndarray:
    """The matrices of an irrep of a finite planar group at all elements (read-only)."""
    return readonly(np.stack([group._irrep_matrix(irrep, g) for g in group.elements]))


def _positive_int(what: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} needs an integer >= {minimum}, got {value!r}"
                         + (f" ({type(value).__name__})" if not isinstance(value, (int, np.integer)) else ""))
    return int(value)


def cyclic(N: int) -> PlanarGroup:
    """C_N: rotations by multiples of 2 pi / N."""
    return PlanarGroup(_positive_int("cyclic(N)", N, 1), False)


def dihedral(N: int) -> PlanarGroup:
    """D_N: C_N and the reflections y -> -y composed with its rotations (2N elements)."""
    return PlanarGroup(_positive_int("dihedral(N)", N, 1), True)


def so2(max_frequency: int) -> PlanarGroup:
    """SO(2), band-limited to irreps of frequency <= max_frequency (a non-negative integer)."""
    return PlanarGroup(0, False, _positive_int("so2(max_frequency)", max_frequency, 0))


def o2(max_frequency: int) -> PlanarGroup:
    """O(2), band-limited to irreps of frequency <= max_frequency (a non-negative integer)."""
    return PlanarGroup(0, True, _positive_int("o2(max_frequency)", max_frequency, 0))
