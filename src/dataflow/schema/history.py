"""The ``dataflow_migrations`` table: one row per applied migration.

A row says when, what (one line per change), the exact SQL, the checksum of the model state the
migration reached, which tables the models declared then, and (``owners``) the app label of the
model set that declared each table. The labels are how DataFlow knows which tables are *this*
model set's: a table that no model declares any more is proposed for dropping only when the last
migration that recorded it was made by models carrying the same app label (``__dataflow__ =
{"app": "shop"}``). Tables recorded without a label (older rows, unlabelled models) and tables of
another label are never proposed for dropping: several apps may share one database, and its
history table, so "DataFlow created it" does not mean "these models created it".

``partial`` marks a migration that stopped part-way on a database that commits each schema
statement (MySQL): the row lists the statements that did run.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

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
    # Added later: NULL in rows written before them (and tables made then get them on the next record).
    sa.Column("owners", sa.Text(), nullable=True),  # JSON {table: app label or null}
    sa.Column("partial", sa.Boolean(), nullable=True),
    **TABLE_KWARGS,
)

#: Columns added after the first release, and their DDL type (added on the next ``record``).
_LATER_COLUMNS = ("owners", "partial")


def exists(conn: sa.Connection) -> bool:
    return sa.inspect(conn).has_table(HISTORY_TABLE)


def _present(conn: sa.Connection) -> list[sa.Column]:
    """The columns of ``migrations`` that the live table has (older tables lack the later ones)."""
    live = {c["name"] for c in sa.inspect(conn).get_columns(HISTORY_TABLE)}
    return [c for c in migrations.columns if c.name in live]


def _upgrade(conn: sa.Connection) -> None:
    """Create the table, or add the columns that an older DataFlow did not have."""
    if not exists(conn):
        migrations.create(conn)
        return
    live = {c.name for c in _present(conn)}
    for name in _LATER_COLUMNS:
        if name not in live:
            column = migrations.c[name]
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {HISTORY_TABLE} ADD COLUMN {name} {kind} NULL")


def record(conn: sa.Connection, *, operations: list[str], sql: list[str], checksum: str,
           tables: Iterable[str], destructive: bool, owners: Mapping[str, str | None] | None = None,
           partial: bool = False) -> int:
    """Append one row (creating or upgrading the table first if needed) and return its id.

    ``owners`` maps each model table to the app label of the model that declares it (or None).
    """
    _upgrade(conn)
    tables = sorted(tables)
    owners = {t: (owners or {}).get(t) for t in tables}
    result = conn.execute(migrations.insert().values(
        applied_at=datetime.now(timezone.utc), description="\n".join(operations),
        sql=";\n".join(sql) + (";" if sql else ""), checksum=checksum,
        tables=json.dumps(tables), destructive=destructive,
        owners=json.dumps(owners, sort_keys=True), partial=partial))
    return int(result.inserted_primary_key[0])


def read(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every row, oldest first; an empty list when no migration was ever recorded."""
    if not exists(conn):
        return []
    rows = conn.execute(sa.select(*_present(conn)).order_by(migrations.c.id)).mappings().all()
    return [{**row, "tables": json.loads(row["tables"]), "destructive": bool(row["destructive"]),
             "owners": json.loads(row.get("owners") or "null") or {t: None for t in json.loads(row["tables"])},
             "partial": bool(row.get("partial"))}
            for row in rows]


def owners(conn: sa.Connection) -> dict[str, str | None]:
    """Each table that DataFlow models declared at some recorded migration -> the app label of the
    last recorded migration that declared it (None: unlabelled, or recorded before labels existed)."""
    found: dict[str, str | None] = {}
    for row in read(conn):  # oldest first: a later record of a table wins
        for table in row["tables"]:
            found[table] = row["owners"].get(table)
    return found


def droppable_tables(conn: sa.Connection, labels: set[str]) -> tuple[set[str], set[str]]:
    """(tables this model set may propose to drop, recorded tables it must leave alone).

    A recorded table is this model set's when the last migration that declared it carried one of
    ``labels`` (the app labels of the current models). Nothing is droppable without a label.
    """
    mine: set[str] = set()
    others: set[str] = set()
    for table, label in owners(conn).items():
        (mine if label is not None and label in labels else others).add(table)
    return mine, others


def history(engine: sa.Engine) -> list[dict[str, Any]]:
    """Read the migration history of the database behind ``engine`` (never changes it).

    Each row: ``id``, ``applied_at`` (aware UTC datetime), ``description`` (one line per change),
    ``sql`` (the statements, ``;``-separated), ``checksum``, ``tables`` (list), ``destructive``,
    ``owners`` (table -> app label or None) and ``partial`` (the migration stopped part-way).
    """
    with engine.connect() as conn:
        return read(conn)
