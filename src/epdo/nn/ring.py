r"""PDO layers on the ring domain (:class:`epdo.fields.Ring`): signals ``(B, C, M)`` on M points of a circle.

.. math:: \Psi[f] = \sum_{n=0}^{N} W_n\, \partial^n f,
          \qquad W_n\, \rho_{in}(g)\, \det(g)^n = \rho_{out}(g)\, W_n \quad \forall g \in G,

where :math:`\partial^n` is the central finite difference of order n along the ring (index spacing 1,
periodic: circular padding). Derivation of the constraint: a rotation of C_N / D_N is a circular shift,
which commutes with every :math:`\partial^n`; the reflection :math:`p_i \mapsto p_{-i}` reverses the
index, and because the central stencil of order n satisfies :math:`s_n[-t] = (-1)^n s_n[t]`,
:math:`\partial^n (f \circ s) = (-1)^n (\partial^n f) \circ s`. Equivariance
:math:`\Psi[\rho_{in}(g) f\circ g^{-1}] = \rho_{out}(g)\Psi[f]\circ g^{-1}` for all f therefore holds
iff :math:`W_n \in \mathrm{Hom}_G(\rho_{in} \otimes \mathrm{sign}^n, \rho_{out})` with
:math:`\mathrm{sign}(g) = \det(g)` (trivial for C_N, the irrep (1, 0) of D_N); the Hom solver gives a basis.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ..diffops import fd_stencil_1d
from ..fields import FieldType, Ring
from ..groups import Group, Representation
from .base import ExpandedWeightsModule
from .expansion import FieldBias, HomExpansion

__all__ = ["RingPDOConv", "ring_stencils"]


def _min_kernel(order: int) -> int:
    return 2 * ((order + 1) // 2) + 1


def ring_stencils(order: int, kernel_size: int) -> np.ndarray:
    """Central finite-difference stencils of orders 0..order as a float64 array ``(order + 1, kernel_size)``
    (correlation taps at offsets -r..r), exactly (anti)symmetric: ``s_n[-t] = (-1)^n s_n[t]``."""
    out = np.zeros((order + 1, kernel_size))
    for n in range(order + 1):
        s = fd_stencil_1d(n)
        s = (s + (-1) ** n * s[::-1]) / 2  # remove round-off asymmetry of the solve
        pad = (kernel_size - len(s)) // 2
        out[n, pad : pad + len(s)] = s
    return out


@lru_cache(maxsize=None)
def _sign(group: Group) -> Representation:
    """det(g): the reflection sign (irrep (1, 0)) for groups with reflections, trivial otherwise."""
    return group.irrep(1, 0) if group.reflections else group.trivial


@lru_cache(maxsize=None)
def _twisted(rep: Representation, n: int) -> Representation:
    """rho (x) sign^n: how the n-th derivative of a rho-field transforms under the ring's symmetries."""
    return rep if n % 2 == 0 or not rep.group.reflections else rep.tensor(_sign(rep.group))


class RingPDOConv(ExpandedWeightsModule):
    r"""Steerable PDO convolution on a ring: :math:`\sum_n W_n \partial^n f` (see the module documentation).

    Args:
        in_type, out_type: field types of the same C_N / D_N on the same :class:`~epdo.fields.Ring`.
        order: highest derivative order N.
        kernel_size: odd stencil width (default and minimum ``2 ceil(N/2) + 1``).
        bias: learnable bias on the trivial components of the output fields.
        device, dtype: of the parameters.

    Parameters: :math:`\sum_{n\le N}\sum_{a\in in, b\in out}\dim\mathrm{Hom}_G(\rho_a\otimes\mathrm{sign}^n,
    \rho_b)` (+ one bias per trivial component of the output).

    Shape:
        ``(B, in_type.size, M) -> (B, out_type.size, M)``.

    >>> import torch, epdo
    >>> G = epdo.groups.dihedral(4)
    >>> ring = epdo.fields.Ring(12)
    >>> t = epdo.fields.FieldType(G, [G.regular], ring)
    >>> layer = RingPDOConv(t, t, order=2)
    >>> layer(torch.randn(2, 8, 12)).shape
    torch.Size([2, 8, 12])
    >>> epdo.check_equivariance(layer).max_error() < 1e-12
    True
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, order: int = 2, kernel_size: int | None = None,
                 bias: bool = True, device=None, dtype=None):
        super().__init__(in_type, out_type)
        if not isinstance(in_type.domain, Ring) or out_type.domain != in_type.domain:
            raise ValueError(f"RingPDOConv: in_type and out_type must live on the same epdo.fields.Ring, got "
                             f"{in_type.domain} and {out_type.domain}")
        if in_type.group != out_type.group:
            raise ValueError(f"RingPDOConv: in_type is of {in_type.group.name} but out_type of {out_type.group.name}")
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
            raise ValueError(f"RingPDOConv: order must be a non-negative integer, got {order!r}")
        need = _min_kernel(int(order))
        k = need if kernel_size is None else kernel_size
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < need or k % 2 == 0:
            raise ValueError(f"RingPDOConv: kernel_size must be an odd integer >= {need} for order {order}, "
                             f"got {kernel_size!r}")
        if k // 2 > in_type.domain.M:
            raise ValueError(f"RingPDOConv: kernel_size {k} is too large for {in_type.domain}")
        self.order, self.kernel_size = int(order), int(k)
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        self.expansions = torch.nn.ModuleList(
            HomExpansion([_twisted(r, n) for r in in_type], list(out_type), **fk) for n in range(self.order + 1))
        self.bias_term = FieldBias(list(out_type), **fk) if bias else None
        self.register_buffer("stencils", torch.tensor(ring_stencils(self.order, self.kernel_size), **fk),
                             persistent=False)
        self.reset_parameters()

    def reset_parameters(self, gain: float = 2.0) -> None:
        """N(0, 1) parameters rescaled so that an output channel's filter has mean squared norm ``gain``;
        zero bias."""
        for e in self.expansions:
            e.reset_parameters()
        with torch.no_grad():
            norm2 = self._filter().pow(2).sum(dim=(1, 2)).mean()
            if norm2 > 0:
                for p in self.expansions.parameters():
                    p.mul_((gain / norm2).sqrt())
            if self.bias_term is not None and self.bias_term.bias is not None:
                self.bias_term.bias.zero_()
        self._eval_cache = None

    def _filter(self) -> torch.Tensor:
        w = torch.stack([e() for e in self.expansions])  # (N + 1, C_out, C_in)
        return torch.einsum("noc,nk->ock", w, self.stencils.to(w.dtype))

    def _expand(self):
        return self._filter(), None if self.bias_term is None else self.bias_term()

    def filter_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The expanded ``(C_out, C_in, k)`` filter and ``(C_out,)`` bias (cached in eval mode)."""
        return self.expanded_weights()

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        weight, bias = self.filter_and_bias()
        if x.dtype != weight.dtype:  # autocast: conv1d picks the compute dtype
            weight = weight.to(x.dtype)
            bias = None if bias is None else bias.to(x.dtype)
        r = self.kernel_size // 2
        if x.shape[0] == 0:
            return x.new_zeros(0, self.out_type.size, x.shape[-1])
        return F.conv1d(F.pad(x, (r, r), mode="circular") if r else x, weight, bias)

    def extra_repr(self) -> str:
        return f"{self.in_type} -> {self.out_type}, order={self.order}, kernel_size={self.kernel_size}"
