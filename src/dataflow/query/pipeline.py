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

Compilations are cached by the pipeline's shape (``pipeline_shapes.py``): a pipeline with the same
stages, operators, field references and kinds of values, over the same table and base filter,
re-binds its values (checking them, as filters do) without compiling again. ``$limit`` and
``$skip`` numbers are bound parameters, so paging through results reuses one statement.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import sqlalchemy as sa

from ..errors import FilterError
from ..schema.types import pytype_of
from . import pipeline_shapes, shapes
from .shapes import check_limits
from .accumulators import ACCUMULATORS, _check_name, build_group
from .constructs import OrderKey
from .expressions import Col, Doc, Params, evaluate, fields_of, flatten, lookup
from .fields import Target
from .filters import Filter, _ShapeCache
from .pipeline_shapes import is_count, is_excluded, is_included
from .relation import Relation
from .sorting import parse_sort, sort_values
from .translator import Translator

STAGES = ("$match", "$group", "$sort", "$limit", "$skip", "$project", "$count")
#: Limits (FilterError beyond them): stages per pipeline; nesting and size as for filters (shapes.py).
MAX_STAGES = 50
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
    #: A small token for the cached compilation this came from: equal keys mean the same
    #: ``statement`` (only ``params`` differ); None when the pipeline is not cached. Callers may key
    #: their own per-statement caches by it (the operations layer's prepared statements).
    key: Any = field(repr=False, default=None)

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
    ``FilterError`` naming the stage, e.g. ``pipeline[1].$group.total``, on every call: a cached
    shape still checks its values.
    """
    if not isinstance(pipeline, (list, tuple)):
        raise FilterError(f"a pipeline is a list of stages, got {type(pipeline).__name__}", path=path)
    if len(pipeline) > MAX_STAGES:
        raise FilterError(f"a pipeline has at most {MAX_STAGES} stages", path=path)
    check_limits(pipeline, path, "pipeline")
    tmpl = pipeline_shapes.template(pipeline)
    base_key = _base_key(base)
    key = None if base_key is None else (tmpl.key, base_key, path)
    entry = CACHE.get(table, key)
    if entry is None:
        entry = _compile(table, tmpl, base, path)
        params = entry.bind(tmpl.values, base)  # check the values before caching the shape
        if key is not None and entry.reusable:
            CACHE.put(table, key, entry)
        else:
            entry = replace(entry, serial=None)
    else:
        params = entry.bind(tmpl.values, base)
    return Pipeline(entry.statement, params, entry.outputs, entry.scalar, entry.empty,
                    None if entry.serial is None else ("pipeline", entry.serial))


# -- the cache --------------------------------------------------------------------------------

CACHE = _ShapeCache()
_serials = itertools.count()


def cache_info() -> dict:
    """Hits and misses of the pipeline compilation cache."""
    return {"hits": CACHE.hits, "misses": CACHE.misses}


@dataclass(frozen=True)
class _Entry:
    """A compiled shape, and how to fill its parameters from a pipeline's values."""

    statement: sa.Select
    outputs: list
    scalar: str | None
    empty: Any
    fixed: dict                           # parameters that are part of the shape (boolean literals)
    slots: tuple[tuple[int, str], ...]    # (value index, parameter name): bound as given
    binders: tuple[tuple[int, Callable], ...]  # (value index, binder): $match values, checked and converted
    reusable: bool = True
    serial: int | None = field(default_factory=lambda: next(_serials))  # never reused, unlike id()

    def bind(self, values: list, base: Filter | None) -> dict:
        params = dict(base.params) if base is not None else {}
        for index, binder in self.binders:
            binder(values[index], params)
        params.update(self.fixed)
        for index, name in self.slots:
            params[name] = values[index]
        return params


def _base_key(base: Filter | None) -> Any:
    """What the base filter contributes to the shape; None when it cannot be cached.

    SQLAlchemy's cache key names the clause's structure and its parameter names without their
    values, which ``base.params`` carries; a clause that holds values of its own is not cached.
    """
    if base is None or base.clause is None:
        return ()
    cache_key = base.clause._generate_cache_key()  # memoized on the clause: cached filters are free
    if cache_key is None or any(bp.key not in base.params for bp in cache_key.bindparams):
        return None
    return cache_key.key


class _Recorder(Params):
    """Pipeline parameters that remember which marked value each one was bound from."""

    def __init__(self) -> None:
        super().__init__()
        self.slots: list[tuple[int, str]] = []

    def bind(self, value: Any, type_: Any = None) -> Any:
        bp = super().bind(value, type_)
        if isinstance(value, pipeline_shapes.Marked):
            self.slots.append((value.index, bp.key))
        return bp


