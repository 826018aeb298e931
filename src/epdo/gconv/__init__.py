r"""Group convolutions, Monte Carlo group convolutions and Partial G-CNNs (papers 003 and 004).

Convention: **cross-correlation** everywhere (as ``torch.nn.functional.conv2d`` and paper 003):
:math:`h(x, u) = \sum_p k(M_u^{-1}p)\, f(x + p)` (lifting) and
:math:`h(x, u) = \sum_v w_v \sum_p k(M_u^{-1}p, u^{-1}v)\, f(x + p, v)` (group). Paper 004's convolution
:math:`\psi(v^{-1}u)` is the same map with :math:`\psi(g) = k(g^{-1})`. The lifting layer with a discrete kernel
at the identity element is exactly ``conv2d`` (tests/gconv/test_layers.py).

- :mod:`.layers`: :class:`LiftingConv`, :class:`GroupConv`, :class:`GroupProjection` (finite C_N / D_N,
  Monte Carlo SE(2) / E(2), partial);
- :mod:`.kernels`: SIREN and ReLU / Swish MLP kernels;
- :mod:`epdo.nn.sampling` (also as ``epdo.gconv.sampling``): element sets, Haar samples, learned partial distributions;
- :mod:`.partial`: steered PDO kernels (partial equivariance for PDO layers) and the learned-subset report;
- :mod:`.neural`: :class:`NeuralGroupPDO`, Neural ePDOs with steered generated coefficients (partial too).

>>> from epdo import gconv, groups
>>> net = torch.nn.Sequential(gconv.LiftingConv(groups.dihedral(4), 1, 2, 3), gconv.GroupProjection(groups.dihedral(4), 2))
>>> net(torch.randn(1, 1, 7, 7)).shape
torch.Size([1, 2, 7, 7])
"""

import torch  # noqa: F401  (doctest namespace)

from .kernels import MLPKernel, SIREN
from .layers import GROUP_KERNELS, GroupConv, GroupProjection, LiftingConv
from .neural import NeuralGroupPDO
from .partial import derivative_rep_torch, partial_equivariance_report
from ..nn.sampling import Elements, ElementSampler, FiniteElements, HaarSampler, PartialSampler

__all__ = ["Elements", "ElementSampler", "FiniteElements", "GROUP_KERNELS", "GroupConv", "GroupProjection",
           "HaarSampler", "LiftingConv", "MLPKernel", "NeuralGroupPDO", "PartialSampler", "SIREN", "derivative_rep_torch",
           "partial_equivariance_report"]
