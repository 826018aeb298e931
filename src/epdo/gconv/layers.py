r"""Lifting, group and projection convolutions for SE(2) and E(2) (paper 003 sections 3-4, paper 004 Eq. 4).

Convention (one for the whole package, tested): **cross-correlation**, as ``torch.nn.functional.conv2d``
and paper 003. With :math:`M_u = R(\theta_u)F^{s_u}` and taps p in the (x right, y up) frame,

.. math::
    \text{lifting:}\quad h(x, u) = \sum_{c}\sum_p k_c(M_u^{-1} p)\, f_c(x + p), \qquad
    \text{group:}\quad h(x, u) = \sum_{v\in S_{in}} w_v \sum_{c}\sum_p k_c(M_u^{-1} p,\ u^{-1}v)\, f_c(x + p, v),

    \text{projection:}\quad h(x) = \textstyle\sum_u w_u f(x, u) / \sum_u w_u \ \text{(or the max over } u).

Paper 004 writes convolutions, :math:`h(u) = \int \psi(v^{-1}u) f(v)\,d\mu(v)`; the two agree with
:math:`\psi(g) = k(g^{-1})`, so weights are not interchangeable without that inversion (PITFALLS 19).
Both maps are equivariant: :math:`[L_g h](x, u) = h(g^{-1}x, g^{-1}u)`; the output channel ``c * S + i`` is
element i of the output set, so on C_N / D_N the output is ``out_channels`` regular fields
(``G.elements`` order) and the layers are exactly equivariant on 90-degree elements.

Elements: a finite group C_N / D_N (all elements; ``in_type`` / ``out_type`` are field types), or Monte Carlo
over SO(2) / O(2) with ``samples`` Haar elements drawn anew at every training forward (one draw per layer
per batch, shared by the batch; equivariant in expectation, 004 Eq. 4); **in eval mode the elements are the
deterministic grid** C_n / D_{n/2} (:mod:`epdo.gconv.sampling`). ``partial=True`` learns the subset
(:class:`~epdo.gconv.sampling.PartialSampler`). Sampled layers have ``in_type = out_type = None`` (no field
type describes a random element set); a group convolution reads its input elements from the previous
layer's sampler (``in_elements=previous.sampler``): the previous layer's sample set is its input domain.

Kernels: ``"siren"`` (default), ``"relu"``, ``"swish"`` (continuous, :mod:`epdo.gconv.kernels`),
``"discrete"`` (free weights on the k x k grid, rotated to :math:`M_u` by bilinear interpolation, exact on
90-degree elements; group convolutions: one filter per relative element of a finite group), ``"pdo"``
(steered PDO coefficients, :mod:`epdo.gconv.partial`). Kernels vanish outside the disc of radius k // 2.

>>> from epdo import groups
>>> lift = LiftingConv(groups.cyclic(4), 1, 2, kernel_size=3)
>>> conv = GroupConv(groups.cyclic(4), 2, 3, kernel_size=3)
>>> conv(lift(torch.randn(1, 1, 9, 9))).shape
torch.Size([1, 12, 9, 9])
>>> mc = LiftingConv(groups.se2(), 1, 2, kernel_size=3, samples=6)
>>> GroupConv(groups.se2(), 2, 3, kernel_size=3, in_elements=mc.sampler, samples=5)(mc(torch.randn(1, 1, 9, 9))).shape
torch.Size([1, 15, 9, 9])
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..fields import FieldType
from ..nn.base import FullPrecisionConstants
from .kernels import embed, embedding_dim, make_kernel_net, offsets
from .partial import derivative_rep_torch
from ..nn.sampling import (ElementSampler, Elements, FiniteElements, HaarSampler, PartialSampler, check_count,
                          eval_elements, input_elements, point_group, relative)

__all__ = ["LiftingConv", "GroupConv", "GroupProjection", "GROUP_KERNELS"]

GROUP_KERNELS = ("siren", "relu", "swish", "discrete", "pdo")


def _check_odd(k: object, who: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or k % 2 == 0:
        raise ValueError(f"{who}: kernel_size must be an odd integer >= 1 (a centred filter), got {k!r}")
    return int(k)


class _SampledLayer(FullPrecisionConstants):
    """Shared plumbing: the output sampler (owned, or shared with another layer) and the input checks."""

    def _setup_out(self, G, samples, partial, out_elements, theta, prob, fk, who, theta_lr_factor=1.0,
                   prob_lr_factor=0.1):
        self._owns_out = out_elements is None
        if out_elements is not None:
            if not isinstance(out_elements, ElementSampler):
                raise TypeError(f"{who}: out_elements must be an epdo.gconv sampler, got {type(out_elements).__name__}")
            if out_elements.group != G:
                raise ValueError(f"{who}: out_elements are elements of {out_elements.group.name}, the layer's group is "
                                 f"{G.name}")
            self.__dict__["_shared_out"] = out_elements
            return
        if partial:
            self.sampler = PartialSampler(G, 2 if G.is_finite else check_count(samples, who), theta=theta, prob=prob,
                                          theta_lr_factor=theta_lr_factor, prob_lr_factor=prob_lr_factor, **fk)
        elif G.is_finite:
            if samples is not None:
                raise ValueError(f"{who}: {G.name} is finite (all {G.order} elements are used); samples applies to "
                                 f"SO(2) / O(2) only, got samples={samples!r}")
            self.sampler = FiniteElements(G, **fk)
        else:
            if samples is None:
                raise ValueError(f"{who}: {G.name} is continuous: pass samples=n (Monte Carlo) or use cyclic(N) / "
                                 f"dihedral(N)")
            self.sampler = HaarSampler(G, check_count(samples, who), **fk)

    @property
    def out_sampler(self) -> ElementSampler:
        return self.sampler if self._owns_out else self.__dict__["_shared_out"]

    def _out_elements(self, eval_mode: bool) -> Elements:
        s = self.out_sampler
        if eval_mode or s.is_deterministic:
            return eval_elements(s) if eval_mode else s()
        if self._owns_out:
            return s()
        if s.current is None:
            raise RuntimeError(f"{type(self).__name__}: the shared output sampler has not drawn yet; run the layer "
                               f"that owns it first")
        return s.current

    def _check_x(self, x: torch.Tensor, channels: int, elements: int, what: str) -> None:
        who = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{who}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{who}: expected a real floating-point tensor, got dtype {x.dtype}")
        t = getattr(self, "in_type", None)
        desc = f" ({t})" if t is not None else ""
        if x.dim() != 4 or x.shape[1] != channels * elements:
            raise ValueError(f"{who}: expected a tensor of shape (B, {channels * elements}, H, W){desc}: "
                             f"{channels} channels x {elements} {what}, got {tuple(x.shape)}")


def _rotate_taps(k: int, mats: torch.Tensor) -> torch.Tensor:
    """``(S, k, k, 2)``: the taps :math:`M_u^{-1} p = M_u^T p` (orthogonal M) scaled by 1 / max(k // 2, 1)."""
    p = offsets(k, dtype=mats.dtype, device=mats.device)
    q = torch.einsum("sji,klj->skli", mats, p)
    return q / max(k // 2, 1)


def _sample_grid(weight: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``weight`` (S, C, k, k) at the scaled points q (S, k, k, 2) of the (x, y-up) frame."""
    grid = torch.stack([q[..., 0], -q[..., 1]], -1)
    return F.grid_sample(weight, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class _ConvBase(_SampledLayer):
    def _init_common(self, group, in_channels, out_channels, kernel_size, kernel, samples, partial, out_elements,
                     theta, prob, bias, omega_0, order, discretization, device, dtype, who, theta_lr_factor=1.0,
                     prob_lr_factor=0.1):
        super().__init__()
        G = point_group(group, who)
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            check_count(v, who, name)
        if kernel not in GROUP_KERNELS:
            raise ValueError(f"{who}: kernel must be one of {GROUP_KERNELS}, got {kernel!r}")
        self.group, self.in_channels, self.out_channels = G, int(in_channels), int(out_channels)
        self.kernel_size, self.kernel = _check_odd(kernel_size, who), kernel
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        self._fk = fk
        self._setup_out(G, samples, partial, out_elements, theta, prob, fk, who, theta_lr_factor, prob_lr_factor)
        self.omega_0, self.order = float(omega_0), None
        if kernel == "pdo":
            from ..diffops import multi_indices
            from ..nn.pdo_base import discretization_stencils
            from ..diffops import as_discretization

            self.order = check_count(order + 1, who, "order + 1") - 1
            disc = as_discretization(discretization, self.kernel_size)
            st = discretization_stencils(self.order, disc)
            degree = np.array([a + b for a, b in multi_indices(self.order)])
            norms = np.linalg.norm(st.reshape(len(st), -1), axis=1)
            scale = np.array([1.0 / max(norms[degree == d].mean(), 1e-12) for d in degree])  # per degree: rotations
            self.register_constant("_stencils", st * scale[:, None, None], **fk)
        p = offsets(self.kernel_size, dtype=fk["dtype"], device=device)
        disc_mask = (p.norm(dim=-1) <= self.kernel_size // 2 + 1e-9).to(fk["dtype"])
        self.register_buffer("_mask", disc_mask, persistent=False)
        self.bias = nn.Parameter(torch.zeros(self.out_channels, **fk)) if bias else None

    def _fan_in(self, n_in: int) -> float:
        taps = float(self._mask.sum()) if self.kernel != "pdo" else float(self.kernel_size ** 2)
        return self.in_channels * taps * n_in

    def _bias(self, s_out: int) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.repeat_interleave(s_out)

    def _export(self) -> nn.Conv2d:
        with torch.no_grad():
            w, b = self.weights(eval_mode=True)
        conv = nn.Conv2d(w.shape[1], w.shape[0], self.kernel_size, padding=self.kernel_size // 2, bias=b is not None,
                         device=w.device, dtype=w.dtype)
        with torch.no_grad():
            conv.weight.copy_(w)
            if b is not None:
                conv.bias.copy_(b)
        return conv.eval()

    def export(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` computing the eval-mode function (the deterministic element sets)."""
        return self._export()

    def extra_repr(self) -> str:
        s = f"{self.group.name}, {self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, kernel={self.kernel!r}"
        return s + ("" if self.order is None else f", order={self.order}")


class LiftingConv(_ConvBase):
    r"""Lifting correlation :math:`\mathbb{R}^2 \to G`: ``(B, C_in, H, W) -> (B, C_out * |S_out|, H, W)``.

    Args:
        group: C_N, D_N (finite), SO(2), O(2) or SE(2), E(2) (Monte Carlo with ``samples``).
        in_channels, out_channels: channels of the input image and output fields.
        kernel_size: odd filter width (padding ``k // 2``: same size output).
        kernel: one of :data:`GROUP_KERNELS`.
        samples: Monte Carlo sample count of continuous groups (O(2): even).
        partial: learn the output subset (:class:`~epdo.gconv.sampling.PartialSampler`; SO(2), O(2), D_1).
        theta, prob, theta_lr_factor, prob_lr_factor: initial :math:`\theta/\pi`, flip probability and the
            learning-rate factors of theta and of the flip logit (default 0.1, 004 section 7) of the partial sampler.
        out_elements: use another layer's sampler as this layer's output set instead of an own one.
        omega_0: SIREN frequency (default 2, :mod:`epdo.gconv.kernels`). order, discretization: of ``kernel="pdo"``.
    """

    def __init__(self, group, in_channels: int, out_channels: int, kernel_size: int = 5, *, kernel: str = "siren",
                 samples: int | None = None, partial: bool = False, theta: float = 1.0, prob: float = 0.99,
                 out_elements: ElementSampler | None = None, bias: bool = True, omega_0: float = 2.0, order: int = 2,
                 discretization="fd", theta_lr_factor: float = 1.0, prob_lr_factor: float = 0.1, device=None,
                 dtype=None):
        self._init_common(group, in_channels, out_channels, kernel_size, kernel, samples, partial, out_elements,
                          theta, prob, bias, omega_0, order, discretization, device, dtype, "LiftingConv",
                          theta_lr_factor, prob_lr_factor)
        G, fk, k = self.group, self._fk, self.kernel_size
        co, ci = self.out_channels, self.in_channels
        if kernel == "discrete":
            self.weight = nn.Parameter(torch.randn(co, ci, k, k, **fk))
        elif kernel == "pdo":
            self.weight = nn.Parameter(torch.randn(co, self._stencils.shape[0], ci, **fk))
        else:
            self.net = make_kernel_net(kernel, 2, co * ci, omega_0=omega_0, **fk)
        finite = G.is_finite and not partial and out_elements is None
        self.in_type = FieldType(G, [G.trivial] * ci) if finite else None
        self.out_type = FieldType(G, [G.regular] * co) if finite else None

    def weights(self, eval_mode: bool = False, u: Elements | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The ``(C_out * S_out, C_in, k, k)`` filter and bias for the output elements ``u`` (default: a draw)."""
        u = self._out_elements(eval_mode) if u is None else u
        S, k, co, ci = len(u), self.kernel_size, self.out_channels, self.in_channels
        mats = u.matrices()
        scale = math.sqrt(2.0 / self._fan_in(1))
        if self.kernel == "pdo":
            D = derivative_rep_torch(mats, self.order)  # rho_hat(u^-1) = D(M_u)
            w = torch.einsum("sab,oac,bkl->oscKl".replace("K", "k"), D, self.weight, self._stencils)
        elif self.kernel == "discrete":
            q = _rotate_taps(k, mats)
            w = _sample_grid(self.weight.reshape(1, co * ci, k, k).expand(S, -1, -1, -1), q)  # (S, co ci, k, k)
            w = w.reshape(S, co, ci, k, k).transpose(0, 1)
        else:
            q = _rotate_taps(k, mats)
            w = self.net(q.reshape(-1, 2)).reshape(S, k, k, co, ci).permute(3, 0, 4, 1, 2)
        w = w * (scale * self._mask)
        return w.reshape(co * S, ci, k, k), self._bias(S)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_x(x, self.in_channels, 1, "input")
        w, b = self.weights()
        return F.conv2d(x, w, b, padding=self.kernel_size // 2)


class GroupConv(_ConvBase):
    r"""Group correlation :math:`G \to G`: ``(B, C_in * |S_in|, H, W) -> (B, C_out * |S_out|, H, W)``.

    ``in_elements``: the previous layer's sampler (its output elements are this layer's input domain); default
    all elements of a finite group. The other arguments as :class:`LiftingConv`; ``kernel="discrete"`` needs a
    finite group (one k x k filter per relative element :math:`u^{-1}v`). Continuous kernels take
    :math:`(M_u^{-1}p / r, \text{embed}(u^{-1}v))` (``embedding``: ``"periodic"`` or ``"wrapped"``,
    :mod:`epdo.gconv.kernels`). The sum over v carries the weights :math:`w_v` of the input elements and the
    init scale :math:`\sqrt{2 / (C_{in}\,\text{taps}\,n)}` with n the input group's full sample count (Haar
    measure 1/n per element: a partial input set of fewer elements integrates over a smaller subset).
    """

    def __init__(self, group, in_channels: int, out_channels: int, kernel_size: int = 5, *, kernel: str = "siren",
                 in_elements: ElementSampler | None = None, samples: int | None = None, partial: bool = False,
                 theta: float = 1.0, prob: float = 0.99, out_elements: ElementSampler | None = None, bias: bool = True,
                 embedding: str = "periodic", omega_0: float = 2.0, order: int = 2, discretization="fd",
                 theta_lr_factor: float = 1.0, prob_lr_factor: float = 0.1, device=None, dtype=None):
        self._init_common(group, in_channels, out_channels, kernel_size, kernel, samples, partial, out_elements,
                          theta, prob, bias, omega_0, order, discretization, device, dtype, "GroupConv",
                          theta_lr_factor, prob_lr_factor)
        G, fk, k = self.group, self._fk, self.kernel_size
        co, ci = self.out_channels, self.in_channels
        self._owns_in = in_elements is None
        if in_elements is None:
            if not G.is_finite:
                raise ValueError(f"GroupConv: {G.name} is continuous: pass in_elements=previous_layer.sampler")
            self.in_sampler = FiniteElements(G, **fk)
        else:
            if not isinstance(in_elements, ElementSampler):
                raise TypeError(f"GroupConv: in_elements must be an epdo.gconv sampler (previous_layer.sampler), "
                                f"got {type(in_elements).__name__}")
            if in_elements.group != G:
                raise ValueError(f"GroupConv: the input's group axis holds elements of {in_elements.group.name}, the "
                                 f"layer's group is {G.name}")
            self.__dict__["_shared_in"] = in_elements
        self.embedding = embedding
        e = embedding_dim(embedding, G.reflections)
        n_in = self.input_sampler.count() if not isinstance(self.input_sampler, PartialSampler) else \
            (self.input_sampler.n if self.input_sampler.rotations else 2)
        self._n_in_full = int(n_in)
        if kernel == "discrete":
            if not G.is_finite:
                raise ValueError(f"GroupConv: kernel='discrete' needs a finite group (one filter per relative "
                                 f"element), got {G.name}; use a continuous kernel ('siren', 'relu', 'swish')")
            self.weight = nn.Parameter(torch.randn(co, ci, G.order, k, k, **fk))
        elif kernel == "pdo":
            self.net = make_kernel_net("siren", e, co * self._stencils.shape[0] * ci, omega_0=omega_0, **fk)
        else:
            self.net = make_kernel_net(kernel, 2 + e, co * ci, omega_0=omega_0, **fk)
        finite = G.is_finite and not partial and out_elements is None and in_elements is None
        self.in_type = FieldType(G, [G.regular] * ci) if finite else None
        self.out_type = FieldType(G, [G.regular] * co) if finite else None

    @property
    def input_sampler(self) -> ElementSampler:
        return self.in_sampler if self._owns_in else self.__dict__["_shared_in"]

    def _in_elements(self, eval_mode: bool) -> Elements:
        return input_elements(self.input_sampler, eval_mode, type(self).__name__)

    def weights(self, eval_mode: bool = False, u: Elements | None = None,
                v: Elements | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The ``(C_out * S_out, C_in * S_in, k, k)`` filter and bias for output elements u, input elements v."""
        v = self._in_elements(eval_mode) if v is None else v
        u = self._out_elements(eval_mode) if u is None else u
        So, Si, k, co, ci = len(u), len(v), self.kernel_size, self.out_channels, self.in_channels
        G = self.group
        cos, sin, flip, index = relative(u, v, G)
        mats = u.matrices()
        if self.kernel == "discrete":
            q = _rotate_taps(k, mats)  # (So, k, k, 2)
            w = self.weight[:, :, index]  # (co, ci, So, Si, k, k)
            w = w.permute(2, 0, 1, 3, 4, 5).reshape(So, co * ci * Si, k, k)
            w = _sample_grid(w, q).reshape(So, co, ci, Si, k, k).permute(1, 0, 2, 3, 4, 5)
        elif self.kernel == "pdo":
            x = self.net(embed(cos, sin, flip, self.embedding, G.reflections).reshape(So * Si, -1))
            x = x.reshape(So, Si, co, -1, ci)  # X(u^-1 v): (So, Si, co, |Gamma|, ci)
            D = derivative_rep_torch(mats, self.order)
            w = torch.einsum("sab,stoac,bkl->osctkl", D, x, self._stencils)
        else:
            q = _rotate_taps(k, mats)[:, None].expand(So, Si, k, k, 2)
            e = embed(cos, sin, flip, self.embedding, G.reflections)[:, :, None, None].expand(So, Si, k, k, -1)
            w = self.net(torch.cat([q, e], -1).reshape(So * Si * k * k, -1))
            w = w.reshape(So, Si, k, k, co, ci).permute(4, 0, 5, 1, 2, 3)
        scale = math.sqrt(2.0 / self._fan_in(self._n_in_full))
        w = w * (v.weight[:, None, None] * scale * self._mask)
        return w.reshape(co * So, ci * Si, k, k), self._bias(So)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self._in_elements(False)
        self._check_x(x, self.in_channels, len(v), "input elements")
        w, b = self.weights(v=v)
        return F.conv2d(x, w, b, padding=self.kernel_size // 2)


class GroupProjection(_SampledLayer):
    r"""Projection (pooling over the group axis) :math:`G \to \mathbb{R}^2`: ``(B, C * |S|, H, W) -> (B, C, H, W)``,
    the weighted mean :math:`\sum_u w_u f(x, u) / \sum_u w_u` or the max of :math:`w_u f(x, u)` over elements with
    :math:`w_u > 0` (w = 1 there in the forward pass; the product carries the straight-through gradient);
    invariant under the group acting on the input's group axis."""

    def __init__(self, group, channels: int, *, in_elements: ElementSampler | None = None, mode: str = "mean",
                 device=None, dtype=None):
        super().__init__()
        G = point_group(group, "GroupProjection")
        if mode not in ("mean", "max"):
            raise ValueError(f"GroupProjection: mode must be 'mean' or 'max', got {mode!r}")
        self.group, self.channels, self.mode = G, check_count(channels, "GroupProjection", "channels"), mode
        self._owns_in = in_elements is None
        if in_elements is None:
            if not G.is_finite:
                raise ValueError(f"GroupProjection: {G.name} is continuous: pass in_elements=previous_layer.sampler")
            self.in_sampler = FiniteElements(G, device=device, dtype=dtype)
        else:
            if not isinstance(in_elements, ElementSampler):
                raise TypeError(f"GroupProjection: in_elements must be an epdo.gconv sampler, got "
                                f"{type(in_elements).__name__}")
            if in_elements.group != G:
                raise ValueError(f"GroupProjection: the input's group axis holds elements of "
                                 f"{in_elements.group.name}, the layer's group is {G.name}")
            self.__dict__["_shared_in"] = in_elements
        finite = G.is_finite and in_elements is None
        self.in_type = FieldType(G, [G.regular] * self.channels) if finite else None
        self.out_type = FieldType(G, [G.trivial] * self.channels) if finite else None

    input_sampler = GroupConv.input_sampler
    _in_elements = GroupConv._in_elements

    def _pool(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        x = x.reshape(B, self.channels, len(w), H, W)
        if self.mode == "mean":
            return torch.einsum("bcshw,s->bchw", x, w.to(x.dtype) / w.sum().to(x.dtype))
        keep = w > 0  # w = 1 on kept elements (the product passes the straight-through gradient to w)
        return (x[:, :, keep] * w[keep].to(x.dtype)[:, None, None]).amax(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self._in_elements(False)
        self._check_x(x, self.channels, len(v), "input elements")
        return self._pool(x, v.weight)

    def export(self) -> nn.Module:
        """Mean: a 1 x 1 ``nn.Conv2d``; max: ``nn.Sequential(Unflatten, AdaptiveMaxPool3d, Flatten)`` over the
        kept elements of the eval-mode set."""
        with torch.no_grad():
            w = eval_elements(self.input_sampler).weight
        S = len(w)
        if self.mode == "mean":
            conv = nn.Conv2d(self.channels * S, self.channels, 1, bias=False, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                m = torch.zeros(self.channels, self.channels, S, dtype=w.dtype, device=w.device)
                idx = torch.arange(self.channels)
                m[idx, idx] = w / w.sum()
                conv.weight.copy_(m.reshape(self.channels, self.channels * S, 1, 1))
            return conv.eval()
        if not bool((w > 0).all()):
            raise NotImplementedError("GroupProjection.export: max over a subset with zero weights")
        return nn.Sequential(nn.Unflatten(1, (self.channels, S)), nn.AdaptiveMaxPool3d((1, None, None)),
                             nn.Flatten(1, 2)).eval()

    def extra_repr(self) -> str:
        return f"{self.group.name}, {self.channels}, mode={self.mode!r}"


def _register_exporters() -> None:
    # epdo.export's table directly: register_exporter would load the built-in exporters, which import
    # epdo.models, which imports this package (a cycle at import time)
    from ..export import _EXPORTERS

    for cls in (LiftingConv, GroupConv, GroupProjection):
        _EXPORTERS.setdefault(cls, lambda m: m.export())


_register_exporters()
