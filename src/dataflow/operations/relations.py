"""``include=[...]``: related records nested into results, one query per relation.

Each relation's query is a call of its own (action ``include``, on the related model, with the
parent call as ``parent``), planned by the same policies: what scopes the related model scopes
its included records too.
"""

from __future__ import annotations

from typing import Any, Sequence

import sqlalchemy as sa

from ..binding import Binding, Relation
from ..errors import ValidationError
from .base import OperationsBase
from .call import Call


class RelationOperations(OperationsBase):
    def _relations(self, b: Binding, include: str | Sequence[str]) -> list[Relation]:
        """The relations ``include`` names (one name or a list), checked before any SQL runs."""
        if not isinstance(include, (str, list, tuple)):
            raise ValidationError(f"{b.name}: include must be a relation name or a list of them, got "
                                  f"{type(include).__name__}", model=b.name)
        rels = []
        for name in [include] if isinstance(include, str) else include:
            rel = b.relations.get(name) if isinstance(name, str) else None
            if rel is None:
                known = ", ".join(b.relations) or "none (declare foreign_keys on a model)"
                named = isinstance(name, str) and name.isidentifier()  # a name, not a value someone typed in
                shown = repr(name) if named else f"of kind {type(name).__name__}"
                raise ValidationError(f"{b.name} has no relation {shown} to include; relations: {known}",
                                      model=b.name, field=name if named else None)
            rels.append(rel)
        return rels

    def _attach(self, conn: sa.Connection, call: Call, records: list[dict], rels: Sequence[Relation],
                hidden: Sequence[str] = ()) -> None:
        """Nest related records: one query per relation, never one per row; then drop ``hidden`` columns."""
        for rel in rels:
            name = rel.name
            target = self.db.binding(rel.target)
            keys = {r.get(rel.local) for r in records} - {None}
            found: list[dict] = []
            if keys:
                child = self.executor.plan(call.child("include", target, options={"relation": name}))
                where = self._where(child)
                stmt = sa.select(target.table).where(target.table.c[rel.remote].in_(list(keys)), *where.clauses())
                found = [dict(r) for r in conn.execute(stmt.order_by(target.pk), where.params).mappings()]
            if rel.many:
                groups: dict[Any, list] = {}
                for row in found:
                    groups.setdefault(row[rel.remote], []).append(row)
                for r in records:
                    r[name] = groups.get(r.get(rel.local), [])
            else:
                by_key = {row[rel.remote]: row for row in found}
                for r in records:
                    r[name] = by_key.get(r.get(rel.local))
        for r in records:
            for column in hidden:
                del r[column]
