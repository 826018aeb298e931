"""Equivariant layers on plain tensors (paper 000; Jenner & Weiler 2021; Shen et al. 2020).

Each engineer adds the import line of their module here.
"""

from .base import EquivariantModule
from .expansion import FieldBias, HomExpansion
from .pdoconv import PDOConv

__all__ = ["EquivariantModule", "FieldBias", "HomExpansion", "PDOConv"]
