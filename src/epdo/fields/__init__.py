"""Typed feature fields on the plane."""

from .field_type import FieldType, transform_plane

__all__ = ["FieldType", "transform_plane"]
