r"""Feature field types: a group, a list of representations (one per field) and the domain (paper 000 Eq. 2).

A signal ``x`` on a domain (default :class:`~epdo.fields.Plane`: tensors ``(B, size, H, W)``) is a
:class:`FieldType`-field when its channels are the concatenation of the fields' fibres. The group acts by

.. math:: (g \cdot f)(p) = \rho(g)\, f(g^{-1} p):

:class:`FieldType` applies the fibre part :math:`\rho(g)`, the domain the base-space part (exactly for
grid symmetries, by interpolation otherwise on the plane; always exactly on a :class:`~epdo.fields.Ring`).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from ..groups import Group, GroupElement, Representation, directsum
from .domain import Domain, Plane, transform_plane

__all__ = ["FieldType", "transform_plane"]


def _rep_expr(r: Representation) -> str:
    """An expression that evaluates (with ``import epdo``) to a representation equal to ``r``."""
    text = repr(r)
    if text.startswith("epdo."):  # the representation's own evaluable repr
        return text
    g = r.group
    gr = repr(g)
    try:
        if r == g.trivial:
            return f"{gr}.trivial"
        if g.is_finite and r == g.regular:
            return f"{gr}.regular"
        if len(r.irreps) == 1 and r == g.irrep(*r.irreps[0]):
            return f"{gr}.irrep({r.irreps[0][0]}, {r.irreps[0][1]})"
        if g.is_finite and r.name.startswith("quotient("):
            for n in range(1, g.N + 1):
                for refl in ((False, True) if g.reflections else (False,)):
                    if g.N % n == 0 and r == g.quotient(g.subgroup(n, refl)):
                        return f"{gr}.quotient({gr}.subgroup({n}, {refl}))"
    except (ValueError, TypeError, AttributeError):
        pass
    table = getattr(r, "_table", None)
    table_expr = "None" if table is None else repr(np.asarray(table).tolist())
    return (f"epdo.groups.Representation({gr}, {tuple(r.irreps)!r}, {np.asarray(r.change_of_basis).tolist()!r}, "
            f"{r.name!r}, {table_expr})")


def _runs(items: tuple) -> list[tuple[Any, int]]:
    out: list[tuple[Any, int]] = []
    for r in items:
        if out and out[-1][0] == r:
            out[-1] = (r, out[-1][1] + 1)
        else:
            out.append((r, 1))
    return out


class FieldType:
    """An immutable list of representations of one group on one domain; ``size`` channels in all.

    Equal (and equally hashed) when group, representations and domain are equal; ``eval(repr(t)) == t``
    with ``import epdo``; ``str(t)`` is a short human form. Attributes cannot be set after construction.

    Args:
        group: an ``epdo.groups`` group.
        representations: one representation of ``group`` per field (at least one).
        domain: the base space (default :class:`~epdo.fields.Plane`); must accept ``group``.

    >>> import epdo
    >>> from epdo import groups, fields
    >>> G = groups.cyclic(8)
    >>> t = fields.FieldType(G, [G.regular] * 3)
    >>> t.size, len(t), str(t)
    (24, 3, 'FieldType(C8: 3xregular; size=24)')
    >>> t
    epdo.fields.FieldType(epdo.groups.cyclic(8), [epdo.groups.cyclic(8).regular] * 3)
    >>> eval(repr(t)) == t
    True
    """

    __slots__ = ("group", "representations", "domain", "_hash", "_representation")

    def __init__(self, group: Group, representations: Iterable[Representation], domain: Domain | None = None):
        if not isinstance(group, Group):
            raise TypeError(f"FieldType expects an epdo.groups.Group, got {type(group).__name__}")
        if isinstance(representations, Representation):
            raise TypeError(f"FieldType expects a list of Representations (one per field), got the single "
                            f"representation {representations!r}; write [{representations!r}]")
        reps = tuple(representations)
        if not reps:
            raise ValueError("a FieldType needs at least one representation")
        for r in reps:
            if not isinstance(r, Representation):
                raise TypeError(f"FieldType expects Representations, got {type(r).__name__}")
            if r.group != group:
                raise ValueError(f"representation {r} is of group {r.group.name}, not of {group.name}")
        domain = Plane() if domain is None else domain
        if not isinstance(domain, Domain):
            raise TypeError(f"FieldType: domain must be an epdo.fields.Domain (e.g. Plane(), Ring(16)), "
                            f"got {type(domain).__name__}")
        domain.check_group(group)
        object.__setattr__(self, "group", group)
        object.__setattr__(self, "representations", reps)
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "_hash", hash((group, reps, domain)))
        object.__setattr__(self, "_representation", None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"FieldType is immutable: cannot set {name!r} (build a new FieldType instead)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"FieldType is immutable: cannot delete {name!r}")

    def __reduce__(self):
        return (FieldType, (self.group, self.representations, self.domain))

    # --- values ---------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return sum(r.size for r in self.representations)

    def __len__(self) -> int:
        return len(self.representations)

    def __iter__(self):
        return iter(self.representations)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FieldType) and self._hash == other._hash and self.group == other.group
                and self.representations == other.representations and self.domain == other.domain)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        parts = [f"[{_rep_expr(r)}]" + (f" * {n}" if n > 1 else "") for r, n in _runs(self.representations)]
        dom = "" if self.domain == Plane() else f", domain={self.domain!r}"
        return f"epdo.fields.FieldType({self.group!r}, {' + '.join(parts)}{dom})"

    def __str__(self) -> str:
        parts = [f"{n}x{r.name}" if n > 1 else r.name for r, n in _runs(self.representations)]
        dom = "" if self.domain == Plane() else f" on {self.domain}"
        return f"FieldType({self.group.name}: {', '.join(parts)}; size={self.size}{dom})"

    def __add__(self, other: "FieldType") -> "FieldType":
        if not isinstance(other, FieldType):
            return NotImplemented
        if other.group != self.group:
            raise ValueError(f"can only add FieldTypes of the same group: {self} is of {self.group.name}, "
                             f"{other} of {other.group.name}")
        if other.domain != self.domain:
            raise ValueError(f"can only add FieldTypes on the same domain: {self} lives on {self.domain}, "
                             f"{other} on {other.domain}")
        return FieldType(self.group, self.representations + other.representations, self.domain)

    @property
    def representation(self) -> Representation:
        """The direct sum of all fields' representations (size x size)."""
        if self._representation is None:
            object.__setattr__(self, "_representation", directsum(*self.representations))
        return self._representation

    def slices(self) -> list[slice]:
        out, i = [], 0
        for r in self.representations:
            out.append(slice(i, i + r.size))
            i += r.size
        return out

    def restrict(self, subgroup: Group) -> "FieldType":
        """The same fields seen as fields of a subgroup (e.g. D16 -> C16), on the same domain."""
        return FieldType(subgroup, [r.restrict(subgroup) for r in self.representations], self.domain)

    def on(self, domain: Domain) -> "FieldType":
        """The same fields on another domain."""
        return FieldType(self.group, self.representations, domain)

    @property
    def is_trivial(self) -> bool:
        return all(r.irreps == (r.group.trivial_irrep_id,) for r in self.representations)

    # --- checks ---------------------------------------------------------------------------------
    def check(self, x: Any, who: str = "input") -> None:
        """Raise TypeError / ValueError unless ``x`` is a signal of this type on the domain (e.g. a tensor
        of shape (B, size, H, W) on the plane); the message names the expected shape and this type."""
        self.domain.check(x, self, who)

    # --- the group action -----------------------------------------------------------------------
    def fiber_matrix(self, g: GroupElement) -> np.ndarray:
        """rho(g) on all channels (block diagonal, float64)."""
        return self.representation(g)

    def transform(self, x: Any, g: GroupElement, **options) -> Any:
        """(g . f)(p) = rho(g) f(g^{-1} p): the fibre part here, the base-space part by the domain.

        On the plane (about the image centre) it is exact for rotations by multiples of 90 degrees (square
        images) and reflections; other angles use ``grid_sample`` (``mode='bicubic'`` or ``'bilinear'``,
        zeros outside), exact only inside a disc and up to interpolation error.
        """
        self.check(x, "transform")
        if not isinstance(g, GroupElement) or g.group != self.group:
            raise TypeError(f"transform takes an element of {self.group.name}, got {g}")
        f = self.domain.features(x)
        rho = torch.as_tensor(np.array(self.fiber_matrix(g)), dtype=f.dtype, device=f.device)  # writable copy
        return self.domain.transform(self.domain.apply_fiber(x, rho), g, **options)
