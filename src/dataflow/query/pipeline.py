"""MongoDB aggregation pipeline -> ONE SQLAlchemy SELECT, and its results back in MongoDB's shape.

Stages: ``$match`` (before or after ``$group``), ``$group``, ``$sort``, ``$limit``, ``$skip``,
``$project`` (include, exclude, rename ``"$f"``, ``$add $subtract $multiply $divide``,
``$literal``), ``$count``. A last stage that is a bare accumulator (``{"$sum": "$amount"}``,
``$avg``, ``$min``, ``$max``, ``{"$count": {}}``, ``$first``, ``$last``, ``$push``, ``$addToSet``)
makes the pipeline return that single value.

Nothing is computed in Python but the final conversion of each row: the database does the
filtering, grouping and aggregation. ``Pipeline.shape(rows)`` turns the rows into documents:
``{"_id": ..., "total_spent": ...}`` with native Python values (``Decimal``, aware ``datetime``...).
Documents of an ungrouped table have its column names (the primary key is ``id``, not ``_id``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import sqlalchemy as sa

from ..errors import FilterError
from ..schema.types import pytype_of
from .accumulators import ACCUMULATORS, _check_name, build_group
from .expressions import Col, Doc, Params, evaluate, fields_of, flatten, lookup
from .filters import Filter, compile_filter_on
from .relation import Relation
from .sorting import parse_sort, sort_values
from .constructs import OrderKey
from .fields import Target

STAGES = ("$match", "$group", "$sort", "$limit", "$skip", "$project", "$count")
#: What a bare accumulator stage returns over no rows.
_EMPTY = {"$sum": 0, "$count": 0, "$push": [], "$addToSet": []}


@dataclass
class Pipeline:
    """A compiled pipeline: run ``statement`` with ``params``, then ``shape`` the rows."""

    statement: sa.Select
    params: dict
    outputs: list = field(repr=False, default_factory=list)  # [(key, label | subtree, Col)]
    scalar: str | None = None                                 # the accumulator of a bare stage
    empty: Any = None

    def shape(self, rows: Sequence[Any]) -> list[dict] | Any:
        """Rows -> MongoDB-shaped documents, or the single value of a bare accumulator stage."""
        mappings = [r._mapping if hasattr(r, "_mapping") else r for r in rows]
        if self.scalar is not None:
            if not mappings:
                return self.empty
            return _document(self.outputs, mappings[0])[self.scalar]
        return [_document(self.outputs, m) for m in mappings]


def _document(outputs: list, row: Mapping) -> dict:
    doc = {}
    for key, target, col in outputs:
        doc[key] = _document(target, row) if isinstance(target, list) else col.value(row[target])
    return doc


def table_doc(table: sa.Table) -> Doc:
    """The document of one table row: its columns."""
    doc: Doc = {}
    for col in table.c:
        py = pytype_of(col)
        json = isinstance(col.type, sa.JSON) or py in (dict, list)
        doc[col.key] = Col(col, None if json else py)
    return doc


def compile_pipeline(table: sa.Table, pipeline: list, *, base: Filter | None = None,
                     path: str = "pipeline") -> Pipeline:
    """Compile an aggregation pipeline over ``table`` into one SELECT.

    ``base`` (a compiled filter on ``table``) is ANDed in before the first stage. Errors raise
    ``FilterError`` naming the stage, e.g. ``pipeline[1].$group.total``.
    """
    if not isinstance(pipeline, (list, tuple)):
        raise FilterError(f"a pipeline is a list of stages, got {type(pipeline).__name__}", path=path)
    rel = Relation.of_table(table, table_doc(table))
    params = Params()
    filter_params: dict = {}
    if base is not None and base.clause is not None:
        rel = rel.with_(where=[base.clause])
        filter_params.update(base.params)
    scalar, empty = None, None
    for i, stage in enumerate(pipeline):
        where = f"{path}[{i}]"
        if scalar is not None:
            raise FilterError("a bare accumulator stage must be the last stage", path=where)
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise FilterError("a stage is a dict with one key, e.g. {'$match': {...}}", path=where)
        (name, spec), = stage.items()
        where = f"{where}.{name}"
        if name == "$match":
            rel, f = _match(rel, spec, f"df_m{i}_", where)
            filter_params.update(f.params)
        elif name == "$group":
            rel = build_group(rel, spec, params, where)
        elif name == "$sort":
            rel = _sort(rel, spec, where)
        elif name == "$limit":
            rel = rel.wrap() if rel.limit is not None else rel
            rel = rel.with_(limit=params.bind(_count(spec, where, minimum=1), sa.Integer()))
        elif name == "$skip":
            rel = rel.wrap() if rel.bounded else rel
            rel = rel.with_(offset=params.bind(_count(spec, where, minimum=0), sa.Integer()))
        elif name == "$project":
            rel = rel.with_(doc=_project(rel, spec, params, where))
        elif name == "$count" and isinstance(spec, str):
            _check_name(spec, where)
            rel = build_group(rel, {"_id": None, spec: {"$sum": 1}}, params, where)
            rel.doc.pop("_id")
        elif name in ACCUMULATORS:
            rel = build_group(rel, {"_id": None, "value": {name: spec}}, params, where, single=True)
            scalar, empty = "value", _EMPTY.get(name)
        else:
            raise FilterError(f"unsupported stage {name}; supported: {', '.join(STAGES)}, or a bare "
                              f"accumulator ({', '.join(ACCUMULATORS)}) as the last stage", path=where)
    columns: list = []
    outputs = _outputs(rel.doc, columns)
    statement = rel.select(columns or [sa.literal_column("1").label("c")])
    return Pipeline(statement, {**filter_params, **params.values}, outputs, scalar, empty)


def _outputs(doc: Doc, columns: list) -> list:
    out = []
    for key, node in doc.items():
        if isinstance(node, dict):
            out.append((key, _outputs(node, columns), None))
        else:
            label = f"c{len(columns)}"
            columns.append(node.expr.label(label))
            out.append((key, label, node))
    return out


def _count(value: Any, path: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FilterError(f"expected a whole number >= {minimum}, got {value!r}", path=path)
    return value


def _match(rel: Relation, spec: Any, prefix: str, path: str) -> tuple[Relation, Filter]:
    rel = rel.plain()
    f = compile_filter_on(fields_of(rel.doc, "this stage"), spec, path=path, prefix=prefix)
    if f.clause is not None:
        rel = rel.with_(where=[*rel.where, f.clause])
    return rel, f


def _sort(rel: Relation, spec: Any, path: str) -> Relation:
    rel = rel.unbounded()
    items = parse_sort(spec, path=path)
    if not items:
        raise FilterError("$sort needs at least one field", path=path)
    keys: list[OrderKey] = []
    for name, descending, where in items:
        node = lookup(rel.doc, name, where)
        for col in ([c for _, c in flatten(node)] if isinstance(node, dict) else [node]):
            target = Target(name, col.expr, col.pytype, (), col.expr.type)
            keys.extend(OrderKey(v, descending) for v in sort_values(target))
    # A later $sort is stable with respect to the order before it, like MongoDB's in practice.
    return rel.with_(order=[*keys, *rel.order])


def _project(rel: Relation, spec: Any, params: Params, path: str) -> Doc:
    if not isinstance(spec, Mapping) or not spec:
        raise FilterError("$project needs a non-empty dict", path=path)

    def excluded(v: Any) -> bool:
        return v is False or (not isinstance(v, bool) and isinstance(v, (int, float)) and v == 0)

    rest = {k: v for k, v in spec.items() if k != "_id"}
    if rest and all(excluded(v) for v in rest.values()):
        for k in rest:
            if k not in rel.doc:
                raise FilterError(f"unknown field {k!r}", path=f"{path}.{k}")
        drop = set(rest) | ({"_id"} if excluded(spec.get("_id", 1)) else set())
        return {k: v for k, v in rel.doc.items() if k not in drop}
    doc: Doc = {}
    if "_id" in rel.doc and "_id" not in spec:
        doc["_id"] = rel.doc["_id"]
    for key, value in spec.items():
        where = f"{path}.{key}"
        if excluded(value):
            if key != "_id":
                raise FilterError("$project cannot mix inclusion and exclusion (except _id: 0)", path=where)
            continue
        _check_name(key, where)
        doc[key] = _projected(rel, key, value, params, where)
    return doc


def _included(value: Any) -> bool:
    return value is True or (not isinstance(value, bool) and isinstance(value, (int, float)))


def _projected(rel: Relation, key: str, value: Any, params: Params, path: str) -> Any:
    """One projected value; ``key`` is its dotted name in the input (for inclusion)."""
    if _included(value):
        return lookup(rel.doc, key, path)
    if isinstance(value, Mapping) and value and not any(str(k).startswith("$") for k in value):
        out: Doc = {}
        for sub, v in value.items():
            _check_name(sub, f"{path}.{sub}")
            out[sub] = _projected(rel, f"{key}.{sub}", v, params, f"{path}.{sub}")
        return out
    return evaluate(rel.doc, value, params, path)
