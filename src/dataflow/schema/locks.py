"""The migration lock: one migrator per database at a time, however many app processes start.

How each database takes the lock is data (``RECIPES``); ``MigrationLock`` runs a recipe on one
connection:

1. session settings are changed for the migration (restored afterwards);
2. the lock is acquired, waiting at most ``timeout`` seconds;
3. the migration's transaction begins (on SQLite, ``BEGIN IMMEDIATE`` *is* the lock);
4. the caller plans, applies and records, then calls ``commit()``;
5. the lock is released after the commit, so the next process sees the committed schema.

Steps 1, 2 and 5 run on the driver connection between transactions, so that they hold for the
session whatever the engine does when SQLAlchemy begins a transaction; step 3 is SQLAlchemy's
own ``begin()``.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..driver_errors import driver_message
from ..errors import MigrationError

log = logging.getLogger("dataflow.schema")

#: PostgreSQL advisory locks are scoped to the current database, so one fixed key suffices.
ADVISORY_KEY = zlib.crc32(b"dataflow_migrations")

#: MySQL's GET_LOCK names are server-wide: include the database name (at most 64 characters).
MYSQL_LOCK_NAME = "LEFT(CONCAT('dataflow_migrations:', IFNULL(DATABASE(), '')), 64)"


@dataclass(frozen=True)
class Setting:
    """A session setting changed for the duration of a migration, then restored."""

    read: str   # returns the current value
    write: str  # ``{}`` receives the value
    value: str  # the value while migrating; may use {timeout_ms} and {timeout_s}
    checked: bool = False  # read it back: migrating without it would be unsafe


@dataclass(frozen=True)
class LockRecipe:
    """How one database serialises migrations."""

    settings: tuple[Setting, ...] = ()
    acquire: str | None = None      # waits for the lock; returns ``held`` once held
    held: Any = None                # None: ``acquire`` raises instead of returning on timeout
    release: str | None = None
    begin: str | None = None        # opens the transaction if SQLAlchemy's begin() did not
    begin_options: tuple[tuple[str, str], ...] = ()  # execution options for begin()
    verify: str | None = None       # run before COMMIT; any row it returns is a broken invariant
    transactional_ddl: bool = True  # a failed migration leaves nothing behind


RECIPES: dict[str, LockRecipe] = {
    "postgresql": LockRecipe(
        # lock_timeout bounds the wait for the advisory lock and for every table lock the DDL takes.
        settings=(Setting("SHOW lock_timeout", "SET lock_timeout = '{}'", "{timeout_ms}ms"),),
        acquire=f"SELECT pg_advisory_lock({ADVISORY_KEY})",
        release=f"SELECT pg_advisory_unlock({ADVISORY_KEY})",
    ),
    "mysql": LockRecipe(
        # lock_wait_timeout bounds the DDL's wait for metadata locks (the default is a year).
        settings=(Setting("SELECT @@SESSION.lock_wait_timeout", "SET SESSION lock_wait_timeout = {}",
                          "{timeout_s}"),),
        acquire=f"SELECT GET_LOCK({MYSQL_LOCK_NAME}, {{timeout}})",
        held=1,
        release=f"SELECT RELEASE_LOCK({MYSQL_LOCK_NAME})",
        transactional_ddl=False,  # every DDL statement commits implicitly
    ),
    "sqlite": LockRecipe(
        settings=(
            Setting("PRAGMA busy_timeout", "PRAGMA busy_timeout = {}", "{timeout_ms}"),
            # A table rebuild (Alembic batch mode) drops and renames the table: with foreign keys
            # on, dropping ``users`` would cascade-delete every row that references it. The pragma
            # is a no-op inside a transaction, so it is set here, before BEGIN, and read back.
            Setting("PRAGMA foreign_keys", "PRAGMA foreign_keys = {}", "0", checked=True),
        ),
        # The write lock, waiting up to busy_timeout. DataFlow's engine emits BEGIN itself, with
        # the ``sqlite_begin`` option; a plain pysqlite engine emits nothing, so we do.
        begin="BEGIN IMMEDIATE",
        begin_options=(("sqlite_begin", "IMMEDIATE"),),
        verify="PRAGMA foreign_key_check",
    ),
}
RECIPES["mariadb"] = RECIPES["mysql"]


def recipe_for(dialect: sa.Dialect) -> LockRecipe:
    """The lock recipe of ``dialect``; MigrationError for a database DataFlow does not support."""
    try:
        return RECIPES[dialect.name]
    except KeyError:
        raise MigrationError(f"schema migrations are not supported on {dialect.name!r}; "
                             f"supported: {', '.join(sorted(RECIPES))}") from None


class MigrationLock:
    """Hold the database's migration lock and the migration's transaction on ``conn``.

    ``conn`` must be a fresh connection (no statement run yet). Use as a context manager; call
    ``commit()`` once the work is done, otherwise the transaction is rolled back on exit.
    """

    def __init__(self, conn: sa.Connection, *, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self.recipe = recipe_for(conn.dialect)
        self._params = {"timeout": f"{timeout:.3f}", "timeout_ms": str(max(1, int(timeout * 1000))),
                        "timeout_s": str(max(1, math.ceil(timeout)))}
        self._saved: list[tuple[Setting, Any]] = []
        self._locked = False
        self._transaction: sa.RootTransaction | None = None
        self._raw: Any = None

    def _session(self, *statements: str) -> Any:
        """Run statements on the driver connection, outside any transaction; the last one's value."""
        value = None
        cursor = self._raw.cursor()
        try:
            for sql in statements:
                cursor.execute(sql)
                row = cursor.fetchone() if cursor.description else None
                value = row[0] if row else None
        except BaseException:
            self._raw.rollback()
            raise
        finally:
            cursor.close()
        self._raw.commit()
        return value

    def __enter__(self) -> MigrationLock:
        self._raw = self.conn.connection.driver_connection
        driver_error = self.conn.dialect.loaded_dbapi.Error
        try:
            for setting in self.recipe.settings:
                self._saved.append((setting, self._session(setting.read)))
                wanted = setting.value.format(**self._params)
                now = self._session(setting.write.format(wanted), setting.read)
                if setting.checked and str(now) != wanted:
                    raise MigrationError(
                        f"could not run {setting.write.format(wanted)!r} (the value is still {now!r}): a "
                        "transaction is already open on this connection; migrate on a fresh connection")
            self._acquire(driver_error)
        except BaseException:
            self._cleanup()
            raise
        return self

    def _acquire(self, driver_error: type[BaseException]) -> None:
        what = (f"the migration lock on {self.conn.dialect.name} within {self.timeout:g} s: another "
                "process is migrating this database or holds the lock")
        hint = "Retry once it has finished, or raise the lock timeout (migration_lock_timeout)."
        try:
            if self.recipe.acquire:
                got = self._session(self.recipe.acquire.format(**self._params))
                if self.recipe.held is not None and got != self.recipe.held:
                    raise MigrationError(f"Could not obtain {what}. {hint}")
                self._locked = True
            self.conn.execution_options(**dict(self.recipe.begin_options))
            self._transaction = self.conn.begin()
            if self.recipe.begin and not getattr(self._raw, "in_transaction", True):
                self.conn.exec_driver_sql(self.recipe.begin)
        except (sa.exc.DBAPIError, driver_error) as exc:
            raise MigrationError(f"Could not obtain {what} ({driver_message(exc, 'lock')}). {hint}",
                                 original=exc) from None

    def verify(self) -> list[tuple]:
        """Rows that break an invariant the migration must keep (SQLite: foreign key violations)."""
        if not self.recipe.verify:
            return []
        return [tuple(r) for r in self.conn.exec_driver_sql(self.recipe.verify).fetchall()]

    def rollback(self) -> None:
        """Roll back the migration's transaction (the lock stays held)."""
        if self._transaction is not None:
            transaction, self._transaction = self._transaction, None
            transaction.rollback()

    def begin(self) -> None:
        """Begin a new transaction under the held lock (after ``rollback``)."""
        if self._transaction is None:
            self._transaction = self.conn.begin()

    def commit(self) -> None:
        """Commit the migration's transaction."""
        if self._transaction is not None:
            self._transaction.commit()
            self._transaction = None

    def __exit__(self, *exc_info: Any) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            if self._transaction is not None:
                transaction, self._transaction = self._transaction, None
                transaction.rollback()
            if self._locked and self.recipe.release:
                self._locked = False
                self._session(self.recipe.release)
            while self._saved:
                setting, value = self._saved.pop()
                self._session(setting.write.format(value))
        except Exception:  # the connection is unusable: let the pool discard it (and its lock)
            log.warning("could not release the migration lock cleanly; discarding the connection",
                        exc_info=True)
            self._saved.clear()
            self.conn.invalidate()
