"""Records in their JSON-safe form: what the generated nodes output (CONVENTIONS.md, "Nodes").

ISO 8601 datetimes, Decimal and UUID as strings, bytes as base64, real bools. Two ways there,
with the same result:

* ``record_encoder(spec)``: one native record (as the direct API returns it) -> its JSON form;
* ``json_processors(...)``: per result column, the driver's value -> its JSON form in one step,
  for a List that is asked for JSON (``db.operations.list(..., json=True)``): no native record
  is built first, and a datetime column goes from the driver's value straight to its text.
"""

from __future__ import annotations

import base64
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence
from uuid import UUID

from .values import json_safe

if TYPE_CHECKING:
    from .models import ModelSpec
    from .prepared import Prepared

Processor = Callable[[Any], Any]

#: JSON-safe forms of the field types JSON cannot carry as they are.
TO_JSON: dict[type, Processor] = {
    datetime: datetime.isoformat, date: date.isoformat, Decimal: lambda d: format(d, "f"), UUID: str,
    bytes: lambda b: base64.b64encode(b).decode("ascii"),
}
#: Field types whose stored values are JSON-safe already (JSON columns hold only JSON).
JSON_NATIVE = frozenset({int, str, bool, float, dict, list})


def record_encoder(spec: "ModelSpec") -> Callable[[Mapping[str, Any]], dict]:
    """A function making one record of ``spec`` JSON-safe, converting only the columns that need it."""
    convert = {n: TO_JSON[f.pytype] for n, f in spec.fields.items() if f.pytype in TO_JSON}
    plain = frozenset(n for n, f in spec.fields.items() if f.pytype in JSON_NATIVE)

    def encode(record: Mapping[str, Any]) -> dict:
        out = {}
        for k, v in record.items():
            if v is None or k in plain:
                out[k] = v
            else:
                conv = convert.get(k)
                out[k] = conv(v) if conv is not None else json_safe(v)  # e.g. included relations
        return out
    return encode


def json_processors(p: "Prepared", codes: Sequence[Any], spec: "ModelSpec | None") -> tuple[Processor | None, ...]:
    """Per result column of ``p``: the driver's value -> its JSON form (None: the value as it is)."""
    dialect = p.compiled.dialect
    out: list[Processor | None] = []
    for column, code in zip(p.columns, codes):
        direct = getattr(column.type, "json_processor", None)
        if direct is not None:  # e.g. UTCDateTime: straight from the driver's value to its text
            out.append(direct(dialect))
            continue
        native = column.type.dialect_impl(dialect).result_processor(dialect, code)
        field = spec.fields.get(column.key) if spec is not None else None
        if field is not None and field.pytype in JSON_NATIVE:
            out.append(native)
        else:
            out.append(_then(native, TO_JSON.get(field.pytype, json_safe) if field is not None else json_safe))
    return tuple(out)


def _then(native: Processor | None, to_json: Processor) -> Processor:
    if native is None:
        return lambda v: None if v is None else to_json(v)
    return lambda v: None if v is None else to_json(native(v))
