r"""Partial equivariance for PDO layers: steered PDO coefficients on sampled group elements (paper 004's
learned distributions applied to the PDO-eConv parameterisation of Shen et al. 2020 / paper 000).

A PDO kernel of orientation u is the identity one rotated by u, :math:`\Psi_u[f] = u\cdot\Psi_e[u^{-1}\cdot f]`,
whose coefficients are :math:`W_u = D(M_u)^\top X` (:class:`epdo.nn.RotatedPDOExpansion`:
:math:`\hat\rho(u^{-1}) = D(M_u)`, :func:`epdo.diffops.derivative_rep`). Here :math:`D(M)` is computed in torch
(:func:`epdo.diffops.derivative_rep_torch`, the same polynomial products as the core's numpy function), so it is
differentiable in the sampled angle and the learned :math:`\theta` receives gradients through it. The
group-convolution layers of :mod:`epdo.gconv.layers` use it for ``kernel="pdo"``: lifting
:math:`W_u = D(M_u)^\top X`, group convolution :math:`W_{u,v} = D(M_u)^\top X(u^{-1}v)` with X(.) a SIREN on
the relative element; the filter is :math:`K = \sum_\alpha W_\alpha s_\alpha` with the core's stencils. With a
:class:`~epdo.gconv.sampling.PartialSampler` the PDO network is partially equivariant ("partial=True").

>>> import torch
>>> from epdo.diffops import derivative_rep, derivative_rep_torch
>>> m = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=torch.float64)
>>> bool(torch.allclose(derivative_rep_torch(m[None], 2)[0], torch.tensor(derivative_rep(m.numpy(), 2))))
True
"""

from __future__ import annotations

from torch import nn

from ..diffops import derivative_rep_torch

__all__ = ["derivative_rep_torch", "partial_equivariance_report"]


def partial_equivariance_report(model: nn.Module) -> list[dict]:
    """One row per :class:`~epdo.gconv.sampling.PartialSampler` in ``model`` (module order):
    ``{"layer": name, "theta": theta / pi, "prob": p, "elements": eval-mode count}``."""
    from ..nn.sampling import PartialSampler

    rows = []
    for name, m in model.named_modules():
        if isinstance(m, PartialSampler):
            rows.append({"layer": name, **m.report()})
    return rows