def _compile(table: sa.Table, tmpl: pipeline_shapes.Template, base: Filter | None, path: str) -> _Entry:
    """Compile the marked copy of a pipeline; the entry re-binds any values of its shape."""
    rel = Relation.of_table(table, table_doc(table))
    params = _Recorder()
    binders: list[tuple[int, Callable]] = []
    if base is not None and base.clause is not None:
        rel = rel.with_(where=[base.clause])
    scalar, empty = None, None
    for i, stage in enumerate(tmpl.stages):
        where = f"{path}[{i}]"
        if scalar is not None:
            raise FilterError("a bare accumulator stage must be the last stage", path=where)
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise FilterError("a stage is a dict with one key, e.g. {'$match': {...}}", path=where)
        (name, spec), = stage.items()
        where = f"{where}.{name}"
        if name == "$match":
            rel, found = _match(rel, spec, f"df_m{i}_", where)
            offset = tmpl.match_offsets.get(i, 0)
            binders.extend((offset + index, binder) for index, binder in found)
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
    slot_names = {name for _, name in params.slots}
    fixed = {name: value for name, value in params.values.items() if name not in slot_names}
    return _Entry(statement, outputs, scalar, empty, fixed, tuple(params.slots), tuple(binders),
                  _reusable(statement, tmpl, params.slots))


def _reusable(statement: sa.Select, tmpl: pipeline_shapes.Template, slots: list) -> bool:
    """Whether every marked value went into a parameter, and only there.

    A marked value that the compiler read in any other way would make the SQL depend on it; such a
    shape is compiled every time rather than served wrongly from the cache.
    """
    if {index for index, _ in slots} != set(tmpl.marked):
        return False
    cache_key = statement._generate_cache_key()  # memoized: SQLAlchemy reuses it when executing
    return cache_key is not None and not any(isinstance(bp.value, pipeline_shapes.Marked)
                                             for bp in cache_key.bindparams)


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
    if not is_count(value, minimum):
        smaller = isinstance(value, int) and not isinstance(value, bool)
        raise FilterError(f"expected a whole number >= {minimum}, got "
                          f"{'a smaller one' if smaller else type(value).__name__}", path=path)
    return value


def _match(rel: Relation, spec: Any, prefix: str, path: str) -> tuple[Relation, list]:
    """Add a ``$match``; return the relation and the binders of the filter's values."""
    rel = rel.plain()
    if spec is None:
        return rel, []
    if not isinstance(spec, Mapping):
        raise FilterError(f"a filter must be a dict, got {type(spec).__name__}", path=path)
    if not spec:
        return rel, []
    _, _, tmpl = shapes.template(dict(spec))
    tr = Translator(fields_of(rel.doc, "this stage"), prefix=prefix)
    rel = rel.with_(where=[*rel.where, tr.filter(tmpl, path)])
    return rel, tr.binders


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
    rest = {k: v for k, v in spec.items() if k != "_id"}
    if rest and all(is_excluded(v) for v in rest.values()):
        for k in rest:
            if k not in rel.doc:
                raise FilterError(f"unknown field {k!r}", path=f"{path}.{k}")
        drop = set(rest) | ({"_id"} if is_excluded(spec.get("_id", 1)) else set())
        return {k: v for k, v in rel.doc.items() if k not in drop}
    doc: Doc = {}
    if "_id" in rel.doc and "_id" not in spec:
        doc["_id"] = rel.doc["_id"]
    for key, value in spec.items():
        where = f"{path}.{key}"
        if is_excluded(value):
            if key != "_id":
                raise FilterError("$project cannot mix inclusion and exclusion (except _id: 0)", path=where)
            continue
        _check_name(key, where)
        doc[key] = _projected(rel, key, value, params, where)
    return doc


def _projected(rel: Relation, key: str, value: Any, params: Params, path: str) -> Any:
    """One projected value; ``key`` is its dotted name in the input (for inclusion)."""
    if is_included(value):
        return lookup(rel.doc, key, path)
    if isinstance(value, Mapping) and value and not any(str(k).startswith("$") for k in value):
        out: Doc = {}
        for sub, v in value.items():
            _check_name(sub, f"{path}.{sub}")
            out[sub] = _projected(rel, f"{key}.{sub}", v, params, f"{path}.{sub}")
        return out
    return evaluate(rel.doc, value, params, path)
