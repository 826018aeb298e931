"""The base class of every equivariant layer: typed input/output fields on plain tensors."""

from __future__ import annotations

import torch
from torch import nn

from ..fields import FieldType

__all__ = ["EquivariantModule", "ExpandedWeightsModule", "FullPrecisionConstants"]


def _float64(value) -> torch.Tensor:
    """A float64 CPU copy of an array-like constant (a copy: cached numpy arrays may be read-only)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64, copy=True)
    return torch.tensor(value, dtype=torch.float64)


class FullPrecisionConstants(nn.Module):
    """Mixin for modules with constant buffers computed in float64 (bases, stencils, rotation matrices).

    :meth:`register_constant` stores such a buffer in the module's dtype and keeps its float64 value (a
    reference to the array it was computed as, usually cached already); every ``.to()`` / ``.double()`` /
    ``.float()`` / ``.cuda()`` then re-rounds the constant from that value. A layer built in float32 and cast
    with ``.double()`` therefore computes the float64-built function, instead of carrying float32-rounded
    constants (relative errors near 1e-8) into float64 arithmetic.
    """

    def register_constant(self, name: str, value, device=None, dtype=None) -> None:
        """A non-persistent buffer ``name`` holding ``value`` (array-like, computed in float64) in ``dtype``."""
        master = value.detach().to("cpu", torch.float64) if isinstance(value, torch.Tensor) else value
        self.__dict__.setdefault("_constant_masters", {})[name] = master
        t = _float64(master)
        self.register_buffer(name, t.to(device=device, dtype=dtype or torch.get_default_dtype()), persistent=False)

    def set_constant(self, name: str, value) -> None:
        """Replace the value of the constant ``name`` (same device and dtype as before)."""
        buf = self._buffers[name]
        self.register_constant(name, value, device=buf.device, dtype=buf.dtype)

    def constant_float64(self, name: str) -> torch.Tensor:
        """The float64 value of the constant ``name`` (CPU)."""
        return _float64(self.__dict__["_constant_masters"][name])

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        for name, master in self.__dict__.get("_constant_masters", {}).items():
            buf = self._buffers.get(name)
            if buf is not None and buf.is_floating_point():
                self._buffers[name] = _float64(master).to(device=buf.device, dtype=buf.dtype)
        return out


class EquivariantModule(FullPrecisionConstants):
    """A ``torch.nn.Module`` mapping ``in_type``-fields to ``out_type``-fields, on plain tensors ``(B, C, ...)``.

    Subclasses call :meth:`check_input` first in ``forward``; it raises ValueError naming the expected field
    type and the received shape, and TypeError for integer, boolean or complex input and for a floating dtype
    other than the parameters' (outside autocast).
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

    def check_input(self, x: torch.Tensor, channels: int | None = None, what: str | None = None) -> None:
        """TypeError / ValueError unless ``x`` is a signal of ``in_type`` in the parameters' dtype. ``channels``,
        ``what``: the input of a partial layer, ``in_type``'s fields on a sampled set of elements (plane
        signals of ``channels`` channels, described by ``what``)."""
        who = f"{type(self).__name__} input"
        if channels is None:
            self.in_type.check(x, who)
        elif not isinstance(x, torch.Tensor):
            raise TypeError(f"{who}: expected a torch.Tensor for {what}, got {type(x).__name__}")
        elif x.dim() != 4 or x.shape[1] != channels:
            raise ValueError(f"{who}: expected a tensor of shape (B, {channels}, H, W) for {what}, got shape "
                             f"{tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}: expected a real floating-point tensor (e.g. torch.float32), "
                            f"got dtype {x.dtype}")
        p = next(self.parameters(), None)
        if p is not None and p.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"{type(self).__name__}: input dtype {x.dtype} does not match parameter dtype {p.dtype}; "
                            f"convert one of them (e.g. module.to({x.dtype})) or use torch.autocast")

    def export(self) -> nn.Module:
        """A plain torch module (no ``epdo`` import needed) computing the same function in eval mode
        (:func:`epdo.export.export_module`). Layers with a direct torch equivalent override this."""
        from ..export import export_module

        return export_module(self)

    def extra_repr(self) -> str:
        return f"in_type={self.in_type}, out_type={self.out_type}"


