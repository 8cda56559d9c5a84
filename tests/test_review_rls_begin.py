"""Row-level security's BEGIN (PostgreSQL, psycopg): the transaction and the tenant's ``set_config`` travel
as one simple-query string. One pooled connection (pool_size=1) serves every tenant in turn here, as an
ordinary role (superusers are not bound by row-level security): a failed operation, a savepoint, a
REPEATABLE READ operation, a connection the server closed, prepared statements; the next tenant must see
its own rows only, and psycopg's own notion of the transaction must stay right.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from typing import Annotated

import pytest
import sqlalchemy as sa

from dataflow import DataFlow, Field
from dataflow.errors import DatabaseUnavailableError, DuplicateKeyError, NotFoundError, TransactionError

ROWS = {"acme": ["acme a", "acme b"], "globex": ["globex a", "globex b", "globex c"], "initech": []}


@pytest.fixture
def role_url(ordinary_role):
    """The test database as an ordinary role, and a superuser engine (autocommit) beside it."""
    return ordinary_role


def open_db(url: str, **kwargs) -> DataFlow:
    db = DataFlow(url, multi_tenant=True, pool_size=kwargs.pop("pool_size", 1), max_overflow=0, **kwargs)

    @db.model
    class User:
        name: str
        email: Annotated[str, Field(unique=True)]
        score: int = 0

    for tenant, names in ROWS.items():
        with db.tenant(tenant):
            for i, name in enumerate(names):
                db.create("User", name=name, email=f"{i}@x")
    return db


def dbapi(db: DataFlow):
    """The pooled driver connection (pool_size=1: the one every operation uses), checked in again."""
    with db.engine.connect() as conn:
        driver = conn.connection.dbapi_connection
    assert driver is not None
    return driver


def outside_transaction(db: DataFlow) -> tuple:
    """The pooled connection between operations: psycopg's transaction status and the settings it holds."""
    import psycopg

    with db.engine.connect() as conn:
        driver = conn.connection.dbapi_connection
        status = driver.info.transaction_status
        driver.autocommit = True  # a statement of its own, in no transaction of ours
        try:
            row = driver.execute("SELECT current_setting('dataflow.tenant', true), "
                                 "current_setting('dataflow.bypass', true)").fetchone()
        finally:
            driver.autocommit = False
    assert status == psycopg.pq.TransactionStatus.IDLE
    return row


def hand_written(db: DataFlow, sql: str = "SELECT name FROM users ORDER BY id", params=None) -> list:
    with db.engine.connect() as conn:  # DataFlow's engine, SQL of our own
        return [r[0] for r in conn.exec_driver_sql(sql, params or ())]


def hand_written_committed(db: DataFlow, sql: str, params=None) -> list:
    """As ``hand_written``, committed: psycopg forgets its prepared statements at every ROLLBACK."""
    with db.engine.begin() as conn:
        return [r[0] for r in conn.exec_driver_sql(sql, params or ())]


def sees_only_its_own(db: DataFlow, tenant: str) -> None:
    with db.tenant(tenant):
        assert [u["name"] for u in db.list("User", limit=None)] == ROWS[tenant]
        assert db.count("User") == len(ROWS[tenant])
        assert hand_written(db) == ROWS[tenant]
        assert hand_written(db, "SELECT count(*) FROM users") == [len(ROWS[tenant])]


def traced(db: DataFlow, work) -> list[str]:
    """The frontend's messages on the pooled connection while ``work()`` runs (libpq's protocol trace)."""
    from psycopg import pq

    driver = dbapi(db)
    with tempfile.TemporaryFile("w+") as f:
        driver.pgconn.trace(f.fileno())
        driver.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            work()
        finally:
            driver.pgconn.untrace()
        f.seek(0)
        return [line for line in f.read().splitlines() if line.startswith("F\t")]


# ---------------------------------------------------------------- failures inside the merged BEGIN
def test_a_failed_operation_leaves_the_pooled_connection_clean_for_the_next_tenant(role_url):
    url, _ = role_url
    with open_db(url) as db:
        pid = dbapi(db).info.backend_pid
        globex_id = [r for r in hand_written_bypass(db)][2]

        def failures():
            yield DuplicateKeyError, lambda: db.create("User", name="dup", email="0@x")
            yield NotFoundError, lambda: db.update("User", globex_id, {"score": 9})
            yield NotFoundError, lambda: db.delete("User", globex_id)
            yield sa.exc.DataError, lambda: hand_written(db, "SELECT 1/0")

            def in_block():
                with db.transaction():
                    db.create("User", name="kept?", email="9@x")
                    db.create("User", name="dup", email="1@x")
            yield DuplicateKeyError, in_block

        for error, fail in failures():
            with db.tenant("acme"):
                with pytest.raises(error):
                    fail()
            assert outside_transaction(db) in (("", ""), (None, None))
            sees_only_its_own(db, "globex")
            sees_only_its_own(db, "initech")
            sees_only_its_own(db, "acme")  # the block's first create was rolled back with it
        assert dbapi(db).info.backend_pid == pid  # one pooled connection served them all
        with db.tenant(None, bypass=True):
            assert db.read("User", globex_id)["score"] == 0


