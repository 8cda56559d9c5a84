"""``db.transaction()``: one database transaction for every door, workflows included; savepoints; hooks at commit."""

from __future__ import annotations

import threading

import pytest
from kailash.runtime.local import LocalRuntime
from kailash.sdk_exceptions import RuntimeExecutionError
from kailash.workflow.builder import WorkflowBuilder

from dataflow import (DatabaseUnavailableError, DataFlow, DuplicateKeyError, NotFoundError, PoolTimeoutError, TransactionError,
                      ValidationError)
from dataflow.operations.policy import Policy


def declare(db: DataFlow) -> None:
    @db.model
    class Account:
        name: str
        balance: int = 0
        __dataflow__ = {"unique": ["name"]}


@pytest.fixture
def accounts(db):
    declare(db)
    db.migrate()
    return db


def names(db: DataFlow) -> list[str]:
    return sorted(a["name"] for a in db.list("Account", limit=None))


def test_every_operation_in_the_block_commits_together(accounts):
    db = accounts
    with db.transaction():
        a = db.create("Account", name="a", balance=10)
        db.bulk_create("Account", [{"name": "b"}, {"name": "c"}])
        db.update("Account", a["id"], {"balance": 5})
        db.upsert("Account", {"name": "d"}, {"balance": 1})
        db.bulk_update("Account", {"name": "b"}, {"balance": 7})
        db.delete("Account", {"name": "c"})
        assert db.count("Account") == 3  # the block sees its own writes
        assert db.query("Account").where({"balance": {"$gt": 4}}).count() == 2
        assert db.aggregate("Account", [{"$group": {"_id": None, "s": {"$sum": "$balance"}}}]) == [
            {"_id": None, "s": 13}]
    assert names(db) == ["a", "b", "d"]


def test_an_exception_rolls_back_everything(accounts):
    db = accounts
    db.create("Account", name="kept", balance=1)
    with pytest.raises(RuntimeError, match="stop"):
        with db.transaction():
            db.create("Account", name="a")
            db.bulk_create("Account", [{"name": "b"}, {"name": "c"}])
            db.update("Account", {"name": "kept"}, {"balance": 99})
            db.bulk_delete("Account", {"name": "kept"})
            db.bulk_upsert("Account", [{"name": "e", "balance": 3}], conflict_on=["name"])
            raise RuntimeError("stop")
    assert names(db) == ["kept"]
    assert db.read("Account", filter={"name": "kept"})["balance"] == 1


def test_others_do_not_see_the_block_before_it_commits(accounts):
    db = accounts
    seen = []
    with db.transaction():
        db.create("Account", name="a")
        t = threading.Thread(target=lambda: seen.append(db.count("Account")))  # a fresh context: no transaction
        t.start()
        t.join()
    assert seen == [0]
    assert db.count("Account") == 1


def _workflow(third: dict) -> WorkflowBuilder:
    wf = WorkflowBuilder()
    wf.add_node("AccountCreateNode", "first", {"name": "first"})
    wf.add_node("AccountCreateNode", "second", {"name": "second"})
    wf.add_node("AccountCreateNode", "third", third)
    return wf


def test_a_workflow_inside_the_block_is_one_transaction(accounts):
    db = accounts
    with db.transaction():
        with LocalRuntime() as rt:
            results, _ = rt.execute(_workflow({"name": "third"}).build())
        assert not any(r.get("failed") for r in results.values())
        assert db.count("Account") == 3
    assert names(db) == ["first", "second", "third"]


@pytest.mark.parametrize("third", [{"name": None}, {"name": "first"}], ids=["validation", "duplicate"])
def test_a_workflow_whose_third_node_fails_leaves_no_rows(accounts, third):
    """The runtime records the failed node and returns; the block must still not commit the first two."""
    db = accounts
    with pytest.raises(TransactionError, match="rolled back"):
        with db.transaction():
            with LocalRuntime() as rt:
                results, _ = rt.execute(_workflow(third).build())
            assert results["third"].get("failed") is True
    assert db.count("Account") == 0


def test_a_workflow_that_raises_rolls_back(accounts):
    db = accounts
    wf = _workflow({"name": None})
    wf.add_node("AccountCreateNode", "fourth", {"name": "fourth"})
    wf.add_connection("third", "name", "fourth", "name")  # the failed node has a dependent: the runtime raises
    with pytest.raises(RuntimeExecutionError, match="ValidationError: Account.name cannot be null"):
        with db.transaction():
            with LocalRuntime() as rt:
                rt.execute(wf.build())
    assert db.count("Account") == 0


