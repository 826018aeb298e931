"""A sequential container of equivariant modules whose field types are checked at construction."""

from __future__ import annotations

from typing import Iterator

import torch

from .base import EquivariantModule

__all__ = ["Sequential"]


class Sequential(EquivariantModule):
    """Chain equivariant modules; ``in_type``/``out_type`` are those of the first and last module.

    Raises TypeError if an entry is not an :class:`~epdo.nn.base.EquivariantModule` and ValueError if a
    module's ``in_type`` differs from the previous module's ``out_type`` (naming the position and both types).

    >>> from epdo import groups, fields, nn
    >>> G = groups.cyclic(4)
    >>> t = fields.FieldType(G, [G.regular] * 2)
    >>> net = nn.Sequential(nn.PointwiseLinear(t, t), nn.ReLU(t), nn.GroupPool(t))
    >>> print(net.out_type)
    FieldType(C4: 2xtrivial; size=2)
    >>> net(torch.randn(1, 8, 5, 5)).shape
    torch.Size([1, 2, 5, 5])
    """

    def __init__(self, *modules: EquivariantModule):
        if not modules:
            raise ValueError("Sequential needs at least one module")
        for i, m in enumerate(modules):
            if not isinstance(m, EquivariantModule):
                raise TypeError(f"Sequential: module {i} must be an epdo.nn.EquivariantModule (with in_type and "
                                f"out_type), got {type(m).__name__}")
        for i in range(1, len(modules)):
            prev, cur = modules[i - 1].out_type, modules[i].in_type
            if cur != prev:
                raise ValueError(f"Sequential: module {i} ({type(modules[i]).__name__}) expects in_type {cur}, but "
                                 f"module {i - 1} ({type(modules[i - 1]).__name__}) returns out_type {prev}")
        super().__init__(modules[0].in_type, modules[-1].out_type)
        for i, m in enumerate(modules):
            self.add_module(str(i), m)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[EquivariantModule]:
        return iter(self._modules.values())

    def __getitem__(self, i: int) -> EquivariantModule:
        if isinstance(i, slice):
            return Sequential(*list(self._modules.values())[i])
        return list(self._modules.values())[i]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        for m in self._modules.values():
            x = m(x)
        return x

    def extra_repr(self) -> str:
        return ""
