"""The one exception tree of DataFlow.

Every error DataFlow raises is a ``DataFlowError``. Driver errors are translated in one
place (``dataflow.schema.translate``... see ``translate_db_error`` below) and keep the
original exception as ``__cause__`` and ``.original``.
"""

from __future__ import annotations

from typing import Any


class DataFlowError(Exception):
    """Root of every error DataFlow raises."""

    def __init__(self, message: str, *, model: str | None = None, field: str | None = None,
                 original: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.field = field
        self.original = original


class ModelError(DataFlowError):
    """A model declaration is invalid (bad type, reserved field name, unknown model)."""


class ValidationError(DataFlowError):
    """Input data does not fit the model: unknown field, wrong type, missing value, too long."""


class FilterError(ValidationError):
    """A filter, sort or pipeline is malformed; ``path`` names the offending part."""

    def __init__(self, message: str, *, path: str | None = None, **kw: Any) -> None:
        super().__init__(f"{path}: {message}" if path else message, **kw)
        self.path = path


class NotFoundError(DataFlowError):
    """No record matched an operation that needs one."""


class IntegrityError(DataFlowError):
    """A database constraint refused the change."""


class DuplicateKeyError(IntegrityError):
    """A unique or primary key constraint refused a duplicate value."""


class ForeignKeyError(IntegrityError):
    """A foreign key constraint refused the change (missing target, or rows still refer)."""


class ConflictError(DataFlowError):
    """An optimistic-lock version did not match: the record changed since it was read."""


class MigrationError(DataFlowError):
    """A schema migration cannot be planned or applied safely."""


class DatabaseError(DataFlowError):
    """The database or its driver failed (unreachable, lost connection, unexpected error)."""


__all__ = [
    "DataFlowError", "ModelError", "ValidationError", "FilterError", "NotFoundError",
    "IntegrityError", "DuplicateKeyError", "ForeignKeyError", "ConflictError",
    "MigrationError", "DatabaseError",
]
