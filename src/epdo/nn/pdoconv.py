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

from ..diffops import Discretization, derivative_representation, num_multi_indices, stencils
from ..fields import FieldType
from ..groups import Representation
from .base import ExpandedWeightsModule
from .expansion import FieldBias, HomExpansion

__all__ = ["PDOConv"]


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
    st = np.array(stencils(order, disc))
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
    perm = np.empty(n_alpha * in_type.size, dtype=np.int64)
    offset = 0
    for sl in in_type.slices():
        d = sl.stop - sl.start
        for a in range(n_alpha):
            for c in range(d):
                perm[a * in_type.size + sl.start + c] = offset + a * d + c
        offset += n_alpha * d
    return perm


class PDOeConvExpansion(nn.Module):
    r"""The PDO-eConv parameterisation (Shen et al. 2020) for regular output fields of a finite group.

    The free parameters are the PDO coefficients of the identity orientation of each output field,
    :math:`W_e \in \mathbb{R}^{|\Gamma_N| \times C_{in}}`; orientation g applies the rotated operator,
    :math:`W_g = W_e\,(\hat\rho(g)\otimes\rho_{in}(g))^{-1}`, i.e. :math:`W_g = \hat\rho(g^{-1})^\top X
    \rho_{in}(g^{-1})` with X the (alpha, channel) matrix of :math:`W_e`. This solves the same constraint as
    the steerable basis (for regular outputs both span Hom(rho_hat (x) rho_in, rho_out), of dimension
    |Gamma_N| C_in per output field); only the coordinates differ. ``forward()`` returns W in the global
    alpha-major column order.
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, order: int, device=None, dtype=None):
        super().__init__()
        G = out_type.group
        if not G.is_finite or any(r != G.regular for r in out_type):
            raise ValueError(f"basis='pdo_econv' needs regular output fields of a finite group, got {out_type}")
        rho_hat = derivative_representation(G, order)
        inv = [G.inverse(g) for g in G.elements]
        fk = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(len(out_type), rho_hat.size, in_type.size, **fk))
        self.register_buffer("_a", torch.tensor(np.stack([rho_hat(h) for h in inv]), **fk), persistent=False)
        self.register_buffer("_b", torch.tensor(np.stack([in_type.representation(h) for h in inv]), **fk),
                             persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)

    def forward(self) -> torch.Tensor:
        w = torch.einsum("gab,oac,gcd->ogbd", self._a, self.weight, self._b)  # (fields, |G|, |Gamma|, C_in)
        return w.reshape(w.shape[0] * w.shape[1], -1)


class PDOConv(ExpandedWeightsModule):
    r"""Steerable PDO convolution between field types of C_N, D_N, SO(2) or O(2).

    Args:
        in_type, out_type: field types of the same group.
        order: truncation order N of Gamma_N.
        kernel_size: odd stencil width k (>= 2 ceil(N/2) + 1 for finite differences).
        discretization: ``"fd"`` or ``"gauss"`` (then ``sigma`` in pixels is required).
        bias: learnable bias on the trivial components of the output fields.
        basis: ``"steerable"`` (the Hom-solver basis, any field types; each basis filter normalised to unit
            norm) or ``"pdo_econv"`` (Shen et al. 2020: free coefficients of the identity orientation, rotated
            for the others; regular output fields of C_N / D_N). Both span the same space.
        padding: zero padding (default ``kernel_size // 2``, same size output).

    Shape: ``(B, in_type.size, H, W) -> (B, out_type.size, H', W')`` with ``H' = H + 2 padding - k + 1``.

    In eval mode the expanded filter is cached (built without autograd); the cache is not part of
    ``state_dict`` and is rebuilt after ``train()``, ``load_state_dict`` or any in-place change of the weights.

    >>> from epdo import groups, fields, nn
    >>> G = groups.cyclic(4)
    >>> t = fields.FieldType(G, [G.regular] * 2)
    >>> layer = nn.PDOConv(t, t, order=2, kernel_size=3)
    >>> layer(torch.randn(1, 8, 9, 9)).shape
    torch.Size([1, 8, 9, 9])
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, order: int = 4, kernel_size: int = 5,
                 discretization: str = "fd", sigma: float | None = None, bias: bool = True,
                 basis: str = "steerable", padding: int | None = None, device=None, dtype=None):
        super().__init__(in_type, out_type)
        if in_type.group != out_type.group:
            raise ValueError(f"PDOConv: in_type is of {in_type.group.name} but out_type of {out_type.group.name}")
        if not isinstance(order, (int, np.integer)) or order < 0:
            raise ValueError(f"PDOConv: order must be a non-negative integer, got {order!r}")
        if discretization == "rbf":
            raise ValueError("PDOConv: discretization 'rbf' (RBF-FD) is not implemented; use 'fd' or 'gauss'")
        self.disc = Discretization(discretization, kernel_size, sigma)
        self.disc.check_order(order)
        self.order = int(order)
        self.kernel_size = int(kernel_size)
        self.padding = self.kernel_size // 2 if padding is None else int(padding)
        n_alpha = num_multi_indices(order)
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        if basis not in ("steerable", "pdo_econv"):
            raise ValueError(f"PDOConv: unknown basis {basis!r}; expected 'steerable' or 'pdo_econv'")
        self.basis = basis
        if basis == "steerable":
            self.expansion = HomExpansion([_derivative_field_rep(r, order) for r in in_type], list(out_type), **fk)
            perm = _alpha_major_permutation(in_type, n_alpha)
        else:
            self.expansion = PDOeConvExpansion(in_type, out_type, order, **fk)
            perm = np.arange(n_alpha * in_type.size)
        self.bias_term = FieldBias(list(out_type), **fk) if bias else None
        st = torch.tensor(np.array(stencils(order, self.disc)), **fk)
        self.register_buffer("stencils", st, persistent=False)
        self.register_buffer("_perm", torch.as_tensor(perm), persistent=False)
        if basis == "steerable":
            self._normalize_basis()
        self.reset_parameters()

    def _normalize_basis(self) -> None:
        """Scale every basis element so that its discretised filter has unit Frobenius norm.

        Without this, random parameters put most of the filter's energy in the highest derivative orders
        (whose stencils have the largest entries), which are also the least rotation-equivariant on the grid.
        """
        for rho_in, rho_out, scale in self.expansion.block_scales():
            norms = _basis_filter_norms(rho_in, rho_out, self.order, self.disc)
            scale.copy_(torch.as_tensor(1.0 / np.maximum(norms, 1e-12), dtype=scale.dtype))

    # --- parameters -----------------------------------------------------------------------------
    def reset_parameters(self, gain: float = 2.0) -> None:
        """He-style init on the expanded filter: E ||K[o]||^2 = gain for every output channel on average.

        Parameters are drawn N(0, 1) and rescaled so the mean squared norm of an output channel's filter
        (all input channels and taps) equals ``gain`` (2 for ReLU networks); biases start at zero.
        """
        self.expansion.reset_parameters()
        with torch.no_grad():
            k = self._expand_filter()
            norm2 = k.pow(2).sum(dim=(1, 2, 3)).mean()
            if norm2 > 0:
                scale = (gain / norm2).sqrt()
                for w in self.expansion.parameters():
                    w.mul_(scale)
            if self.bias_term is not None and self.bias_term.bias is not None:
                self.bias_term.bias.zero_()
        self._eval_cache = None

    def _expand(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._expand_filter(), None if self.bias_term is None else self.bias_term()

    def _expand_filter(self) -> torch.Tensor:
        w = self.expansion()[:, self._perm]  # (C_out, |Gamma| * C_in), alpha-major
        w = w.view(self.out_type.size, self.stencils.shape[0], self.in_type.size)
        return torch.einsum("oac,akl->ockl", w, self.stencils)

    def filter_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The expanded (C_out, C_in, k, k) filter and (C_out,) bias (cached in eval mode)."""
        return self.expanded_weights()

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- forward / export -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        weight, bias = self.filter_and_bias()
        if x.dtype != weight.dtype:  # autocast: let conv2d pick the compute dtype
            weight = weight.to(x.dtype)
            bias = None if bias is None else bias.to(x.dtype)
        return F.conv2d(x, weight, bias, padding=self.padding)

    @torch.no_grad()
    def export(self) -> nn.Conv2d:
        """A plain ``torch.nn.Conv2d`` computing the same function (the expanded filter and bias)."""
        weight = self._expand_filter()
        bias = None if self.bias_term is None else self.bias_term()
        conv = nn.Conv2d(self.in_type.size, self.out_type.size, self.kernel_size, padding=self.padding,
                         bias=bias is not None, device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
        return conv

    def extra_repr(self) -> str:
        s = f"{self.in_type} -> {self.out_type}, order={self.order}, kernel_size={self.kernel_size}, " \
            f"discretization={self.disc.method!r}"
        if self.disc.sigma is not None:
            s += f", sigma={self.disc.sigma}"
        return s + ("" if self.basis == "steerable" else f", basis={self.basis!r}")
