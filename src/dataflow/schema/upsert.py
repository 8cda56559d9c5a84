"""INSERT ... ON CONFLICT for each dialect: the statement constructors are data, chosen by backend."""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite


def _on_conflict(insert_fn):
    def build(table: sa.Table, target: Sequence[str], keys: Sequence[str], update: bool):
        stmt = insert_fn(table)
        if not update:
            return stmt.on_conflict_do_nothing(index_elements=list(target))
        changes = {k: stmt.excluded[k] for k in keys if k not in target and k != "created_at"}
        if not changes:
            return stmt.on_conflict_do_nothing(index_elements=list(target))
        return stmt.on_conflict_do_update(index_elements=list(target), set_=changes)
    return build


def _on_duplicate_key(table: sa.Table, target: Sequence[str], keys: Sequence[str], update: bool):
    # MySQL has no conflict target: any unique key triggers it. "Do nothing" is a no-op assignment
    # (INSERT IGNORE would also silence other errors, such as bad values).
    stmt = mysql.insert(table)
    pk = list(table.primary_key.columns)[0].name
    if update:
        changes = {k: stmt.inserted[k] for k in keys if k not in target and k != "created_at"}
        if changes:
            return stmt.on_duplicate_key_update(changes)
    return stmt.on_duplicate_key_update({pk: table.c[pk]})


BUILDERS = {
    "postgresql": _on_conflict(postgresql.insert),
    "sqlite": _on_conflict(sqlite.insert),
    "mysql": _on_duplicate_key,
}


def insert_on_conflict(backend: str, table: sa.Table, target: Sequence[str], keys: Sequence[str], *,
                       update: bool):
    """An INSERT of ``keys`` that skips (or, with ``update``, updates) rows whose ``target`` exists."""
    return BUILDERS[backend](table, target, keys, update)