def test_nested_blocks_are_savepoints(accounts):
    db = accounts
    with db.transaction():
        db.create("Account", name="outer")
        with pytest.raises(DuplicateKeyError):
            with db.transaction():
                db.create("Account", name="inner-undone")
                db.create("Account", name="outer")
        with db.transaction():
            db.create("Account", name="inner-kept")
        db.create("Account", name="after")
    assert names(db) == ["after", "inner-kept", "outer"]


def test_a_failure_caught_inside_the_block_dooms_it(accounts):
    db = accounts
    with pytest.raises(TransactionError):
        with db.transaction():
            db.create("Account", name="a")
            try:
                db.create("Account", name="a")
            except DuplicateKeyError:
                pass
    assert db.count("Account") == 0


def test_a_validation_error_before_any_sql_does_not_doom_the_block(accounts):
    db = accounts
    with db.transaction():
        db.create("Account", name="a")
        with pytest.raises(ValidationError):
            db.create("Account", name=None)
    assert names(db) == ["a"]


class Recorder(Policy):
    name = "recorder"

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def after_commit(self, call, result, elapsed):
        self.events.append((call.action, call.model))


def test_after_commit_hooks_wait_for_the_outer_commit(accounts):
    db = accounts
    rec = db.executor.add(Recorder())
    with db.transaction():
        db.create("Account", name="a")
        with db.transaction():
            db.update("Account", {"name": "a"}, {"balance": 1})
        with pytest.raises(RuntimeError):
            with db.transaction():
                db.create("Account", name="undone")
                raise RuntimeError
        assert rec.events == []
    assert rec.events == [("create", "Account"), ("update", "Account")]
    rec.events.clear()
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.create("Account", name="b")
            raise RuntimeError
    assert rec.events == []
    db.count("Account")
    assert rec.events == [("count", "Account")]


def test_another_instance_inside_the_block_runs_on_its_own_connection(accounts, tmp_path):
    db = accounts
    with DataFlow(f"sqlite:///{tmp_path / 'other.db'}", node_prefix="Other") as other:
        declare(other)
        with pytest.raises(RuntimeError):
            with db.transaction():
                db.create("Account", name="a")
                other.create("Account", name="elsewhere")
                raise RuntimeError
        assert db.count("Account") == 0
        assert other.count("Account") == 1


def test_pool_stats_and_the_pool_timeout_error(db_url, backend):
    if backend == "sqlite":
        with DataFlow(db_url) as db:
            assert db.pool_stats()["backend"] == "sqlite"
        pytest.skip("pool_size does not apply to SQLite")
    with DataFlow(db_url, pool_size=1, max_overflow=0, pool_timeout=0.2) as db:
        declare(db)
        db.migrate()
        stats = db.pool_stats()
        assert (stats["size"], stats["max_overflow"], stats["checked_out"]) == (1, 0, 0)
        errors = []
        with db.transaction():
            db.create("Account", name="a")
            assert db.pool_stats()["checked_out"] == 1

            def other():
                try:
                    db.count("Account")
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
            t = threading.Thread(target=other)
            t.start()
            t.join()
        assert len(errors) == 1 and isinstance(errors[0], PoolTimeoutError)
        assert "pool_size=1" in str(errors[0]) and "all 1 connections" in str(errors[0])
        assert errors[0].status == 503
        assert db.count("Account") == 1
        assert db.pool_stats()["checked_out"] == 0


def test_not_found_inside_the_block_does_not_doom_it(accounts):
    db = accounts
    with db.transaction():
        db.create("Account", name="a")
        with pytest.raises(NotFoundError):
            db.read("Account", 12345)
        with pytest.raises(NotFoundError):
            db.update("Account", {"name": "missing"}, {"balance": 1})
    assert names(db) == ["a"]


def test_a_workflow_declares_its_own_transaction(accounts):
    db = accounts
    for third, committed in (({"name": "third"}, True), ({"name": None}, False)):
        db.bulk_delete("Account", {}, confirm_all=True)
        outer = WorkflowBuilder()
        outer.add_node("DataFlowTransactionNode", "tx", {"workflow": _workflow(third).build()})
        with LocalRuntime() as rt:
            results, _ = rt.execute(outer.build())
        if committed:
            assert results["tx"]["committed"] is True
            assert results["tx"]["results"]["third"]["name"] == "third"
            assert names(db) == ["first", "second", "third"]
        else:
            assert results["tx"]["failed"] is True and "TransactionError" in results["tx"]["error"]
            assert "node(s) third" in results["tx"]["error"]
            assert db.count("Account") == 0


