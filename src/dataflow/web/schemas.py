"""Pydantic models derived from a model's fields, for request bodies and the OpenAPI document.

The models check only the shape of a body (which fields, JSON types, required, not null); the
values then go through the model's codec, the same checks every other door uses. Field names
travel as aliases, so a field called ``json`` or ``model_x`` cannot clash with pydantic's own names.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Optional

import pydantic
from pydantic import ConfigDict, Field, create_model

from ..binding import Binding
from ..models import FieldSpec
from ..values import json_safe

_NUMERIC = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")
INT64 = (-2**63, 2**63 - 1)
Int64 = Annotated[int, Field(ge=INT64[0], le=INT64[1])]


def _text_only(kind: str):
    """JSON carries dates, times and UUIDs as strings: refuse numbers and booleans (pydantic's lax mode takes them)."""
    def check(value: Any) -> Any:
        if isinstance(value, (int, float, bool)) or isinstance(value, str) and _NUMERIC.fullmatch(value.strip()):
            raise ValueError(f"must be a {kind} string")  # not a number of seconds
        return value
    return pydantic.BeforeValidator(check)
#: A decimal as a JSON number or a string of digits (what the codec accepts).
DecimalIn = Annotated[Decimal, pydantic.WithJsonSchema(
    {"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}]})]

def _number_only(value: Any) -> Any:
    if isinstance(value, (bool, str)):
        raise ValueError("must be a number")
    return value


_IN: dict[type, Any] = {
    int: Annotated[int, pydantic.Strict(), Field(ge=INT64[0], le=INT64[1])],
    str: Annotated[str, pydantic.Strict()], bool: Annotated[bool, pydantic.Strict()],
    float: Annotated[float, pydantic.BeforeValidator(_number_only)], Decimal: DecimalIn,
    datetime: Annotated[datetime, _text_only("date-time")], date: Annotated[date, _text_only("date")],
    uuid.UUID: Annotated[uuid.UUID, _text_only("UUID")],
    bytes: Annotated[str, Field(json_schema_extra={"contentEncoding": "base64"})],
    dict: dict[str, Any], list: list[Any],
}
# What the JSON-safe encoding sends back: Decimal as a string, bytes as base64.
_OUT: dict[type, Any] = {**_IN, Decimal: Annotated[str, Field(json_schema_extra={"format": "decimal"})]}

#: Plain query parameters a list accepts, by field type (JSON and bytes fields filter through ?filter=).
QUERY_TYPES: dict[type, Any] = {**{t: t for t in (str, bool, float, uuid.UUID)}, int: Int64, Decimal: DecimalIn,
                                 datetime: Annotated[datetime, _text_only("date-time")],
                                 date: Annotated[date, _text_only("date")]}

_CONFIG = ConfigDict(extra="forbid", populate_by_name=False, protected_namespaces=())


def input_fields(b: Binding) -> list[FieldSpec]:
    """The fields a client writes: all but a key the database assigns and the timestamps DataFlow keeps."""
    stamps = set(b.codec.stamps) if b.codec else set()
    return [f for f in b.spec.fields.values() if not f.autoincrement and f.name not in stamps]


def _typed(f: FieldSpec, table: dict[type, Any]) -> Any:
    t = table[f.pytype]
    if f.pytype is str and f.max_length:
        t = Annotated[t, Field(max_length=f.max_length)]
    if f.pytype is Decimal and table is _IN:
        t = Annotated[Decimal, Field(max_digits=f.precision, decimal_places=f.scale), pydantic.WithJsonSchema(
            {"anyOf": [{"type": "number", "multipleOf": 10 ** -f.scale if f.scale else 1},
                       {"type": "string", "pattern": rf"^-?[0-9]{{1,{f.precision - f.scale}}}(\.[0-9]{{1,{f.scale}}})?$"}]})]
    return t


def _model(name: str, fields: dict[str, tuple[Any, Any]], doc: str) -> type[pydantic.BaseModel]:
    out = create_model(name, __config__=_CONFIG, **fields)  # type: ignore[call-overload]
    out.__doc__ = doc
    return out


def create_schema(b: Binding, *, partial: bool = False, suffix: str = "Create") -> type[pydantic.BaseModel]:
    """The body of POST (and PUT): required fields required, defaults shown; ``partial`` for PATCH."""
    fields: dict[str, tuple[Any, Any]] = {}
    for i, f in enumerate(input_fields(b)):
        t = _typed(f, _IN)
        if f.nullable:
            t = Optional[t]
        if partial:
            spec = Field(default_factory=_none, alias=f.name)
        elif f.required:
            spec = Field(..., alias=f.name)
        elif f.has_default and f.default_factory is None:
            spec = Field(default=json_safe(f.default), alias=f.name)
        elif f.nullable and not f.has_default:
            spec = Field(default=None, alias=f.name)
        else:
            spec = Field(default_factory=_none, alias=f.name)
        fields[f"f{i}"] = (t, spec)
    what = "changes (any subset of the fields)" if partial else "a new record"
    return _model(f"{b.name}{suffix}", fields, f"{b.name}: {what}.")


def record_schema(b: Binding) -> type[pydantic.BaseModel]:
    """A stored record as the API sends it."""
    fields: dict[str, tuple[Any, Any]] = {}
    if b.spec is not None:
        for i, f in enumerate(b.spec.fields.values()):
            t = _typed(f, _OUT)
            fields[f"f{i}"] = (Optional[t] if f.nullable else t, Field(..., alias=f.name))
    else:
        for i, c in enumerate(b.table.columns):
            t = _OUT.get(column_type(c), Any)
            fields[f"f{i}"] = (Optional[t] if c.nullable else t, Field(..., alias=c.name))
    return _model(b.name, fields, f"A {b.name} record.")


def page_schema(b: Binding, record: type[pydantic.BaseModel]) -> type[pydantic.BaseModel]:
    return _model(f"{b.name}Page", {
        "records": (list[record], ...), "total": (int, ...), "count": (int, ...), "limit": (int, ...),
        "offset": (int, ...), "has_more": (bool, ...), "next": (Optional[str], ...), "prev": (Optional[str], ...),
    }, f"One page of {b.name} records, with the total that match and links to the next and previous pages.")


def bulk_schema(b: Binding, record: type[pydantic.BaseModel]) -> type[pydantic.BaseModel]:
    return _model(f"{b.name}BulkResult", {"created": (int, ...), "records": (list[record], ...)},
                  f"The {b.name} records a bulk create stored.")


class ErrorBody(pydantic.BaseModel):
    """Every error answer: a code, a message naming the model, field or filter path (never a value)."""

    error: str
    message: str
    model: Optional[str] = None
    field: Optional[str] = None
    path: Optional[str] = None
    detail: Optional[Any] = None
    request_id: Optional[str] = None


def column_type(column: Any) -> type | None:
    try:
        return column.type.python_type
    except (NotImplementedError, AttributeError):
        return None


def _none() -> None:
    return None


def dump(body: pydantic.BaseModel) -> dict[str, Any]:
    """The fields a client sent, by their real names."""
    return body.model_dump(by_alias=True, exclude_unset=True)
