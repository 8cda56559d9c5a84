"""What differs between the databases, as data: one ``Backend`` object per database kind.

Operations read these flags instead of branching on a backend's name. MySQL and MariaDB are one
backend, ``mysql``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    """Facts about one kind of database that the operations layer acts on."""

    name: str
    #: A single SELECT runs without BEGIN/COMMIT around it (it is atomic by itself).
    autocommit_reads: bool
    #: A single INSERT/UPDATE/DELETE on the fast path runs the same way: one statement is atomic by
    #: itself, so BEGIN and COMMIT would only add two round trips (PostgreSQL) or two calls (SQLite).
    autocommit_writes: bool
    #: The driver connection needs an explicit BEGIN before a write (pysqlite runs in autocommit mode).
    explicit_begin: bool
    #: Switch the driver connection to autocommit for a lone read (a client-side flag, no round trip).
    toggle_autocommit: bool
    #: SELECT ... FOR UPDATE locks rows (SQLite locks the whole database at BEGIN IMMEDIATE instead).
    row_locks: bool
    #: Write transactions take the write lock at BEGIN (else two read-then-write transactions deadlock).
    begin_immediate: bool
    #: Explicit keys do not move a serial's sequence: move it after inserting them.
    sequences: bool
    #: INSERT ... RETURNING with a caller-supplied key goes through SQLAlchemy (the sequence must move).
    returning_needs_sequence_fix: bool
    #: Driver error numbers meaning "deadlock, try again" and "lock wait timeout".
    retry_errnos: frozenset[int] = frozenset()
    #: SQLSTATEs meaning the same (PostgreSQL serialization failure, deadlock).
    retry_sqlstates: frozenset[str] = frozenset()
    #: REPEATABLE READ gives a transaction one snapshot for all its statements, and writing a row that another
    #: transaction changed since fails (serialization failure, retried) instead of writing its newest version:
    #: PostgreSQL. (MySQL's REPEATABLE READ writes the newest version; SQLite has one writer at a time.)
    snapshot_writes: bool = False
    #: INSERT ... ON DUPLICATE KEY UPDATE fires on ANY unique key, not only the conflict target (MySQL).
    upsert_any_unique: bool = False
    #: Largest identifier, in bytes.
    max_identifier: int = 63


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("sqlite", autocommit_reads=True, autocommit_writes=True, explicit_begin=True, toggle_autocommit=False,
                      row_locks=False, begin_immediate=True, sequences=False, returning_needs_sequence_fix=False),
    "postgresql": Backend("postgresql", autocommit_reads=True, autocommit_writes=True, explicit_begin=False, toggle_autocommit=True,
                          row_locks=True, begin_immediate=False, sequences=True, returning_needs_sequence_fix=True,
                          retry_sqlstates=frozenset({"40001", "40P01"}), snapshot_writes=True),
    "mysql": Backend("mysql", autocommit_reads=False, autocommit_writes=False, explicit_begin=False, toggle_autocommit=False,
                     row_locks=True, begin_immediate=False, sequences=False, returning_needs_sequence_fix=False,
                     retry_errnos=frozenset({1213, 1205}), upsert_any_unique=True, max_identifier=64),
}


def backend(name: str) -> Backend:
    """The facts for ``sqlite``, ``postgresql`` or ``mysql`` (MariaDB included)."""
    return BACKENDS["mysql" if name == "mariadb" else name]
