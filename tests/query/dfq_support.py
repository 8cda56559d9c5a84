"""Helpers for the query tests: engines, tables from model classes, and rows in and out."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Iterable, Optional

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import make_url

from dataflow.models import spec_from_class
from dataflow.query.sqlite_functions import register
from dataflow.schema.tables import build_table

DIALECTS = {"sqlite": sqlite.dialect(), "postgresql": postgresql.psycopg.dialect(),
            "mysql": mysql.pymysql.dialect()}
DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg", "mysql": "mysql+pymysql",
           "mariadb": "mysql+pymysql"}


def engine_for(url: str) -> sa.Engine:
    """An engine for a test URL: psycopg/PyMySQL drivers, DataFlow's SQLite functions."""
    u = make_url(url)
    u = u.set(drivername=DRIVERS.get(u.drivername, u.drivername))
    eng = sa.create_engine(u)
    if u.get_backend_name() == "sqlite":
        sa.event.listen(eng, "connect", lambda dbapi, _record: register(dbapi))
    else:
        @sa.event.listens_for(eng, "connect")
        def _session(dbapi, _record):
            if u.get_backend_name() == "mysql":
                with dbapi.cursor() as cur:
                    # JSON_ARRAYAGG ($push) is cut at group_concat_max_len (1 MB by default).
                    cur.execute("SET SESSION group_concat_max_len = 4294967295")
                    # The strictest grouping rules: every pipeline must pass them.
                    cur.execute("SET SESSION sql_mode = 'ONLY_FULL_GROUP_BY,STRICT_ALL_TABLES,"
                                "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'")
    return eng


def make_table(engine: sa.Engine, cls: type, metadata: sa.MetaData | None = None) -> sa.Table:
    """Create the table of model class ``cls`` and return it."""
    metadata = metadata or sa.MetaData()
    table = build_table(spec_from_class(cls), metadata)
    metadata.create_all(engine, tables=[table])
    return table


def sql(stmt: Any, backend: str) -> str:
    """``stmt`` compiled for ``backend``, whitespace normalised."""
    return " ".join(str(stmt.compile(dialect=DIALECTS[backend])).split())


def where_sql(clause: Any, backend: str) -> str:
    """Only the WHERE clause of ``SELECT ... WHERE clause``."""
    text = sql(sa.select(sa.literal_column("1")).where(clause), backend)
    return text.split(" WHERE ", 1)[1]


def insert(conn: sa.Connection, table: sa.Table, rows: Iterable[dict]) -> None:
    rows = list(rows)
    keys = {k for r in rows for k in r}
    if rows:
        conn.execute(table.insert(), [{k: r.get(k) for k in keys} for r in rows])


def matching_ids(conn: sa.Connection, table: sa.Table, compiled: Any) -> list[int]:
    stmt = sa.select(table.c.id).order_by(table.c.id)
    if compiled.clause is not None:
        stmt = stmt.where(compiled.clause)
    return [r[0] for r in conn.execute(stmt, compiled.params)]


# -- models used across the query tests ------------------------------------------------------

class Person:
    """Typed columns of every kind, a JSON object and a JSON array."""

    __dataflow__ = {"timestamps": False}
    name: Optional[str] = None
    age: Optional[int] = None
    score: Optional[float] = None
    active: Optional[bool] = None
    balance: Optional[Decimal] = None
    born: Optional[date] = None
    seen: Optional[datetime] = None
    code: Optional[uuid.UUID] = None
    metadata: Optional[dict] = None
    tags: Optional[list] = None


class Order:
    __dataflow__ = {"timestamps": False}
    customer_id: int
    status: str
    amount: Decimal
    quantity: Optional[int] = None
    price: Optional[float] = None
    created: Optional[datetime] = None
    meta: Optional[dict] = None
