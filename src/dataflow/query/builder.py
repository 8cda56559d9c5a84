"""A List's parameters collected step by step: ``QueryBuilder`` (``User.query_builder()``) and its base.

``ListSpec`` holds what both the builder and the fluent ``Query`` (query.py) collect: filters that AND
together, a sort, a page and a projection; it turns them into a List node's parameters or SQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import FilterError, ValidationError

if TYPE_CHECKING:
    from ..binding import Binding
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


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        what = "a negative number" if isinstance(value, int) and not isinstance(value, bool) else type(value).__name__
        raise ValidationError(f"{name} must be a non-negative integer, got {what}")
    return value


class ListSpec:
    """Filters, sort, page and fields of a List; each refining call changes it in place and returns it."""

    def __init__(self, db: "DataFlow", name: str) -> None:
        self._db = db
        self._name = name
        self._filters: list[dict[str, Any]] = []
        self._sort: Any = None
        self._limit: int | None = None
        self._offset = 0
        self._fields: list[str] | None = None

    @property
    def _binding(self) -> "Binding":
        return self._db.binding(self._name)

    def _check(self, conditions: Mapping[str, Any]) -> None:
        """Hook: QueryBuilder compiles the filter at once; Query when it runs."""

    def filter(self, conditions: Mapping[str, Any]):
        """Add MongoDB-style conditions; repeated calls AND together."""
        if not isinstance(conditions, Mapping):
            raise FilterError(f"a filter must be a dict, got {type(conditions).__name__}", path="filter")
        self._check(conditions)
        self._filters.append(dict(conditions))
        return self

    where = filter

    def sort(self, spec: Any):
        """Order by ``{"field": 1|-1}`` or ``["-field", "other"]``."""
        self._sort = spec
        return self

    order_by = sort

    def limit(self, n: int):
        self._limit = _count(n, "limit")
        return self

    def skip(self, n: int):
        self._offset = _count(n, "skip")
        return self

    offset = skip

    def fields(self, names: Sequence[str]):
        from .fields import field_names

        self._fields = field_names(names)
        return self

    @property
    def conditions(self) -> dict[str, Any] | None:
        return merge_filters(self._filters)

    def to_params(self) -> dict[str, Any]:
        """The parameters of a ``<Model>ListNode`` (``filter`` alone suits a ``<Model>CountNode``)."""
        params: dict[str, Any] = {"filter": self.conditions or {}}
        for key, value in (("sort", self._sort), ("limit", self._limit), ("fields", self._fields)):
            if value is not None:
                params[key] = value
        if self._offset:
            params["offset"] = self._offset
        return params

    def to_sql(self, dialect: str | None = None) -> str:
        """The SELECT a List with these parameters runs, for reading (values inlined)."""
        from .query import render_sql

        stmt, params = self._db.operations.select_statement(
            self._binding, self.conditions, self._sort, self._limit, self._offset, self._fields)
        return render_sql(self._db, stmt, params, dialect)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, {self.to_params()!r})"


class QueryBuilder(ListSpec):
    """A List/Count node's parameters for a model; filters and sorts are checked as they are given."""

    def __init__(self, db: "DataFlow", model: str) -> None:
        super().__init__(db, db.binding(model, modelled=True).name)

    def _check(self, conditions: Mapping[str, Any]) -> None:
        from . import compile_filter  # errors point at the call that made them

        compile_filter(self._binding.table, conditions)

    def sort(self, spec: Any) -> "QueryBuilder":
        from . import compile_sort

        compile_sort(self._binding.table, spec)
        return super().sort(spec)

    order_by = sort
