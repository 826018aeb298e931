"""Differential operators: multi-indices, the derivative representation (Lemma 1), stencils and their application.

>>> from epdo import diffops
>>> diffops.multi_indices(1)
((0, 0), (1, 0), (0, 1))
>>> diffops.stencils(2, diffops.Discretization("fd", 3)).shape
(6, 3, 3)
>>> "rbf" in diffops.DISCRETIZATIONS
True
"""

from .derivatives import derivative_rep, derivative_rep_torch, derivative_representation, multi_indices, num_multi_indices
from .stencils import (
    DISCRETIZATIONS,
    Discretization,
    DiscretizationBuilder,
    as_discretization,
    check_order,
    default_sigma,
    fd_stencil_1d,
    gaussian_stencil_1d,
    get_discretization_builder,
    register_discretization,
    stencils,
    stencils_1d,
    stencils_from_1d,
)
from .rbf import rbf_fd_stencils, rbf_fd_weights
from .apply import PADDINGS, STENCIL_PATHS, apply_stencils, correlate, correlate_separable, stencil_tensor

__all__ = [
    "DISCRETIZATIONS",
    "Discretization",
    "DiscretizationBuilder",
    "PADDINGS",
    "STENCIL_PATHS",
    "apply_stencils",
    "as_discretization",
    "check_order",
    "correlate",
    "correlate_separable",
    "default_sigma",
    "derivative_rep",
    "derivative_representation",
    "fd_stencil_1d",
    "gaussian_stencil_1d",
    "get_discretization_builder",
    "multi_indices",
    "num_multi_indices",
    "rbf_fd_stencils",
    "rbf_fd_weights",
    "register_discretization",
    "stencil_tensor",
    "stencils",
    "stencils_1d",
    "stencils_from_1d",
]
