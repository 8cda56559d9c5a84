"""Test fixtures: every database test runs on each URL in ``DATAFLOW_TEST_URLS``.

``DATAFLOW_TEST_URLS`` is a comma-separated list (default: ``sqlite``). For PostgreSQL and MySQL
the URL names a server and a maintenance database; each test session creates its own scratch
database on that server (so parallel runs never share tables) and drops it at the end.
Each test gets an empty database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

DEFAULT_URLS = "sqlite"

# Kailash's default LocalRuntime() records node inputs and outputs under ~/.kailash/tracking: the
# seed's examples use it, so the suite runs with a HOME of its own and leaves no test data behind.
TEST_HOME = tempfile.mkdtemp(prefix="dataflow-test-home-")
os.environ["HOME"] = TEST_HOME


def _configured_urls() -> list[str]:
    raw = os.environ.get("DATAFLOW_TEST_URLS", DEFAULT_URLS)
    return [u.strip() for u in raw.split(",") if u.strip()]


def _backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else make_url(url).get_backend_name()


def _admin_url(url: str) -> sa.URL:
    u = make_url(url)
    driver = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}
    return u.set(drivername=driver.get(u.get_backend_name(), u.drivername))


class Server:
    """One configured backend and the scratch database this session made on it."""

    def __init__(self, url: str) -> None:
        self.name = _backend(url)
        self.url = url
        self.scratch: str | None = None
        self.admin: sa.Engine | None = None

    def setup(self) -> None:
        if self.name == "sqlite":
            return
        self.scratch = f"df_test_{uuid.uuid4().hex[:10]}"
        self.admin = sa.create_engine(_admin_url(self.url), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        with self.admin.connect() as conn:
            q = '"' if self.name == "postgresql" else "`"
            conn.exec_driver_sql(f"CREATE DATABASE {q}{self.scratch}{q}")

    def teardown(self) -> None:
        if self.admin is None:
            return
        with self.admin.connect() as conn:
            if self.name == "postgresql":
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.scratch}" WITH (FORCE)')
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{self.scratch}`")
        self.admin.dispose()

    def url_for_test(self, tmp_path) -> str:
        """An empty database for one test."""
        if self.name == "sqlite":
            return f"sqlite:///{tmp_path / 'test.db'}"
        u = make_url(self.url).set(database=self.scratch)
        url = u.render_as_string(hide_password=False)
        self.reset(url)
        return url

    def reset(self, url: str) -> None:
        eng = sa.create_engine(_admin_url(url), poolclass=sa.NullPool)
        with eng.begin() as conn:
            if self.name == "postgresql":
                conn.exec_driver_sql("DROP SCHEMA public CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA public")
            else:
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
                names = [r[0] for r in conn.exec_driver_sql(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")]
                for name in names:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{name}`")
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")
        eng.dispose()


SERVERS = {(_backend(u)): Server(u) for u in _configured_urls()}


def pytest_report_header(config):
    return "dataflow backends: " + ", ".join(SERVERS)


def pytest_configure(config):
    config.addinivalue_line("markers", "restarts_server: restarts a database server (run last; deselect with "
                                       "-m 'not restarts_server', or set DATAFLOW_TEST_NO_RESTART=1)")


def pytest_collection_modifyitems(session, config, items):
    """Tests that restart a server run last: whatever else runs in this session is done by then."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_server") is not None)  # stable


def pytest_sessionstart(session):
    for server in SERVERS.values():
        server.setup()


def pytest_sessionfinish(session, exitstatus):
    for server in SERVERS.values():
        server.teardown()
    shutil.rmtree(TEST_HOME, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line("dataflow backends tested: " + ", ".join(SERVERS))


@pytest.fixture(params=list(SERVERS))
def backend(request) -> str:
    """The backend name of the database under test: sqlite, postgresql or mysql."""
    return request.param


@pytest.fixture
def db_url(backend, tmp_path) -> str:
    """A URL to an empty database on the backend under test."""
    return SERVERS[backend].url_for_test(tmp_path)


@pytest.fixture
def db(db_url):
    """A ``DataFlow`` on an empty database, closed after the test."""
    from dataflow import DataFlow

    instance = DataFlow(db_url)
    yield instance
    instance.close()


@pytest.fixture
def ordinary_role(backend, db_url):
    """PostgreSQL: (the test database's URL as a new ordinary role, which may create tables there; an
    autocommit superuser engine beside it). Superusers skip row-level security: its tests need this."""
    if backend != "postgresql":
        pytest.skip("row-level security is PostgreSQL's")
    url = make_url(db_url).set(drivername="postgresql+psycopg")
    role = f"df_role_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f'GRANT CONNECT, CREATE ON DATABASE "{url.database}" TO {role}')
        conn.exec_driver_sql(f"GRANT ALL ON SCHEMA public TO {role}")
    yield url.set(username=role).render_as_string(hide_password=False), admin
    with admin.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = '{role}'")
        conn.exec_driver_sql(f"DROP OWNED BY {role}")
        conn.exec_driver_sql(f"DROP ROLE {role}")
    admin.dispose()


@pytest.fixture
def kill_other_sessions():
    """A function terminating every other session on a server database, as a restarted server or a proxy would."""
    def kill(url: str) -> None:
        admin = sa.create_engine(_admin_url(url), poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                if conn.dialect.name == "postgresql":
                    # The timeout makes it wait until each session is gone (PostgreSQL 14+), as after a restart.
                    conn.exec_driver_sql("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                                         "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                else:
                    ids = [r[0] for r in conn.exec_driver_sql(
                        "SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()")]
                    for pid in ids:
                        conn.exec_driver_sql(f"KILL {int(pid)}")
        finally:
            admin.dispose()
    return kill
