"""The policies DataFlow puts on every instance's chain, one concern per module."""

from .soft_delete import SoftDelete
from .versioning import Versioning

__all__ = ["SoftDelete", "Versioning"]