def hand_written_bypass(db: DataFlow) -> list:
    with db.tenant(None, bypass=True):
        return hand_written(db, "SELECT id FROM users ORDER BY id")


# ---------------------------------------------------------------- one connection, many tenants
def test_alternating_tenants_on_one_connection_with_prepared_statements(role_url):
    """psycopg prepares a statement after its fifth run: the prepared plans serve each tenant its own rows."""
    import psycopg

    url, _ = role_url
    with open_db(url) as db:
        for i in range(24):
            tenant = list(ROWS)[i % 3]
            with db.tenant(tenant):
                names = ROWS[tenant]
                assert [u["name"] for u in db.list("User", limit=None)] == names
                assert db.count("User") == len(names)
                got = db.read("User", {"email": "0@x"}, raise_on_not_found=False)
                assert (got["name"] if got else None) == (names[0] if names else None)
                assert hand_written_committed(db, "SELECT name FROM users WHERE email = %s", ("1@x",)) == names[1:2]
                with db.engine.begin() as conn:
                    driver = conn.connection.dbapi_connection
                    assert driver.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
                    assert conn.exec_driver_sql("SELECT current_setting('dataflow.tenant')").scalar() == tenant
                    prepared = conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements").scalars().all()
        # psycopg did prepare them (this session's statements), and they served each tenant its own rows
        assert any("FROM users" in p and "count" in p for p in prepared), prepared
        assert any("WHERE email = $1" in p for p in prepared), prepared
        assert outside_transaction(db) in (("", ""), (None, None))


def test_commit_rollback_and_notices_after_the_merged_begin(role_url):
    import psycopg

    url, _ = role_url
    with open_db(url) as db:
        notices: list[str] = []
        dbapi(db).add_notice_handler(lambda diag: notices.append(diag.message_primary))
        with db.tenant("initech"):
            with db.engine.connect() as conn:
                conn.exec_driver_sql("INSERT INTO users (name, email, score, tenant_id, created_at, updated_at) "
                                     "VALUES ('gone', 'g@x', 0, 'initech', now(), now())")
                conn.exec_driver_sql("DO $$ BEGIN RAISE NOTICE 'tenant %%', current_setting('dataflow.tenant'); END $$")
                conn.rollback()
                assert conn.connection.dbapi_connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                assert conn.exec_driver_sql("SELECT count(*) FROM users").scalar() == 0
                conn.exec_driver_sql("INSERT INTO users (name, email, score, tenant_id, created_at, updated_at) "
                                     "VALUES ('kept', 'k@x', 0, 'initech', now(), now())")
                conn.commit()
            with pytest.raises(sa.exc.ProgrammingError, match="row-level security"), db.engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO users (name, email, score, tenant_id, created_at, updated_at) "
                                     "VALUES ('x', 'x@x', 0, 'acme', now(), now())")
            assert [u["name"] for u in db.list("User")] == ["kept"]
        assert notices == ["tenant initech"]
        sees_only_its_own(db, "acme")
        with db.tenant(None, bypass=True):
            assert db.count("User") == 6


def test_threads_and_tasks_with_different_tenants_at_once(role_url):
    url, _ = role_url
    with open_db(url, pool_size=2) as db:
        errors: list[BaseException] = []
        barrier = threading.Barrier(3)

        def work(tenant: str) -> None:
            try:
                barrier.wait()
                with db.tenant(tenant):
                    for _ in range(15):
                        assert db.count("User") == len(ROWS[tenant])
                        assert {u["tenant_id"] for u in db.list("User")} <= {tenant}
                        assert hand_written(db) == ROWS[tenant]
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in ROWS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []

        async def task(tenant: str) -> str:
            with db.tenant(tenant):
                for _ in range(8):
                    await asyncio.sleep(0)
                    assert await asyncio.to_thread(hand_written, db) == ROWS[tenant]
                    assert await asyncio.to_thread(db.count, "User") == len(ROWS[tenant])
            return tenant

        async def main() -> list[str]:
            return await asyncio.gather(*(task(t) for t in list(ROWS) * 2))

        assert asyncio.run(main()) == list(ROWS) * 2


# ---------------------------------------------------------------- transactions and REPEATABLE READ
def test_nested_transactions_under_row_level_security(role_url):
    url, _ = role_url
    with open_db(url) as db:
        with db.tenant("acme"):
            with db.transaction() as conn:
                db.create("User", name="acme c", email="2@x")
                with pytest.raises(TransactionError), db.transaction():
                    db.update("User", {"email": "0@x"}, {"score": 5})
                    with pytest.raises(DuplicateKeyError):
                        db.create("User", name="dup", email="1@x")
                with db.transaction():
                    db.update("User", {"email": "1@x"}, {"score": 7})
                assert conn.exec_driver_sql("SELECT current_setting('dataflow.tenant')").scalar() == "acme"
                assert db.count("User") == 3
            assert [(u["name"], u["score"]) for u in db.list("User")] == [("acme a", 0), ("acme b", 7), ("acme c", 0)]
        ROWS["acme"].append("acme c")
        try:
            sees_only_its_own(db, "globex")
            sees_only_its_own(db, "acme")
        finally:
            ROWS["acme"].remove("acme c")
        assert outside_transaction(db) in (("", ""), (None, None))


