"""MongoDB-style filter -> SQLAlchemy boolean expression, with bound values.

``compile_filter(table, {"age": {"$gt": 18}})`` returns a ``Filter``: ``.clause`` for
``select(...).where(...)`` / ``update(...).where(...)`` and ``.params`` for ``conn.execute``.
Translations are cached by the filter's shape (``shapes.py``): the same structure with other values
re-binds the values without walking the operators again.

Semantics (CONVENTIONS.md, "Same results on every database"):

- SQL NULL is a missing field: ``{"f": None}``, ``$exists: false``, ``$ne``, ``$nin`` and ``$not``
  match it, as MongoDB matches missing fields; ``$in`` with ``None`` in the list matches it.
- Comparisons on a JSON path compare values of the given value's kind only (``{"$gt": 3}``
  compares numbers; strings compare as strings; booleans as booleans), as MongoDB's type
  bracketing does. Datetimes compare with JSON strings as ISO 8601 text.
- A JSON path does not reach into arrays implicitly (MongoDB's ``{"tags": "a"}`` on an array):
  use ``$contains``, ``$all``, ``$elemMatch`` or ``$size``. Digit segments are array indexes.
- Strings compare case-sensitively by code point; ``$ilike`` and ``$regex`` with ``$options: "i"``
  are the case-insensitive forms. ``$like`` uses ``%`` and ``_`` with ``\\`` as escape.
- ``$contains``: with a scalar, an array holding an equal element; with a dict, an object whose
  keys contain the given values (nested dicts recursively, nested lists as arrays containing every
  item); with a list, an array containing every item. ``$all``: an array holding an element equal
  to each item. ``$size``: array length, exact or ``{"$gt": 3}``-style; only arrays match.
  ``$between: [low, high]`` is inclusive. Object equality ignores key order.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field as dc_field
from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy.sql import visitors

from ..errors import FilterError
from . import shapes
from .fields import Fields
from .translator import Translator

CACHE_SIZE = 512


@dataclass(frozen=True)
class Filter:
    """A compiled filter: ``clause`` (None for an empty filter) and the values of its parameters.

    Combine filters with ``&`` (or ``all_of``), not by ANDing two clauses yourself: filters of the
    same shape use the same parameter names, and ``&`` renames them apart.
    """

    clause: Any
    params: dict = dc_field(default_factory=dict)
    #: The statement shape this filter contributes (its structure, path and parameter names; never values).
    key: Any = ()

    def __and__(self, other: "Filter | None") -> "Filter":
        if other is None or other.clause is None:
            return self
        if self.clause is None:
            return other
        clause, params = other.clause, other.params
        clash = set(params) & set(self.params)
        if clash:
            clause, params = _rename_params(clause, params, set(self.params))
        key = (self.key, other.key) if self.key is not None and other.key is not None and not clash else None
        return Filter(sa.and_(self.clause, clause), {**self.params, **params}, key)


def all_of(*filters: "Filter | None") -> Filter:
    """AND several filters together (empty ones are skipped)."""
    out = Filter(None, {})
    for f in filters:
        out = out & f
    return out


def _rename_params(clause: Any, params: dict, taken: set) -> tuple[Any, dict]:
    counter = itertools.count()
    mapping: dict[str, str] = {}

    def new_name(old: str) -> str:
        if old not in mapping:
            while (name := f"{old}_r{next(counter)}") in taken or name in params:
                pass
            mapping[old] = name
        return mapping[old]

    def visit_bindparam(bind):
        if bind.key in params:
            name = new_name(bind.key)
            bind.key = bind._identifying_key = bind._orig_key = name

    clause = visitors.cloned_traverse(clause, {}, {"bindparam": visit_bindparam})
    return clause, {mapping.get(k, k): v for k, v in params.items()}


@dataclass
class _Entry:
    clause: Any
    binders: list
    prefix: str = ""

    def bind(self, values: list) -> dict:
        params: dict = {}
        for index, binder in self.binders:
            binder(values[index], params)
        return params


# -- the cache and the public entry point ---------------------------------------------------------

class _ShapeCache:
    """Per-table LRU of translations, keyed by (shape, path)."""

    def __init__(self) -> None:
        self._tables: "weakref.WeakKeyDictionary[Any, OrderedDict]" = weakref.WeakKeyDictionary()
        self._fields: "weakref.WeakKeyDictionary[Any, Fields]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def fields(self, table: Any) -> Fields:
        with self._lock:
            found = self._fields.get(table)
        if found is None:
            found = Fields.of_table(table)
            with self._lock:
                self._fields[table] = found
        return found

    def get(self, table: Any, key: Any) -> _Entry | None:
        with self._lock:
            entries = self._tables.get(table)
            entry = entries.get(key) if entries is not None else None
            if entry is not None:
                entries.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return entry

    def put(self, table: Any, key: Any, entry: _Entry) -> None:
        with self._lock:
            entries = self._tables.setdefault(table, OrderedDict())
            entries[key] = entry
            while len(entries) > CACHE_SIZE:
                entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()
            self._fields.clear()
            self.hits = self.misses = 0


CACHE = _ShapeCache()


def cache_info() -> dict:
    """Hits and misses of the filter translation cache."""
    return {"hits": CACHE.hits, "misses": CACHE.misses}


def translate(fields: Any, f: Mapping, path: str) -> tuple[_Entry, list]:
    """Translate filter ``f`` (no caching); return the entry and the values to bind."""
    _, values, tmpl = shapes.template(f)
    tr = Translator(fields)
    clause = tr.filter(tmpl, path)
    return _Entry(clause, tr.binders, tr.prefix), values


def compile_filter(table: sa.Table, filt: Mapping | None, *, path: str = "filter") -> Filter:
    """Compile a MongoDB-style filter against ``table`` into a ``Filter``.

    ``filt`` None or ``{}`` gives ``Filter(None, {})``. Errors raise ``FilterError`` whose ``path``
    names the offending part (``filter.age.$gtx``), before any SQL is sent.
    """
    if filt is None:
        return Filter(None, {})
    if not isinstance(filt, Mapping):
        raise FilterError(f"a filter must be a dict, got {type(filt).__name__}", path=path)
    if not filt:
        return Filter(None, {})
    filt = dict(filt) if not isinstance(filt, dict) else filt
    shapes.check_limits(filt, path)
    key, values = shapes.key_and_values(filt)
    cache_key = (key, path)
    entry = CACHE.get(table, cache_key)
    if entry is None:
        entry, values = translate(CACHE.fields(table), filt, path)
        params = entry.bind(values)  # validate values before caching the shape
        CACHE.put(table, cache_key, entry)
        return Filter(entry.clause, params, (key, path, entry.prefix))
    # The prefix names this translation's parameters: a re-translated shape is a new statement.
    return Filter(entry.clause, entry.bind(values), (key, path, entry.prefix))


def compile_filter_on(fields: Fields, filt: Mapping | None, *, path: str, prefix: str | None = None) -> Filter:
    """Compile against arbitrary ``Fields`` (pipeline stages); not cached."""
    if filt is None:
        return Filter(None, {})
    if not isinstance(filt, Mapping):
        raise FilterError(f"a filter must be a dict, got {type(filt).__name__}", path=path)
    if not filt:
        return Filter(None, {})
    shapes.check_limits(filt, path)
    _, values, tmpl = shapes.template(dict(filt))
    tr = Translator(fields, prefix=prefix)
    clause = tr.filter(tmpl, path)
    return Filter(clause, _Entry(clause, tr.binders).bind(values))
