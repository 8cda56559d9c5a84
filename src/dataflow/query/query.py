"""``db.query("users")``: a lazy, fluent query on a model or any table, run through the operations layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ..errors import ValidationError
from .builder import ListSpec


class QueryLengthError(ValidationError, TypeError):
    """``len(query)``: use ``query.count()``. A TypeError too, so ``list(query)`` still works."""

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


class Query(ListSpec):
    """A query that runs only when asked: ``.all()``, iteration, ``.first()``, ``.count()``, ``.aggregate()``.

    ``where``, ``sort``, ``limit``, ``skip`` and ``fields`` refine it in place and return it, so
    both chaining and ``query.where({...})`` on a query handed to you work. ``name`` is a model or
    any table (reflected on first use).
    """

    def all(self) -> list[dict[str, Any]]:
        """Every matching record (native Python values)."""
        records, _ = self._db.operations.list(self._name, self.conditions, self._sort, self._limit,
                                              self._offset, self._fields)
        return records

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Stream the matching records in batches (memory stays flat however many rows match)."""
        return self._db.operations.stream(self._name, self.conditions, self._sort, self._limit, self._offset,
                                          self._fields)

    def __len__(self) -> int:
        """Refused with a pointer to ``count()``: a silent COUNT per ``list(query)`` would double its cost."""
        raise QueryLengthError(f"len() of a query on {self._name!r} is not defined: use .count() (one COUNT "
                               f"query), or len(query.all())", model=self._name)

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
