"""Single statements compiled once and run straight on the driver connection.

The hot single-round-trip operations (create, read, list, count) spend more time in
SQLAlchemy's per-execution machinery (cache keys, execution contexts, result wrappers) than
the database spends on a one-row INSERT. SQLAlchemy still generates the SQL (once per shape),
owns the pool and the type processing; this module only skips the per-call bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import sqlalchemy as sa

from .schema.bulk import positional_dialect

if TYPE_CHECKING:
    from .core.dataflow import DataFlow

Processor = Callable[[Any], Any]


@dataclass
class Prepared:
    """SQL text with positional parameters, how to fill them, and how to read the result."""

    sql: str
    compiled: Any                                  # a positional SQLCompiler (its internals are used)
    names: tuple[str, ...]                         # parameter names in placeholder order
    binds: tuple[Processor | None, ...]            # per placeholder
    keys: tuple[str, ...]                          # result columns ("" when no rows come back)
    columns: tuple[sa.ColumnElement, ...]          # result columns, for their result processors
    expanding: bool = False                        # "IN (...)": the SQL depends on the list lengths
    read_only: bool = False                        # a plain SELECT: atomic on its own

    def bound(self, params: Mapping[str, Any]) -> tuple[str, tuple]:
        """The SQL and the positional values the driver gets for ``params``."""
        if self.expanding:  # one placeholder per list item: SQLAlchemy expands the text for these values
            state = self.compiled.construct_expanded_state(params)
            # The expanded state carries processors for the IN list's elements only: the other
            # parameters keep the statement's own (a case-insensitive regex's flag beside an IN).
            procs = {**self.compiled._bind_processors, **state.processors}
            return state.statement, tuple([
                v if v is None or procs.get(n) is None else procs[n](v)
                for n, v in ((n, state.parameters[n]) for n in state.positiontup)])
        values = self.compiled.construct_params(params, _check=False)
        return self.sql, tuple([v if p is None or v is None else p(v) for v, p in
                                zip([values[n] for n in self.names], self.binds)])

    results: tuple[Processor | None, ...] | None = None  # per result column, set on first use

    json_results: tuple[Processor | None, ...] | None = None  # the same, to the JSON form (encoding.py)

    def _codes(self, description: Any) -> list[Any]:
        """The type codes the driver reports: some processors depend on them (PostgreSQL numerics)."""
        return [d[1] for d in description or ()] or [None] * len(self.keys)

    def records(self, rows: Sequence[Any], description: Any = None) -> list[dict[str, Any]]:
        if self.results is None:
            dialect = self.compiled.dialect
            self.results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, code)
                                 for c, code in zip(self.columns, self._codes(description)))
        return self._mapped(rows, self.results)

    def json_records(self, rows: Sequence[Any], description: Any, spec: Any) -> list[dict[str, Any]]:
        """The records in their JSON-safe form (what a node outputs), built straight from the rows."""
        if self.json_results is None:
            from .encoding import json_processors

            self.json_results = json_processors(self, self._codes(description), spec)
        return self._mapped(rows, self.json_results)

    def _mapped(self, rows: Sequence[Any], processors: tuple[Processor | None, ...]) -> list[dict[str, Any]]:
        keys = self.keys
        pairs = [(i, p) for i, p in enumerate(processors) if p is not None]
        if pairs and rows:
            # Column by column: each processor mapped over its column (processors take None).
            columns: list[Any] = list(zip(*rows))
            for i, p in pairs:
                columns[i] = map(p, columns[i])
            rows = list(zip(*columns))
        return [dict(zip(keys, row)) for row in rows]


def prepare(dialect: sa.Dialect, stmt: sa.sql.ClauseElement) -> Prepared:
    """Compile ``stmt`` once for ``dialect`` with positional placeholders."""
    twin = positional_dialect(dialect)
    compiled: Any = stmt.compile(dialect=twin)
    names = tuple(compiled.positiontup or ())
    binds = tuple(compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)
    columns = list(getattr(stmt, "selected_columns", ()) or getattr(stmt, "_returning", ()) or ())
    keys = tuple(c.key if getattr(c, "key", None) else str(i) for i, c in enumerate(columns))
    return Prepared(str(compiled), compiled, names, binds, keys, tuple(columns),
                    expanding=bool(compiled.post_compile_params), read_only=isinstance(stmt, sa.Select))


def run_raw(db: "DataFlow", prepared: Prepared, params: Mapping[str, Any], conn: Any = None) -> tuple[list, Any]:
    """Execute in its own transaction on a pooled driver connection; return (rows, cursor description).

    One statement is atomic by itself: where the backend allows (``Backend.autocommit_reads`` and
    ``autocommit_writes``), it runs in the driver's autocommit mode instead of BEGIN ... COMMIT.

    ``conn`` is a connection the caller checked out (``engine.raw_connection()``) and hands over:
    it is returned to the pool here. Without it, one is checked out.

    Driver errors propagate as they are (the executor translates them). An error that shows the
    connection to be dead invalidates the whole pool, as SQLAlchemy does on its own path: the
    other pooled connections to the same server died with it, and each would fail one operation.
    """
    facts = db.facts
    if conn is None:
        conn = db.engine.raw_connection()
    cursor = None
    driver: Any = conn.driver_connection
    autocommit = facts.autocommit_reads if prepared.read_only else facts.autocommit_writes
    try:
        if autocommit and facts.toggle_autocommit:
            driver.autocommit = True  # client-side switch while idle: no round trip
        cursor = driver.cursor()
        if facts.explicit_begin and not autocommit:  # pysqlite is in autocommit mode: begin explicitly
            cursor.execute("BEGIN")
        cursor.execute(*prepared.bound(params))
        rows = cursor.fetchall() if prepared.keys else []
        description = cursor.description
        if not autocommit:
            driver.commit()
        return rows, description
    except BaseException as exc:
        try:
            if isinstance(exc, db.driver_errors) and db.engine.dialect.is_disconnect(
                    exc, conn.dbapi_connection, cursor):  # type: ignore[arg-type]  # a DB-API error, checked
                invalidate_pool(db, conn, exc)
            else:
                driver.rollback()
        except Exception:
            conn.invalidate(exc)
        raise
    finally:
        if cursor is not None:
            try:
                cursor.close()
            except Exception:
                pass
        if autocommit and facts.toggle_autocommit and conn.dbapi_connection is not None:  # not invalidated above
            try:
                driver.autocommit = False
            except Exception as exc:  # a broken connection: let the pool replace it
                conn.invalidate(exc)
        conn.close()


def invalidate_pool(db: "DataFlow", conn: Any, exc: BaseException) -> None:
    """Drop ``conn`` and every pooled connection made before now (they share the dead server)."""
    pool = db.engine.pool
    invalidate = getattr(pool, "_invalidate", None)  # what SQLAlchemy's own disconnect handling calls
    if invalidate is not None:
        invalidate(conn, exc)
    else:  # pragma: no cover - a pool without pool-wide invalidation
        conn.invalidate(exc)
