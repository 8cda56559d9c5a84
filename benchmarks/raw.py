"""The raw-driver baselines: the same work as DataFlow, written with the driver alone.

Each method takes the same input as DataFlow (a list of dicts) and builds its tuples inside the
timed region; every write stamps ``created_at``/``updated_at`` with a UTC timestamp, as DataFlow
does. One connection, held open (a pool's steady state); one transaction per unit of work.
Differences between the drivers are data on the subclasses, not branches.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import psycopg
import pymysql
import sqlalchemy as sa

# The session settings DataFlow applies to each new connection (strict sql_mode and UTC on
# MySQL, foreign keys on SQLite): the raw connection runs under the same ones.
from dataflow.core.engine import ON_CONNECT

from workload import TABLE

UTC = timezone.utc
INPUT = ("name", "email", "age", "active")
INSERTED = (*INPUT, "created_at", "updated_at")
ALL = ("id", *INSERTED)


class RawDriver:
    """One plain DB-API connection doing the benchmark's work."""

    backend = ""
    mark = "%s"
    truncate_sql = f"TRUNCATE TABLE {TABLE}"
    analyze_sql = f"ANALYZE TABLE {TABLE}"

    def __init__(self, conn, *, returning: bool = True, update_returning: bool = False) -> None:
        self.conn = conn
        self.cur = conn.cursor()
        # RETURNING where DataFlow uses it (SQLite, PostgreSQL, MariaDB); else INSERT, then SELECT.
        self.returning = returning
        self.update_returning = update_returning  # UPDATE ... RETURNING (not MariaDB): else UPDATE, then SELECT
        for stmt in ON_CONNECT[self.backend]:
            self.cur.execute(stmt)
        self.conn.commit()
        marks = ", ".join([self.mark] * len(INSERTED))
        self.insert_sql = f"INSERT INTO {TABLE} ({', '.join(INSERTED)}) VALUES ({marks})"
        self.select_sql = f"SELECT {', '.join(ALL)} FROM {TABLE} WHERE id = {self.mark}"
        m = self.mark
        self.update_sql = f"UPDATE {TABLE} SET age = {m}, updated_at = {m} WHERE id = {m}"
        self.delete_sql = f"DELETE FROM {TABLE} WHERE id = {m}"
        self.count_sql = f"SELECT count(*) FROM {TABLE} WHERE age = {m}"
        self.list_sql = f"SELECT {', '.join(ALL)} FROM {TABLE} WHERE age = {m} ORDER BY id LIMIT {m}"

    @staticmethod
    def stamp() -> object:
        """Now, in UTC, as this driver takes a datetime for the column."""
        return datetime.now(UTC)

    def close(self) -> None:
        self.cur.close()
        self.conn.close()

    # ---------------------------------------------------------------- the timed work
    def create_each(self, rows: list[dict]) -> None:
        """One INSERT per record, each in its own transaction, the stored row read back."""
        cur, commit, stamp = self.cur, self.conn.commit, self.stamp
        returning = f"{self.insert_sql} RETURNING {', '.join(ALL)}" if self.returning else None
        for r in rows:
            now = stamp()
            if returning:
                cur.execute(returning, (r["name"], r["email"], r["age"], r["active"], now, now))
            else:
                cur.execute(self.insert_sql, (r["name"], r["email"], r["age"], r["active"], now, now))
                cur.execute(self.select_sql, (cur.lastrowid,))
            cur.fetchone()
            commit()

    # One statement per step of the 10-node workflow, each committed (workflow10).
    def update_age(self, id: int, age: int) -> tuple:
        """Set one record's age; the stored row read back."""
        cur = self.cur
        if self.update_returning:
            cur.execute(f"{self.update_sql} RETURNING {', '.join(ALL)}", (age, self.stamp(), id))
        else:
            cur.execute(self.update_sql, (age, self.stamp(), id))
            cur.execute(self.select_sql, (id,))
        row = cur.fetchone()
        self.conn.commit()
        return row

    def delete(self, id: int) -> int:
        self.cur.execute(self.delete_sql, (id,))
        n = self.cur.rowcount
        self.conn.commit()
        return n

    def bulk_create(self, rows: list[dict]) -> None:
        """All records in one transaction: one ``executemany``."""
        now = self.stamp()
        self.cur.executemany(self.insert_sql,
                             [(r["name"], r["email"], r["age"], r["active"], now, now) for r in rows])
        self.conn.commit()

    def select(self, sql: str, params) -> list:
        """The List statement DataFlow sends, with its parameters; every row fetched."""
        self.cur.execute(sql, params)
        rows = self.cur.fetchall()
        self.conn.commit()
        return rows

    # ---------------------------------------------------------------- set-up, not timed
    def truncate(self) -> None:
        self.cur.execute(self.truncate_sql)
        self.conn.commit()

    def analyze(self) -> None:
        self.cur.execute(self.analyze_sql)
        if self.cur.description:
            self.cur.fetchall()
        self.conn.commit()


class RawSQLite(RawDriver):
    """Stdlib ``sqlite3`` in its default mode (it opens a transaction before each write)."""

    backend = "sqlite"
    mark = "?"
    truncate_sql = f"DELETE FROM {TABLE}"
    analyze_sql = "ANALYZE"

    @staticmethod
    def stamp() -> str:
        # The text SQLAlchemy stores for a DATETIME on SQLite (naive UTC, microseconds).
        return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class RawPostgres(RawDriver):
    """psycopg 3; the bulk load is COPY ... FROM STDIN with ``write_row``."""

    backend = "postgresql"
    truncate_sql = f"TRUNCATE TABLE {TABLE} RESTART IDENTITY"
    analyze_sql = f"ANALYZE {TABLE}"

    def bulk_create(self, rows: list[dict]) -> None:
        now = self.stamp()
        with self.cur.copy(f"COPY {TABLE} ({', '.join(INSERTED)}) FROM STDIN") as copy:
            write = copy.write_row
            for r in rows:
                write((r["name"], r["email"], r["age"], r["active"], now, now))
        self.conn.commit()


class RawMySQL(RawDriver):
    """PyMySQL; its ``executemany`` sends multi-row INSERTs."""

    backend = "mysql"

    @staticmethod
    def stamp() -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)  # DATETIME(6) holds naive UTC


def connect(url: sa.URL, *, returning: bool, update_returning: bool = False) -> RawDriver:
    """A raw driver connection to the database DataFlow uses (``db.url``)."""
    name = url.get_backend_name()
    if name == "sqlite":
        return RawSQLite(sqlite3.connect(url.database), returning=returning, update_returning=update_returning)
    if name == "postgresql":
        conn = psycopg.connect(host=url.host, port=url.port or 5432, user=url.username,
                               password=url.password or None, dbname=url.database)
        return RawPostgres(conn, returning=returning, update_returning=update_returning)
    conn = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, password=url.password or "",
                           database=url.database, charset="utf8mb4")
    return RawMySQL(conn, returning=returning, update_returning=update_returning)
