"""epdo: equivariant neural networks built from partial differential operators."""

__version__ = "0.1.0"

from . import diffops  # noqa: F401
