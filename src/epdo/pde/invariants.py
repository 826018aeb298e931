r"""Differential invariants of order 2 (Lagrave & Riou 2021, paper 001, Eqs. 4-5) and user-defined sets.

An invariant set is a function of the *derivative dictionary* :class:`Derivatives` of a field ``u``
(values of :math:`\partial^\alpha u` on the pixel grid, ``alpha`` in Gamma_N) that returns a few scalar
fields. Two sets come with the package:

* ``"se2"`` (:data:`SE2`): the generating set of SE(2) differential invariants of order 2,

  .. math::
      \{u,\; u_x^2+u_y^2,\; u_{xx}+u_{yy},\; u_x^2u_{xx}+2u_xu_yu_{xy}+u_y^2u_{yy},\;
        u_{xx}^2+2u_{xy}^2+u_{yy}^2\}.

* ``"scale"`` (:data:`SCALE`): the invariants of the scaled translations
  :math:`(x, y)\mapsto(\lambda x + a, \lambda y + b)`,

  .. math::
      \{u_x^2/u_{xx},\; u_x^2/u_{xy},\; u_x^2/u_{yy},\; u_y^2/u_{xx},\; u_y^2/u_{xy},\; u_y^2/u_{yy}\}.

**Division guard.** On flat image regions (MNIST's black background) the second derivatives vanish
exactly, so the plain quotients are ``0/0``. Every quotient here goes through :func:`safe_div`,

.. math::
    \operatorname{safe\_div}(n, d) = \frac{n\,d}{d^2 + \varepsilon^2},

which is smooth in ``(n, d)`` everywhere, equals :math:`n/d\,(1 + O(\varepsilon^2/d^2))` where
:math:`|d|\gg\varepsilon`, is exactly 0 where ``d = 0``, is bounded by :math:`|n|/(2\varepsilon)`, and has
finite partial derivatives :math:`\partial_n = d/(d^2+\varepsilon^2)`,
:math:`\partial_d = n(\varepsilon^2-d^2)/(d^2+\varepsilon^2)^2` (at most :math:`|n|/\varepsilon^2`). So no
NaN or inf reaches the network, forward or backward. The price: the quotient is scale-invariant only where
:math:`|d|\gg\varepsilon` (under :math:`x\mapsto\lambda x`, both ``n`` and ``d`` scale by
:math:`\lambda^{-2}` but :math:`\varepsilon` does not). ``eps`` is in the units of ``u_xx`` (pixel
intensity per pixel^2); the default ``1e-2`` is small next to the second derivatives of MNIST strokes
(order 0.1-1).

Derivatives are finite differences (or Gaussian derivatives) from :func:`epdo.diffops.stencils` in the
(x right, y up) frame of ``docs/design.md``. The paper does not state its boundary handling; we pad by
**replicating** the border pixels (``padding="replicate"``), which commutes with the square's rotations
by 90 degrees and its flips, so the grid-exact symmetries hold up to the border.

>>> import torch
>>> u = torch.rand(2, 1, 28, 28)
>>> SE2(derivatives(u, SE2.order)).shape
torch.Size([2, 1, 5, 28, 28])
>>> SCALE.names[0]
'u_x^2/u_xx'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import torch

from epdo import diffops
from epdo.diffops import Discretization, as_discretization, check_order, get_discretization_builder, multi_indices

__all__ = [
    "DEFAULT_EPS",
    "Derivatives",
    "INVARIANT_SETS",
    "InvariantSet",
    "PADDINGS",
    "SCALE",
    "SE2",
    "default_discretization",
    "derivative_name",
    "derivatives",
    "get_invariant_set",
    "safe_div",
    "scale_invariants",
    "se2_invariants",
    "stencil_tensor",
]

DEFAULT_EPS = 1e-2
PADDINGS = ("replicate", "zeros", "reflect", "circular")


def safe_div(num: torch.Tensor, den: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    r"""Guarded quotient :math:`n d / (d^2 + \varepsilon^2)`: smooth, finite, 0 where ``den == 0``.

    >>> safe_div(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 2.0]), eps=1e-3)
    tensor([0.0000, 0.5000])
    """
    if not eps > 0:
        raise ValueError(f"safe_div: eps must be > 0, got {eps!r}")
    return num * den / (den * den + eps * eps)


def derivative_name(alpha: tuple[int, int]) -> str:
    """``(a, b) -> "u_" + "x" * a + "y" * b`` (``(0, 0) -> "u"``).

    >>> derivative_name((1, 1))
    'u_xy'
    """
    a, b = alpha
    return "u" if a == b == 0 else "u_" + "x" * a + "y" * b


def _parse_key(key: object) -> tuple[int, int]:
    if isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, int) and k >= 0 for k in key):
        return key  # type: ignore[return-value]
    if isinstance(key, str):
        if key == "u":
            return (0, 0)
        if key.startswith("u_") and len(key) > 2 and set(key[2:]) <= {"x", "y"}:
            s = key[2:]
            if s == "x" * s.count("x") + "y" * s.count("y"):
                return (s.count("x"), s.count("y"))
    raise KeyError(
        f"derivative key must be a multi-index (a, b) or a name like 'u', 'u_x', 'u_xy' (x's before y's), got {key!r}"
    )


class Derivatives(Mapping):
    r"""Read-only dictionary of the derivatives :math:`\partial^\alpha u`, alpha in Gamma_N.

    Keys are multi-indices ``(a, b)`` (``d^a/dx^a d^b/dy^b``) or names ``"u"``, ``"u_x"``, ``"u_xy"``, ...;
    iteration yields the multi-indices in the order of :func:`epdo.diffops.multi_indices`. Each value has
    the shape of ``u``.

    Args:
        stacked: tensor ``(..., |Gamma_N|, H, W)``, derivatives ordered as ``multi_indices(order)``.
        order: N.
    """

    def __init__(self, stacked: torch.Tensor, order: int) -> None:
        self.order = order
        self._alphas = multi_indices(order)
        if stacked.dim() < 3 or stacked.shape[-3] != len(self._alphas):
            raise ValueError(
                f"Derivatives: expected a tensor (..., {len(self._alphas)}, H, W) for order {order}, "
                f"got {tuple(stacked.shape)}"
            )
        self.stacked = stacked
        self._index = {a: k for k, a in enumerate(self._alphas)}
        # unbind once: its backward is a single stack, where one select per read would each allocate a
        # zero tensor of the full stack in the backward pass
        self._parts = stacked.unbind(-3)

    def __getitem__(self, key: object) -> torch.Tensor:
        alpha = _parse_key(key)
        if alpha not in self._index:
            raise KeyError(
                f"derivative {derivative_name(alpha)} {alpha} is of order {sum(alpha)}, but only derivatives up to "
                f"order {self.order} were computed"
            )
        return self._parts[self._index[alpha]]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._alphas)

    def __len__(self) -> int:
        return len(self._alphas)

    def __repr__(self) -> str:
        return f"Derivatives(order={self.order}, shape={tuple(self.stacked.shape)})"


def default_discretization(order: int) -> Discretization:
    """The smallest central finite-difference stencils holding derivatives up to ``order`` (3x3 for order 2)."""
    return Discretization("fd", get_discretization_builder("fd").min_kernel_size(check_order(order)))


def stencil_tensor(
    order: int, disc: Discretization | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The stencils of :func:`epdo.diffops.stencils` as a conv2d weight ``(|Gamma_N|, 1, k, k)``."""
    disc = default_discretization(order) if disc is None else as_discretization(disc)
    return diffops.stencil_tensor(order, disc, dtype=dtype).unsqueeze(1)


