"""The base class of every equivariant layer: typed input/output fields on plain tensors."""

from __future__ import annotations

import torch
from torch import nn

from ..fields import FieldType

__all__ = ["EquivariantModule", "ExpandedWeightsModule"]


class EquivariantModule(nn.Module):
    """A ``torch.nn.Module`` mapping ``in_type``-fields to ``out_type``-fields, on plain tensors (B, C, H, W).

    Subclasses call :meth:`check_input` first in ``forward``; it raises ValueError naming the expected field
    type and the received shape, and TypeError for a floating dtype other than the parameters'.
    """

    in_type: FieldType
    out_type: FieldType

    def __init__(self, in_type: FieldType, out_type: FieldType):
        super().__init__()
        for name, t in (("in_type", in_type), ("out_type", out_type)):
            if not isinstance(t, FieldType):
                raise TypeError(f"{type(self).__name__}: {name} must be an epdo.fields.FieldType, got {type(t).__name__}")
        self.in_type = in_type
        self.out_type = out_type

    def check_input(self, x: torch.Tensor) -> None:
        self.in_type.check(x, f"{type(self).__name__} input")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}: expected a floating-point tensor, got dtype {x.dtype}")
        p = next(self.parameters(), None)
        if p is not None and p.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"{type(self).__name__}: input dtype {x.dtype} does not match parameter dtype {p.dtype}; "
                            f"convert one of them (e.g. module.to({x.dtype})) or use torch.autocast")

    def extra_repr(self) -> str:
        return f"in_type={self.in_type}, out_type={self.out_type}"


class ExpandedWeightsModule(EquivariantModule):
    """An equivariant module whose effective weights are *expanded* from its parameters (a steerable basis
    times learnable coefficients) by :meth:`_expand`.

    :meth:`expanded_weights` rebuilds them on every call in training mode (so gradients flow) and, in eval
    mode, caches them without building a graph, keyed by the parameters' versions and storage, so an
    in-place optimiser step or ``load_state_dict`` invalidates the cache. The cache lives outside the
    ``state_dict``: its keys are the same in train and eval mode.
    """

    def __init__(self, in_type: FieldType, out_type: FieldType):
        super().__init__(in_type, out_type)
        self._eval_cache: tuple | None = None

    def _expand(self):
        raise NotImplementedError

    def _versions(self) -> tuple:
        return tuple((p._version, p.data_ptr()) for p in self.parameters())

    def expanded_weights(self):
        """:meth:`_expand`'s result (cached in eval mode)."""
        if self.training:
            self._eval_cache = None
            return self._expand()
        key = self._versions()
        if self._eval_cache is None or self._eval_cache[0] != key:
            with torch.no_grad():
                self._eval_cache = (key, self._expand())
        return self._eval_cache[1]

    def train(self, mode: bool = True):
        self._eval_cache = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._eval_cache = None
        return super()._load_from_state_dict(*args, **kwargs)
