r"""The shared base of the PDO layers (:class:`~epdo.nn.PDOConv`, :class:`~epdo.nn.NeuralEPDO`).

A PDO layer applies :math:`\sum_{\alpha\in\Gamma_N} W_\alpha\,\partial^\alpha` with the elementary PDOs
:math:`\partial^\alpha` discretised as ``k x k`` stencils (:mod:`epdo.diffops`). :class:`PDOLayerBase` owns
what every such layer has: the truncation order N, the discretisation (a string or a ``Discretization``
value, resolved by :func:`layer_discretization`, the one place that turns user input into a
discretisation), the 2-D stencil buffer ``stencils`` ``(|Gamma_N|, k, k)`` (non-persistent), argument
validation with the same rules for every layer (:func:`check_int`), the initialisation scheme
(:meth:`PDOLayerBase.reset_parameters`), the cast of the expanded weights to the input dtype under autocast,
``num_params`` and ``extra_repr``.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..diffops import Discretization, as_discretization, num_multi_indices, stencils, stencils_1d
from ..fields import FieldType
from .base import ExpandedWeightsModule
from .expansion import FieldBias

__all__ = ["PDOLayerBase", "check_int", "layer_discretization", "is_separable", "discretization_stencils",
           "discretization_stencils_1d"]

DEFAULT_KERNEL_SIZE = 5


def check_int(value, name: str, who: str, minimum: int = 0) -> int:
    """``int(value)`` for a Python or numpy integer >= ``minimum``; ValueError otherwise (bools refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{who}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def layer_discretization(spec, kernel_size: int | None, sigma: float | None, who: str) -> Discretization:
    """The one entry point from a layer's arguments to a ``Discretization`` value.

    ``spec`` is a method name (``"fd"``, ``"gauss"``, ...; ``kernel_size`` defaults to 5) or a
    ``Discretization`` value (then ``kernel_size`` / ``sigma``, if given, must agree with it).
    """
    if kernel_size is not None:
        kernel_size = check_int(kernel_size, "kernel_size", who, 1)
    if isinstance(spec, Discretization):
        for name, given, have in (("kernel_size", kernel_size, spec.kernel_size), ("sigma", sigma, spec.sigma)):
            if given is not None and given != have:
                raise ValueError(f"{who}: {name}={given!r} contradicts the discretization {spec!r}; "
                                 f"pass one or the other")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"{who}: discretization must be a method name (str) or an epdo.diffops.Discretization, "
                        f"got {type(spec).__name__}")
    try:
        return as_discretization(spec, DEFAULT_KERNEL_SIZE if kernel_size is None else kernel_size, sigma)
    except ValueError as e:
        raise ValueError(f"{who}: {e}") from None


def is_separable(disc: Discretization) -> bool:
    """True when every 2-D stencil is an outer product of 1-D stencils (then :func:`stencils_1d` exists)."""
    return bool(disc.separable)


def check_discretization_order(disc: Discretization, order: int, who: str) -> None:
    """ValueError (prefixed by the layer's name) when ``disc``'s kernel is too small for ``order``."""
    try:
        disc.check_order(order)
    except ValueError as e:
        raise ValueError(f"{who}: {e}") from None


def discretization_stencils(order: int, disc: Discretization) -> np.ndarray:
    """``(|Gamma_N|, k, k)`` float64 correlation stencils of all :math:`\\partial^\\alpha`."""
    return np.array(stencils(order, disc))


def discretization_stencils_1d(order: int, disc: Discretization) -> np.ndarray:
    """``(N + 1, k)`` 1-D stencils of a separable discretisation."""
    if not is_separable(disc):
        raise ValueError(f"discretization {disc!r} is not separable: it has no 1-D stencils")
    return np.array(stencils_1d(order, disc))


class PDOLayerBase(ExpandedWeightsModule):
    r"""Base of the PDO layers: order, discretisation, stencils, validation, initialisation, autocast cast.

    Args:
        in_type, out_type: field types of the same group.
        order: truncation order N of :math:`\Gamma_N = \{(a, b): a + b \le N\}` (a non-negative int).
        kernel_size: odd stencil width k (default 5 for a named discretisation).
        discretization: a method name or an ``epdo.diffops.Discretization`` value.
        sigma: Gaussian width (``"gauss"``).

    Subclasses call ``super().__init__`` first, build their parameters, then call :meth:`reset_parameters`,
    and implement :meth:`_init_groups` (which expansions to rescale, to what) and :meth:`_expand`.
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, order: int, kernel_size: int | None,
                 discretization, sigma: float | None, device=None, dtype=None):
        super().__init__(in_type, out_type)
        who = type(self).__name__
        if in_type.group != out_type.group:
            raise ValueError(f"{who}: in_type is of {in_type.group.name} but out_type of {out_type.group.name}; "
                             f"both must be of the same group")
        self.order = check_int(order, "order", who, 0)
        self.disc = layer_discretization(discretization, kernel_size, sigma, who)
        check_discretization_order(self.disc, self.order, who)
        self.kernel_size = int(self.disc.kernel_size)
        self.n_alpha = num_multi_indices(self.order)
        self._fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        self.register_constant("stencils", discretization_stencils(self.order, self.disc), **self._fk)

    @property
    def separable(self) -> bool:
        return is_separable(self.disc)

    # --- parameters -----------------------------------------------------------------------------
    def _init_groups(self) -> Iterable[tuple[nn.Module, Callable[[], torch.Tensor], float]]:
        """``(expansion, expand, target)``: redraw ``expansion``'s parameters N(0, 1), then rescale them so that
        the mean over rows of ``expand()``'s squared row norm (rows = output channels) equals ``target``."""
        raise NotImplementedError

    def _bias_parameters(self) -> Iterable[torch.Tensor]:
        return [m.bias for m in self.modules() if isinstance(m, FieldBias) and m.bias is not None]

    def reset_parameters(self) -> None:
        """He-style initialisation in the equivariant bases (see :meth:`_init_groups`); biases zero."""
        with torch.no_grad():
            for expansion, expand, target in self._init_groups():
                expansion.reset_parameters()
                m = expand()
                norm2 = m.pow(2).flatten(1).sum(1).mean()
                if norm2 > 0:
                    scale = (target / norm2).sqrt()
                    for w in expansion.parameters():
                        w.mul_(scale)
            for b in self._bias_parameters():
                b.zero_()
        self.invalidate_cache()

    @property
    def num_params(self) -> int:
        """All learnable scalars (weights and biases)."""
        return sum(p.numel() for p in self.parameters())

    # --- forward helpers ------------------------------------------------------------------------
    @staticmethod
    def cast_like(x: torch.Tensor, *tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """The expanded weights in the input's dtype (differs only under autocast, where weights stay exact
        in the parameters' dtype until this cast)."""
        return tuple(t if t is None or t.dtype == x.dtype else t.to(x.dtype) for t in tensors)

    def extra_repr(self) -> str:
        s = (f"{self.in_type} -> {self.out_type}, order={self.order}, kernel_size={self.kernel_size}, "
             f"discretization={self.disc.method!r}")
        if getattr(self.disc, "sigma", None) is not None:
            s += f", sigma={self.disc.sigma}"
        return s
