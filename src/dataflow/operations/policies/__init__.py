"""The policies DataFlow puts on every instance's chain, one concern per module."""

from .soft_delete import SoftDelete
from .tenancy import Tenancy
from .versioning import Versioning

__all__ = ["SoftDelete", "Tenancy", "Versioning"]
