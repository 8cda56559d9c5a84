"""``$group``: group keys and accumulators compiled into one GROUP BY over a subquery.

The rows to group are selected first (an inner subquery with the key values, the accumulator
inputs, the sort keys and any window values), then grouped by an outer SELECT. Ordered
accumulators follow the rows' order (the last ``$sort``, then the primary key):

- ``$first``/``$last`` are ``first_value``/``last_value`` window functions over each group, in
  order, computed in the inner SELECT and carried into the GROUP BY (the same value on every row
  of a group), so every database keeps the order without ``ORDER BY`` inside an aggregate;
- ``$push`` is a JSON array aggregate with the order inside it (``jsonb_agg(... ORDER BY)`` on
  PostgreSQL, ``GROUP_CONCAT(... ORDER BY)`` of JSON texts on MySQL/MariaDB; SQLite 3.40 lacks
  that syntax, so ``df_json_agg`` sorts by the keys it is given). ``$push`` and ``$addToSet``
  collect the non-null values (SQL NULL is a missing field; JSON null is left out too).

``$sum`` ignores nulls and gives 0 for none; ``$avg``, ``$min``, ``$max`` give null for none. On a
JSON value they use the numbers only. ``$avg`` of ints, floats and JSON numbers is a double on every
database (of a Decimal field, an exact Decimal). A group with ``_id: null`` over no rows gives no result.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ..errors import DatabaseError, FilterError
from .constructs import (AsDouble, BinaryCollate, JsonArrayAgg, JsonElement, JsonParse, JsonScalar, JsonText,
                         NumericValue, OrderKey)
from .expressions import (Col, Doc, Params, decoder_for, element_decoder, evaluate, flatten, is_field_ref,
                          json_encoding, numeric, to_number)
from .relation import Relation

ACCUMULATORS = ("$sum", "$avg", "$min", "$max", "$count", "$first", "$last", "$push", "$addToSet")


class _Inner:
    """Columns of the inner SELECT, labelled k0.., a0.., w0.., o0.."""

    def __init__(self) -> None:
        self.columns: list = []

    def add(self, prefix: str, expr: Any) -> str:
        label = f"{prefix}{sum(1 for c in self.columns if c.name.startswith(prefix))}"
        self.columns.append(expr.label(label))
        return label


def _key_cols(rel: Relation, id_spec: Any, params: Params, path: str) -> tuple[list[tuple[str, Col]], Any]:
    """The group keys as ``[(output path, Col)]`` and the ``_id`` output shape."""
    if id_spec is None or (not isinstance(id_spec, (dict, list)) and not is_field_ref(id_spec)):
        return [], evaluate(rel.doc, id_spec, params, path)  # a constant: one group
    if isinstance(id_spec, dict):
        if not id_spec:
            raise FilterError("_id {} is not supported; use null for one group", path=path)
        keys = []
        for name, sub in id_spec.items():
            _check_name(name, f"{path}.{name}")
            value = evaluate(rel.doc, sub, params, f"{path}.{name}")
            if isinstance(value, dict):
                raise FilterError("nested documents inside a composite _id are not supported", path=f"{path}.{name}")
            keys.append((name, value))
        return keys, None
    value = evaluate(rel.doc, id_spec, params, path)
    if isinstance(value, dict):  # "$_id" of an earlier composite group
        return [(name, col) for name, col in flatten(value)], None
    return [("", value)], None


def _check_name(name: Any, path: str) -> None:
    if not isinstance(name, str) or not name or name.startswith("$") or "." in name:
        raise FilterError(f"output field names must be non-empty and contain no '.' or leading '$', "
                          f"got {name!r}" if isinstance(name, str) else
                          f"output field names must be strings, got {type(name).__name__}", path=path)


def build_group(rel: Relation, spec: Any, params: Params, path: str, *, single: bool = False) -> Relation:
    """Compile ``{"$group": spec}``; ``single`` (a bare accumulator stage) keeps an empty result's row."""
    if not isinstance(spec, dict) or "_id" not in spec:
        raise FilterError("$group needs an _id: '$field', null, or {name: '$field', ...}", path=path)
    rel = rel.plain()
    keys, constant = _key_cols(rel, spec["_id"], params, f"{path}._id")
    inner = _Inner()
    group_exprs = [JsonText(col.expr) if col.is_json else col.expr for _, col in keys]
    key_labels = [inner.add("k", e) for e in group_exprs]
    order = rel.order_keys()
    accumulators = []
    for name, acc in spec.items():
        if name == "_id":
            continue
        where = f"{path}.{name}"
        _check_name(name, where)
        if not isinstance(acc, dict) or len(acc) != 1 or next(iter(acc)) not in ACCUMULATORS:
            raise FilterError(f"an accumulator is one of {', '.join(ACCUMULATORS)}, e.g. {{'$sum': '$amount'}}",
                              path=where)
        (op, arg), = acc.items()
        accumulators.append((name, op, _plan(rel, op, arg, inner, group_exprs, order, params, f"{where}.{op}")))
    order_labels: list[tuple[str, bool]] = []
    if any(op == "$push" for _, op, _ in accumulators):
        order_labels = [(inner.add("o", k.value), k.descending) for k in order]
    sub = rel.select(inner.columns or [sa.literal_column("1").label("k")], final=False) \
        .subquery(rel.subquery_name("df_g"))
    windows = [sub.c[c.name] for c in inner.columns if c.name.startswith("w")]
    doc: Doc = {}
    if keys and keys[0][0] == "":
        doc["_id"] = _key_output(sub.c[key_labels[0]], keys[0][1])
    elif keys:
        doc["_id"] = {name: _key_output(sub.c[label], col) for (name, col), label in zip(keys, key_labels)}
    else:
        doc["_id"] = constant
    for name, _op, plan in accumulators:
        doc[name] = plan(sub, [(sub.c[label], desc) for label, desc in order_labels])
    having = [] if keys or single else [sa.func.count() > 0]
    return Relation(source=sub, doc=doc, group_by=[*(sub.c[k] for k in key_labels), *windows], having=having,
                    tiebreak=[sub.c[k] for k in key_labels], names=rel.names)


