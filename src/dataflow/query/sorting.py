"""Sort specifications -> ORDER BY expressions, ordered as MongoDB orders values.

Accepted forms: ``{"created_at": -1, "name": 1}``, ``["-created_at", "name"]``, ``"name"``,
``"-name"``, ``[("name", -1)]``. Directions: 1/-1, "asc"/"desc".

NULL (missing) sorts first ascending and last descending on every database; strings sort by code
point; Decimal columns sort numerically on SQLite too. A JSON path sorts by MongoDB's type order
(missing/null, numbers, strings, objects, arrays, booleans), then by value within a type.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

from ..errors import FilterError
from .constructs import BinaryCollate, JsonIs, JsonScalar, NumericValue, OrderKey
from .fields import Target

_DIRECTIONS = {1: False, -1: True, "asc": False, "desc": True, "ascending": False, "descending": True}

#: MongoDB's order of JSON kinds (BSON comparison order), for sorting a JSON path.
JSON_SORT_RANK = (("number", 2), ("string", 3), ("object", 4), ("array", 5), ("bool", 8))


def parse_sort(sort: Any, *, path: str = "sort") -> list[tuple[str, bool, str]]:
    """Normalise a sort spec into ``[(field, descending, path_of_item)]``."""
    if sort is None:
        return []
    items: list[tuple[Any, Any, str]] = []
    if isinstance(sort, str):
        items.append(_from_string(sort, path))
    elif isinstance(sort, Mapping):
        items.extend((k, v, f"{path}.{k}") for k, v in sort.items())
    elif isinstance(sort, (list, tuple)):
        if len(sort) == 2 and isinstance(sort[0], str) and not isinstance(sort[1], (str, list, tuple)):
            sort = [tuple(sort)]  # ("name", -1)
        for i, item in enumerate(sort):
            where = f"{path}[{i}]"
            if isinstance(item, str):
                items.append(_from_string(item, where))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                items.append((item[0], item[1], where))
            elif isinstance(item, Mapping) and len(item) == 1:
                (k, v), = item.items()
                items.append((k, v, where))
            else:
                raise FilterError(f"sort items are 'field', '-field', (field, 1|-1) or {{field: 1|-1}}, got "
                                  f"{_shape(item)}", path=where)
    else:
        raise FilterError(f"sort must be a dict, a list or a field name, got {type(sort).__name__}", path=path)
    out = []
    for name, direction, where in items:
        if not isinstance(name, str) or not name:
            raise FilterError(f"sort field must be a non-empty string, got "
                              f"{'an empty string' if name == '' else type(name).__name__}", path=where)
        key = direction.lower() if isinstance(direction, str) else direction
        if isinstance(key, bool) or key not in _DIRECTIONS:
            other = isinstance(direction, (int, str)) and not isinstance(direction, bool)
            raise FilterError(f"sort direction must be 1, -1, 'asc' or 'desc', got "
                              f"{'another ' if other else ''}{type(direction).__name__}", path=where)
        out.append((name, _DIRECTIONS[key], where))
    return out


def _shape(item: Any) -> str:
    """What a bad sort item is, without its content."""
    if isinstance(item, Mapping):
        return f"a dict of {len(item)} keys"
    if isinstance(item, (list, tuple)):
        return f"a {type(item).__name__} of {len(item)} items"
    return type(item).__name__


def _from_string(text: str, path: str) -> tuple[str, int, str]:
    text = text.strip()
    if text.startswith("-"):
        return text[1:], -1, path
    return text.lstrip("+"), 1, path


def sort_values(t: Target) -> list[Any]:
    """The expressions that order a target, most significant first."""
    if t.is_json:
        rank = sa.case(*[(JsonIs(t.expr, t.path, [kind]), sa.literal_column(str(r), sa.Integer()))
                         for kind, r in JSON_SORT_RANK], else_=sa.literal_column("1", sa.Integer()))
        return [rank, JsonScalar(t.expr, t.path, "number"), BinaryCollate(JsonScalar(t.expr, t.path, "string")),
                JsonScalar(t.expr, t.path, "bool")]
    if t.pytype is str:
        return [BinaryCollate(t.expr)]
    if t.pytype is Decimal:
        return [NumericValue(t.expr, sa.Numeric(asdecimal=True))]
    return [t.expr]


def order_keys(fields: Any, sort: Any, *, path: str = "sort") -> list[OrderKey]:
    """ORDER BY items for ``sort`` over ``fields``."""
    keys: list[OrderKey] = []
    for name, descending, where in parse_sort(sort, path=path):
        target = fields.resolve(name, where)
        nullable = not (isinstance(target.expr, sa.Column) and not target.expr.nullable)
        keys.extend(OrderKey(v, descending, nullable=nullable) for v in sort_values(target))
    return keys


def compile_sort(table: sa.Table, sort: Any, *, path: str = "sort") -> list[Any]:
    """Compile a sort spec for ``table`` into ORDER BY expressions; unknown fields raise FilterError."""
    from .filters import CACHE

    return order_keys(CACHE.fields(table), sort, path=path)


def iter_fields(sort: Any, *, path: str = "sort") -> Iterable[str]:
    """The field names a sort spec names (validated)."""
    return [name for name, _, _ in parse_sort(sort, path=path)]
