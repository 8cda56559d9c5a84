"""What every path works on: the databases, the ``BenchUser`` model and its rows.

Both sides use one table, created by DataFlow from the model, so the raw driver writes and
reads exactly the columns (and the index) that DataFlow does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dataflow import DataFlow

BACKENDS = ("sqlite", "postgresql", "mysql")
DEFAULT_BACKENDS = ("sqlite", "postgresql")
BENCH_DATABASE = "dataflow_bench"

#: Servers on the local addresses; override with DATAFLOW_BENCH_POSTGRESQL_URL / DATAFLOW_BENCH_MYSQL_URL.
SERVER_URLS = {
    "postgresql": f"postgresql://postgres@127.0.0.1:5432/{BENCH_DATABASE}",
    "mysql": f"mysql://root@127.0.0.1:3306/{BENCH_DATABASE}",
}

TABLE = "bench_users"
#: Every row's age is ``i % AGES``, so a filter on one age matches rows // AGES rows (100 of 100,000).
AGES = 1000
LIST_AGE = 42


def database_url(backend: str, workdir: Path) -> str:
    """The URL this backend's run uses; the server database is created if missing."""
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}"
    url = os.environ.get(f"DATAFLOW_BENCH_{backend.upper()}_URL", SERVER_URLS[backend])
    _create_database(backend, url)
    return url


def _create_database(backend: str, url: str) -> None:
    u = make_url(url)
    driver = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}[backend]
    maintenance = "postgres" if backend == "postgresql" else ""
    admin = sa.create_engine(u.set(drivername=driver, database=maintenance), isolation_level="AUTOCOMMIT",
                             poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            if backend == "postgresql":
                exists = conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %(n)s",
                                              {"n": u.database}).first()
                if not exists:
                    conn.exec_driver_sql(f'CREATE DATABASE "{u.database}"')
            else:
                conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{u.database}`")
    finally:
        admin.dispose()


def workdir() -> Path:
    """A scratch directory for the SQLite file, removed with the process's temp files."""
    return Path(tempfile.mkdtemp(prefix="dataflow_bench_"))


def open_dataflow(url: str) -> DataFlow:
    """A DataFlow with default settings, the ``BenchUser`` model, and a fresh, empty table."""
    db = DataFlow(url)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")

    @db.model
    class BenchUser:
        name: str
        email: str
        age: int
        active: bool = True

        # The List filter is on age; indexed so that the database's share is small and our
        # overhead shows. Both paths read through the same index.
        __dataflow__ = {"indexes": ["age"]}

    db.ensure_ready()
    return db


def make_rows(n: int, start: int = 0) -> list[dict]:
    """``n`` input records, as a caller would pass them: plain dicts."""
    return [{"name": f"user {i}", "email": f"user{i}@example.com", "age": i % AGES, "active": i % 2 == 0}
            for i in range(start, start + n)]
