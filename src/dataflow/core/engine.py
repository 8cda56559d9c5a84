"""Database URLs -> pooled SQLAlchemy engines, one place for driver choice and per-connection set-up."""

from __future__ import annotations

import json
import logging
import select
import time

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from ..errors import ValidationError
from .config import DataFlowConfig

log = logging.getLogger("dataflow.engine")

#: A pooled connection idle longer than this is pinged before use. SQLAlchemy's own pre-ping
#: pings on every checkout: one more round trip per operation, a third of a single insert.
PING_AFTER_IDLE_S = 1.0

#: Bare schemes -> the driver we ship, whatever SQLAlchemy's default for the scheme is.
DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "sqlite": "sqlite+pysqlite",
}

#: Statements run on every new connection, per backend.
ON_CONNECT = {
    # Strict mode: MariaDB only warns about a value a column cannot hold; UTC for DATETIME.
    # group_concat_max_len: $push/$addToSet use GROUP_CONCAT on MariaDB, cut at 1 MB by default (1 GiB here).
    "mysql": ["SET SESSION sql_mode = 'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,"
              "NO_AUTO_VALUE_ON_ZERO'", "SET SESSION time_zone = '+00:00'",
              "SET SESSION group_concat_max_len = 1073741824"],
    "sqlite": ["PRAGMA foreign_keys=ON"],
    # UTC sessions: timestamptz values come back in UTC, no conversion per value.
    "postgresql": ["SET TIME ZONE 'UTC'"],
}


def safe_url(url: str | URL) -> str:
    """A URL fit for logs and errors: the password is masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def parse_url(raw: str) -> URL:
    """Parse and normalise a database URL, mapping bare schemes to our drivers."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError("database URL must be a non-empty string such as 'sqlite:///app.db' or "
                              "'postgresql://user:pass@host/db'")
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ValidationError(
            f"Malformed database URL {safe_url(raw)!r}: expected 'sqlite:///path.db', "
            f"'postgresql://user:pass@host:5432/db' or 'mysql://user:pass@host:3306/db'") from None
    if "@" in (url.host or ""):
        # An unencoded '@' in the password: the rest of the password would be taken for the host
        # (and shown in errors). Say so without echoing any of it.
        raise ValidationError("Malformed database URL: its host contains '@'; percent-encode '@' in the user "
                              "name or password as %40 (e.g. 'postgresql://user:p%40ss@host/db')")
    scheme = url.drivername
    if "+" not in scheme:
        if scheme not in DRIVERS:
            raise ValidationError(f"Unsupported database URL scheme {scheme!r} in {safe_url(url)!r}; "
                                  f"use sqlite://, postgresql:// or mysql://")
        url = url.set(drivername=DRIVERS[scheme])
    elif url.get_backend_name() not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise ValidationError(f"Unsupported database {url.get_backend_name()!r}; use SQLite, PostgreSQL or MySQL")
    if url.get_backend_name() in ("mysql", "mariadb") and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    if url.get_backend_name() != "sqlite" and not url.database:
        raise ValidationError(f"Database URL {safe_url(url)!r} names no database; add '/dbname'")
    return url


def backend_of(url: URL) -> str:
    return "mysql" if url.get_backend_name() in ("mysql", "mariadb") else url.get_backend_name()


def create_engine(config: DataFlowConfig) -> sa.Engine:
    """A pooled engine for ``config.database_url`` with our per-connection settings."""
    url = parse_url(config.database_url or "")
    backend = backend_of(url)
    # JSON text keeps its characters (not \uXXXX escapes): SQLite and MariaDB compare path keys as written.
    kwargs: dict = {"echo": config.echo, "future": True,
                    "json_serializer": lambda value: json.dumps(value, ensure_ascii=False)}
    if backend == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if url.database in (None, "", ":memory:"):
            # One shared connection: every thread (Kailash may run nodes on others) sees one database.
            kwargs["poolclass"] = sa.StaticPool
        if config.pool_size != DataFlowConfig.pool_size or config.max_overflow != DataFlowConfig.max_overflow:
            log.warning("pool_size/max_overflow do not apply to SQLite (one file, no server): ignored")
    else:
        kwargs.update(pool_size=config.pool_size, max_overflow=config.max_overflow,
                      pool_timeout=config.pool_timeout, pool_recycle=config.pool_recycle,
                      pool_pre_ping=False)
    try:
        engine = sa.create_engine(url, **kwargs)
    except (NoSuchModuleError, ImportError):  # an explicit '+driver' that is not installed
        raise ValidationError(f"No driver for {safe_url(url)!r}: install it, or drop '+{url.get_driver_name()}' "
                              f"to use the driver DataFlow ships ({DRIVERS[url.get_backend_name()]})") from None
    statements = ON_CONNECT[backend]
    if config.pool_pre_ping and backend != "sqlite":
        _ping_when_idle(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        if backend == "sqlite":
            _register_sqlite_functions(dbapi_conn)
            # Let SQLAlchemy own transactions (pysqlite's implicit BEGIN handling is off).
            dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for stmt in statements:
            cur.execute(stmt)
        cur.close()
        if statements and backend != "sqlite":
            dbapi_conn.commit()  # psycopg opened a transaction for the SET: end it

    if backend == "sqlite":
        @event.listens_for(engine, "begin")
        def _begin(conn):  # noqa: ANN001
            # execution_options(sqlite_begin="IMMEDIATE") takes the write lock up front (migrations).
            conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', '')}".strip())

    return engine


def _register_sqlite_functions(dbapi_conn) -> None:  # noqa: ANN001
    try:
        from ..query import sqlite_functions
    except ImportError:  # the query package is optional while it is being built
        return
    sqlite_functions.register(dbapi_conn)


def _ping_when_idle(engine: sa.Engine) -> None:
    """Check a pooled connection before use, for almost nothing: a dead one is replaced before any statement is sent.

    An idle connection in good health has nothing to read. One whose server went away (a restart,
    ``pg_terminate_backend``, ``KILL``, a crash) has the server's farewell or the end of the stream
    waiting on its socket: a poll with no timeout (about a microsecond) sees it, the connection is
    pinged, and the pool replaces it if the ping fails, before the operation sent anything. A
    connection idle longer than ``PING_AFTER_IDLE_S`` is pinged anyway (a silent network, a proxy
    that dropped it). SQLAlchemy's own pre-ping would cost a round trip on every checkout.
    """
    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn, record):  # noqa: ANN001
        record.info["dataflow_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, proxy):  # noqa: ANN001
        since = record.info.get("dataflow_idle_since")
        if since is None:  # a new connection: nothing to check
            return
        if time.monotonic() - since < PING_AFTER_IDLE_S and not _has_input(dbapi_conn, record.info):
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the pool retries the checkout with a new connection
            raise sa.exc.DisconnectionError(f"stale pooled connection: {type(exc).__name__}") from exc
        if alive is False:
            raise sa.exc.DisconnectionError("stale pooled connection")


def _has_input(dbapi_conn, info: dict) -> bool:  # noqa: ANN001
    """True when the server sent something to an idle connection (or its socket cannot be polled)."""
    try:
        fileno = dbapi_conn.fileno() if hasattr(dbapi_conn, "fileno") else dbapi_conn._sock.fileno()  # psycopg; PyMySQL
        watch = info.get("dataflow_poll")
        if watch is None or watch[0] != fileno:
            poller = select.poll()
            poller.register(fileno, select.POLLIN | select.POLLPRI)
            watch = info["dataflow_poll"] = (fileno, poller)
        return bool(watch[1].poll(0))
    except Exception:  # no socket (closed), or no poll() on this platform: let the ping decide
        return True
