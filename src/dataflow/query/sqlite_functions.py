"""Functions SQLite lacks, registered on every new SQLite connection by ``register``.

- ``df_regexp(pattern, value)``: the ``$regex`` subset, run on RE2 in linear time (the pattern arrives
  as ``regex.render(..., "sqlite")``: a flag character, ``i`` or ``c``, then the subset pattern).
- ``df_lower(value)``: Unicode lower-casing (SQLite's ``lower()`` only folds ASCII), for ``$ilike``.
- ``df_json_equal(a, b)``: JSON equality ignoring object key order; ``1 == 1.0`` but ``true != 1``.
- ``df_json_agg(element_json, flags, key...)``: a JSON array of the non-null elements sorted by the
  keys (``flags``: one ``a``/``d`` per key, plus ``u`` for distinct). SQLite 3.40 has no ``ORDER BY``
  inside aggregate calls, so ``$push`` after ``$sort`` passes the sort keys here.
- ``PRAGMA case_sensitive_like = ON``: ``$like`` is case-sensitive on every database.
"""

from __future__ import annotations

import json
from typing import Any

from . import regex


def register(dbapi_connection: Any) -> None:
    """Register DataFlow's SQL functions and settings on a ``sqlite3`` connection."""
    fn = dbapi_connection.create_function
    fn("df_regexp", 2, regexp, deterministic=True)
    fn("df_lower", 1, lower, deterministic=True)
    fn("df_json_equal", 2, json_equal, deterministic=True)
    dbapi_connection.create_aggregate("df_json_agg", -1, JsonAgg)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA case_sensitive_like = ON")
    finally:
        cursor.close()


def regexp(pattern: str | None, value: Any) -> int | None:
    if pattern is None or value is None:
        return None
    if not isinstance(value, str):
        return 0
    return 1 if regex.search(pattern[1:], pattern[:1] == "i", value) else 0


def lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _canonical(value: Any) -> Any:
    """A form where equal JSON values are equal Python values (and true != 1)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    return (type(value).__name__, value)


def json_equal(a: str | None, b: str | None) -> int | None:
    if a is None or b is None:
        return None
    try:
        return int(_canonical(json.loads(a)) == _canonical(json.loads(b)))
    except (TypeError, ValueError):
        return 0


def _sqlite_order(value: Any) -> tuple:
    """SQLite's order of storage classes: NULL, numbers, text, blob."""
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, bytes(value))


class JsonAgg:
    """``df_json_agg(element_json, flags, key...)``: see the module docstring."""

    def __init__(self) -> None:
        self.rows: list[tuple[tuple, str | None]] = []
        self.flags = ""

    def step(self, element: str | None, flags: str, *keys: Any) -> None:
        self.flags = flags
        if element is not None and element != "null":  # $push collects values, not nulls
            self.rows.append((keys, element))

    def finalize(self) -> str:
        rows = self.rows
        directions = self.flags.replace("u", "")
        for i in reversed(range(len(directions))):  # stable sorts, least significant key first
            rows.sort(key=lambda r, i=i: _sqlite_order(r[0][i]), reverse=directions[i] == "d")
        elements = [e for _, e in rows]
        if "u" in self.flags:
            seen, unique = set(), []
            for e in elements:
                canon = _canonical(json.loads(e))
                if canon not in seen:
                    seen.add(canon)
                    unique.append(e)
            elements = unique
        return "[" + ",".join(elements) + "]"