def _key_output(column: Any, col: Col) -> Col:
    if col.is_json:  # grouped by canonical JSON text; later stages see a JSON document again
        return Col(JsonParse(column), None)
    return Col(column, col.pytype, col.decode, col.null)


def _plan(rel: Relation, op: str, arg: Any, inner: _Inner, group_exprs: list, order: list,
          params: Params, path: str):
    """Return ``output(sub, order_columns) -> Col`` for one accumulator, adding inner columns."""
    if op == "$count":
        if arg not in ({}, None):
            raise FilterError("the $count accumulator takes {}", path=path)
        return lambda sub, _o: Col(sa.func.count(), int, decoder_for(int))
    if op == "$sum" and not isinstance(arg, bool) and isinstance(arg, (int, float)):
        if arg == 1:
            return lambda sub, _o: Col(sa.func.count(), int, decoder_for(int))
        kind = int if isinstance(arg, int) else float
        factor = params.bind(arg, sa.BigInteger() if kind is int else sa.Double())
        return lambda sub, _o: Col(sa.func.count() * factor, kind, decoder_for(kind))
    value = evaluate(rel.doc, arg, params, path)
    if isinstance(value, dict):
        raise FilterError(f"{op} of a composite value is not supported", path=path)
    if op in ("$sum", "$avg"):
        expr, kind = numeric(value, path)
        label = inner.add("a", expr)
        if op == "$sum":
            return lambda sub, _o: Col(sa.func.coalesce(sa.func.sum(sub.c[label]), 0), kind or float,
                                       decoder_for(kind))
        if kind is Decimal:  # exact in, exact out (MongoDB's Decimal128 average is decimal too)
            return lambda sub, _o: Col(sa.func.avg(sub.c[label]), Decimal, decoder_for(Decimal))
        # A double on every database: MariaDB's AVG of integers is a DECIMAL cut to 4 places.
        return lambda sub, _o: Col(sa.func.avg(AsDouble(sub.c[label], sa.Double())), float, decoder_for(float))
    if op in ("$min", "$max"):
        fn = sa.func.min if op == "$min" else sa.func.max
        if value.is_json:
            label = inner.add("a", JsonScalar(value.expr, (), "number"))
            return lambda sub, _o: Col(fn(sub.c[label]), float, to_number)
        if value.pytype is str:
            label = inner.add("a", BinaryCollate(value.expr))
        elif value.pytype is Decimal:
            label = inner.add("a", NumericValue(value.expr, sa.Numeric(asdecimal=True)))
        elif value.pytype is bool:
            label = inner.add("a", sa.cast(value.expr, sa.Integer()))
            return lambda sub, _o: Col(fn(sub.c[label]), bool, decoder_for(bool))
        else:
            label = inner.add("a", value.expr)
        return lambda sub, _o: Col(fn(sub.c[label], type_=value.expr.type), value.pytype,
                                   decoder_for(Decimal) if value.pytype is Decimal else value.decode)
    if op in ("$first", "$last"):
        fn = sa.func.first_value if op == "$first" else sa.func.last_value
        window = fn(value.expr, type_=value.expr.type).over(
            partition_by=group_exprs or None, order_by=order or None, rows=(None, None))
        label = inner.add("w", window)
        return lambda sub, _o: Col(sub.c[label], value.pytype, value.decode, value.null)
    # $push / $addToSet
    label = inner.add("a", value.expr)
    convert = element_decoder(value.pytype)
    encoding = json_encoding(value)

    def decode(items: Any) -> list:
        if isinstance(items, str):
            try:
                items = json.loads(items)
            except ValueError as exc:  # MySQL/MariaDB cut JSON_ARRAYAGG at group_concat_max_len
                raise DatabaseError(f"{op} produced a truncated array ({len(items)} characters); on MySQL/"
                                    f"MariaDB raise the session's group_concat_max_len", original=exc) from None
        return [convert(v) for v in items or [] if v is not None]

    if op == "$addToSet":
        return lambda sub, _o: Col(JsonArrayAgg(JsonElement(sub.c[label], encoding), distinct=True),
                                   None, decode, [])
    return lambda sub, keys: Col(JsonArrayAgg(JsonElement(sub.c[label], encoding),
                                              [OrderKey(column, desc) for column, desc in keys]),
                                 None, decode, [])
