"""Invariant PDE layers of EqPdeNet (Lagrave & Riou 2021, paper 001).

* :mod:`.invariants`: the SE(2) and scaled-translation differential invariants of order 2, user sets, and
  the guarded quotient :func:`safe_div`.
* :mod:`.functions`: parametric right-hand sides ``F_theta`` (linear, polynomial, MLP).
* :mod:`.integrate`: :class:`EulerStep` and :class:`PDEIntegrator` (explicit Euler, stability guard).
* :mod:`.layer`: :class:`PDELayer`, several PDEs from one input combined linearly.

Pictures of evolved digits and learned coefficients: ``epdo pde-show`` (:mod:`epdo.cli.pde_show`).

>>> from epdo import pde
>>> pde.PDELayer(2, ("se2", "scale")).labels
('se2[0]', 'se2[1]', 'scale[0]', 'scale[1]')
"""

from .functions import FUNCTIONS, LinearF, MLPF, PolynomialF, make_function
from .integrate import EulerStep, PDEIntegrator, PDEStabilityError
from .invariants import (
    DEFAULT_EPS,
    INVARIANT_SETS,
    SCALE,
    SE2,
    Derivatives,
    InvariantSet,
    derivatives,
    get_invariant_set,
    safe_div,
    scale_invariants,
    se2_invariants,
)
from .layer import PDELayer

__all__ = [
    "DEFAULT_EPS",
    "Derivatives",
    "EulerStep",
    "FUNCTIONS",
    "INVARIANT_SETS",
    "InvariantSet",
    "LinearF",
    "MLPF",
    "PDEIntegrator",
    "PDELayer",
    "PDEStabilityError",
    "PolynomialF",
    "SCALE",
    "SE2",
    "derivatives",
    "get_invariant_set",
    "make_function",
    "safe_div",
    "scale_invariants",
    "se2_invariants",
]
