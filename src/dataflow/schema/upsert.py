"""INSERT ... ON CONFLICT for each dialect: the statement constructors are data, chosen by backend."""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite


def _on_conflict(insert_fn):
    def build(table: sa.Table, target: Sequence[str], keys: Sequence[str], update: bool, bump: str | None):
        stmt = insert_fn(table)
        if not update:
            return stmt.on_conflict_do_nothing(index_elements=list(target))
        changes = _bumped(table, {k: stmt.excluded[k] for k in keys if k not in target and k != "created_at"}, bump)
        if not changes:
            return stmt.on_conflict_do_nothing(index_elements=list(target))
        return stmt.on_conflict_do_update(index_elements=list(target), set_=changes)
    return build


def _bumped(table: sa.Table, changes: dict, bump: str | None) -> dict:
    """``changes`` with the ``bump`` column (a versioned model's ``version``) incremented, not overwritten."""
    if changes and bump:
        # A literal: PyMySQL's executemany cannot fill a bound parameter after the VALUES list.
        changes[bump] = table.c[bump] + sa.literal_column("1")
    return changes


def _on_duplicate_key(table: sa.Table, target: Sequence[str], keys: Sequence[str], update: bool,
                      bump: str | None):
    # MySQL has no conflict target: any unique key triggers it. "Do nothing" is a no-op assignment
    # (INSERT IGNORE would also silence other errors, such as bad values).
    stmt = mysql.insert(table)
    pk = list(table.primary_key.columns)[0].name
    if update:
        changes = _bumped(table, {k: stmt.inserted[k] for k in keys if k not in target and k != "created_at"}, bump)
        if changes:
            return stmt.on_duplicate_key_update(changes)
    return stmt.on_duplicate_key_update({pk: table.c[pk]})


BUILDERS = {
    "postgresql": _on_conflict(postgresql.insert),
    "sqlite": _on_conflict(sqlite.insert),
    "mysql": _on_duplicate_key,
}


def insert_on_conflict(backend: str, table: sa.Table, target: Sequence[str], keys: Sequence[str], *,
                       update: bool, bump: str | None = None):
    """An INSERT of ``keys`` that skips (or, with ``update``, updates) rows whose ``target`` exists.

    ``bump`` names a column that an update increments instead of setting (a versioned model's ``version``).
    """
    return BUILDERS[backend](table, target, keys, update, bump)
