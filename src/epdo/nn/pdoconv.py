r"""The linear steerable PDO layer (Jenner & Weiler 2021; PDO-eConvs, Shen et al. 2020; paper 000 Eq. 3).

.. math:: \Psi[f] = \sum_{\alpha\in\Gamma_N} W_\alpha\, \partial^\alpha f,
          \qquad W\,(\hat\rho(g)\otimes\rho_{in}(g)) = \rho_{out}(g)\, W \quad \forall g\in G,

with :math:`W = [W_{(0,0)}, \dots, W_{(0,N)}]` (the linear case of Prop. 2 in paper 000). W is expanded
from free parameters through the Hom solver (one parameter tensor per pair of field representations), and
the elementary PDOs are discretised by finite differences or Gaussian derivatives
(:mod:`epdo.diffops`), giving an ordinary ``k x k`` convolution filter
:math:`K = \sum_\alpha W_\alpha\, s_\alpha`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..diffops import Discretization, derivative_rep_torch, derivative_representation
from ..fields import FieldType
from ..groups import PlanarGroup, Representation
from .expansion import FieldBias, HomExpansion, RotatedPDOExpansion
from .pdo_base import PDOLayerBase, check_int, discretization_stencils
from .sampling import (ElementSampler, Elements, PartialSampler, attach_input_sampler, attached_input_sampler,
                       continuous_extension, input_elements, interpolate_relative)

__all__ = ["PDOConv", "PDOeConvExpansion"]


@lru_cache(maxsize=None)
def _derivative_field_rep(rep: Representation, order: int) -> Representation:
    """rho_hat (x) rho: how the derivative vector (d^alpha f_c)_{alpha, c} of one field transforms."""
    return derivative_representation(rep.group, order).tensor(rep)


@lru_cache(maxsize=None)
def _basis_filter_norms(rho_in: Representation, rho_out: Representation, order: int,
                        disc: Discretization) -> np.ndarray:
    """Frobenius norm of the discretised filter of each Hom basis element (rho_in = rho_hat (x) rho)."""
    from ..groups.intertwiners import hom_structure

    s = hom_structure(rho_in, rho_out)
    st = discretization_stencils(order, disc)
    n_alpha = st.shape[0]
    gram = np.einsum("akl,bkl->ab", st, st)  # stencil inner products
    norms = np.empty(s.n_params)
    for p in range(s.n_params):
        sel = s.param == p
        m = np.zeros((rho_out.size, rho_in.size))
        m[s.row[sel], s.col[sel]] = s.value[sel]
        w = (s.q_out @ m @ s.q_in_inv).reshape(rho_out.size, n_alpha, -1)  # (o, alpha, c)
        norms[p] = np.sqrt(np.einsum("oac,ab,obc->", w, gram, w))
    return norms


def _alpha_major_permutation(in_type: FieldType, n_alpha: int) -> np.ndarray:
    """Column order taking W's per-field (alpha, c) blocks to a global (alpha, channel) order."""
    size = in_type.size
    perm = np.empty(n_alpha * size, dtype=np.int64)
    offset = 0
    for sl in in_type.slices():
        d = sl.stop - sl.start
        for a in range(n_alpha):
            perm[a * size + sl.start: a * size + sl.stop] = offset + a * d + np.arange(d)
        offset += n_alpha * d
    return perm


