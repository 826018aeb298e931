"""Equivariant layers on plain tensors (paper 000; Jenner & Weiler 2021; Shen et al. 2020)."""

from .base import EquivariantModule, ExpandedWeightsModule
from .expansion import FieldBias, HomExpansion, RotatedPDOExpansion
from .pdo_base import PDOLayerBase
from .pdoconv import PDOConv
from .neural_epdo import NeuralEPDO
from .batchnorm import FieldBatchNorm, convert_sync_batchnorm, recalibrate_batchnorm
from .dropout import FieldDropout
from .nonlinearities import ELU, NormNonlinearity, ReLU
from .pointwise import PointwiseLinear
from .pooling import AvgPool2d, GroupPool, MaxPool2d
from .restriction import CenterCrop, RestrictToRotations
from .sequential import Sequential
from .ring import RingPDOConv  # noqa: F401 - layers on the ring domain (epdo.fields.Ring)
from .steerable import SteerableConv

__all__ = ["AvgPool2d", "CenterCrop", "ELU", "EquivariantModule", "ExpandedWeightsModule", "FieldBatchNorm",
           "FieldBias", "FieldDropout", "GroupPool", "HomExpansion", "MaxPool2d", "NeuralEPDO", "NormNonlinearity",
           "PDOConv", "PDOLayerBase", "PointwiseLinear", "ReLU", "RestrictToRotations", "RotatedPDOExpansion",
           "Sequential", "SteerableConv", "convert_sync_batchnorm", "recalibrate_batchnorm"]
