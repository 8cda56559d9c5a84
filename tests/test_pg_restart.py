"""Issue 11: a PostgreSQL restart in the middle of a run is survived.

The server is really restarted (``pg_ctlcluster ... restart``, fast mode: every session is cut), once
per test run, by one module fixture; every test below looks at one DataFlow instance that was
warmed (several pooled connections checked in) before the restart. What is safe to retry decides
what the caller sees:

- a pooled connection whose server went away is replaced when it is checked out (its socket holds
  the server's farewell), before any statement is sent: reads and writes just work;
- with that check off (``pool_pre_ping=False``), a read that meets a dead connection is retried once
  on a fresh one; a write whose statement was sent is not (it may have reached the server): it
  fails with ``DatabaseUnavailableError`` and nothing is applied twice;
- a ``db.transaction()`` cut by the restart raises ``DatabaseUnavailableError`` and leaves nothing;
- afterwards every pool is clean: the next operations all succeed.

The restart cuts every other session on the server (other test runs included), so this module runs
last (marker ``restarts_server``, ordered by conftest), restarts once, and always leaves the server
running. Set ``DATAFLOW_TEST_NO_RESTART=1`` (or ``-m 'not restarts_server'``) to leave it out.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dataflow import DatabaseUnavailableError, DataFlow, TransactionError

pytestmark = pytest.mark.restarts_server

POOL = 4                 # connections each instance holds when the server restarts
WAIT_S = 90              # how long the server may take to come back


def _pg_url() -> str | None:
    for raw in os.environ.get("DATAFLOW_TEST_URLS", "sqlite").split(","):
        raw = raw.strip()
        if raw and not raw.startswith("sqlite") and make_url(raw).get_backend_name() == "postgresql":
            return raw
    return None


def _cluster(port: int) -> tuple[str, str] | None:
    """(version, name) of the local cluster listening on ``port``, from pg_lsclusters."""
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == str(port):
            return parts[0], parts[1]
    return None


def _why_not() -> str | None:
    url = _pg_url()
    if os.environ.get("DATAFLOW_TEST_NO_RESTART"):
        return "DATAFLOW_TEST_NO_RESTART is set"
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        return "other pytest-xdist workers are running: it runs alone (scripts/test.sh: pytest -m restarts_server)"
    if url is None:
        return "PostgreSQL is not among DATAFLOW_TEST_URLS (this test restarts a PostgreSQL server)"
    if make_url(url).host not in ("127.0.0.1", "localhost", "::1"):
        return "the PostgreSQL under test is not on this machine: it is never restarted from here"
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        return "pg_ctlcluster is not installed: cannot restart the server"
    if os.geteuid() != 0:
        return "restarting the server needs root (or the cluster's owner)"
    if _cluster(make_url(url).port or 5432) is None:
        return "no local cluster listens on the URL's port"
    return None


def _admin(url: str) -> sa.Engine:
    u = make_url(url).set(drivername="postgresql+psycopg")
    return sa.create_engine(u, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)


def _accepts(url: str) -> bool:
    engine = _admin(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not _accepts(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL did not accept connections within {WAIT_S}s of the restart")
        time.sleep(0.2)


def _ctl(cluster: tuple[str, str], *action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, *action],
                          capture_output=True, text=True, timeout=WAIT_S)


def _warm(db: DataFlow) -> DataFlow:
    """Check ``POOL`` connections out at once and back in: the pool keeps them all."""
    held = [db.engine.connect() for _ in range(POOL)]
    for conn in held:
        conn.close()
    assert db.pool_stats()["checked_in"] == POOL
    return db


def _instance(url: str, model: str, **settings) -> DataFlow:
    db = DataFlow(url, pool_size=POOL, **settings)
    db.model(type(model, (), {"__annotations__": {"text": str}}))
    for i in range(3):
        db.create(model, text=f"before{i}")
    return _warm(db)


@pytest.fixture(scope="module")
def restarted():
    """Five warmed instances and a transaction left open, then one real restart of the server."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    server_url = _pg_url()
    assert server_url is not None
    cluster = _cluster(make_url(server_url).port or 5432)
    assert cluster is not None
    name = f"df_restart_{uuid.uuid4().hex[:10]}"
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    made: list[DataFlow] = []
    try:
        ns = SimpleNamespace(url=url)
        for key, model, settings in [("reader", "RNote", {}), ("writer", "WNote", {}),
                                     ("bare_reader", "BRNote", {"pool_pre_ping": False}),
                                     ("bare_writer", "BWNote", {"pool_pre_ping": False}), ("txdb", "TNote", {})]:
            db = _instance(url, model, **settings)
            made.append(db)
            setattr(ns, key, db)

        # Two transactions that wrote a row, open while the server restarts, then go on: one lets the
        # error out of the block, the other catches it and tries once more before the block ends.
        ns.tx_errors = {"raised": [], "caught": []}
        resumed = threading.Event()

        def in_transaction(kind: str, opened: threading.Event) -> None:
            errors = ns.tx_errors[kind]
            try:
                with ns.txdb.transaction():
                    ns.txdb.create("TNote", text=f"{kind}-1")
                    opened.set()
                    resumed.wait(WAIT_S)
                    try:
                        ns.txdb.create("TNote", text=f"{kind}-2")
                    except DatabaseUnavailableError as exc:
                        errors.append(exc)
                        if kind == "raised":
                            raise
                    try:
                        ns.txdb.count("TNote")
                    except DatabaseUnavailableError as exc:
                        errors.append(exc)
            except BaseException as exc:  # noqa: BLE001 - the test asserts on it
                errors.append(exc)
            finally:
                opened.set()

        workers = []
        for kind in ns.tx_errors:
            opened = threading.Event()
            workers.append(threading.Thread(target=in_transaction, args=(kind, opened), daemon=True))
            workers[-1].start()
            assert opened.wait(WAIT_S)
        try:
            done = _ctl(cluster, "-m", "fast", "restart")
            assert done.returncode == 0, f"pg_ctlcluster restart failed: {done.stderr.strip()}"
            _wait_until_up(url)
        finally:
            resumed.set()
            for worker in workers:
                worker.join(WAIT_S)
        assert not any(worker.is_alive() for worker in workers)
        yield ns
    finally:
        if not _accepts(server_url):  # whatever happened above, the server is left running
            _ctl(cluster, "start")
            _wait_until_up(server_url)
        for db in made:
            db.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _texts(db: DataFlow, model: str) -> list[str]:
    return sorted(r["text"] for r in db.list(model))


