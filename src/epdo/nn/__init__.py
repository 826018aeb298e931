"""Equivariant layers on plain tensors (paper 000; Jenner & Weiler 2021; Shen et al. 2020).

Each engineer adds the import line of their module here.
"""

from .base import EquivariantModule
from .expansion import FieldBias, HomExpansion
from .pdoconv import PDOConv
from .batchnorm import FieldBatchNorm
from .dropout import FieldDropout
from .nonlinearities import ELU, NormNonlinearity, ReLU
from .pointwise import PointwiseLinear
from .pooling import AvgPool2d, GroupPool, MaxPool2d
from .sequential import Sequential

__all__ = ["EquivariantModule", "FieldBias", "HomExpansion", "PDOConv"]
__all__ += ["AvgPool2d", "ELU", "FieldBatchNorm", "FieldDropout", "GroupPool", "MaxPool2d", "NormNonlinearity",
            "PointwiseLinear", "ReLU", "Sequential"]
from .neural_epdo import NeuralEPDO  # noqa: E402
__all__ += ["NeuralEPDO"]