def test_a_repeatable_read_operation_and_the_next_keep_one_round_trip(role_url):
    """An audited bulk update asks for REPEATABLE READ; SQLAlchemy puts the connection back with READ COMMITTED
    set explicitly. Both transactions, and every later one on that connection, begin with the tenant's
    settings in one message, at the isolation level psycopg would have asked for."""
    url, _ = role_url
    with open_db(url, audit_log=True) as db:
        with db.tenant("acme"):
            sent = traced(db, lambda: db.bulk_update("User", {"score": 0}, {"score": 4}))
        assert "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT set_config('dataflow.tenant', 'acme', true)" in sent[0]
        with db.tenant("globex"):
            sent = traced(db, lambda: db.list("User"))
            assert "BEGIN" in sent[0] and "set_config('dataflow.tenant', 'globex', true)" in sent[0]
            assert not any("set_config" in line for line in sent[1:])
            assert db.count("User", {"score": 4}) == 0
        with db.tenant("acme"):
            assert [u["score"] for u in db.list("User")] == [4, 4]
        sees_only_its_own(db, "globex")
        with db.engine.connect().execution_options(isolation_level="SERIALIZABLE") as conn:
            with db.tenant("globex"):
                assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "serializable"
                assert conn.exec_driver_sql("SELECT count(*) FROM users").scalar() == 3
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn, db.tenant("globex"):
            assert conn.exec_driver_sql("SELECT count(*) FROM users").scalar() == 0  # set_config ended at once
        sees_only_its_own(db, "globex")


# ---------------------------------------------------------------- the server closes the connection
def terminate(admin: sa.Engine, pid: int) -> None:
    with admin.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_terminate_backend(%s, 5000)", (pid,)).scalar() is True


def test_a_connection_closed_between_operations_is_replaced(role_url):
    url, admin = role_url
    with open_db(url) as db:
        def block():
            with db.transaction():
                return db.count("User")

        for run in (lambda: [u["name"] for u in db.list("User")], lambda: db.count("User"), block,
                    lambda: db.create("User", name="globex z", email="z@x")["name"],
                    lambda: db.update("User", {"email": "z@x"}, {"score": 1})["score"],
                    lambda: db.delete("User", {"email": "z@x"}), lambda: hand_written(db)):
            pid = dbapi(db).info.backend_pid
            terminate(admin, pid)
            with db.tenant("globex"):
                run()
            assert dbapi(db).info.backend_pid != pid
            sees_only_its_own(db, "initech")
            sees_only_its_own(db, "acme")
        sees_only_its_own(db, "globex")


def test_a_connection_lost_at_begin_is_reported_and_replaced(role_url, caplog):
    """The server closes the connection after the pool handed it out, before the merged BEGIN reached it:
    a DataFlow operation or block raises DatabaseUnavailableError (a read may be retried on a new connection),
    hand-written SQL sqlalchemy's OperationalError with the connection invalidated; the pool drops it at once."""
    url, admin = role_url
    with open_db(url) as db:
        armed = [False]

        @sa.event.listens_for(db.engine, "checkout")
        def kill_at_checkout(dbapi_conn, record, proxy):
            if armed[0]:
                armed[0] = False
                terminate(admin, dbapi_conn.info.backend_pid)

        def block():
            with db.transaction():
                db.create("User", name="never", email="n@x")

        for run, error in ((lambda: db.create("User", name="never", email="n@x"), DatabaseUnavailableError),
                           (lambda: db.update("User", {"email": "0@x"}, {"score": 3}), DatabaseUnavailableError),
                           (block, DatabaseUnavailableError),
                           (lambda: hand_written(db), sa.exc.OperationalError),
                           (lambda: db.list("User"), None)):
            armed[0] = True
            with caplog.at_level(logging.ERROR, logger="sqlalchemy.pool"), db.tenant("acme"):
                if error is None:
                    try:
                        assert [u["name"] for u in run()] == ROWS["acme"]
                    except DatabaseUnavailableError:
                        pass
                else:
                    with pytest.raises(error) as info:
                        run()
                    if error is sa.exc.OperationalError:
                        assert info.value.connection_invalidated
            assert not armed[0]
            assert [r for r in caplog.records if r.name.startswith("sqlalchemy.pool")] == []
            sees_only_its_own(db, "globex")
            sees_only_its_own(db, "acme")
            assert db.pool_stats()["connections"] == 1
