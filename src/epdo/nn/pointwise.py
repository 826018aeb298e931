r"""The 1x1 equivariant linear layer: a learnable :math:`W \in \mathrm{Hom}_G(\rho_{in}, \rho_{out})` per pixel.

.. math:: y(p) = W x(p) + b, \qquad W \rho_{in}(g) = \rho_{out}(g) W \quad \forall g \in G,

with b non-zero only on the trivial components of the output fields (:class:`~epdo.nn.expansion.FieldBias`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..fields import FieldType
from .base import EquivariantModule
from .expansion import FieldBias, HomExpansion

__all__ = ["PointwiseLinear"]


class PointwiseLinear(EquivariantModule):
    r"""Equivariant 1x1 convolution between two field types of the same group.

    The weight is expanded from ``dim Hom_G(rho_in, rho_out)`` free parameters per pair of input and
    output fields (:class:`~epdo.nn.expansion.HomExpansion`), so the parameter count is
    :math:`\sum_{a \in in, b \in out} \dim\mathrm{Hom}_G(\rho_a, \rho_b)` (+ one bias per trivial
    component of the output fields).

    Initialisation (:meth:`reset_parameters`): the free parameters are drawn N(0, 1), then all are rescaled
    by one factor so that the expanded W has mean squared row norm ``gain`` (default 1): for an input with
    i.i.d. unit-variance channels every output channel then has variance ``gain`` on average (He / LeCun
    initialisation in the equivariant basis; pass ``gain=2`` before a ReLU). Biases start at zero.

    Args:
        in_type, out_type: field types of the same group.
        bias: learn a bias on the trivial components of the output fields.
        device, dtype: of the parameters.

    Shape:
        (B, in_type.size, H, W) -> (B, out_type.size, H, W); any trailing spatial dims, e.g. (B, C, M) on an
        :class:`~epdo.fields.Ring` (in_type and out_type on the same domain).

    >>> from epdo import groups, fields
    >>> G = groups.dihedral(4)
    >>> layer = PointwiseLinear(fields.FieldType(G, [G.regular]), fields.FieldType(G, [G.regular] * 2))
    >>> layer(torch.randn(3, 8, 5, 5)).shape
    torch.Size([3, 16, 5, 5])
    >>> torch.allclose(layer.export()(torch.ones(1, 8, 2, 2)), layer(torch.ones(1, 8, 2, 2)), atol=1e-6)
    True
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, bias: bool = True, device=None, dtype=None):
        super().__init__(in_type, out_type)
        if in_type.group != out_type.group:
            raise ValueError(f"PointwiseLinear: in_type is of {in_type.group.name} but out_type of "
                             f"{out_type.group.name}; both must be of the same group")
        if in_type.domain != out_type.domain:
            raise ValueError(f"PointwiseLinear: in_type lives on {in_type.domain} but out_type on {out_type.domain}; "
                             f"a pointwise map keeps the domain")
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        self.expansion = HomExpansion(list(in_type), list(out_type), **fk)
        self.bias_term = FieldBias(list(out_type), **fk) if bias else None
        self.reset_parameters()

    def reset_parameters(self, gain: float = 1.0) -> None:
        """N(0, 1) parameters rescaled so the expanded weight's mean squared row norm is ``gain``; zero bias."""
        self.expansion.reset_parameters()
        with torch.no_grad():
            w = self.expansion()
            norm2 = w.pow(2).sum(dim=1).mean()
            if norm2 > 0:
                scale = (gain / norm2).sqrt()
                for p in self.expansion.weights:
                    p.mul_(scale)
            if self.bias_term is not None and self.bias_term.bias is not None:
                self.bias_term.bias.zero_()

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The expanded (C_out, C_in) weight and (C_out,) bias (None without bias terms).

        Always expanded in the parameters' dtype, also under autocast (only the convolution is autocast).
        """
        p = self.expansion.weights[0] if len(self.expansion.weights) else None
        with torch.autocast("cpu" if p is None else p.device.type, enabled=False):
            return self.expansion(), None if self.bias_term is None else self.bias_term()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        w, b = self.weight_and_bias()
        if x.dtype != w.dtype:  # autocast: the convolution picks the compute dtype
            w = w.to(x.dtype)
            b = None if b is None else b.to(x.dtype)
        if x.dim() == 4:
            return F.conv2d(x, w[:, :, None, None], b)
        # any trailing spatial dims (e.g. (B, C, M) on a Ring); explicit sizes so that batch size 0 reshapes
        y = F.conv1d(x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:])), w[:, :, None], b)
        return y.reshape(x.shape[0], w.shape[0], *x.shape[2:])

    @torch.no_grad()
    def export(self) -> nn.Conv2d:
        """A plain ``torch.nn.Conv2d(kernel_size=1)`` computing the same function."""
        w, b = self.weight_and_bias()
        conv = nn.Conv2d(self.in_type.size, self.out_type.size, 1, bias=b is not None, device=w.device, dtype=w.dtype)
        conv.weight.copy_(w[:, :, None, None])
        if b is not None:
            conv.bias.copy_(b)
        return conv

    def extra_repr(self) -> str:
        return f"{self.in_type} -> {self.out_type}, bias={self.bias_term is not None}"
