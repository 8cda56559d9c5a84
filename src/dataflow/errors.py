"""The one exception tree of DataFlow.

Every error DataFlow raises is a ``DataFlowError``. Driver errors are translated in one place
(``driver_errors.translate``); the driver's exception stays on ``.original`` for the caller, but is
not chained into the traceback (``raise ... from None``): Kailash and web servers log tracebacks,
and a driver's text can quote stored values.

Each class has a stable ``code`` (for logs, APIs and clients) and the HTTP ``status`` the web
layer answers with; both are read from the class, never from its name.
"""

from __future__ import annotations

from typing import Any


class DataFlowError(Exception):
    """Root of every error DataFlow raises."""

    code = "dataflow_error"
    status = 500

    def __init__(self, message: str, *, model: str | None = None, field: str | None = None,
                 original: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.field = field
        self.original = original

    def to_dict(self) -> dict[str, Any]:
        """What an API may show: code, message, model and field (the message carries no values)."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.model:
            out["model"] = self.model
        if self.field:
            out["field"] = self.field
        return out


class ModelError(DataFlowError):
    """A model declaration is invalid (bad type, reserved field name, unknown model)."""

    code, status = "model_error", 422


class ValidationError(DataFlowError):
    """Input data does not fit the model: unknown field, wrong type, missing value, too long."""

    code, status = "validation_error", 422


class FilterError(ValidationError):
    """A filter, sort or pipeline is malformed; ``path`` names the offending part."""

    code = "filter_error"

    def __init__(self, message: str, *, path: str | None = None, **kw: Any) -> None:
        super().__init__(f"{path}: {message}" if path else message, **kw)
        self.path = path

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.path:
            out["path"] = self.path
        return out


class SettingError(ValidationError):
    """A setting is unknown, malformed, or names a feature that is not built yet."""

    code = "setting_error"


class NotFoundError(DataFlowError):
    """No record matched an operation that needs one."""

    code, status = "not_found", 404


class IntegrityError(DataFlowError):
    """A database constraint refused the change."""

    code, status = "integrity_error", 409


class DuplicateKeyError(IntegrityError):
    """A unique or primary key constraint refused a duplicate value."""

    code = "duplicate_key"


class ForeignKeyError(IntegrityError):
    """A foreign key constraint refused the change (missing target, or rows still refer)."""

    code = "foreign_key"


class ConflictError(DataFlowError):
    """An optimistic-lock version did not match: the record changed since it was read."""

    code, status = "conflict", 409


class TenantError(DataFlowError):
    """An operation on tenant-scoped data ran with no tenant set (it fails closed)."""

    code, status = "tenant_required", 403


class ForbiddenError(DataFlowError):
    """The caller may not do this (a permission check in a hook, middleware or policy refused it).

    Raise it from your own checks: the web layer answers 403, and the direct API and nodes raise it
    like any other DataFlow error, so one check serves every door."""

    code, status = "forbidden", 403


class MigrationError(DataFlowError):
    """A schema migration cannot be planned or applied safely."""

    code, status = "migration_error", 500


class DatabaseError(DataFlowError):
    """The statement failed in the database or its driver (not a constraint, not the link)."""

    code, status = "database_error", 500


class DatabaseUnavailableError(DatabaseError):
    """The database cannot be reached, or the connection was lost (worth retrying later).

    ``sent`` is False when the failure came before any statement of the operation was sent
    (connecting, or checking a pooled connection out): nothing can have been applied, so trying
    again cannot apply anything twice. True means the statement may have reached the server.
    """

    code, status = "database_unavailable", 503
    sent = True


class PoolTimeoutError(DatabaseUnavailableError):
    """Every pooled connection stayed busy for ``pool_timeout`` seconds (the message names the pool size)."""

    code, status = "pool_timeout", 503


class TransactionError(DataFlowError):
    """``db.transaction()`` was rolled back because an operation inside it failed."""

    code, status = "transaction_rolled_back", 409


class AbortedError(DataFlowError):
    """The caller stopped the operation: its progress callback raised (``original`` is that exception).

    The operation's changes are rolled back (inside ``db.transaction()``, the block is doomed).
    """

    code, status = "aborted", 500


#: Every class of the tree, most specific first (for ``isinstance`` lookups).
ALL_ERRORS: tuple[type[DataFlowError], ...] = (
    FilterError, SettingError, ValidationError, ModelError, NotFoundError, DuplicateKeyError, ForeignKeyError,
    IntegrityError, ConflictError, TenantError, ForbiddenError, MigrationError, TransactionError, AbortedError,
    PoolTimeoutError,
    DatabaseUnavailableError, DatabaseError,
    DataFlowError,
)


def http_status(exc: BaseException, *, creating: bool = False) -> int:
    """The HTTP status for ``exc``: the class's ``status``; a foreign key on create is the client's input (422)."""
    if isinstance(exc, ForeignKeyError) and creating:
        return 422
    return exc.status if isinstance(exc, DataFlowError) else 500


__all__ = [
    "DataFlowError", "ModelError", "ValidationError", "FilterError", "SettingError", "NotFoundError",
    "IntegrityError", "DuplicateKeyError", "ForeignKeyError", "ConflictError", "TenantError", "ForbiddenError",
    "MigrationError", "DatabaseError", "DatabaseUnavailableError", "PoolTimeoutError", "TransactionError", "AbortedError",
    "ALL_ERRORS", "http_status",
]
