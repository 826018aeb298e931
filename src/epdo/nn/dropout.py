r"""Field dropout: whole fields are dropped, so the layer commutes with the group (in distribution in
training mode, exactly in eval mode where it is the identity)."""

from __future__ import annotations

import torch

from ..fields import FieldType
from .base import EquivariantModule

__all__ = ["FieldDropout"]


class FieldDropout(EquivariantModule):
    r"""Zero each field of each sample with probability ``p`` (training mode), scaling the rest by 1/(1-p).

    Dropping channels independently would break equivariance (rho(g) mixes a field's channels); dropping a
    whole field multiplies it by a scalar, which commutes with rho(g). The mask is shared over space.

    Args:
        in_type: field type (any representations).
        p: drop probability in [0, 1].

    Shape:
        (B, in_type.size, H, W) -> same; any trailing spatial dims (e.g. (B, C, M) on a Ring).

    >>> from epdo import groups, fields
    >>> G = groups.cyclic(4)
    >>> drop = FieldDropout(fields.FieldType(G, [G.regular] * 3), p=0.5).eval()
    >>> x = torch.randn(2, 12, 3, 3)
    >>> torch.equal(drop(x), x)
    True
    """

    def __init__(self, in_type: FieldType, p: float = 0.5):
        super().__init__(in_type, in_type)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"FieldDropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        idx = [i for i, r in enumerate(in_type.representations) for _ in range(r.size)]
        self.register_buffer("_field_index", torch.tensor(idx, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)
        keep = torch.rand(x.shape[0], len(self.in_type), device=x.device) >= self.p
        mask = keep.to(x.dtype).index_select(1, self._field_index) / (1.0 - self.p)
        return x * mask.view(mask.shape + (1,) * (x.dim() - 2))  # shared over any trailing spatial dims

    def extra_repr(self) -> str:
        return f"{self.in_type}, p={self.p}"
