"""Group elements for group convolutions: :mod:`epdo.nn.sampling` (moved there so that the core's PDO layers
can sample elements too; this module keeps the ``epdo.gconv.sampling`` names)."""

from ..nn.sampling import (Elements, ElementSampler, FiniteElements, HaarSampler, PartialSampler, point_group,
                           relative)

__all__ = ["Elements", "ElementSampler", "FiniteElements", "HaarSampler", "PartialSampler", "point_group", "relative"]