def _pool_is_clean(db: DataFlow, model: str) -> None:
    """The next 3 x POOL operations, reads and writes, all succeed."""
    for i in range(POOL):
        created = db.create(model, text=f"after{i}")
        assert db.read(model, created["id"])["text"] == f"after{i}"
        assert db.count(model, {"text": f"after{i}"}) == 1


def test_reads_after_a_restart_succeed_without_a_retry(restarted, caplog):
    db = restarted.reader
    caplog.set_level(logging.INFO, logger="dataflow.operations")
    seen = [(db.count("RNote"), _texts(db, "RNote")) for _ in range(2 * POOL)]
    assert seen == [(3, ["before0", "before1", "before2"])] * (2 * POOL)
    # Every dead connection was replaced at checkout, before a statement was sent: nothing to retry.
    assert [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()] == []
    _pool_is_clean(db, "RNote")


def test_a_write_after_a_restart_is_applied_once(restarted):
    db = restarted.writer
    assert db.create("WNote", text="after-restart")["text"] == "after-restart"
    assert _texts(db, "WNote") == ["after-restart", "before0", "before1", "before2"]
    _pool_is_clean(db, "WNote")


def test_reads_on_dead_unchecked_connections_are_retried_once(restarted, caplog):
    db = restarted.bare_reader  # pool_pre_ping=False: nothing looks at a connection before it is used
    caplog.set_level(logging.INFO, logger="dataflow.operations")
    assert [db.count("BRNote") for _ in range(2 * POOL)] == [3] * (2 * POOL)
    # The first read met a dead connection and was retried on a fresh one; the dead connection
    # invalidated the whole pool (its siblings died with the server), so no other read needed a retry.
    assert [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()] == [
        "retrying a read after a lost connection"]
    _pool_is_clean(db, "BRNote")


def test_a_write_sent_on_a_dead_connection_fails_clearly_and_is_not_retried(restarted):
    db = restarted.bare_writer
    with pytest.raises(DatabaseUnavailableError, match=r"^BWNote create failed: the database at .* is unreachable "
                                                       r"or the connection was lost") as info:
        db.create("BWNote", text="lost")
    assert info.value.sent is True  # it may have reached the server: only the caller may try again
    assert info.value.status == 503
    assert _texts(db, "BWNote") == ["before0", "before1", "before2"]  # applied neither once nor twice
    _pool_is_clean(db, "BWNote")


def test_a_transaction_cut_by_the_restart_raises_clearly_and_leaves_nothing(restarted):
    db = restarted.txdb
    raised = restarted.tx_errors["raised"]
    assert [type(e) for e in raised] == [DatabaseUnavailableError, DatabaseUnavailableError], raised
    assert raised[0] is raised[1]  # what the block let out is the operation's own error
    assert raised[0].message.startswith("TNote create failed: the database at ")
    assert "unreachable or the connection was lost" in raised[0].message

    caught = restarted.tx_errors["caught"]  # the block caught the error and went on
    assert [type(e) for e in caught] == [DatabaseUnavailableError, DatabaseUnavailableError, TransactionError], caught
    assert caught[1].message.startswith("TNote count failed: the connection of the open transaction was lost by an "
                                        "earlier operation in it")
    assert caught[2].message.startswith("the transaction was rolled back")

    assert _texts(db, "TNote") == ["before0", "before1", "before2"]  # raised-1, caught-1 went with their sessions
    with db.transaction():  # the pool is clean: a new transaction commits
        db.create("TNote", text="tx-after-1")
        db.create("TNote", text="tx-after-2")
    assert _texts(db, "TNote") == ["before0", "before1", "before2", "tx-after-1", "tx-after-2"]
    _pool_is_clean(db, "TNote")