class PDOeConvExpansion(RotatedPDOExpansion):
    r"""The PDO-eConv parameterisation (Shen et al. 2020) of ``PDOConv(basis="pdo_econv")``: a
    :class:`~epdo.nn.expansion.RotatedPDOExpansion` over all elements of a finite group, one free
    orientation per regular output field, :math:`W_g = \hat\rho(g^{-1})^\top X \rho_{in}(g^{-1})`.
    ``forward()`` returns W as a ``(C_out, |Gamma_N| C_in)`` matrix in the global alpha-major column order.
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, order: int, device=None, dtype=None):
        G = out_type.group
        if not G.is_finite or any(r != G.regular for r in out_type):
            raise ValueError(f"basis='pdo_econv' needs regular output fields of a finite group, got {out_type}")
        super().__init__(in_type, len(out_type), order, device=device, dtype=dtype)

    def forward(self) -> torch.Tensor:
        w = super().forward()  # (fields, |G|, |Gamma|, C_in)
        return w.reshape(w.shape[0] * w.shape[1], -1)


class PDOConv(PDOLayerBase):
    r"""Steerable PDO convolution between field types of C_N, D_N, SO(2) or O(2).

    Args:
        in_type, out_type: field types of the same group.
        order: truncation order N of Gamma_N (a non-negative int; bools are refused).
        kernel_size: odd stencil width k (default 5; >= 2 ceil(N/2) + 1 for finite differences).
        discretization: ``"fd"``, ``"gauss"`` (then ``sigma`` in pixels is required) or another registered
            method, or an ``epdo.diffops.Discretization`` value (any, separable or not: only the 2-D
            stencils are used).
        bias: learnable bias on the trivial components of the output fields.
        basis: ``"steerable"`` (the Hom-solver basis, any field types; each basis filter normalised to unit
            norm) or ``"pdo_econv"`` (Shen et al. 2020: free coefficients of the identity orientation, rotated
            for the others by :class:`~epdo.nn.expansion.RotatedPDOExpansion`; regular output fields of
            C_N / D_N). Both span the same space.
        padding: zero padding, a non-negative int (default ``kernel_size // 2``, same size output).
        stride: a positive int; the output keeps every ``stride``-th position (``conv2d``'s stride). With
            ``stride`` > 1 the kept grid is symmetric under 90-degree rotations only if ``H + 2 padding - k`` is
            a multiple of ``stride`` (e.g. odd ``H`` for stride 2, same padding).
        partial: learn which orientations the layer is equivariant to (Partial G-CNNs, paper 004, applied to
            the PDO-eConv parameterisation): see "Partial equivariance" below. theta, prob, theta_lr_factor,
            prob_lr_factor: of the :class:`~epdo.nn.sampling.PartialSampler` (initial :math:`\theta/\pi`,
            flip probability, learning-rate factors). in_elements: the previous partial layer's ``sampler``
            (regular input fields; default: all elements of the group, the input of a full layer).

    Partial equivariance (``partial=True``; ``in_type`` trivial or regular fields, ``out_type`` regular fields
    of C_N, N >= 2, or D_N). The group is extended to SO(2) (O(2) for D_N; the mirror group for D_1) and the
    output orientations u are drawn from a learned distribution over :math:`[-\theta, \theta]` (the flipped
    coset with a learned probability), ``ceil(n theta / pi)`` of them (n = N, 2N for O(2)): anew at every
    training forward pass, the deterministic grid :math:`\theta(-1 + 2j/n)` in eval mode. The coefficients are
    those of ``basis="pdo_econv"`` (Shen et al. 2020), steered by the derivative representation:
    :math:`W_u = D(M_u)^\top X` (lifting) and :math:`W_{u,v} = D(M_u)^\top X(u^{-1}v)` (regular input on the
    previous layer's elements v), with :math:`X(\cdot)` the free coefficients on the grid of C_N (D_N),
    interpolated linearly in the angle of the relative element between grid angles. theta and the flip
    probability receive gradients through :math:`D(M_u)`, the interpolation weights and the straight-through
    flip weight. At theta = pi (probability 1) in eval mode, on the full input grid, the layer is exactly the
    full ``PDOConv(basis="pdo_econv")`` with the same parameters, its output orientations in the sampler's
    order (from -pi). Shape: ``(B, C_in |S_in|, H, W) -> (B, C_out |S_out|, H', W')`` (C the number of
    fields, channel ``c |S| + i`` the orientation i of field c); ``in_type`` / ``out_type`` keep the field types
    of the full layer, ``sampler.current`` holds the output elements, the next layer's ``in_elements``.

    Shape: ``(B, in_type.size, H, W) -> (B, out_type.size, H', W')`` with
    ``H' = (H + 2 padding - k) // stride + 1``.

    Where no gradient to the weights is needed (``torch.no_grad``, inference mode, frozen weights) in eval
    mode, the expanded filter is cached; the cache is not part of ``state_dict`` and is rebuilt after
    ``train()``, ``load_state_dict`` or any change of the weights (also through ``p.data``).

    >>> from epdo import groups, fields, nn
    >>> G = groups.cyclic(4)
    >>> t = fields.FieldType(G, [G.regular] * 2)
    >>> layer = nn.PDOConv(t, t, order=2, kernel_size=3)
    >>> layer(torch.randn(1, 8, 9, 9)).shape
    torch.Size([1, 8, 9, 9])
    >>> lift = nn.PDOConv(fields.FieldType(G, [G.trivial]), t, order=2, kernel_size=5, partial=True, theta=0.5)
    >>> conv = nn.PDOConv(t, t, order=2, kernel_size=5, partial=True, in_elements=lift.sampler)
    >>> y = conv(lift(torch.randn(1, 1, 9, 9)))   # lift: ceil(4 * 0.5) = 2 orientations per field
    >>> y.shape[1] == 2 * len(conv.sampler.current)
    True
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, order: int = 4, kernel_size: int | None = None,
                 discretization: str | Discretization = "fd", sigma: float | None = None, bias: bool = True,
                 basis: str | None = None, padding: int | None = None, stride: int = 1, *, partial: bool = False,
                 in_elements: ElementSampler | None = None, theta: float = 1.0, prob: float = 0.99,
                 theta_lr_factor: float = 1.0, prob_lr_factor: float = 0.1, device=None, dtype=None):
        super().__init__(in_type, out_type, order, kernel_size, discretization, sigma, device, dtype)
        if not isinstance(partial, bool):
            raise TypeError(f"PDOConv: partial must be a bool, got {partial!r}")
        if partial and basis == "steerable":
            raise ValueError("PDOConv(partial=True) steers the coefficients of one orientation: it uses "
                             "basis='pdo_econv' (same span), not 'steerable'")
        if in_elements is not None and not partial:
            raise ValueError("PDOConv: in_elements is an argument of partial layers (partial=True)")
        basis = ("pdo_econv" if partial else "steerable") if basis is None else basis
        if basis not in ("steerable", "pdo_econv"):
            raise ValueError(f"PDOConv: unknown basis {basis!r}; expected 'steerable' or 'pdo_econv'")
        if partial:
            self._check_partial_types(in_elements)
        self.padding = self.kernel_size // 2 if padding is None else check_int(padding, "padding", "PDOConv", 0)
        self.stride = check_int(stride, "stride", "PDOConv", 1)
        order, n_alpha, fk = self.order, self.n_alpha, self._fk
        self.basis = basis
        if basis == "steerable":
            self.expansion = HomExpansion([_derivative_field_rep(r, order) for r in in_type], list(out_type), **fk)
            perm = _alpha_major_permutation(in_type, n_alpha)
        else:
            self.expansion = PDOeConvExpansion(in_type, out_type, order, **fk)
            perm = np.arange(n_alpha * in_type.size)
        self.bias_term = FieldBias(list(out_type), **fk) if bias else None
        self.register_buffer("_perm", torch.as_tensor(perm), persistent=False)
        if basis == "steerable":
            self._normalize_basis()
        self.partial = partial
        if partial:
            self._setup_partial(in_elements, theta, prob, theta_lr_factor, prob_lr_factor)
        self.init_gain = 2.0
        self.reset_parameters()

    # --- partial equivariance -------------------------------------------------------------------
    def _check_partial_types(self, in_elements) -> None:
        G, who = self.in_type.group, "PDOConv(partial=True)"
        if not isinstance(G, PlanarGroup) or not G.is_finite or (not G.reflections and G.N < 2):
            raise ValueError(f"{who}: needs field types of C_N (N >= 2) or D_N, got {G.name}")
        if any(r != G.regular for r in self.out_type):
            raise ValueError(f"{who}: out_type must be regular fields of {G.name}, got {self.out_type}")
        if all(r == G.trivial for r in self.in_type):
            self._lifting = True
        elif all(r == G.regular for r in self.in_type):
            self._lifting = False
        else:
            raise ValueError(f"{who}: in_type must be all trivial (lifting) or all regular fields, got {self.in_type}")
        if self._lifting and in_elements is not None:
            raise ValueError(f"{who}: trivial input fields live on the plane only; in_elements applies to regular input")

    def _setup_partial(self, in_elements, theta, prob, theta_lr_factor, prob_lr_factor) -> None:
        G = self.in_type.group
        self.continuous_group, n = continuous_extension(G)
        self.sampler = PartialSampler(self.continuous_group, n, theta=theta, prob=prob, theta_lr_factor=theta_lr_factor,
                                      prob_lr_factor=prob_lr_factor, **self._fk)
        if not self._lifting:
            attach_input_sampler(self, in_elements, G, "PDOConv(partial=True)")

    @property
    def input_sampler(self) -> ElementSampler | None:
        """The sampler of the input elements (partial layers with regular input fields; else None)."""
        if not self.partial or self._lifting:
            return None
        return attached_input_sampler(self)

    def _relative_coefficients(self, u: Elements, v: Elements) -> torch.Tensor:
        """X(u^-1 v): ``(C_out, |Gamma|, C_in, S_u, S_v)``, the grid coefficients interpolated linearly in the angle
        of the relative element (:func:`~epdo.nn.sampling.interpolate_relative`; exact on grid angles)."""
        G = self.in_type.group
        w = self.expansion.weight  # (fields out, |Gamma|, C_in fields * |G|), columns: field, then G.elements index
        return interpolate_relative(w.view(w.shape[0], w.shape[1], len(self.in_type), G.order), u, v, G)

    def partial_filter_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Partial layers: the ``(C_out |S_out|, C_in |S_in|, k, k)`` filter and bias for a new draw of the output
        elements (stored in ``sampler.current``) on the current input elements."""
        u = self.sampler()
        D = derivative_rep_torch(u.matrices().to(self.expansion.weight.dtype), self.order)  # D(M_u) = rho_hat(u^-1)
        st = self.stencils
        if self._lifting:
            x = self.expansion.weight  # (o, |Gamma|, c)
            k = torch.einsum("sba,obc,akl->osckl", D, x, st)
            k = k.reshape(-1, x.shape[2], *st.shape[1:])
        else:
            v = input_elements(self.input_sampler, False, "PDOConv(partial=True)")
            xr = self._relative_coefficients(u, v)  # (o, |Gamma|, c, S_u, S_v)
            k = torch.einsum("sba,obcst,akl,t->osctkl", D, xr, st, v.weight.to(xr.dtype))
            k = k.reshape(k.shape[0] * k.shape[1], k.shape[2] * k.shape[3], *st.shape[1:])
        b = None
        if self.bias_term is not None:  # regular fields: the bias is constant over a field's orientations
            b = self.bias_term().view(len(self.out_type), -1)[:, :1].expand(-1, len(u)).reshape(-1)
        return k, b

    def _cache_parameters(self) -> list[torch.Tensor]:
        """Partial layers on a previous layer's elements also depend on that layer's theta and probability."""
        params = super()._cache_parameters()
        s = self.input_sampler
        return params if s is None or s is getattr(self, "in_sampler", None) else params + list(s.parameters())

    def _partial_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._lifting:
            self.check_input(x)
        else:
            S = len(input_elements(self.input_sampler, False, "PDOConv(partial=True)"))
            self.check_input(x, len(self.in_type) * S, f"{self.in_type} on {S} input elements")
        weight, bias = self.cast_like(x, *self.filter_and_bias())  # eval: cached (the deterministic orientations)
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)

    def _normalize_basis(self) -> None:
        """Scale every basis element so that its discretised filter has unit Frobenius norm.

        Without this, random parameters put most of the filter's energy in the highest derivative orders
        (whose stencils have the largest entries), which are also the least rotation-equivariant on the grid.
        """
        for k, (rho_in, rho_out, _) in enumerate(self.expansion.block_scales()):
            norms = _basis_filter_norms(rho_in, rho_out, self.order, self.disc)
            self.expansion.set_constant(f"_scale{k}", 1.0 / np.maximum(norms, 1e-12))

    # --- parameters -----------------------------------------------------------------------------
    def _init_groups(self):
        """He-style init on the expanded filter: E ||K[o]||^2 = ``init_gain`` (2, for ReLU networks) for every
        output channel on average (all input channels and taps)."""
        return [(self.expansion, self._expand_filter, self.init_gain)]

    def reset_parameters(self, gain: float | None = None) -> None:
        """Parameters N(0, 1) rescaled so the mean squared norm of an output channel's filter equals ``gain``
        (default ``init_gain`` = 2); biases zero."""
        if gain is not None:
            self.init_gain = float(gain)
        super().reset_parameters()

    def _expand(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.partial:
            return self.partial_filter_and_bias()
        return self._expand_filter(), None if self.bias_term is None else self.bias_term()

    def _expand_filter(self) -> torch.Tensor:
        w = self.expansion()[:, self._perm]  # (C_out, |Gamma| * C_in), alpha-major
        w = w.view(self.out_type.size, self.stencils.shape[0], self.in_type.size)
        return torch.einsum("oac,akl->ockl", w, self.stencils)

    def filter_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The expanded (C_out, C_in, k, k) filter and (C_out,) bias (cached where no weight gradient is needed;
        partial layers: :meth:`partial_filter_and_bias`)."""
        return self.expanded_weights()

    # --- forward / export -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.partial:
            return self._partial_forward(x)
        self.check_input(x)
        weight, bias = self.cast_like(x, *self.filter_and_bias())  # autocast: conv2d picks the compute dtype
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)

    @torch.no_grad()
    def export(self) -> nn.Conv2d:
        """A plain ``torch.nn.Conv2d`` computing the same function (the expanded filter and bias; partial layers:
        the eval-mode function on the deterministic element sets)."""
        if self.partial:
            was = self.training
            self.eval()
            try:
                weight, bias = self.partial_filter_and_bias()
            finally:
                self.train(was)
        else:
            weight = self._expand_filter()
            bias = None if self.bias_term is None else self.bias_term()
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], self.kernel_size, padding=self.padding,
                         stride=self.stride, bias=bias is not None, device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
        return conv

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.padding != self.kernel_size // 2:
            s += f", padding={self.padding}"
        if self.stride != 1:
            s += f", stride={self.stride}"
        if self.bias_term is None:
            s += ", bias=False"
        s += "" if self.basis == "steerable" or self.partial else f", basis={self.basis!r}"
        return s + (", partial=True" if self.partial else "")
