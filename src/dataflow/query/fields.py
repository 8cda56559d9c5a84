"""What a filter key names (a typed column, or a value inside a JSON document) and its values.

``Fields`` resolves ``"age"`` or ``"metadata.preferences.theme"`` to a ``Target``; the coercion
functions turn filter values into what the column's type binds, raising ``FilterError`` with the
path of the offending value.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field as dc_field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

from ..errors import FilterError, ValidationError
from ..schema.types import pytype_of
from ..values import INT64, has_surrogate, json_problem
from . import dates

NUMBERS = (int, float, Decimal)
#: One JSON path segment: no quotes, backslashes, control characters or surrogates; no leading '$'.
_SEGMENT = re.compile(r"[^\"'\\\x00-\x1f$\ud800-\udfff][^\"'\\\x00-\x1f\ud800-\udfff]*")


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
        if not seg or not _SEGMENT.fullmatch(seg):
            raise FilterError("not a valid JSON path: segments must be non-empty, must not start with '$' "
                              "and must not contain quotes, backslashes, control characters or lone "
                              "surrogates", path=path)
        # Only ASCII digits make an array index ('\u0661' and '\u00b2' are object keys).
        out.append(int(seg) if seg.isascii() and seg.isdigit() and len(seg) < 10 else seg)
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
            raise FilterError(f"field names must be strings, got {type(key).__name__}", path=path)
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
            raise FilterError(f"field names must be strings, got {type(key).__name__}", path=path)
        return Target(key, self.doc, None, json_path(key, path=path))


# -- values ------------------------------------------------------------------------------------

def _kind_name(value: Any) -> str:
    return type(value).__name__


def _number_problem(value: Any) -> str | None:
    """Why a number cannot be bound in a filter, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if INT64[0] <= value <= INT64[1] else "an integer within 64 bits"
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number (not NaN or infinity)"
    if isinstance(value, Decimal) and not value.is_finite():
        return "a finite number (not NaN or infinity)"
    return None


def checked_string(value: str, path: str) -> str:
    """``value``, unless it holds a lone surrogate (no database can take it)."""
    if has_surrogate(value):
        raise FilterError("a string holds a lone surrogate (not a Unicode character)", path=path)
    return value


def coerce(pytype: type, value: Any, path: str) -> Any:
    """A filter value for a column of ``pytype``, in the form the column type binds."""
    def bad(expected: str) -> FilterError:
        # The kind of the value, never the value: filters carry user data.
        return FilterError(f"expected {expected} for a {pytype.__name__} field, got {_kind_name(value)}",
                           path=path)

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
                value = Decimal(value)
            except InvalidOperation:
                raise bad("a number") from None
            if not value.is_finite():
                raise bad("a finite number (not NaN or infinity)")
            return value
        problem = _number_problem(value)
        if problem is not None and not (pytype is not int and isinstance(value, int)):
            raise bad(problem)
        if pytype is float:
            try:
                return float(value)
            except OverflowError:
                raise bad("a number within the range of a double") from None
        if pytype is Decimal:
            return value if isinstance(value, Decimal) else Decimal(str(value))
        # int column: keep ints; a fractional bound compares as a float
        if isinstance(value, Decimal):
            if value != value.to_integral_value():
                return float(value)
            value = int(value)
            if not INT64[0] <= value <= INT64[1]:
                raise bad("an integer within 64 bits")
        return value
    if pytype is str:
        if isinstance(value, str):
            return checked_string(value, path)
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
    if isinstance(value, str):
        return checked_string(value, path)
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        problem = _number_problem(value)
        if problem is not None:
            raise FilterError(f"a JSON number in a filter must be {problem}", path=path)
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
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
    problem = json_problem(value, leaves=(datetime, date, uuid.UUID, Decimal))
    if problem is not None:
        raise FilterError(f"a JSON value in a filter holds {problem}", path=path)
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


def field_names(fields: Any, path: str = "fields") -> list[str]:
    """A projection (``fields=[...]``) checked for its form: a list of field-name strings.

    Raises ``ValidationError`` naming the bad item's position and kind (``fields=[None]``,
    ``fields=[{}]``, ``fields=[1]``: a column is never chosen by position).
    """
    if isinstance(fields, (str, bytes)) or not isinstance(fields, (list, tuple)):
        raise ValidationError(f"{path} must be a list of field names, got {type(fields).__name__}")
    for i, name in enumerate(fields):
        if not isinstance(name, str) or not name:
            what = "an empty string" if name == "" else type(name).__name__
            raise ValidationError(f"{path}[{i}] must be a field name (a non-empty string), got {what}")
    return list(fields)


def select_fields(table: Any, fields: Any, *, model: str | None = None, path: str = "fields") -> list:
    """The columns of ``table`` named by ``fields`` (all of them for None or empty), checked.

    Unknown names raise ``ValidationError`` listing the table's fields.
    """
    if fields is None:
        return list(table.columns)
    names = field_names(fields, path)
    if not names:
        return list(table.columns)
    unknown = [n for n in names if n not in table.c]
    if unknown:
        label = model or getattr(table, "name", "table")
        raise ValidationError(f"{label} has no field(s) {unknown} in {path}; fields are: "
                              f"{', '.join(c.key for c in table.columns)}", model=model, field=unknown[0])
    return [table.c[n] for n in names]


def ensure_mapping(value: Any, path: str, what: str = "a filter") -> Mapping:
    if not isinstance(value, Mapping):
        raise FilterError(f"{what} must be a dict, got {_kind_name(value)}", path=path)
    return value
