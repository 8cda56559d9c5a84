"""``db.query("users")``: a lazy, fluent query on a model or any table, run through the operations layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ..errors import FilterError, ValidationError
from .builder import merge_filters

if TYPE_CHECKING:
    from ..core.dataflow import DataFlow

DIALECTS = {"sqlite": sqlite.dialect, "postgresql": postgresql.dialect, "mysql": mysql.dialect}


def render_sql(db: "DataFlow", stmt: sa.Select, params: Mapping[str, Any], dialect: str | None = None) -> str:
    """A statement as SQL text for reading, with its values inlined (never used to run it)."""
    target = db.engine.dialect if dialect is None else DIALECTS[dialect]()
    if params:
        stmt = stmt.params(**params)
    try:
        return str(stmt.compile(dialect=target, compile_kwargs={"literal_binds": True}))
    except Exception:  # a type without a literal form: show placeholders instead
        return str(stmt.compile(dialect=target))


class Query:
    """A query that runs only when asked: ``.all()``, iteration, ``.first()``, ``.count()``, ``.aggregate()``.

    ``where``, ``sort``, ``limit``, ``skip`` and ``fields`` refine it in place and return it, so
    both chaining and ``query.where({...})`` on a query handed to you work.
    """

    def __init__(self, db: "DataFlow", name: str) -> None:
        self._db = db
        self._name = name
        self._filters: list[dict[str, Any]] = []
        self._sort: Any = None
        self._limit: int | None = None
        self._offset = 0
        self._fields: list[str] | None = None

    @property
    def _binding(self):
        return self._db.binding(self._name)

    # ---------------------------------------------------------------- refining
    def where(self, conditions: Mapping[str, Any]) -> "Query":
        """Add MongoDB-style conditions; repeated calls AND together."""
        if not isinstance(conditions, Mapping):
            raise FilterError(f"where() takes a dict, got {type(conditions).__name__}", path="filter")
        self._filters.append(dict(conditions))
        return self

    filter = where

    def sort(self, spec: Any) -> "Query":
        """Order by ``{"field": 1|-1}`` or ``["-field", ...]``."""
        self._sort = spec
        return self

    order_by = sort

    def limit(self, n: int) -> "Query":
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValidationError(f"limit must be a non-negative integer, got {n!r}")
        self._limit = n
        return self

    def skip(self, n: int) -> "Query":
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValidationError(f"skip must be a non-negative integer, got {n!r}")
        self._offset = n
        return self

    offset = skip

    def fields(self, names: Sequence[str]) -> "Query":
        self._fields = list(names)
        return self

    @property
    def conditions(self) -> dict[str, Any] | None:
        return merge_filters(self._filters)

    # ---------------------------------------------------------------- running
    def all(self) -> list[dict[str, Any]]:
        """Every matching record (native Python values)."""
        records, _ = self._db.operations.list(self._name, self.conditions, self._sort, self._limit,
                                              self._offset, self._fields)
        return records

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.all())

    def first(self) -> dict[str, Any] | None:
        """The first matching record, or None."""
        records, _ = self._db.operations.list(self._name, self.conditions, self._sort, 1, self._offset,
                                              self._fields)
        return records[0] if records else None

    def count(self) -> int:
        """How many records match (limit and skip ignored)."""
        return self._db.operations.count(self._name, self.conditions)

    def exists(self) -> bool:
        return self.first() is not None

    def aggregate(self, pipeline: Sequence[Mapping[str, Any]]) -> Any:
        """Run a pipeline over the matching records, as one SQL statement."""
        return self._db.operations.aggregate(self._name, pipeline, self.conditions)

    def to_sql(self, dialect: str | None = None) -> str:
        """The SELECT ``all()`` would run, for reading."""
        stmt, params = self._db.operations.select_statement(self._binding, self.conditions, self._sort,
                                                            self._limit, self._offset, self._fields)
        return render_sql(self._db, stmt, params, dialect)

    def to_params(self) -> dict[str, Any]:
        """The same query as a List node's parameters."""
        params: dict[str, Any] = {"filter": self.conditions or {}}
        for key, value in (("sort", self._sort), ("limit", self._limit), ("fields", self._fields)):
            if value is not None:
                params[key] = value
        if self._offset:
            params["offset"] = self._offset
        return params

    def __repr__(self) -> str:
        return f"Query({self._name!r}, {self.to_params()!r})"