def _fingerprint(params: list[torch.Tensor]) -> tuple:
    return tuple((p.data_ptr(), p._version, p.dtype, p.device, tuple(p.shape)) for p in params)


def _same_values(params: list[torch.Tensor], snapshot: tuple[torch.Tensor, ...]) -> bool:
    """Elementwise equality of every parameter with its stored copy (NaN never equal: the cache is rebuilt).

    On CPU ``torch.equal`` per tensor; on accelerators one reduction and one host synchronisation per layer
    (``torch.equal`` would synchronise once per tensor)."""
    if not params or params[0].device.type == "cpu":
        return all(torch.equal(p, s) for p, s in zip(params, snapshot))
    return _same_values_one_sync(params, snapshot)


def _same_values_one_sync(params, snapshot) -> bool:
    return bool(torch.stack([torch.eq(p, s).all() for p, s in zip(params, snapshot)]).all())


class ExpandedWeightsModule(EquivariantModule):
    """An equivariant module whose effective weights are *expanded* from its parameters (a steerable basis
    times learnable coefficients) by :meth:`_expand`.

    :meth:`expanded_weights` rebuilds them on every call where a gradient to the parameters may be needed
    (training mode, or grad enabled with a parameter that requires grad: eval mode keeps gradients, so
    frozen-batch-norm fine-tuning and input attribution work). Otherwise (``torch.no_grad``,
    ``torch.inference_mode``, or frozen parameters) it caches them, built without a graph.

    The cache is valid while every parameter has the same storage, version counter, dtype, device and shape
    **and** the same values as a stored copy (``torch.equal``): writes through ``p.data`` (``p.data.copy_``,
    ``p.data.mul_``) bypass the version counter and are caught by the value check. The copy costs one
    clone of the parameters (the expanded weights are larger). The cache lives outside the ``state_dict``
    (the keys are the same in train and eval mode) and is not pickled.
    """

    def __init__(self, in_type: FieldType, out_type: FieldType):
        super().__init__(in_type, out_type)
        self._eval_cache: tuple | None = None

    def _expand(self):
        raise NotImplementedError

    def invalidate_cache(self) -> None:
        """Drop the cached expanded weights (they are rebuilt on the next call that may use them)."""
        self._eval_cache = None

    def weights_need_grad(self) -> bool:
        """True when the expanded weights must carry a graph: grad mode on and some parameter requires grad."""
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())

    def _cache_parameters(self) -> list[torch.Tensor]:
        """The parameters the expanded weights depend on (default: the module's own)."""
        return list(self.parameters())

    def _cache_valid(self, params: list[torch.Tensor]) -> bool:
        c = self._eval_cache
        if c is None or c[0] != _fingerprint(params):
            return False
        return _same_values(params, c[1])

    def expanded_weights(self):
        """:meth:`_expand`'s result (cached where no gradient to the parameters is needed, see the class doc)."""
        if self.training:
            self._eval_cache = None
            return self._expand()
        if self.weights_need_grad():
            return self._expand()
        params = self._cache_parameters()
        if not self._cache_valid(params):
            with torch.inference_mode(False), torch.no_grad():  # a cache built in inference mode stays usable
                self._eval_cache = None
                snapshot = tuple(p.detach().clone() for p in params)
                self._eval_cache = (_fingerprint(params), snapshot, self._expand())
        return self._eval_cache[2]

    def train(self, mode: bool = True):
        self._eval_cache = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._eval_cache = None
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._eval_cache = None
        return super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_eval_cache"] = None
        return state
