"""Bulk loading through the backend's own fast path: COPY on PostgreSQL (psycopg 3)."""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa


def _pg_copy(conn: sa.Connection, table: sa.Table, keys: Sequence[str], rows: list[dict]) -> bool:
    quote = conn.dialect.identifier_preparer.quote
    raw = conn.connection.driver_connection  # psycopg.Connection, inside our transaction
    # Values go through each column's own bind processing (UTC datetimes, quantized decimals, JSON).
    dialect = conn.dialect
    procs = [table.c[k].type.dialect_impl(dialect).bind_processor(dialect) for k in keys]
    sql = f"COPY {quote(table.name)} ({', '.join(quote(k) for k in keys)}) FROM STDIN"
    with raw.cursor() as cur, cur.copy(sql) as copy:
        if any(procs):
            for row in rows:
                copy.write_row([p(row[k]) if p else row[k] for p, k in zip(procs, keys)])
        else:
            for row in rows:
                copy.write_row([row[k] for k in keys])
    return True


#: Backends with a bulk path; the others use executemany (batched multi-row INSERT on MySQL).
FAST_PATHS = {"postgresql": _pg_copy}


def copy_rows(backend: str, conn: sa.Connection, table: sa.Table, keys: Sequence[str], rows: list[dict]) -> bool:
    """Load ``rows`` through the backend's bulk path; False when it has none."""
    path = FAST_PATHS.get(backend)
    return bool(path and rows and path(conn, table, keys, rows))
