"""The migration lock: one migrator per database at a time, however many app processes start.

How each database takes the lock is data (``RECIPES``); ``MigrationLock`` runs a recipe on one
connection. The connection is switched to autocommit so that the recipe, not the driver, decides
where the migration's transaction begins and ends:

1. session settings are changed for the migration (and restored afterwards);
2. the lock is acquired, waiting at most ``timeout`` seconds;
3. the migration's transaction begins (on SQLite, ``BEGIN IMMEDIATE`` *is* the lock);
4. the caller plans, applies and records, then calls ``commit()``;
5. the lock is released after the commit, so the next process sees the committed schema.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

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

    settings: tuple[Setting, ...]
    begin: str                     # opens the migration's transaction
    acquire: str | None = None     # waits for the lock; its result is ``held`` once held
    held: Any = None               # None: ``acquire`` raises instead of returning on timeout
    release: str | None = None
    verify: str | None = None      # run before COMMIT; any row it returns is a broken invariant
    transactional_ddl: bool = True  # a failed migration leaves nothing behind


RECIPES: dict[str, LockRecipe] = {
    "postgresql": LockRecipe(
        # lock_timeout bounds the wait for the advisory lock and for every table lock the DDL takes.
        settings=(Setting("SHOW lock_timeout", "SET lock_timeout = '{}'", "{timeout_ms}ms"),),
        acquire=f"SELECT pg_advisory_lock({ADVISORY_KEY})",
        release=f"SELECT pg_advisory_unlock({ADVISORY_KEY})",
        begin="BEGIN",
    ),
    "mysql": LockRecipe(
        # lock_wait_timeout bounds the DDL's wait for metadata locks (the default is a year).
        settings=(Setting("SELECT @@SESSION.lock_wait_timeout", "SET SESSION lock_wait_timeout = {}",
                          "{timeout_s}"),),
        acquire=f"SELECT GET_LOCK({MYSQL_LOCK_NAME}, {{timeout}})",
        held=1,
        release=f"SELECT RELEASE_LOCK({MYSQL_LOCK_NAME})",
        begin="START TRANSACTION",
        transactional_ddl=False,  # every DDL statement commits implicitly
    ),
    "sqlite": LockRecipe(
        settings=(
            Setting("PRAGMA busy_timeout", "PRAGMA busy_timeout = {}", "{timeout_ms}"),
            # A table rebuild (Alembic batch mode) drops and renames the table: with foreign keys
            # on, dropping ``users`` would cascade-delete every row that references it. The pragma
            # is a no-op inside a transaction, so it is set here, before BEGIN, and checked.
            Setting("PRAGMA foreign_keys", "PRAGMA foreign_keys = {}", "0", checked=True),
        ),
        begin="BEGIN IMMEDIATE",  # takes the database's write lock, waiting up to busy_timeout
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
        self._in_transaction = False

    def _run(self, sql: str) -> sa.CursorResult:
        return self.conn.exec_driver_sql(sql, execution_options={"no_parameters": True})

    def __enter__(self) -> MigrationLock:
        self.conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            for setting in self.recipe.settings:
                self._saved.append((setting, self._run(setting.read).scalar()))
                wanted = setting.value.format(**self._params)
                self._run(setting.write.format(wanted))
                now = self._run(setting.read).scalar() if setting.checked else wanted
                if str(now) != wanted:
                    raise MigrationError(
                        f"could not set {setting.write.format(wanted)!r} (it is {now!r}): a transaction "
                        "is already open on this connection; migrate on a fresh connection")
            self._acquire()
        except BaseException:
            self._restore()
            raise
        return self

    def _acquire(self) -> None:
        what = (f"the migration lock on {self.conn.dialect.name} within {self.timeout:g} s: another "
                "process is migrating this database or holds the lock")
        hint = "Retry once it has finished, or raise lock_timeout."
        try:
            if self.recipe.acquire:
                got = self._run(self.recipe.acquire.format(**self._params)).scalar()
                if self.recipe.held is not None and got != self.recipe.held:
                    raise MigrationError(f"Could not obtain {what}. {hint}")
                self._locked = True
            self._run(self.recipe.begin)
            self._in_transaction = True
        except sa.exc.DBAPIError as exc:
            raise MigrationError(f"Could not obtain {what} ({exc.orig}). {hint}", original=exc) from exc

    def verify(self) -> list[tuple]:
        """Rows that break an invariant the migration must keep (SQLite: foreign key violations)."""
        if not self.recipe.verify:
            return []
        return [tuple(r) for r in self._run(self.recipe.verify).fetchall()]

    def commit(self) -> None:
        """Commit the migration's transaction."""
        self._run("COMMIT")
        self._in_transaction = False

    def __exit__(self, *exc_info) -> None:
        try:
            if self._in_transaction:
                self._in_transaction = False
                self._run("ROLLBACK")
        finally:
            try:
                if self._locked and self.recipe.release:
                    self._run(self.recipe.release)
                self._locked = False
            finally:
                self._restore()

    def _restore(self) -> None:
        while self._saved:
            setting, value = self._saved.pop()
            try:
                self._run(setting.write.format(value))
            except sa.exc.DBAPIError:  # the connection is unusable; the pool will discard it
                log.debug("could not restore %s", setting.write, exc_info=True)
                self.conn.invalidate()
                self._saved.clear()
