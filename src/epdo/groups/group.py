r"""Subgroups of O(2) acting on the plane: C_N, D_N, SO(2), O(2) (paper 003, part on group theory).

Every element is written ``r^k f^s`` (a rotation after an optional reflection) and acts on the plane's
(x right, y up) coordinates by :math:`R(\theta) F^s` with :math:`F = \mathrm{diag}(1, -1)` (the reflection
y -> -y) and :math:`\theta = 2\pi k / N` for finite groups or the angle itself for SO(2) and O(2).
Composition: :math:`(s_1, \theta_1)(s_2, \theta_2) = (s_1 \oplus s_2, \theta_1 + (-1)^{s_1}\theta_2)`.

Continuous groups carry a ``max_frequency`` L: the irreps up to frequency L are the ones representations
and fields of that group may use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from math import pi

import numpy as np

__all__ = ["Group", "GroupElement", "cyclic", "dihedral", "so2", "o2"]


@dataclass(frozen=True)
class GroupElement:
    """``r^rotation f^flip``; ``rotation`` is an integer mod N for finite groups, an angle in [0, 2pi) else."""

    group: "Group"
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
        return r @ np.diag([1.0, -1.0]) if self.flip else r

    def __mul__(self, other: "GroupElement") -> "GroupElement":
        return self.group.compose(self, other)

    def inverse(self) -> "GroupElement":
        return self.group.inverse(self)

    def __repr__(self) -> str:
        rot = f"{self.rotation}" if self.group.is_finite else f"{self.rotation:.4f}rad"
        return f"{self.group.name}[flip={self.flip}, rot={rot}]"


@dataclass(frozen=True)
class Group:
    """A subgroup of O(2): ``N`` rotations (``N=0``: all of SO(2)) with or without reflections.

    Use the factories :func:`cyclic`, :func:`dihedral`, :func:`so2`, :func:`o2`.
    """

    N: int
    reflections: bool
    max_frequency: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.N, (int, np.integer)) or self.N < 0:
            raise ValueError(f"N must be a non-negative integer (0 = continuous), got {self.N!r}")
        if self.N == 0 and (not isinstance(self.max_frequency, (int, np.integer)) or self.max_frequency < 0):
            raise ValueError(f"max_frequency must be a non-negative integer, got {self.max_frequency!r}")
        if self.N > 0 and self.max_frequency != 0:
            raise ValueError("max_frequency applies to continuous groups only")

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
    def element(self, flip: int = 0, rotation: float | int = 0) -> GroupElement:
        """The element r^rotation f^flip (rotation: an integer for finite groups, an angle otherwise)."""
        if flip not in (0, 1) or (flip and not self.reflections):
            raise ValueError(f"flip must be 0{' or 1' if self.reflections else ''} for {self.name}, got {flip!r}")
        if self.is_finite:
            if int(rotation) != rotation:
                raise ValueError(f"{self.name} rotations are integers k (angle 2 pi k / {self.N}), got {rotation!r}")
            return GroupElement(self, int(flip), int(rotation) % self.N)
        return GroupElement(self, int(flip), float(rotation) % (2 * pi))

    def rotation(self, angle: float) -> GroupElement:
        """The rotation by ``angle`` radians; for finite groups the angle must be a multiple of 2 pi / N."""
        if self.is_finite:
            k = angle * self.N / (2 * pi)
            if abs(k - round(k)) > 1e-9:
                raise ValueError(f"{angle} rad is not a rotation of {self.name} (multiples of 2pi/{self.N})")
            return self.element(0, round(k))
        return self.element(0, angle)

    @property
    def identity(self) -> GroupElement:
        return self.element(0, 0)

    @cached_property
    def elements(self) -> tuple[GroupElement, ...]:
        """All elements (finite groups): rotations r^0..r^{N-1}, then r^k f."""
        if not self.is_finite:
            raise ValueError(f"{self.name} is continuous: use sample_elements(n) or testing_elements(n)")
        return tuple(self.element(s, k) for s in ((0, 1) if self.reflections else (0,)) for k in range(self.N))

    def index(self, g: GroupElement) -> int:
        """Position of ``g`` in :attr:`elements`."""
        return g.flip * self.N + int(g.rotation)

    def compose(self, a: GroupElement, b: GroupElement) -> GroupElement:
        self._check(a)
        self._check(b)
        sign = -1 if a.flip else 1
        return self.element(a.flip ^ b.flip, a.rotation + sign * b.rotation)

    def inverse(self, g: GroupElement) -> GroupElement:
        self._check(g)
        return g if g.flip else self.element(0, -g.rotation)

    def _check(self, g: GroupElement) -> None:
        if not isinstance(g, GroupElement) or g.group != self:
            raise TypeError(f"expected an element of {self.name}, got {g!r}")

    def testing_elements(self, n: int = 8, seed: int = 0) -> tuple[GroupElement, ...]:
        """All elements of a finite group; ``n`` random rotations (and flipped ones) of a continuous group."""
        if self.is_finite:
            return self.elements
        rng = np.random.default_rng(seed)
        return tuple(self.element(int(s), float(t)) for s, t in zip(
            rng.integers(0, 2 if self.reflections else 1, size=n), rng.uniform(0, 2 * pi, size=n)))

    def generators(self, max_frequency: int | None = None) -> tuple[GroupElement, ...]:
        """Elements whose constraints imply those of the whole group for reps of frequency <= max_frequency.

        Finite groups: r (and f). Continuous groups: the rotation by 2pi/(2L+1) (and f): a trigonometric
        polynomial of degree <= L that vanishes on 2L+1 equispaced angles vanishes everywhere.
        """
        flip = (self.element(1, 0),) if self.reflections else ()
        if self.is_finite:
            return ((self.element(0, 1),) if self.N > 1 else ()) + flip
        L = self.max_frequency if max_frequency is None else max_frequency
        return (self.element(0, 2 * pi / (2 * L + 1)),) + flip

    # --- subgroups ----------------------------------------------------------------------------
    def subgroup(self, N: int, reflections: bool = False) -> "Group":
        """The subgroup C_N or D_N (N | self.N; for continuous groups any N, or N=0 for SO(2) in O(2))."""
        if reflections and not self.reflections:
            raise ValueError(f"{self.name} has no reflections, so no dihedral subgroup")
        if self.is_finite and (N <= 0 or self.N % N):
            raise ValueError(f"{N} does not divide {self.N}: no such subgroup of {self.name}")
        if N == 0:
            return Group(0, reflections, self.max_frequency)
        return Group(N, reflections)

    def embed(self, h: GroupElement, subgroup: "Group") -> GroupElement:
        """The image in ``self`` of an element ``h`` of ``subgroup`` (rotations map to rotations)."""
        if h.group != subgroup:
            raise TypeError(f"{h!r} is not an element of {subgroup.name}")
        if (subgroup.reflections and not self.reflections) or (
                self.is_finite and (not subgroup.is_finite or self.N % subgroup.N)):
            raise ValueError(f"{subgroup.name} is not a subgroup of {self.name}")
        return self.element(h.flip, h.rotation * self.N // subgroup.N if self.is_finite
                            else h.angle)


def cyclic(N: int) -> Group:
    """C_N: rotations by multiples of 2 pi / N."""
    if not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"cyclic(N) needs an integer N >= 1, got {N!r}")
    return Group(int(N), False)


def dihedral(N: int) -> Group:
    """D_N: C_N and the reflections y -> -y composed with its rotations (2N elements)."""
    if not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"dihedral(N) needs an integer N >= 1, got {N!r}")
    return Group(int(N), True)


def so2(max_frequency: int) -> Group:
    """SO(2), band-limited to irreps of frequency <= max_frequency."""
    return Group(0, False, int(max_frequency))


def o2(max_frequency: int) -> Group:
    """O(2), band-limited to irreps of frequency <= max_frequency."""
    return Group(0, True, int(max_frequency))