@pytest.mark.parametrize("caught", [False, True], ids=["raised", "caught"])
def test_a_block_whose_connection_is_lost_fails_clearly_and_leaves_nothing(accounts, backend, db_url,
                                                                           kill_other_sessions, caught):
    if backend == "sqlite":
        pytest.skip("an embedded database has no server connection to lose")
    db = accounts
    db.create("Account", name="kept")
    errors: list[BaseException] = []
    with pytest.raises((DatabaseUnavailableError, TransactionError)) as info:
        with db.transaction():
            db.create("Account", name="a")
            kill_other_sessions(db_url)  # the block's connection dies, as in a server restart
            try:
                db.create("Account", name="b")
            except DatabaseUnavailableError as exc:
                errors.append(exc)
                if not caught:
                    raise
            try:  # the block goes on: nothing more can run in it, and it says why
                db.count("Account")
            except DatabaseUnavailableError as exc:
                errors.append(exc)
    assert [type(e) for e in errors] == [DatabaseUnavailableError] * (2 if caught else 1)
    assert errors[0].message.startswith("Account create failed: the database at ")
    assert "unreachable or the connection was lost" in errors[0].message
    if caught:
        assert errors[1].message.startswith("Account count failed: the connection of the open transaction was lost "
                                            "by an earlier operation in it")
        assert type(info.value) is TransactionError  # the block ended normally, doomed: rolled back
    else:
        assert info.value is errors[0]
    assert names(db) == ["kept"]  # nothing of the block was saved
    with db.transaction():  # a fresh connection: the next block commits
        db.create("Account", name="after")
    assert names(db) == ["after", "kept"]


def test_a_concurrency_failure_that_outlasts_the_retries_is_a_conflict(db, backend):
    """The database's own serialization failure / deadlock (raised for real by the server, every attempt):
    the executor tries again, then reports a ConflictError (409, run it again) that quotes no SQL, and
    nothing of the operation stays."""
    if backend == "sqlite":
        pytest.skip("SQLite has no serialization failures: one writer at a time")
    from dataflow.errors import ConflictError
    from dataflow.operations.executor import DEADLOCK_ATTEMPTS
    from dataflow.operations.policy import Policy

    @db.model
    class Seat:
        label: str

    db.create("Seat", label="a")
    raise_it = ("DO $$ BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END $$"
                if backend == "postgresql" else
                "SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'Deadlock found when trying to get lock'")

    class Conflicting(Policy):
        name = "conflicting"
        attempts = 0

        def plan(self, call):
            if call.action == "bulk_update":
                call.in_transaction = True

        def after_statement(self, call, conn, info):
            if call.action == "bulk_update":
                Conflicting.attempts += 1
                conn.exec_driver_sql(raise_it)

    db.executor.add(Conflicting())
    with pytest.raises(ConflictError, match="another transaction changed or locked the same records") as err:
        db.bulk_update("Seat", {"label": "a"}, {"label": "b"})
    assert Conflicting.attempts == DEADLOCK_ATTEMPTS
    assert (err.value.code, err.value.status) == ("conflict", 409) and "UPDATE" not in str(err.value)
    assert [s["label"] for s in db.list("Seat")] == ["a"]


def test_a_lock_timeout_is_a_conflict(db, backend):
    """PostgreSQL's lock_timeout running out while another session holds the row: ConflictError (409)."""
    if backend != "postgresql":
        pytest.skip("lock_timeout is PostgreSQL's")
    import sqlalchemy as sa

    from dataflow.errors import ConflictError

    @db.model
    class Seat:
        label: str

    seat = db.create("Seat", label="a")
    def short_lock_wait(dbapi, record):
        dbapi.execute("SET lock_timeout = '200ms'")
        dbapi.commit()

    sa.event.listen(db.engine, "connect", short_lock_wait)
    db.engine.dispose()  # new connections get the setting
    other = sa.create_engine(db.engine.url, poolclass=sa.NullPool)
    try:
        with other.begin() as conn:
            conn.exec_driver_sql("SELECT * FROM seats FOR UPDATE")
            with pytest.raises(ConflictError, match="another transaction changed or locked"):
                db.update("Seat", seat["id"], {"label": "b"})
    finally:
        other.dispose()
    assert db.read("Seat", seat["id"])["label"] == "a"
