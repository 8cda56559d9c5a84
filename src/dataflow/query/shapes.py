"""A filter's shape: its structure without its values, so translations can be cached.

``key_and_values(filter)`` walks the filter once and returns a hashable key (keys, operators,
field names, value types) and the values in walk order. Two filters with equal keys translate to
the same SQL; only the values differ, and they are re-bound. ``template(filter)`` returns a copy
where every value is a ``Slot`` (its position in the values list plus the sample value), which the
translator turns into bind parameters.

The walk never raises: malformed input gets some key, and the translator reports the error.
"""

from __future__ import annotations

from typing import Any

from ..errors import FilterError
from .dates import is_date_literal

LOGICAL = frozenset({"$and", "$or", "$nor"})
#: Operators whose operand changes the SQL itself, so it belongs to the key.
STRUCTURAL = frozenset({"$exists", "$options"})
#: Operators whose list operand is one value (an expanding IN), whatever its length.
SET_OPS = frozenset({"$in", "$nin"})
#: Operators whose dict/list operand is walked: its keys and nesting are part of the shape.
DEEP_OPS = frozenset({"$contains"})
LIST_OPS = frozenset({"$all", "$between"})


#: Limits on a filter or pipeline (FilterError beyond them, before anything is compiled): dicts and
#: lists nest at most MAX_DEPTH deep (logical operators, $not, $elemMatch and JSON values all count),
#: and hold at most MAX_ITEMS keys and list items in all (each $in value counts; this keeps every
#: filter under the databases' bound-parameter limits, e.g. SQLite's 32,766).
MAX_DEPTH = 40
MAX_ITEMS = 30_000


def check_limits(value: Any, path: str, what: str = "filter") -> None:
    """Refuse a ``what`` nested deeper than ``MAX_DEPTH`` or larger than ``MAX_ITEMS`` (no recursion)."""
    stack = [(value, 1)]
    items = 0
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, (list, tuple)):
            children = v
        else:
            continue
        if depth > MAX_DEPTH:
            raise FilterError(f"the {what} nests more than {MAX_DEPTH} levels deep (dicts and lists)", path=path)
        items += len(children)
        if items > MAX_ITEMS:
            raise FilterError(f"the {what} has more than {MAX_ITEMS:,} keys and list items in all", path=path)
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list, tuple)))


class Slot:
    """A value in a template: where it sits in the values list, and the sample value."""

    __slots__ = ("index", "value")

    def __init__(self, index: int, value: Any) -> None:
        self.index, self.value = index, value

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Slot({self.index}, {self.value!r})"


def value_of(item: Any) -> Any:
    """The sample value behind a template item."""
    return item.value if isinstance(item, Slot) else item


def is_operator_dict(value: Any) -> bool:
    return (isinstance(value, dict) and bool(value) and not is_date_literal(value)
            and all(isinstance(k, str) and k.startswith("$") for k in value))


def _freeze(value: Any) -> Any:
    try:
        hash(value)
        return (type(value), value)
    except TypeError:
        return ("unhashable", repr(value))


def _sig(value: Any) -> Any:
    if is_date_literal(value):
        return "date"
    if isinstance(value, (dict, list, tuple)):
        return "json"
    return type(value)


class _Walk:
    __slots__ = ("values", "build")

    def __init__(self, build: bool) -> None:
        self.values: list = []
        self.build = build

    def slot(self, value: Any) -> tuple[Any, Any]:
        if value is None:
            return None, None
        index = len(self.values)
        self.values.append(value)
        return _sig(value), (Slot(index, value) if self.build else None)

    def filter(self, f: Any) -> tuple[Any, Any]:
        if not isinstance(f, dict):
            return ("?", _freeze(f)), f
        keys, tmpl = [], {}
        for k, v in f.items():
            if k in LOGICAL and isinstance(v, (list, tuple)):
                parts = [self.filter(x) for x in v]
                key = ("L", tuple(p[0] for p in parts))
                t = [p[1] for p in parts]
            elif k == "$not":
                key, t = self.filter(v)
            elif isinstance(k, str) and k.startswith("$"):
                key, t = ("?", _freeze(v)), v
            else:
                key, t = self.field(v)
            keys.append((k, key))
            tmpl[k] = t
        return ("F", tuple(keys)), tmpl

    def field(self, v: Any) -> tuple[Any, Any]:
        if not is_operator_dict(v):
            return self.slot(v)
        keys, tmpl = [], {}
        for op, x in v.items():
            key, t = self.operand(op, x)
            keys.append((op, key))
            tmpl[op] = t
        return ("O", tuple(keys)), tmpl

    def operand(self, op: str, x: Any) -> tuple[Any, Any]:
        if op in STRUCTURAL:
            return ("=", _freeze(x)), x
        if op in SET_OPS and isinstance(x, (list, tuple)):
            sigs = frozenset(_sig(e) for e in x)
            n_json = sum(1 for e in x if _sig(e) == "json")
            key, t = self.slot(list(x))
            return ("IN", sigs, n_json), t
        if op in LIST_OPS and isinstance(x, (list, tuple)):
            parts = [self.slot(e) for e in x]
            return ("l", tuple(p[0] for p in parts)), [p[1] for p in parts]
        if op in DEEP_OPS:
            return self.deep(x)
        if op == "$not":
            return self.field(x)
        if op == "$size" and isinstance(x, dict):
            return self.field(x)
        if op == "$elemMatch" and isinstance(x, dict):
            if is_operator_dict(x) and not (set(x) & LOGICAL):
                key, t = self.field(x)
                return ("EO", key), t
            key, t = self.filter(x)
            return ("EF", key), t
        return self.slot(x)

    def deep(self, x: Any) -> tuple[Any, Any]:
        if isinstance(x, dict) and not is_date_literal(x):
            parts = {k: self.deep(v) for k, v in x.items()}
            return ("d", tuple((k, p[0]) for k, p in parts.items())), {k: p[1] for k, p in parts.items()}
        if isinstance(x, (list, tuple)):
            parts = [self.deep(v) for v in x]
            return ("l", tuple(p[0] for p in parts)), [p[1] for p in parts]
        return self.slot(x)


def key_and_values(f: Any) -> tuple[Any, list]:
    """The shape key of filter ``f`` and its values in walk order."""
    walk = _Walk(build=False)
    key, _ = walk.filter(f)
    return key, walk.values


def template(f: Any) -> tuple[Any, list, Any]:
    """Shape key, values, and ``f`` with each value replaced by a ``Slot``."""
    walk = _Walk(build=True)
    key, tmpl = walk.filter(f)
    return key, walk.values, tmpl
