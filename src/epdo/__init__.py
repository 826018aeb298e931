"""epdo: equivariant neural networks built from partial differential operators.

Subpackages (dependencies point one way): ``groups`` -> ``fields``, ``diffops`` -> ``nn``, ``pde`` ->
``models`` -> ``cli``; ``optim`` holds the training recipes' optimisers, ``testing`` the public
equivariance assertions and the layer database, ``export`` the whole-model export to plain torch.
"""

__version__ = "0.1.0"

from . import diffops, fields, groups  # noqa: F401,E402
from .equivariance import check_equivariance, check_invariance  # noqa: F401,E402
from .export import export  # noqa: F401,E402
