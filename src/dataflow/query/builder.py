"""``User.query_builder()``: collect a filter, sort and page, then hand them to a List or Count node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import FilterError

if TYPE_CHECKING:
    from ..core.dataflow import DataFlow


def merge_filters(filters: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """AND filters together: one dict when their keys are disjoint, else ``{"$and": [...]}``."""
    filters = [f for f in filters if f]
    if not filters:
        return None
    merged: dict[str, Any] = {}
    for f in filters:
        if merged.keys() & f.keys():
            return {"$and": [dict(f) for f in filters]}
        merged.update(f)
    return merged


class QueryBuilder:
    """A List/Count node's parameters, built step by step: ``filter`` calls AND together."""

    def __init__(self, db: "DataFlow", model: str) -> None:
        self._db = db
        self._binding = db.binding(model, modelled=True)
        self._filters: list[dict[str, Any]] = []
        self._sort: Any = None
        self._limit: int | None = None
        self._offset: int = 0
        self._fields: list[str] | None = None

    def filter(self, conditions: Mapping[str, Any]) -> "QueryBuilder":
        """Add conditions (MongoDB-style); repeated calls AND together."""
        if not isinstance(conditions, Mapping):
            raise FilterError(f"filter must be a dict, got {type(conditions).__name__}", path="filter")
        from . import compile_filter  # validate now: errors point at the call that made them

        compile_filter(self._binding.table, conditions)
        self._filters.append(dict(conditions))
        return self

    where = filter

    def sort(self, spec: Any) -> "QueryBuilder":
        """Order by ``{"field": 1|-1}`` or ``["-field", "other"]``."""
        from . import compile_sort

        compile_sort(self._binding.table, spec)
        self._sort = spec
        return self

    order_by = sort

    def limit(self, n: int) -> "QueryBuilder":
        self._limit = n
        return self

    def offset(self, n: int) -> "QueryBuilder":
        self._offset = n
        return self

    skip = offset

    def fields(self, names: Sequence[str]) -> "QueryBuilder":
        self._fields = list(names)
        return self

    @property
    def conditions(self) -> dict[str, Any] | None:
        return merge_filters(self._filters)

    def to_params(self) -> dict[str, Any]:
        """The parameters of a ``<Model>ListNode`` (``filter`` alone suits a ``<Model>CountNode``)."""
        params: dict[str, Any] = {"filter": self.conditions or {}}
        if self._sort is not None:
            params["sort"] = self._sort
        if self._limit is not None:
            params["limit"] = self._limit
        if self._offset:
            params["offset"] = self._offset
        if self._fields is not None:
            params["fields"] = self._fields
        return params

    def to_sql(self, dialect: str | None = None) -> str:
        """The SQL a List with these parameters would run, for reading (values inlined)."""
        from .query import render_sql

        stmt, params = self._db.operations.select_statement(
            self._binding, self.conditions, self._sort, self._limit, self._offset, self._fields)
        return render_sql(self._db, stmt, params, dialect)

    def __repr__(self) -> str:
        return f"QueryBuilder({self._binding.name}, {self.to_params()!r})"
