"""The state of a pipeline between stages: what rows come from where, in which order.

A ``Relation`` is a SELECT under construction: a FROM, a document of named values (``Col``),
WHERE / GROUP BY / HAVING, an order and LIMIT/OFFSET. A stage that cannot be added to the current
SELECT (a ``$match`` after ``$limit`` or ``$group``, a ``$group`` after ``$skip``...) first wraps it
as a subquery; the order travels along as hidden columns so later stages (and ordered
accumulators) still see the rows in order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from .constructs import OrderKey
from .expressions import Col, Doc, flatten

@dataclass
class Relation:
    source: Any
    doc: Doc
    where: list = field(default_factory=list)
    group_by: list | None = None      # not None: an aggregate SELECT (GROUP BY, maybe no keys)
    having: list = field(default_factory=list)
    order: list = field(default_factory=list)       # OrderKey items
    tiebreak: list = field(default_factory=list)    # expressions that make the order total
    limit: Any = None
    offset: Any = None
    # Subquery names are numbered per pipeline, so the same pipeline compiles to the same SQL
    # (and SQLAlchemy's statement cache recognises it).
    names: Any = field(default_factory=itertools.count, repr=False)

    def subquery_name(self, prefix: str) -> str:
        return f"{prefix}{next(self.names)}"

    @classmethod
    def of_table(cls, table: sa.Table, doc: Doc) -> "Relation":
        return cls(source=table, doc=doc, tiebreak=list(table.primary_key.columns))

    @property
    def aggregate(self) -> bool:
        return self.group_by is not None

    @property
    def bounded(self) -> bool:
        return self.limit is not None or self.offset is not None

    def order_keys(self) -> list[OrderKey]:
        """The full order: the sort, then the tie-breaking key ascending."""
        return [*self.order, *(OrderKey(t) for t in self.tiebreak)]

    def select(self, columns: list, *, final: bool = True) -> sa.Select:
        """The SELECT of ``columns``; a subquery (``final=False``) is ordered only to cut rows."""
        stmt = sa.select(*columns).select_from(self.source).where(*self.where)
        if self.group_by is not None:
            stmt = stmt.group_by(*self.group_by).having(*self.having)
        if self.bounded or (final and self.order):
            stmt = stmt.order_by(*self.order_keys())
        if self.limit is not None:
            stmt = stmt.limit(self.limit)
        if self.offset is not None:
            stmt = stmt.offset(self.offset)
        return stmt

    def wrap(self) -> "Relation":
        """This SELECT as a subquery; the new relation reads its columns, in the same order."""
        labels: dict[str, str] = {}
        columns = []
        for i, (name, col) in enumerate(flatten(self.doc)):
            labels[name] = f"c{i}"
            columns.append(col.expr.label(f"c{i}"))
        for i, key in enumerate(self.order):
            columns.append(key.value.label(f"o{i}"))
        for i, expr in enumerate(self.tiebreak):
            columns.append(expr.label(f"t{i}"))
        if not columns:
            columns.append(sa.literal_column("1").label("c"))
        sub = self.select(columns, final=False).subquery(self.subquery_name("df_s"))
        doc = _remap(self.doc, sub, labels)
        return Relation(source=sub, doc=doc,
                        order=[OrderKey(sub.c[f"o{i}"], k.descending) for i, k in enumerate(self.order)],
                        tiebreak=[sub.c[f"t{i}"] for i in range(len(self.tiebreak))], names=self.names)

    def plain(self) -> "Relation":
        """A relation without LIMIT/OFFSET or aggregation (wrapping when needed)."""
        return self.wrap() if self.aggregate or self.bounded else self

    def unbounded(self) -> "Relation":
        return self.wrap() if self.bounded else self

    def with_(self, **changes: Any) -> "Relation":
        return replace(self, **changes)


def _remap(doc: Doc, sub: Any, labels: dict[str, str], prefix: str = "") -> Doc:
    out: Doc = {}
    for name, node in doc.items():
        if isinstance(node, dict):
            out[name] = _remap(node, sub, labels, f"{prefix}{name}.")
        else:
            out[name] = Col(sub.c[labels[f"{prefix}{name}"]], node.pytype, node.decode, node.null)
    return out
