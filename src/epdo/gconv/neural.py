r"""Neural ePDOs on group features, steered by the sampled elements: partial equivariance for
:class:`epdo.nn.NeuralEPDO` (paper 000's per-pixel generated PDO coefficients with paper 004's learned subsets).

Input :math:`f(x, v)` on the input elements :math:`v \in S_{in}` (``C_in`` channels), output on the output
elements :math:`u \in S_{out}`:

.. math::
    [z;\, y](x, u) = \sum_{v\in S_{in}} w_v\, A(u^{-1}v)\, f(x, v) + b \quad\text{(a 1 x 1 group correlation)},
    \qquad h = \mathrm{ReLU}(y),

    X(x, u) = W^2 h(x, u) + b^2 \in \mathbb{R}^{C_{out}\times|\Gamma_N|}, \qquad
    \Psi[f](x, u)_c = \sum_{\alpha} \big(D(M_u)^\top X_c(x, u)\big)_\alpha\, \partial^\alpha z_c(\cdot, u)(x),

with :math:`A` a SIREN of the relative element (:class:`~epdo.gconv.GroupConv`, kernel size 1), :math:`z` the
``C_out`` fields that are differentiated, :math:`y` the ``C_out / r`` hidden fields of the generator,
:math:`W^2, b^2` free (at a fixed u everything is expressed in u's frame) and :math:`D(M_u) = \hat\rho(u^{-1})`
the derivative representation (:func:`epdo.diffops.derivative_rep`, here :func:`derivative_rep_torch`:
differentiable in the angle). So the coefficients of orientation u are the identity-frame ones steered as in
:class:`epdo.nn.RotatedPDOExpansion`, :math:`W_u = \hat\rho(u^{-1})^\top X`, but generated per pixel from
the input as in :class:`epdo.nn.NeuralEPDO` (diag mode, Prop. 3: channel c's coefficients act on channel c).

Equivariance, :math:`[L_g f](x, v) = f(g^{-1}x, g^{-1}v)`: the group correlation gives
:math:`z', X' = z, X` at :math:`(g^{-1}x, g^{-1}u)`; by the chain rule
:math:`\partial^\alpha(\varphi\circ A)(x) = \sum_\beta D(A)_{\alpha\beta}(\partial^\beta\varphi)(Ax)` with
:math:`A = M_g^{-1}` the output at (x, u) is :math:`X^\top D(M_u) D(M_g^{-1})\,\partial z`, and
:math:`D(M_u) D(M_g^{-1}) = D(M_g^{-1}M_u) = D(M_{g^{-1}u})` (:math:`D(AB) = D(B)D(A)`), so it is
:math:`\Psi[f](g^{-1}x, g^{-1}u)`. Exact on a finite group with
all its elements on 90-degree elements (layer database entry ``gconv_neural_epdo``), in expectation for Haar
samples, and ``partial=True`` learns the output subset (:class:`~epdo.gconv.sampling.PartialSampler`; theta
receives gradients through :math:`D(M_u)`, the relative elements and the quadrature weights).

The product runs in :func:`epdo.nn._epdo_kernels.generated_pdo_product` (NeuralEPDO's fused diag-mode kernel,
the ``C_out |S_out|`` channels as its diagonal channels, :math:`W^2` steered per element into a block-diagonal
``(C_out |S_out| |Gamma|, (C_out/r) |S_out|)`` matrix); the coefficient scale per order is NeuralEPDO's
(:func:`epdo.nn.neural_epdo.order_scales`). Separable discretisations only (``"fd"``, ``"gauss"``).

>>> from epdo import groups
>>> from epdo.gconv import LiftingConv
>>> lift = LiftingConv(groups.se2(), 1, 4, 5, samples=8, partial=True, kernel="pdo")
>>> layer = NeuralGroupPDO(groups.se2(), 4, 4, order=2, in_elements=lift.sampler, samples=8, partial=True)
>>> layer(lift(torch.randn(2, 1, 11, 11))).shape[1] == 4 * len(layer.sampler.current)
True
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..diffops import as_discretization, multi_indices, num_multi_indices
from ..fields import FieldType
from ..nn.base import FullPrecisionConstants
from ..nn._epdo_kernels import PDOStencils, generated_pdo_product
from ..nn.neural_epdo import order_scales
from ..nn.pdo_base import discretization_stencils_1d
from .layers import GroupConv, _check_odd
from .partial import derivative_rep_torch
from ..nn.sampling import ElementSampler, Elements, check_count

__all__ = ["NeuralGroupPDO"]


class NeuralGroupPDO(FullPrecisionConstants):
    r"""Neural ePDO layer on group features with steered coefficients (module docstring for the maths):
    ``(B, C_in |S_in|, H, W) -> (B, C_out |S_out|, H, W)`` (zero padding, same size).

    Args:
        group: C_N, D_N (finite: all elements, ``in_type`` / ``out_type`` regular fields), or SO(2) / O(2) /
            SE(2) / E(2) with ``samples`` (Monte Carlo) and ``in_elements`` (the previous layer's sampler).
        in_channels, out_channels: fields in and out. order: N of :math:`\Gamma_N`. kernel_size: odd stencil width.
        reduction: r, the generator has ``out_channels / r`` hidden fields (r must divide out_channels).
        samples, partial, theta, prob, theta_lr_factor, prob_lr_factor, out_elements: as :class:`~epdo.gconv.GroupConv`.
        discretization: ``"fd"`` or ``"gauss"`` (separable; ``sigma`` via a Discretization value).
        omega_0: the SIREN frequency of the 1 x 1 group correlation. backend: of the product (``"auto"``,
            ``"torch"``, ``"cpp"``).
    """

    def __init__(self, group, in_channels: int, out_channels: int, order: int = 2, kernel_size: int = 5, *,
                 reduction: int = 1, in_elements: ElementSampler | None = None, samples: int | None = None,
                 partial: bool = False, theta: float = 1.0, prob: float = 0.99,
                 out_elements: ElementSampler | None = None, discretization="fd", omega_0: float = 2.0,
                 theta_lr_factor: float = 1.0, prob_lr_factor: float = 0.1, backend: str = "auto", device=None,
                 dtype=None):
        super().__init__()
        who = "NeuralGroupPDO"
        co = check_count(out_channels, who, "out_channels")
        if isinstance(reduction, bool) or not isinstance(reduction, (int, np.integer)) or reduction < 1 or co % reduction:
            raise ValueError(f"{who}: reduction must be a positive integer dividing out_channels ({co}), got "
                             f"{reduction!r}")
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
            raise ValueError(f"{who}: order must be a non-negative integer, got {order!r}")
        self.order = int(order)
        self.kernel_size = _check_odd(kernel_size, who)
        self.disc = as_discretization(discretization, self.kernel_size)
        try:
            s1 = discretization_stencils_1d(self.order, self.disc)
        except ValueError as e:
            raise ValueError(f"{who}: needs a separable discretisation ('fd', 'gauss'): {e}") from None
        self.out_channels, self.hidden, self.backend = co, co // int(reduction), backend
        self.n_alpha = num_multi_indices(self.order)
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        # one 1 x 1 group correlation gives z (the differentiated fields) and y (the generator's hidden fields)
        self.mix = GroupConv(group, in_channels, co + self.hidden, 1, in_elements=in_elements, samples=samples,
                             partial=partial, theta=theta, prob=prob, out_elements=out_elements, omega_0=omega_0,
                             theta_lr_factor=theta_lr_factor, prob_lr_factor=prob_lr_factor, **fk)
        self.group, self.in_channels = self.mix.group, self.mix.in_channels
        self._stencils = PDOStencils(s1, multi_indices(self.order))
        sq_norm = np.array([(s1[a] ** 2).sum() * (s1[b] ** 2).sum() for a, b in multi_indices(self.order)])
        self.register_constant("_scale", order_scales(self.order, sq_norm), **fk)
        self.weight = nn.Parameter(torch.randn(co, self.n_alpha, self.hidden, **fk) * math.sqrt(2.0 / self.hidden))
        self.bias = nn.Parameter(torch.zeros(co, self.n_alpha, **fk))
        finite = self.mix.in_type is not None
        G = self.group
        self.in_type = FieldType(G, [G.regular] * self.in_channels) if finite else None
        self.out_type = FieldType(G, [G.regular] * co) if finite else None

    @property
    def sampler(self) -> ElementSampler:
        """The output elements' sampler (the next layer's ``in_elements``)."""
        return self.mix.out_sampler

    def steered(self, u: Elements) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W2, b2)`` steered to the elements u: block diagonal ``(C_out S |Gamma|, hidden S)`` and
        ``(C_out S |Gamma|,)``, rows ``((c, u), alpha)``, columns ``(k, u)``."""
        D = derivative_rep_torch(u.matrices().to(self.weight.dtype), self.order)  # (S, |G|, |G|) = rho_hat(u^-1)
        w = self.weight * self._scale[:, None]
        b = self.bias * self._scale
        S = len(u)
        ws = torch.einsum("uba,cbk->ucak", D, w)  # (D(M_u)^T X)_alpha per element u
        w2 = ws.new_zeros(self.out_channels, S, self.n_alpha, self.hidden, S)
        idx = torch.arange(S, device=w.device)
        w2[:, idx, :, :, idx] = ws  # block diagonal over u (advanced indices first: (u, c, alpha, k))
        b2 = torch.einsum("uba,cb->cua", D, b).reshape(-1)
        return w2.reshape(-1, self.hidden * S), b2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.mix._in_elements(False)
        self.mix._check_x(x, self.in_channels, len(v), "input elements")
        u = self.mix._out_elements(False)
        w, b = self.mix.weights(u=u, v=v)
        zy = F.conv2d(x, w, b)
        S, co = len(u), self.out_channels
        z, h = zy[:, : co * S], F.relu(zy[:, co * S:])
        w2, b2 = self.steered(u)
        # the kernels take one dtype: under autocast z, h come back in the low precision; run in x's dtype
        z, h, w2, b2 = (t.to(x.dtype).contiguous() for t in (z, h, w2, b2))
        with torch.autocast(x.device.type, enabled=False):
            return generated_pdo_product(z, h, w2, b2, self._stencils, self.backend)

    def export(self) -> nn.Module:
        """A plain-torch module of the eval-mode function (the deterministic element sets)."""
        return _NeuralGroupPDOExport(self)

    def extra_repr(self) -> str:
        return (f"{self.group.name}, {self.in_channels}, {self.out_channels}, order={self.order}, "
                f"kernel_size={self.kernel_size}, hidden={self.hidden}")


