"""Aggregation expressions: ``"$field"`` references, literals and ``$add $subtract $multiply $divide``.

A pipeline stage sees a document: a dict of names to ``Col`` (one SQL value) or nested dicts
(composite values such as a ``$group`` ``_id`` of several fields). Expressions evaluate to ``Col``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Callable

import sqlalchemy as sa

from ..errors import FilterError
from ..schema.types import ExactDecimal
from .constructs import JsonScalar, JsonValue, NumericValue
from .fields import NUMBERS, FieldRef, Fields, json_path

ARITHMETIC = ("$add", "$subtract", "$multiply", "$divide")
NUMERIC_TYPES = (int, float, Decimal)


@dataclass(frozen=True)
class Col:
    """One value of a stage's document: its SQL expression, Python type (None: JSON), decoder."""

    expr: Any
    pytype: type | None
    decode: Callable[[Any], Any] | None = None
    null: Any = None  # the value of SQL NULL ([] for an array aggregate over no rows)

    @property
    def is_json(self) -> bool:
        return self.pytype is None

    def value(self, raw: Any) -> Any:
        if raw is None:
            return self.null
        return self.decode(raw) if self.decode is not None else raw


Doc = dict  # name -> Col | Doc


def flatten(doc: Doc, prefix: str = "") -> list[tuple[str, Col]]:
    """``{"_id": {"a": Col}, "n": Col}`` -> ``[("_id.a", Col), ("n", Col)]``."""
    out: list[tuple[str, Col]] = []
    for name, node in doc.items():
        if isinstance(node, dict):
            out.extend(flatten(node, f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", node))
    return out


def fields_of(doc: Doc, label: str) -> Fields:
    """The ``Fields`` a ``$match`` or ``$sort`` sees for a stage's document."""
    refs = {}
    for name, col in flatten(doc):
        refs[name] = FieldRef(name, col.expr, col.pytype or dict, json=col.is_json)
    return Fields(refs, label=label)


class Params:
    """Named parameters of one pipeline (``df_p0``, ``df_p1``, ...)."""

    def __init__(self, prefix: str = "df_p") -> None:
        self.prefix = prefix
        self.values: dict[str, Any] = {}

    def bind(self, value: Any, type_: Any = None) -> Any:
        name = f"{self.prefix}{len(self.values)}"
        self.values[name] = value
        return sa.bindparam(name, type_=type_)


# -- decoders ---------------------------------------------------------------------------------

def to_number(value: Any) -> Any:
    """A JSON-ish number: Decimal results become int when whole, else float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def decoder_for(pytype: type | None) -> Callable[[Any], Any] | None:
    """Convert a database number to ``pytype`` (sums and arithmetic come back as Decimal or float)."""
    if pytype is int:
        return lambda v: int(v)
    if pytype is float:
        return lambda v: float(v)
    if pytype is Decimal:
        return lambda v: v if isinstance(v, Decimal) else Decimal(str(v))
    if pytype is bool:
        return lambda v: bool(v)
    if pytype is None:
        return to_number
    return None


def element_decoder(pytype: type | None) -> Callable[[Any], Any]:
    """Convert one element of a ``$push``/``$addToSet`` JSON array back to ``pytype``."""
    if pytype is None or pytype is str:
        return lambda v: v
    if pytype is bool:
        return bool
    if pytype is int:
        return int
    if pytype is float:
        return float
    if pytype is Decimal:
        return lambda v: Decimal(str(v))
    if pytype is datetime:
        def to_datetime(v):
            d = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
            return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)
        return to_datetime
    if pytype is date:
        return lambda v: date.fromisoformat(str(v)[:10])
    if pytype is uuid.UUID:
        return lambda v: uuid.UUID(str(v))
    if pytype is bytes:
        return lambda v: bytes.fromhex(v)
    return lambda v: v


def json_encoding(col: Col) -> str:
    """How a value goes into a JSON array (see ``constructs.JsonElement``)."""
    if col.is_json:
        return "json"
    if col.pytype is Decimal:
        return "text"
    if col.pytype is bytes:
        return "hex"
    return "plain"


# -- evaluation -------------------------------------------------------------------------------

def lookup(doc: Doc, ref: str, path: str) -> Col | Doc:
    """Resolve ``"a"``, ``"_id.a"`` or ``"metadata.prefs.theme"`` in ``doc``."""
    parts = ref.split(".")
    node: Any = doc
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
            continue
        if isinstance(node, Col) and node.is_json:
            return Col(JsonValue(node.expr, json_path(".".join(parts[i:]), path=path)), None)
        if isinstance(node, Col):
            raise FilterError(f"${'.'.join(parts[:i])} is a {node.pytype.__name__} value; '${ref}' cannot "
                              f"address inside it", path=path)
        known = ", ".join(name for name, _ in flatten(doc))
        raise FilterError(f"unknown field '${ref}'; fields here are: {known}", path=path)
    return node


def is_field_ref(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith("$") and len(spec) > 1 and not spec.startswith("$$")


def evaluate(doc: Doc, spec: Any, params: Params, path: str) -> Col | Doc:
    """An expression's value: a field reference, a literal, or arithmetic."""
    if is_field_ref(spec):
        return lookup(doc, spec[1:], path)
    if isinstance(spec, dict) and len(spec) == 1:
        (op, args), = spec.items()
        if op == "$literal":
            return literal(args, params, path)
        if op in ARITHMETIC:
            return arithmetic(doc, op, args, params, f"{path}.{op}")
        if isinstance(op, str) and op.startswith("$"):
            raise FilterError(f"unsupported expression operator {op}; supported: $literal, "
                              f"{', '.join(ARITHMETIC)}", path=f"{path}.{op}")
    if isinstance(spec, bool) or spec is None or isinstance(spec, NUMBERS) or isinstance(spec, str):
        return literal(spec, params, path)
    raise FilterError(f"unsupported expression (a {type(spec).__name__}): use '$field', a number, or "
                      f"{{'$add'|'$subtract'|'$multiply'|'$divide': [...]}}", path=path)


def literal(value: Any, params: Params, path: str) -> Col:
    if value is None:
        return Col(sa.null(), str)
    if isinstance(value, bool):
        return Col(params.bind(value, sa.Boolean()), bool)
    if isinstance(value, int):
        return Col(params.bind(value, sa.BigInteger()), int)
    if isinstance(value, float):
        return Col(params.bind(value, sa.Double()), float)
    if isinstance(value, Decimal):
        return Col(params.bind(value, sa.Numeric(asdecimal=True)), Decimal, decoder_for(Decimal))
    if isinstance(value, str):
        return Col(params.bind(value, sa.String()), str)
    raise FilterError(f"unsupported literal of type {type(value).__name__}", path=path)


def numeric(col: Col | Doc, path: str) -> tuple[Any, type | None]:
    """The SQL number behind ``col`` and its Python type (None: a JSON number)."""
    if isinstance(col, dict):
        raise FilterError("arithmetic needs numbers, got a composite value", path=path)
    if col.is_json:
        return JsonScalar(col.expr, (), "number"), None
    if col.pytype in (int, float):
        return col.expr, col.pytype
    if col.pytype is Decimal:
        # Keep the column's decimal type so sums come back at its scale on every database.
        exact = col.expr.type if isinstance(col.expr.type, ExactDecimal) else sa.Numeric(asdecimal=True)
        return NumericValue(col.expr, exact), Decimal
    raise FilterError(f"arithmetic needs numbers, got a {col.pytype.__name__} value", path=path)


def arithmetic(doc: Doc, op: str, args: Any, params: Params, path: str) -> Col:
    if not isinstance(args, list) or len(args) < 2 or (op in ("$subtract", "$divide") and len(args) != 2):
        n = "two" if op in ("$subtract", "$divide") else "at least two"
        raise FilterError(f"{op} takes a list of {n} expressions", path=path)
    operands = [numeric(evaluate(doc, a, params, f"{path}[{i}]"), f"{path}[{i}]") for i, a in enumerate(args)]
    exprs = [e for e, _ in operands]
    types = {t for _, t in operands}
    if op == "$add":
        expr = exprs[0]
        for e in exprs[1:]:
            expr = expr + e
    elif op == "$multiply":
        expr = exprs[0]
        for e in exprs[1:]:
            expr = expr * e
    elif op == "$subtract":
        expr = exprs[0] - exprs[1]
    else:
        # True division everywhere (PostgreSQL and SQLite divide integers as integers); a zero
        # divisor gives null on every database instead of an error on some.
        expr = (exprs[0] * sa.literal_column("1.0", sa.Float())) / sa.func.nullif(exprs[1], 0)
    if op == "$divide" or float in types:
        pytype: type | None = float
    elif None in types:
        pytype = None
    elif Decimal in types:
        pytype = Decimal
    else:
        pytype = int
    out_type = {int: sa.BigInteger(), float: sa.Double(), Decimal: sa.Numeric(asdecimal=True)}.get(pytype, sa.Double())
    return Col(sa.type_coerce(expr, out_type), pytype or float, decoder_for(pytype))
