"""The ``dataflow_migrations`` table: one row per applied migration.

A row says when, what (one line per change), the exact SQL, the checksum of the model state the
migration reached, and which tables the models declared then. That last column is how DataFlow
knows which tables it created: only those may ever be proposed for dropping.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from .tables import TABLE_KWARGS
from .types import UTCDateTime

HISTORY_TABLE = "dataflow_migrations"

_metadata = sa.MetaData()
migrations = sa.Table(
    HISTORY_TABLE, _metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("applied_at", UTCDateTime(), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("sql", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False),
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("tables", sa.Text(), nullable=False),  # JSON list of the model tables at that state
    sa.Column("destructive", sa.Boolean(), nullable=False),
    **TABLE_KWARGS,
)


def exists(conn: sa.Connection) -> bool:
    return sa.inspect(conn).has_table(HISTORY_TABLE)


def record(conn: sa.Connection, *, operations: list[str], sql: list[str], checksum: str,
           tables: Iterable[str], destructive: bool) -> int:
    """Append one row (creating the table first if needed) and return its id."""
    migrations.create(conn, checkfirst=True)
    result = conn.execute(migrations.insert().values(
        applied_at=datetime.now(timezone.utc), description="\n".join(operations),
        sql=";\n".join(sql) + (";" if sql else ""), checksum=checksum,
        tables=json.dumps(sorted(tables)), destructive=destructive))
    return int(result.inserted_primary_key[0])


def read(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every row, oldest first; an empty list when no migration was ever recorded."""
    if not exists(conn):
        return []
    rows = conn.execute(sa.select(migrations).order_by(migrations.c.id)).mappings().all()
    return [{**row, "tables": json.loads(row["tables"]), "destructive": bool(row["destructive"])}
            for row in rows]


def managed_tables(conn: sa.Connection) -> set[str]:
    """Tables that DataFlow models declared at some recorded migration."""
    if not exists(conn):
        return set()
    found: set[str] = set()
    for (tables,) in conn.execute(sa.select(migrations.c.tables)):
        found.update(json.loads(tables))
    return found


def history(engine: sa.Engine) -> list[dict[str, Any]]:
    """Read the migration history of the database behind ``engine`` (never changes it).

    Each row: ``id``, ``applied_at`` (aware UTC datetime), ``description`` (one line per change),
    ``sql`` (the statements, ``;``-separated), ``checksum``, ``tables`` (list), ``destructive``.
    """
    with engine.connect() as conn:
        return read(conn)
