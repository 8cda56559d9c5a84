"""PostgreSQL row-level security for tenant tables: the second wall behind ``tenancy.Tenancy``.

The tenancy policy narrows every statement DataFlow builds; this module makes the database itself
refuse other tenants' rows, so hand-written SQL through ``db.engine`` sees one tenant too.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sqlalchemy as sa

from ..context import current

log = logging.getLogger("dataflow.tenancy")

RLS_POLICY = "dataflow_tenant"
TENANT_SETTING = "dataflow.tenant"
BYPASS_SETTING = "dataflow.bypass"


class RowLevelSecurity:
    """Row-level security on every tenant table, fed by the context in every transaction.

    Each tenant table gets ``ENABLE`` and ``FORCE ROW LEVEL SECURITY`` (so the owner, the role
    DataFlow migrates with, is bound too) and one policy: rows whose tenant column equals
    ``current_setting('dataflow.tenant')``, or every row while ``dataflow.bypass`` is ``on``; for
    reads (USING) and for written rows (WITH CHECK). At the start of every transaction on the
    instance's engine (DataFlow's own and hand-written SQL through ``db.engine`` alike) the current
    context's tenant is set with ``set_config(..., true)``: local to that transaction, so nothing
    leaks through the pool. No tenant set: the empty string, which matches no row (fail closed).
    Superusers and BYPASSRLS roles are not bound by any policy: that is logged once.
    """

    def __init__(self, db: Any) -> None:
        self.db = db
        self.installed: set[str] = set()
        self._lock = threading.Lock()
        sa.event.listen(db.engine, "begin", self._on_begin)

    @staticmethod
    def _on_begin(conn: sa.Connection) -> None:
        ctx = current()
        tenant, bypass = ctx.tenant or "", "on" if ctx.tenant_bypass else "off"
        # On the driver connection: the statement opens the transaction the caller's statements join.
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None  # a connection beginning a transaction has one
        error = conn.dialect.loaded_dbapi.Error
        try:
            if _begin_with_settings(dbapi, tenant, bypass):
                return
            cursor = dbapi.cursor()
            try:
                cursor.execute("SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
                               (TENANT_SETTING, tenant, BYPASS_SETTING, bypass))
            finally:
                cursor.close()
        except error as exc:
            # SQLAlchemy does not wrap what a begin listener raises: done here as for its own failed BEGIN
            # (sa.exc.OperationalError for hand-written SQL too; a lost connection is invalidated at once,
            # not rolled back by the pool and logged).
            lost = conn.dialect.is_disconnect(exc, dbapi, None)
            if lost:
                conn.invalidate(exc)
            raise sa.exc.DBAPIError.instance("BEGIN", None, exc, error, connection_invalidated=lost,
                                             dialect=conn.dialect) from exc

    def ensure(self, table: str) -> None:
        """Install the policies of every tenant table, once per instance (and again for new models)."""
        if table in self.installed:
            return
        with self._lock:
            if table in self.installed:
                return
            db = self.db
            db.ensure_ready()
            specs = [s for s in db.specs.values() if s.tenant and s.table not in self.installed]
            if db.config.existing_schema_mode:
                log.warning("existing_schema_mode: DataFlow does not install row-level security on %s; "
                            "the tenant condition in every statement is the only wall", ", ".join(
                                s.table for s in specs))
            else:
                try:
                    with db.engine.begin() as conn:
                        for spec in specs:
                            self._install(conn, spec.table, spec.tenant)
                        bypasses = conn.exec_driver_sql(
                            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user").scalar()
                except (sa.exc.SQLAlchemyError, *db.driver_errors) as exc:
                    from ...driver_errors import translate
                    from ...errors import MigrationError

                    err = translate(exc, action="install row-level security", where=db.safe_url)
                    raise MigrationError(f"Could not install row-level security on the tenant tables ({err.message}); "
                                         f"the role DataFlow connects with must own them, or set tenant_rls=False",
                                         original=err.original) from None
                if bypasses:
                    log.warning("row-level security is installed, but the database role DataFlow connects with "
                                "is a superuser or has BYPASSRLS, which no policy binds: connect as an ordinary "
                                "role for the second wall to hold")
            self.installed |= {s.table for s in specs} | {table}

    @staticmethod
    def _install(conn: sa.Connection, table: str, field: str) -> None:
        q = conn.dialect.identifier_preparer
        t, col = q.quote(table), q.quote(field)
        row = conn.exec_driver_sql("SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
                                   "WHERE oid = to_regclass(%s)", (q.format_table(sa.table(table)),)).first()
        if row is not None and not row[0]:
            conn.exec_driver_sql(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
        if row is not None and not row[1]:
            conn.exec_driver_sql(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
        rule = (f"({col} = current_setting('{TENANT_SETTING}', true) "
                f"OR current_setting('{BYPASS_SETTING}', true) = 'on')")
        conn.exec_driver_sql(f"DO $$ BEGIN CREATE POLICY {RLS_POLICY} ON {t} USING {rule} WITH CHECK {rule}; "
                             f"EXCEPTION WHEN duplicate_object THEN NULL; END $$")


def _begin_with_settings(dbapi: Any, tenant: str, bypass: str) -> bool:
    """psycopg: ``BEGIN`` and the two ``set_config`` in one round trip; False where this cannot be done.

    psycopg sends its own ``BEGIN`` before a connection's first statement, one round trip, then the
    ``SELECT set_config(...)`` is a second. Sent as one simple-query string on the libpq connection,
    they cost one: psycopg then finds the transaction open and sends no ``BEGIN`` of its own (it
    commits and rolls back as usual). The simple query protocol takes no parameters, so the values are
    SQL literals quoted by the connection (``psycopg.sql.Literal``, libpq's ``PQescapeLiteral``); the
    tenant is a caller's string. The ``BEGIN`` carries the connection's isolation level, read-only and
    deferrable characteristics in the words psycopg would use: SQLAlchemy puts a pooled connection back
    with the server's default level set explicitly (``READ COMMITTED``, not None) after an operation
    that asked for another (``REPEATABLE READ``), and that connection keeps the one round trip. A
    connection in autocommit, or already in a transaction, takes the two-step way.
    """
    pgconn = getattr(dbapi, "pgconn", None)
    if pgconn is None:
        return False
    import psycopg
    from psycopg import pq, sql

    if dbapi.autocommit or pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return False
    begin = ["BEGIN"]  # as psycopg's Connection._get_tx_start_command builds it
    if dbapi.isolation_level is not None:
        begin.append("ISOLATION LEVEL " + psycopg.IsolationLevel(dbapi.isolation_level).name.replace("_", " "))
    if dbapi.read_only is not None:
        begin.append("READ ONLY" if dbapi.read_only else "READ WRITE")
    if dbapi.deferrable is not None:
        begin.append("DEFERRABLE" if dbapi.deferrable else "NOT DEFERRABLE")
    query = sql.SQL(" ".join(begin) + "; SELECT set_config({}, {}, true), set_config({}, {}, true)").format(
        sql.Literal(TENANT_SETTING), sql.Literal(tenant), sql.Literal(BYPASS_SETTING), sql.Literal(bypass))
    result = pgconn.exec_(query.as_bytes(dbapi))
    if result.status != pq.ExecStatus.TUPLES_OK:
        if pgconn.status == pq.ConnStatus.BAD:
            raise psycopg.OperationalError("the connection was lost while beginning a transaction")
        raise psycopg.errors.error_from_result(result, encoding=dbapi.info.encoding)
    return True