class _NeuralGroupPDOExport(nn.Module):
    """The eval-mode :class:`NeuralGroupPDO` with its weights as plain tensors: 1 x 1 conv, ReLU, 1 x 1 conv (the
    steered coefficients), the 2-D stencils by a grouped conv, the per-pixel product summed over alpha."""

    def __init__(self, layer: NeuralGroupPDO) -> None:
        super().__init__()
        from ..diffops import stencils

        with torch.no_grad():
            u = layer.mix._out_elements(True)
            v = layer.mix._in_elements(True)
            w, b = layer.mix.weights(u=u, v=v)
            w2, b2 = layer.steered(u)
        self.mix = nn.Conv2d(w.shape[1], w.shape[0], 1, device=w.device, dtype=w.dtype)
        self.coef = nn.Conv2d(w2.shape[1], w2.shape[0], 1, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            self.mix.weight.copy_(w)
            self.mix.bias.copy_(b)
            self.coef.weight.copy_(w2[:, :, None, None])
            self.coef.bias.copy_(b2)
        st = torch.tensor(np.array(stencils(layer.order, layer.disc)), dtype=w.dtype, device=w.device)
        self.register_buffer("stencils", st[:, None].contiguous())
        self.n_z, self.n_alpha, self.pad = layer.out_channels * len(u), layer.n_alpha, layer.kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zy = self.mix(x)
        z, h = zy[:, : self.n_z], F.relu(zy[:, self.n_z:])
        coef = self.coef(h).unflatten(1, (self.n_z, self.n_alpha))
        d = F.conv2d(z.flatten(0, 1).unsqueeze(1), self.stencils, padding=self.pad).unflatten(0, (-1, self.n_z))
        return (coef * d).sum(2)


def _register_exporter() -> None:
    from ..export import _EXPORTERS  # see epdo.gconv.layers._register_exporters (import cycle)

    _EXPORTERS.setdefault(NeuralGroupPDO, lambda m: m.export())


_register_exporter()
