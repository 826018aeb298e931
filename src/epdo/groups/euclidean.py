r"""Euclidean groups of the plane: :math:`\mathbb{R}^2 \rtimes H` for a planar point group H (C_N, D_N, SO(2), O(2)).

An element is a pair (t, A) of a translation :math:`t \in \mathbb{R}^2` and a point-group element A; it acts
on the plane by :math:`x \mapsto A x + t`, i.e. by the homogeneous 3x3 matrix
:math:`\begin{pmatrix} A & t \\ 0 & 1 \end{pmatrix}` (``g.matrix``). The semidirect product law is

.. math:: (t_1, A_1)(t_2, A_2) = (t_1 + A_1 t_2,\ A_1 A_2), \qquad (t, A)^{-1} = (-A^{-1} t,\ A^{-1}).

SE(2) = R^2 x| SO(2) (:func:`se2`), E(2) = R^2 x| O(2) (:func:`e2`); :func:`euclidean` takes any point group
(group convolutions use R^2 x| C_N and R^2 x| D_N). The infinite-dimensional unitary irreps of SE(2) are not
provided: the irreps here are those of the point group, pulled back through :math:`(t, A) \mapsto A`
(translations act trivially), which is what feature fields over the plane transform by. ``sample_elements``
draws the point part from the point group's Haar measure and the translation from a standard normal (R^2 has
no normalisable Haar measure).

>>> from epdo import groups
>>> G = groups.euclidean(groups.cyclic(4))
>>> g = G.element([1.0, 0.0], groups.cyclic(4).element(0, 1))
>>> (g * g).translation.tolist(), (g * g).point
([1.0, 1.0], epdo.groups.cyclic(4).element(0, 2))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .group import Group, GroupElement, IrrepId, _check_count, readonly
from .planar import PlanarElement, PlanarGroup, o2, so2

__all__ = ["EuclideanGroup", "EuclideanElement", "euclidean", "se2", "e2"]


@dataclass(frozen=True)
class EuclideanElement(GroupElement):
    """(t, A): x -> A x + t, with ``translation`` t and ``point`` A (an element of the point group)."""

    group: "EuclideanGroup"
    shift: tuple
    point: PlanarElement

    @property
    def translation(self) -> np.ndarray:
        return readonly(self.shift)

    @property
    def matrix(self) -> np.ndarray:
        """The homogeneous 3x3 matrix [[A, t], [0, 1]]."""
        m = np.eye(3)
        m[:2, :2] = self.point.matrix
        m[:2, 2] = self.shift
        return readonly(m)

    def __repr__(self) -> str:
        return f"{self.group!r}.element({list(self.shift)!r}, {self.point!r})"

    def __str__(self) -> str:
        return f"{self.group.name}[t=({self.shift[0]:.4g}, {self.shift[1]:.4g}), {self.point}]"


@dataclass(frozen=True)
class EuclideanGroup(Group):
    """R^2 x| H for a planar point group H (:class:`~epdo.groups.PlanarGroup`)."""

    point_group: PlanarGroup

    def __post_init__(self) -> None:
        if not isinstance(self.point_group, PlanarGroup):
            raise TypeError(f"the point group must be a planar group (cyclic, dihedral, so2, o2), "
                            f"got {self.point_group!r}")

    @property
    def name(self) -> str:
        h = self.point_group
        if not h.is_finite:
            return "E(2)" if h.reflections else "SE(2)"
        return f"R2:{h.name}"

    @property
    def is_finite(self) -> bool:
        return False

    @property
    def max_frequency(self) -> int:
        return self.point_group.max_frequency

    def __repr__(self) -> str:
        return f"epdo.groups.euclidean({self.point_group!r})"

    # --- elements -----------------------------------------------------------------------------
    def element(self, translation=(0.0, 0.0), point: PlanarElement | None = None) -> EuclideanElement:
        """The element (translation, point); ``point`` defaults to the identity of the point group."""
        try:
            t = np.array(translation, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"translation must be a 2-vector of numbers, got {translation!r}") from None
        if t.shape != (2,) or not np.isfinite(t).all():
            raise ValueError(f"translation must be a finite 2-vector, got {translation!r}")
        point = self.point_group.identity if point is None else point
        if not isinstance(point, PlanarElement) or point.group != self.point_group:
            raise TypeError(f"point must be an element of {self.point_group.name}, got {point!r}")
        return EuclideanElement(self, (float(t[0]) + 0.0, float(t[1]) + 0.0), point)

    def lift(self, point: PlanarElement) -> EuclideanElement:
        """The point-group element as an element with zero translation."""
        return self.element((0.0, 0.0), point)

    @property
    def identity(self) -> EuclideanElement:
        return self.element()

    def compose(self, a: EuclideanElement, b: EuclideanElement) -> EuclideanElement:
        self._check(a)
        self._check(b)
        t = np.array(a.shift) + a.point.matrix @ np.array(b.shift)
        return self.element(t, a.point * b.point)

    def inverse(self, g: EuclideanElement) -> EuclideanElement:
        self._check(g)
        inv = g.point.inverse()
        return self.element(-(inv.matrix @ np.array(g.shift)), inv)

    def sample_elements(self, n: int, seed: int = 0) -> tuple[EuclideanElement, ...]:
        _check_count(n)
        points = self.point_group.sample_elements(n, seed)
        shifts = np.random.default_rng(seed + 1).normal(size=(n, 2))
        return tuple(self.element(t, p) for t, p in zip(shifts, points))

    def generators(self, max_frequency: int | None = None) -> tuple[EuclideanElement, ...]:
        """The point group's generators (translations act trivially in every irrep here)."""
        return tuple(self.lift(p) for p in self.point_group.generators(max_frequency))

    def averaging(self, max_frequency: int):
        els, w = self.point_group.averaging(max_frequency)
        return tuple(self.lift(p) for p in els), w

    # --- irreps (of the point group, translations trivial) ----------------------------------------
    def irrep_ids(self) -> tuple[IrrepId, ...]:
        return self.point_group.irrep_ids()

    def irrep_ids_upto(self, max_frequency: int) -> tuple[IrrepId, ...]:
        return self.point_group.irrep_ids_upto(max_frequency)

    def _is_irrep(self, irrep: IrrepId) -> bool:
        return self.point_group._is_irrep(irrep)

    def check_irrep(self, irrep: object) -> IrrepId:
        return self.point_group.check_irrep(irrep)

    def irrep_frequency(self, irrep: IrrepId) -> int:
        return self.point_group.irrep_frequency(irrep)

    def irrep_dim(self, irrep: IrrepId) -> int:
        return self.point_group.irrep_dim(irrep)

    def irrep_matrix(self, irrep: IrrepId, g: EuclideanElement) -> np.ndarray:
        self._check(g)
        return self.point_group.irrep_matrix(irrep, g.point)

    def endomorphism_basis(self, irrep: IrrepId) -> tuple[np.ndarray, ...]:
        return self.point_group.endomorphism_basis(irrep)

    # --- subgroups ----------------------------------------------------------------------------
    def embed(self, h: GroupElement, subgroup: Group) -> EuclideanElement:
        """A point-group subgroup element as (0, h); an element of R^2 x| H' as (t, h')."""
        if not isinstance(h, GroupElement) or h.group != subgroup:
            raise TypeError(f"{h!r} is not an element of {subgroup.name}")
        if isinstance(subgroup, EuclideanGroup):
            return self.element(h.shift, self.point_group.embed(h.point, subgroup.point_group))
        return self.lift(self.point_group.embed(h, subgroup))


def euclidean(point_group: PlanarGroup) -> EuclideanGroup:
    """R^2 x| point_group: translations and the point group's rotations (and reflections)."""
    return EuclideanGroup(point_group)


def se2(max_frequency: int = 0) -> EuclideanGroup:
    """SE(2) = R^2 x| SO(2) (point-group irreps up to ``max_frequency``)."""
    return EuclideanGroup(so2(max_frequency))


def e2(max_frequency: int = 0) -> EuclideanGroup:
    """E(2) = R^2 x| O(2) (point-group irreps up to ``max_frequency``)."""
    return EuclideanGroup(o2(max_frequency))
