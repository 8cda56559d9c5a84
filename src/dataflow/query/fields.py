"""What a filter key names (a typed column, or a value inside a JSON document) and its values.

``Fields`` resolves ``"age"`` or ``"metadata.preferences.theme"`` to a ``Target``; the coercion
functions turn filter values into what the column's type binds, raising ``FilterError`` with the
path of the offending value.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field as dc_field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

from ..errors import FilterError
from ..schema.types import pytype_of
from . import dates

NUMBERS = (int, float, Decimal)
_SEGMENT = re.compile(r"^[^\"'\\\x00-\x1f$][^\"'\\\x00-\x1f]*$")


@dataclass(frozen=True)
class Target:
    """One addressable value: a typed column, or (document, path) inside JSON.

    ``pytype`` is None for JSON values; then ``expr`` is the JSON document and ``path`` the keys
    (str) and array indexes (int) inside it.
    """

    name: str
    expr: Any
    pytype: type | None
    path: tuple = ()
    bind_type: Any = None

    @property
    def is_json(self) -> bool:
        return self.pytype is None


@dataclass(frozen=True)
class FieldRef:
    """A field visible to filters, sorts and pipeline stages."""

    name: str
    expr: Any
    pytype: type
    json: bool = False

    def target(self, path: tuple = ()) -> Target:
        if self.json:
            return Target(self.name, self.expr, None, path)
        return Target(self.name, self.expr, self.pytype, (), self.expr.type)


def json_path(text: str, *, path: str) -> tuple:
    """``"preferences.theme"`` -> ``("preferences", "theme")``; digits are array indexes."""
    out: list = []
    for seg in text.split("."):
        if not seg or not _SEGMENT.match(seg):
            raise FilterError(f"{text!r} is not a valid JSON path: segments must be non-empty, must not "
                              f"start with '$' and must not contain quotes, backslashes or control "
                              f"characters", path=path)
        out.append(int(seg) if seg.isdigit() and len(seg) < 10 else seg)
    return tuple(out)


@dataclass
class Fields:
    """The fields one filter can name: a table's columns or a pipeline stage's outputs."""

    refs: dict[str, FieldRef]
    label: str = "table"
    _cache: dict = dc_field(default_factory=dict, repr=False)

    @classmethod
    def of_table(cls, table: sa.Table | sa.FromClause) -> "Fields":
        refs = {}
        for col in table.c:
            py = pytype_of(col)
            refs[col.key] = FieldRef(col.key, col, py, json=isinstance(col.type, sa.JSON) or py in (dict, list))
        return cls(refs, label=getattr(table, "name", None) or "table")

    def names(self) -> Iterable[str]:
        return self.refs.keys()

    def resolve(self, key: Any, path: str) -> Target:
        """The target of a filter key, or ``FilterError`` naming ``path``."""
        if not isinstance(key, str):
            raise FilterError(f"field names must be strings, got {key!r}", path=path)
        ref = self.refs.get(key)
        if ref is not None:
            return ref.target()
        base, dot, rest = key.partition(".")
        ref = self.refs.get(base)
        if ref is None or not dot:
            # A dotted name may also be a composite output such as "_id.customer".
            known = ", ".join(sorted(self.refs))
            raise FilterError(f"unknown field {key!r} in {self.label}; fields are: {known}", path=path)
        if not ref.json:
            raise FilterError(f"{base!r} is a {ref.pytype.__name__} field, not JSON: {key!r} cannot address "
                              f"inside it", path=path)
        return ref.target(json_path(rest, path=path))


class ElementFields:
    """Inside ``$elemMatch``: keys are paths within one array element."""

    def __init__(self, doc: Any) -> None:
        self.doc = doc

    def resolve(self, key: Any, path: str) -> Target:
        if not isinstance(key, str):
            raise FilterError(f"field names must be strings, got {key!r}", path=path)
        return Target(key, self.doc, None, json_path(key, path=path))


# -- values ------------------------------------------------------------------------------------

def _kind_name(value: Any) -> str:
    return type(value).__name__


def coerce(pytype: type, value: Any, path: str) -> Any:
    """A filter value for a column of ``pytype``, in the form the column type binds."""
    def bad(expected: str) -> FilterError:
        return FilterError(f"expected {expected} for a {pytype.__name__} field, got {_kind_name(value)} "
                           f"{value!r}", path=path)

    if pytype is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if pytype in (int, float, Decimal):
        if isinstance(value, bool) or not isinstance(value, NUMBERS + (str,)):
            raise bad("a number")
        if isinstance(value, str):
            if pytype is not Decimal:
                raise bad("a number")
            try:
                return Decimal(value)
            except InvalidOperation:
                raise bad("a number") from None
        if pytype is float:
            return float(value)
        if pytype is Decimal:
            return value if isinstance(value, Decimal) else Decimal(str(value))
        # int column: keep ints; a fractional bound compares as a float
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        return value
    if pytype is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    if pytype is datetime:
        return dates.to_datetime(value, path=path)
    if pytype is date:
        return dates.to_date(value, path=path)
    if pytype is uuid.UUID:
        if isinstance(value, uuid.UUID):
            return value
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                raise bad("a UUID") from None
        raise bad("a UUID")
    if pytype is bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise bad("bytes")
    return value


def json_kind(value: Any) -> str:
    """The JSON kind a filter value compares as: number, string, bool, json (object/array), null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, NUMBERS):
        return "number"
    if isinstance(value, (str, datetime, date, uuid.UUID)) or dates.is_date_literal(value):
        return "string"
    if isinstance(value, (dict, list, tuple)):
        return "json"
    return "unsupported"


def json_scalar(value: Any, path: str) -> Any:
    """A scalar filter value compared with a JSON value: dates as ISO strings, Decimals as floats."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if dates.is_date_literal(value):
        return dates.resolve_date(value, path=path).isoformat()
    if isinstance(value, datetime):
        return dates.to_datetime(value, path=path).isoformat()
    if isinstance(value, (date, uuid.UUID)):
        return value.isoformat() if isinstance(value, date) else str(value)
    raise FilterError(f"cannot compare a JSON value with {_kind_name(value)}", path=path)


def json_document(value: Any, path: str) -> str:
    """A dict or list filter value as JSON text."""
    try:
        return json.dumps(value, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as exc:
        raise FilterError(f"value is not JSON-serialisable: {exc}", path=path) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def ensure_mapping(value: Any, path: str, what: str = "a filter") -> Mapping:
    if not isinstance(value, Mapping):
        raise FilterError(f"{what} must be a dict, got {_kind_name(value)}", path=path)
    return value
