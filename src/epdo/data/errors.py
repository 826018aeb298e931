"""Exceptions raised by :mod:`epdo.data`.

Every message names the file involved; checksum errors also name the expected checksum,
and missing-file errors say where the file should be put.
"""

from __future__ import annotations

__all__ = ["DataError", "DataNotFoundError", "ChecksumError", "DataFormatError"]


class DataError(Exception):
    """Base class of all data-loading errors in :mod:`epdo.data`."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A required data file or directory does not exist (also a ``FileNotFoundError``)."""


class ChecksumError(DataError, ValueError):
    """A file's (uncompressed) content does not match its expected checksum (also a ``ValueError``)."""


class DataFormatError(DataError, ValueError):
    """A file exists but is not in the expected format (also a ``ValueError``)."""
