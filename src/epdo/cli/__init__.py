"""The ``epdo`` command line (``epdo ...`` or ``python -m epdo ...``); see :func:`epdo.cli.main.main`."""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
