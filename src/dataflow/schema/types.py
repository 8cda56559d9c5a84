"""Column types: one per Python type, with each dialect's difference kept as data here.

Every value round-trips exactly on SQLite, PostgreSQL and MySQL (CONVENTIONS.md, "Types"):
datetimes are stored as UTC and come back aware, decimals keep their scale, UUIDs are UUIDs.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timezone
from decimal import Context, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.types import TypeDecorator

UTC = timezone.utc


def _to_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif not isinstance(value, datetime) and isinstance(value, date):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


# Result processors run once per value read: one plain function each, None handled inside.
def _from_text(value: Any, _parse=datetime.fromisoformat) -> datetime | None:
    if type(value) is str:
        # Parsing the offset with the text is ~6x cheaper than datetime.replace(tzinfo=...).
        try:
            return _parse(value + "+00:00")
        except ValueError:  # text another tool wrote with its own offset ('Z', '+02:00')
            return _to_utc(value)
    return None if value is None else _to_utc(value)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # combine() is ~4x cheaper than replace(tzinfo=...)
        return datetime.combine(value.date(), value.time(), UTC)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


# JSON forms straight from the driver's value (node outputs): the same text as
# ``_utc(value).isoformat()``, without building the aware datetime first where that can be skipped.
def _text_json(value: Any) -> str | None:
    if type(value) is str and len(value) == 26 and value[10] == " ":  # our own 'YYYY-MM-DD HH:MM:SS.ffffff'
        fraction = value[19:]
        return f"{value[:10]}T{value[11:19]}{'' if fraction == '.000000' else fraction}+00:00"
    parsed = _from_text(value)
    return None if parsed is None else parsed.isoformat()


def _aware_json(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat() if value.tzinfo is UTC else _utc(value).isoformat()  # type: ignore[union-attr]


def _naive_json(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat() + "+00:00" if value.tzinfo is None else _aware_json(value)


class _SQLiteDateTimeText(sa.DateTime):
    """DATETIME on SQLite, with our own text conversion (SQLAlchemy's parses with a regex: slow)."""

    def bind_processor(self, dialect):
        return None

    def result_processor(self, dialect, coltype):
        return None


class UTCDateTime(TypeDecorator):
    """Store datetimes as UTC (microseconds kept); always return them aware, in UTC.

    Per dialect: the column type, how a value goes in, how it comes out. SQLite keeps
    ``YYYY-MM-DD HH:MM:SS.ffffff`` text (it compares in time order); PostgreSQL sessions run in
    UTC (core/engine.py), so values come back already in UTC.
    """

    impl = sa.DateTime
    cache_ok = True

    _IMPL = {
        "postgresql": lambda: postgresql.TIMESTAMP(timezone=True),
        "mysql": lambda: mysql.DATETIME(fsp=6),
        "mariadb": lambda: mysql.DATETIME(fsp=6),
        "sqlite": _SQLiteDateTimeText,
    }
    _IN = {
        "postgresql": _to_utc,
        "sqlite": lambda v: _to_utc(v).replace(tzinfo=None).isoformat(" ", "microseconds"),
    }
    _OUT = {"sqlite": _from_text}
    _JSON = {"sqlite": _text_json, "postgresql": _aware_json}

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(self._IMPL.get(dialect.name, sa.DateTime)())

    def bind_processor(self, dialect):
        into = self._IN.get(dialect.name) or (lambda v: _to_utc(v).replace(tzinfo=None))

        def process(value):
            return None if value is None else into(value)
        return process

    def result_processor(self, dialect, coltype):
        return self._OUT.get(dialect.name, _utc)

    def json_processor(self, dialect):
        """Driver value -> the ISO 8601 text a node outputs (``encoding.json_processors``)."""
        return self._JSON.get(dialect.name, _naive_json)

    def process_bind_param(self, value, dialect):  # literal rendering (to_sql) goes through here
        return None if value is None else self.bind_processor(dialect)(value)

    def process_result_value(self, value, dialect):
        return None if value is None else self.result_processor(dialect, None)(value)

    @property
    def python_type(self):
        return datetime


class ExactDecimal(TypeDecorator):
    """NUMERIC(p, s); on SQLite, which has no exact decimal, the text of the value."""

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int = 38, scale: int = 10) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision, self.scale = precision, scale
        self._quantum = Decimal(1).scaleb(-scale)
        # The default context holds 28 digits; NUMERIC(38, 10) needs room for all 38.
        self._context = Context(prec=max(precision, 28))

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(self.precision + 2))
        return dialect.type_descriptor(sa.Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value if isinstance(value, Decimal) else Decimal(str(value))
        value = value.quantize(self._quantum, context=self._context)
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return Decimal(str(value)).quantize(self._quantum, context=self._context)

    @property
    def python_type(self):
        return Decimal


class UUIDType(TypeDecorator):
    """Native UUID on PostgreSQL, CHAR(36) text elsewhere."""

    impl = sa.CHAR(36)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID(as_uuid=True))
        return dialect.type_descriptor(sa.CHAR(36))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        return value if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value, dialect):
        if value is None or isinstance(value, uuid.UUID):
            return value
        return uuid.UUID(str(value))

    @property
    def python_type(self):
        return uuid.UUID


class Float8(TypeDecorator):
    """An 8-byte double everywhere (not MySQL's 4-byte FLOAT); always returned as ``float``."""

    impl = sa.Double
    cache_ok = True

    def process_result_value(self, value, dialect):
        # SQLite's RETURNING hands back 2 for a stored 2.0.
        return None if value is None else float(value)

    @property
    def python_type(self):
        return float


def json_type() -> sa.types.TypeEngine:
    """JSONB on PostgreSQL, JSON on MySQL, JSON text on SQLite; Python ``None`` is SQL NULL."""
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def column_type(pytype: type, *, max_length: int | None = None, precision: int = 38, scale: int = 10,
                primary_key: bool = False) -> sa.types.TypeEngine:
    """The SQLAlchemy type for a field of ``pytype``."""
    if pytype is bool:
        return sa.Boolean()
    if pytype is int:
        # SQLite only auto-increments an INTEGER PRIMARY KEY, not BIGINT.
        return sa.BigInteger().with_variant(sa.Integer(), "sqlite") if primary_key else sa.BigInteger()
    if pytype is str:
        if max_length is None:
            return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
        return sa.String(max_length)
    if pytype is float:
        return Float8()
    if pytype is Decimal:
        return ExactDecimal(precision, scale)
    if pytype is datetime:
        return UTCDateTime()
    if pytype is date:
        return sa.Date()
    if pytype is uuid.UUID:
        return UUIDType()
    if pytype is bytes:
        return sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
    if pytype in (dict, list):
        return json_type()
    raise TypeError(f"no column type for {pytype!r}")


def pytype_of(column: sa.Column) -> type:
    """The Python type of a column: the model's when declared, else the reflected type's."""
    declared = column.info.get("pytype")
    if declared is not None:
        return declared
    if isinstance(column.type, sa.JSON):
        return dict
    try:
        return column.type.python_type
    except NotImplementedError:
        return str


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