def apply_stencils(u: torch.Tensor, weight: torch.Tensor, padding: str = "replicate") -> torch.Tensor:
    """``(..., H, W)`` field and ``(|Gamma|, 1, k, k)`` stencils -> derivatives ``(..., |Gamma|, H, W)``.

    :func:`epdo.diffops.correlate` (one depthwise ``conv2d`` over the channel dimension ``-3``) with this
    module's default padding, replicate.
    """
    return diffops.correlate(u, weight, padding=padding)


def derivatives(
    u: torch.Tensor, order: int, disc: Discretization | str | None = None, padding: str = "replicate"
) -> Derivatives:
    """Derivatives of ``u`` (``(..., H, W)``) up to ``order`` by stencil convolution (see module doc)."""
    disc = default_discretization(order) if disc is None else as_discretization(disc)
    return Derivatives(diffops.apply_stencils(u, order, disc, padding=padding), order)


InvariantFn = Callable[[Derivatives], "Sequence[torch.Tensor] | torch.Tensor"]


@dataclass(frozen=True)
class InvariantSet:
    """A named set of differential invariants: a function of the derivative dictionary.

    Args:
        name: short name (used in reprs, plots and error messages).
        order: the highest derivative order ``fn`` reads; the stencils are built for this order.
        names: one label per invariant (their number fixes the size of ``F_theta``).
        fn: ``Derivatives -> sequence of tensors`` (each of the shape of ``u``) or a tensor stacked on dim -3.

    Calling the set on ``Derivatives`` of a field ``(..., H, W)`` returns ``(..., len(names), H, W)``.

    >>> grad2 = InvariantSet("grad2", 1, ("u_x^2+u_y^2",), lambda d: [d["u_x"] ** 2 + d["u_y"] ** 2])
    >>> grad2(derivatives(torch.zeros(1, 1, 8, 8), 1)).shape
    torch.Size([1, 1, 1, 8, 8])
    """

    name: str
    order: int
    names: tuple[str, ...]
    fn: InvariantFn = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.order, int) or self.order < 0:
            raise ValueError(f"InvariantSet {self.name!r}: order must be a non-negative integer, got {self.order!r}")
        if not self.names:
            raise ValueError(f"InvariantSet {self.name!r}: needs at least one invariant name")
        object.__setattr__(self, "names", tuple(self.names))

    def __len__(self) -> int:
        return len(self.names)

    def compute(self, d: Derivatives) -> list[torch.Tensor]:
        """The invariants as a list of ``len(names)`` tensors of the shape of ``u`` (no stacking copy)."""
        if d.order < self.order:
            raise ValueError(
                f"invariant set {self.name!r} needs derivatives up to order {self.order}, "
                f"got derivatives of order {d.order}"
            )
        try:
            out = self.fn(d)
        except KeyError as err:
            raise ValueError(
                f"invariant set {self.name!r} (declared order {self.order}) read a derivative that was not "
                f"computed: {err.args[0]}"
            ) from None
        out = list(out.unbind(-3)) if isinstance(out, torch.Tensor) else list(out)
        shape = tuple(d.stacked.shape[:-3]) + tuple(d.stacked.shape[-2:])
        if len(out) != len(self.names) or any(tuple(t.shape) != shape for t in out):
            raise ValueError(
                f"invariant set {self.name!r} must return {len(self.names)} tensors of shape {shape}, got "
                f"{[tuple(t.shape) for t in out]}"
            )
        return out

    def __call__(self, d: Derivatives) -> torch.Tensor:
        """The invariants stacked on dim -3: ``(..., len(names), H, W)``."""
        return torch.stack(self.compute(d), dim=-3)


