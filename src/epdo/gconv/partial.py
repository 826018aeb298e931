r"""Partial equivariance for PDO layers: steered PDO coefficients on sampled group elements (paper 004's
learned distributions applied to the PDO-eConv parameterisation of Shen et al. 2020 / paper 000).

A PDO kernel of orientation u is the identity one rotated by u, :math:`\Psi_u[f] = u\cdot\Psi_e[u^{-1}\cdot f]`,
whose coefficients are :math:`W_u = D(M_u)^\top X` (:class:`epdo.nn.RotatedPDOExpansion`:
:math:`\hat\rho(u^{-1}) = D(M_u)`, :func:`epdo.diffops.derivative_rep`). Here :math:`D(M)` is computed in torch
(:func:`derivative_rep_torch`, the same polynomial products as the core's numpy function), so it is
differentiable in the sampled angle and the learned :math:`\theta` receives gradients through it. The
group-convolution layers of :mod:`epdo.gconv.layers` use it for ``kernel="pdo"``: lifting
:math:`W_u = D(M_u)^\top X`, group convolution :math:`W_{u,v} = D(M_u)^\top X(u^{-1}v)` with X(.) a SIREN on
the relative element; the filter is :math:`K = \sum_\alpha W_\alpha s_\alpha` with the core's stencils. With a
:class:`~epdo.gconv.sampling.PartialSampler` the PDO network is partially equivariant ("partial=True").

>>> import torch
>>> from epdo.diffops import derivative_rep
>>> m = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=torch.float64)
>>> bool(torch.allclose(derivative_rep_torch(m[None], 2)[0], torch.tensor(derivative_rep(m.numpy(), 2))))
True
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["derivative_rep_torch", "partial_equivariance_report"]


def _poly_mul(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Batched product of homogeneous polynomials in (X, Y): ``(S, a + 1)`` x ``(S, b + 1)`` -> ``(S, a + b + 1)``
    (coefficient k multiplies X^(deg - k) Y^k)."""
    a, b = p.shape[1] - 1, q.shape[1] - 1
    out = p.new_zeros(p.shape[0], a + b + 1)
    for j in range(b + 1):
        out = out + torch.nn.functional.pad(p * q[:, j : j + 1], (j, b - j))
    return out


def derivative_rep_torch(matrices: torch.Tensor, order: int) -> torch.Tensor:
    r"""``(S, |Gamma_N|, |Gamma_N|)``: :math:`D(A)` of :func:`epdo.diffops.derivative_rep` for a batch
    ``(S, 2, 2)`` of matrices, differentiable (:math:`\partial_x^a\partial_y^b(f\circ A)` is the polynomial
    :math:`(A_{11}X + A_{21}Y)^a (A_{12}X + A_{22}Y)^b`, block diagonal over the orders)."""
    if matrices.dim() != 3 or matrices.shape[1:] != (2, 2):
        raise ValueError(f"derivative_rep_torch: expected (S, 2, 2) matrices, got {tuple(matrices.shape)}")
    S = matrices.shape[0]
    col_x, col_y = matrices[:, :, 0], matrices[:, :, 1]  # d/dx (f o A) = A11 X + A21 Y; d/dy: A12 X + A22 Y
    size = (order + 1) * (order + 2) // 2
    rows, start = [], 0
    for n in range(order + 1):
        px, py = [matrices.new_ones(S, 1)], [matrices.new_ones(S, 1)]
        for _ in range(n):
            px.append(_poly_mul(px[-1], col_x))
            py.append(_poly_mul(py[-1], col_y))
        for j in range(n + 1):
            rows.append(torch.nn.functional.pad(_poly_mul(px[n - j], py[j]), (start, size - start - n - 1)))
        start += n + 1
    return torch.stack(rows, 1)


def partial_equivariance_report(model: nn.Module) -> list[dict]:
    """One row per :class:`~epdo.gconv.sampling.PartialSampler` in ``model`` (module order):
    ``{"layer": name, "theta": theta / pi, "prob": p, "elements": eval-mode count}``."""
    from .sampling import PartialSampler

    rows = []
    for name, m in model.named_modules():
        if isinstance(m, PartialSampler):
            rows.append({"layer": name, **m.report()})
    return rows
