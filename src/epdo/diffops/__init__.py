"""Differential operators: multi-indices, the derivative representation (Lemma 1), and stencils.

>>> from epdo import diffops
>>> diffops.multi_indices(1)
((0, 0), (1, 0), (0, 1))
>>> diffops.stencils(2, diffops.Discretization("fd", 3)).shape
(6, 3, 3)
"""

from .derivatives import derivative_rep, derivative_representation, multi_indices, num_multi_indices
from .stencils import (
    DISCRETIZATIONS,
    Discretization,
    fd_stencil_1d,
    gaussian_stencil_1d,
    stencils,
    stencils_1d,
)

__all__ = [
    "DISCRETIZATIONS",
    "Discretization",
    "derivative_rep",
    "derivative_representation",
    "fd_stencil_1d",
    "gaussian_stencil_1d",
    "multi_indices",
    "num_multi_indices",
    "stencils",
    "stencils_1d",
]