def _se2(d: Derivatives) -> list[torch.Tensor]:
    u, ux, uy, uxx, uxy, uyy = (d[a] for a in multi_indices(2))
    ux2, uy2 = ux * ux, uy * uy
    return [
        u,
        ux2 + uy2,
        uxx + uyy,
        ux2 * uxx + 2 * (ux * uy) * uxy + uy2 * uyy,
        uxx * uxx + 2 * (uxy * uxy) + uyy * uyy,
    ]


def se2_invariants() -> InvariantSet:
    """The SE(2) generating set of order 2 (paper 001, Eq. 4)."""
    names = ("u", "u_x^2+u_y^2", "u_xx+u_yy", "u_x^2u_xx+2u_xu_yu_xy+u_y^2u_yy", "u_xx^2+2u_xy^2+u_yy^2")
    return InvariantSet("se2", 2, names, _se2)


def scale_invariants(eps: float = DEFAULT_EPS) -> InvariantSet:
    """The scaled-translation set of order 2 (paper 001, Eq. 5), quotients through :func:`safe_div`."""
    if not eps > 0:
        raise ValueError(f"scale_invariants: eps must be > 0, got {eps!r}")

    def fn(d: Derivatives) -> list[torch.Tensor]:
        ux2, uy2 = d["u_x"] ** 2, d["u_y"] ** 2
        # safe_div(n, q) = n * q / (q^2 + eps^2), the factor q / (q^2 + eps^2) shared by both numerators
        recips = [q / (q * q + eps * eps) for q in (d["u_xx"], d["u_xy"], d["u_yy"])]
        return [n * r for n in (ux2, uy2) for r in recips]

    names = tuple(f"{n}/{q}" for n in ("u_x^2", "u_y^2") for q in ("u_xx", "u_xy", "u_yy"))
    return InvariantSet("scale" if eps == DEFAULT_EPS else f"scale(eps={eps:g})", 2, names, fn)


SE2 = se2_invariants()
SCALE = scale_invariants()
INVARIANT_SETS: dict[str, InvariantSet] = {"se2": SE2, "scale": SCALE}


def get_invariant_set(spec: str | InvariantSet) -> InvariantSet:
    """Resolve a name in :data:`INVARIANT_SETS` or pass an :class:`InvariantSet` through."""
    if isinstance(spec, InvariantSet):
        return spec
    if isinstance(spec, str):
        if spec not in INVARIANT_SETS:
            raise ValueError(f"unknown invariant set {spec!r}; expected one of {tuple(INVARIANT_SETS)} or an InvariantSet")
        return INVARIANT_SETS[spec]
    raise TypeError(f"invariant set must be a name in {tuple(INVARIANT_SETS)} or an InvariantSet, got {type(spec).__name__}")
