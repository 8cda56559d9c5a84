"""Review of the audit log's REPEATABLE READ bulk path, BRIN time index, id order and timestamp rule.

On PostgreSQL another session changes rows between an audited bulk operation's record and its change,
deterministically: an engine event runs the other session's statement (committed) just before the
bulk UPDATE/DELETE is sent. The trail must hold exactly the rows changed, with the values they had
just before the change; nothing of a failed attempt may remain; the pooled connection must go back
to READ COMMITTED.
"""

from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Annotated, Optional

import pytest
import sqlalchemy as sa

from dataflow import DataFlow, Field
from dataflow.errors import ConflictError, DuplicateKeyError, ModelError


def raw(db, sql, params=None):
    """Rows as plain SQL sees them, on a connection of our own."""
    engine = sa.create_engine(db.engine.url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql, params or ())]
    finally:
        engine.dispose()


def trail(db, **kw):
    return db.audit_log(limit=None, **kw)


@contextmanager
def meanwhile(db, prefix, *statements, times=1):
    """Just before each of the first ``times`` statements of ``db`` that start with ``prefix``, another
    session runs ``statements`` and commits. Yields a dict: ``sent`` (how many such statements were sent)
    and ``isolation`` (the isolation of the transaction each ran in)."""
    other = sa.create_engine(db.engine.url, poolclass=sa.NullPool)
    seen: dict = {"sent": 0, "isolation": [], "sql": []}

    def before(conn, cursor, statement, parameters, context, executemany):
        seen["sql"].append(statement)
        if not statement.startswith(prefix):
            return
        seen["sent"] += 1
        seen["isolation"].append(conn.exec_driver_sql("SHOW transaction_isolation").scalar())
        if seen["sent"] <= times:
            with other.begin() as o:
                for sql in statements:
                    o.exec_driver_sql(sql)

    sa.event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", before)
        other.dispose()


def pg_only(backend):
    if backend != "postgresql":
        pytest.skip("REPEATABLE READ snapshots for audited bulk writes are PostgreSQL's")


@pytest.fixture
def app(db):
    @db.model
    class Account:
        owner: str
        status: str = "a"
        balance: int = 0

    db.enable_audit_log()
    db.bulk_create("Account", [{"owner": f"o{i}", "status": "a", "balance": i} for i in range(6)])
    return db


def by_record(records, part="before"):
    return {int(r["record_id"]): r[part] for r in records}


# ---------------------------------------------------------------- PostgreSQL: concurrent sessions
def test_a_concurrent_change_restarts_the_bulk_update_which_records_exactly_what_it_changed(app, backend):
    pg_only(backend)
    with app.actor("ops"), meanwhile(app, "UPDATE accounts",
                                      "UPDATE accounts SET status = 'b' WHERE id = 2",   # still matches
                                      "UPDATE accounts SET status = 'z' WHERE id = 3",   # no longer matches
                                      "DELETE FROM accounts WHERE id = 4",
                                      "INSERT INTO accounts (owner, status, balance, created_at, updated_at) "
                                      "VALUES ('late', 'a', 50, now(), now())") as seen:
        n = app.bulk_update("Account", {"status": {"$in": ["a", "b"]}}, {"status": "c", "balance": 7})
    assert seen["isolation"] == ["repeatable read", "read committed"]  # the first attempt failed
    assert n == 5
    stored = dict(raw(app, "SELECT id, status FROM accounts ORDER BY id"))
    assert stored == {1: "c", 2: "c", 3: "z", 5: "c", 6: "c", 7: "c"}
    records = trail(app, action="bulk_update")
    assert len(records) == 5  # nothing of the failed attempt
    assert by_record(records) == {1: {"status": "a", "balance": 0}, 2: {"status": "b", "balance": 1},
                                  5: {"status": "a", "balance": 4}, 6: {"status": "a", "balance": 5},
                                  7: {"status": "a", "balance": 50}}
    assert {r["actor"] for r in records} == {"ops"}
    assert all(r["after"] == {"status": "c", "balance": 7} for r in records)


def test_a_row_inserted_after_the_snapshot_is_neither_changed_nor_recorded(app, backend):
    pg_only(backend)
    with meanwhile(app, "UPDATE accounts", "INSERT INTO accounts (owner, status, balance, created_at, updated_at) "
                                           "VALUES ('late', 'a', 50, now(), now())") as seen:
        n = app.bulk_update("Account", {"status": "a"}, {"status": "c"})
    assert seen["sent"] == 1 and n == 6  # no conflict: the new row is not in the snapshot
    assert raw(app, "SELECT status FROM accounts WHERE owner = 'late'") == [("a",)]
    assert sorted(by_record(trail(app, action="bulk_update"))) == [1, 2, 3, 4, 5, 6]


def test_a_bulk_update_that_lost_its_snapshot_is_retried_with_the_rows_locked(db_url, backend):
    """A busy table would fail every snapshot attempt (measured: 10,000 rows, 20 single-row updates a
    second, 10 of 10 bulk updates failed after 5 attempts); after one serialization failure the
    operation runs at READ COMMITTED and locks the rows as it reads them, so it waits instead."""
    pg_only(backend)
    with DataFlow(db_url, audit_log=True, pool_size=1, max_overflow=0) as db:
        @db.model
        class Account:
            owner: Annotated[str, Field(unique=True)]
            status: str = "a"

        db.bulk_create("Account", [{"owner": f"o{i}"} for i in range(4)])
        other = sa.create_engine(db.engine.url, poolclass=sa.NullPool)
        seen: dict = {"isolation": [], "probe": [], "sql": []}

        def before(conn, cursor, statement, parameters, context, executemany):
            seen["sql"].append(statement)
            if not statement.startswith("UPDATE accounts"):
                return
            seen["isolation"].append(conn.exec_driver_sql("SHOW transaction_isolation").scalar())
            with other.begin() as o:
                if len(seen["isolation"]) == 1:  # the first attempt: another session changes a row it read
                    o.exec_driver_sql("UPDATE accounts SET status = 'b' WHERE id = 2")
                    return
                try:  # the next: the rows are locked already
                    o.exec_driver_sql("SELECT id FROM accounts WHERE id = 2 FOR UPDATE NOWAIT")
                    seen["probe"].append("free")
                except sa.exc.OperationalError as exc:
                    seen["probe"].append(getattr(exc.orig, "sqlstate", None))

        sa.event.listen(db.engine, "before_cursor_execute", before)
        try:
            with db.actor("ops"):
                assert db.bulk_update("Account", {"status": {"$in": ["a", "b"]}}, {"status": "c"}) == 4
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", before)
            other.dispose()
        assert seen["isolation"] == ["repeatable read", "read committed"]
        assert seen["probe"] == ["55P03"]  # lock_not_available
        audits = [s for s in seen["sql"] if s.startswith("INSERT INTO dataflow_audit")]
        assert len(audits) == 2 and " FOR " not in audits[0] and "FOR NO KEY UPDATE" in audits[1]
        records = trail(db, action="bulk_update")
        assert by_record(records) == {1: {"status": "a"}, 2: {"status": "b"}, 3: {"status": "a"}, 4: {"status": "a"}}
        assert raw(db, "SELECT DISTINCT status FROM accounts") == [("c",)]

        # A snapshot attempt that fails for good (not retried) leaves nothing, and the one pooled
        # connection runs later work at the server's default again; each bulk call starts with a snapshot.
        count = len(trail(db))
        with meanwhile(db, "UPDATE accounts", times=0) as seen2:
            with pytest.raises(DuplicateKeyError):
                db.bulk_update("Account", {"id": {"$in": [1, 2]}}, {"owner": "same"})
        assert seen2["isolation"] == ["repeatable read"] and len(trail(db)) == count
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
        with meanwhile(db, "UPDATE accounts", times=0) as seen2:
            db.update("Account", 1, {"status": "single"})
            with db.transaction():
                db.update("Account", 2, {"status": "in-tx"})
            assert db.bulk_update("Account", {"status": "single"}, {"status": "again"}) == 1
            db.update("Account", 1, {"status": "after"})
        assert seen2["isolation"] == ["read committed", "read committed", "repeatable read", "read committed"]


def test_a_bulk_update_in_the_callers_transaction_locks_rows_at_the_callers_isolation(app, backend):
    pg_only(backend)
    with meanwhile(app, "UPDATE accounts", times=0) as seen:
        with app.transaction():
            assert app.bulk_update("Account", {"balance": {"$lt": 2}}, {"status": "t"}) == 2
        assert app.bulk_update("Account", {"balance": {"$gte": 4}}, {"status": "own"}) == 2
    assert seen["isolation"] == ["read committed", "repeatable read"]
    selects = [s for s in seen["sql"] if s.startswith("INSERT INTO dataflow_audit")]
    assert len(selects) == 2
    assert "FOR NO KEY UPDATE" in selects[0] and " FOR " not in selects[1]
    with meanwhile(app, "DELETE FROM accounts", times=0) as seen:
        with app.transaction():
            assert app.bulk_delete("Account", {"status": "t"}) == 2
    assert [s for s in seen["sql"] if s.startswith("INSERT INTO dataflow_audit")][0].rstrip().endswith(
        "FOR UPDATE OF accounts")
    assert len(trail(app, action="bulk_delete")) == 2


def test_a_bulk_delete_restarts_when_a_cascaded_child_changes_meanwhile(db, backend):
    pg_only(backend)

    @db.model
    class Parent:
        name: str

    @db.model
    class Child:
        parent_id: Annotated[int, Field(references="Parent", on_delete="cascade")]
        label: str

    db.enable_audit_log()
    db.bulk_create("Parent", [{"name": f"p{i}"} for i in range(3)])
    db.bulk_create("Child", [{"parent_id": p, "label": f"c{p}"} for p in (1, 2, 3)])
    with db.actor("ops"), meanwhile(db, "DELETE FROM parents",
                                    "UPDATE childs SET label = 'changed' WHERE parent_id = 1",
                                    "INSERT INTO childs (parent_id, label, created_at, updated_at) "
                                    "VALUES (2, 'new', now(), now())") as seen:
        assert db.bulk_delete("Parent", {"name": {"$in": ["p0", "p1"]}}) == 2
    assert seen["sent"] == 2  # the cascade met the changed child: the operation started over
    assert raw(db, "SELECT id FROM parents") == [(3,)]
    assert raw(db, "SELECT parent_id, label FROM childs") == [(3, "c3")]
    records = trail(db, action="bulk_delete")
    assert by_record(records) == {1: {"id": 1, "name": "p0"}, 2: {"id": 2, "name": "p1"}}
    assert all(r["after"] is None and r["actor"] == "ops" for r in records)


def test_a_retried_bulk_update_keeps_the_tenant_scope(db_url, backend):
    pg_only(backend)
    with DataFlow(db_url, multi_tenant=True, audit_log=True) as db:
        @db.model
        class Account:
            owner: str
            balance: int = 0

        for t in ("acme", "globex"):
            with db.tenant(t):
                db.bulk_create("Account", [{"owner": f"{t}{i}", "balance": i} for i in range(3)])
        with db.tenant("acme"), meanwhile(db, "UPDATE accounts",
                                          "UPDATE accounts SET balance = 2 WHERE owner = 'acme1'",
                                          "UPDATE accounts SET balance = 9 WHERE owner = 'globex1'") as seen:
            assert db.bulk_update("Account", {"balance": {"$gte": 1}}, {"balance": 100}) == 2
            with meanwhile(db, "DELETE FROM accounts", "UPDATE accounts SET owner = 'acme0x' WHERE owner = 'acme0'"):
                assert db.bulk_delete("Account", {"balance": {"$lt": 100}}) == 1
        assert seen["sent"] == 2
        assert raw(db, "SELECT owner, balance FROM accounts ORDER BY owner") == [
            ("acme1", 100), ("acme2", 100), ("globex0", 0), ("globex1", 9), ("globex2", 2)]
        with db.tenant("acme"):
            records = db.audit_log(limit=None)
        updates = [r for r in records if r["action"] == "bulk_update"]
        assert sorted(r["before"]["balance"] for r in updates) == [2, 2]
        deleted = [r for r in records if r["action"] == "bulk_delete"]
        assert [(r["before"]["owner"], r["tenant"]) for r in deleted] == [("acme0x", "acme")]
        with db.tenant("globex"):
            assert [r["action"] for r in db.audit_log(limit=None)] == ["bulk_create"] * 3


def test_a_versioned_bulk_update_restarted_by_a_concurrent_change(db, backend):
    pg_only(backend)

    @db.model
    class Item:
        sku: str
        qty: int = 0
        __dataflow__ = {"versioned": True}

    db.enable_audit_log()
    db.bulk_create("Item", [{"sku": f"s{i}", "qty": i} for i in range(3)])
    bump = "UPDATE items SET qty = 10, version = version + 1 WHERE sku = 's1'"
    with meanwhile(db, "UPDATE items", bump) as seen:
        assert db.bulk_update("Item", {"qty": {"$gte": 0}}, {"qty": 5}) == 3
    assert seen["sent"] == 2
    records = by_record(trail(db, action="bulk_update"))
    assert records[2] == {"qty": 10, "version": 2}  # the version it overwrote
    assert by_record(trail(db, action="bulk_update"), "after")[2] == {"qty": 5, "version": 3}
    # With a stated version, the restart sees the newer version and refuses.
    with meanwhile(db, "UPDATE items", bump.replace("qty = 10", "qty = 11")) as seen:
        with pytest.raises(ConflictError, match="not at version"):
            db.bulk_update("Item", {"sku": "s1"}, {"qty": 6, "version": 3})
    assert seen["sent"] == 1  # the restart is refused before its UPDATE
    assert raw(db, "SELECT sku, qty, version FROM items ORDER BY sku") == [("s0", 5, 2), ("s1", 11, 4),
                                                                           ("s2", 5, 2)]
    assert len(trail(db, action="bulk_update")) == 3


# ---------------------------------------------------------------- every backend
def test_soft_delete_bulk_delete_records_every_field_but_the_kept_timestamps(db, backend):
    @db.model
    class Doc:
        title: str
        __dataflow__ = {"soft_delete": True}

    db.enable_audit_log()
    db.bulk_create("Doc", [{"title": f"d{i}"} for i in range(3)])
    hooks = meanwhile(db, "UPDATE docs", "UPDATE docs SET title = 'd1x' WHERE id = 2") if backend == "postgresql" \
        else meanwhile(db, "no statement starts like this")
    with hooks:
        assert db.bulk_delete("Doc", {"id": {"$lte": 2}}) == 2
    records = trail(db, action="bulk_delete")
    assert by_record(records) == {1: {"id": 1, "title": "d0", "deleted_at": None},
                                  2: {"id": 2, "title": "d1x" if backend == "postgresql" else "d1", "deleted_at": None}}
    assert [d["title"] for d in db.list("Doc")] == ["d2"]


def test_timestamps_the_model_keeps_itself_are_recorded(db):
    """With timestamps=False, created_at/updated_at are the model's own data: DataFlow does not set them,
    so a change to them must be in the trail."""
    @db.model
    class Event:
        title: str
        created_at: datetime
        updated_at: datetime
        __dataflow__ = {"timestamps": False}

    @db.model
    class Kept:  # declared, but DataFlow keeps them (timestamps on): left out
        title: str
        updated_at: datetime

    db.enable_audit_log()
    t1, t2 = datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2021, 6, 1, tzinfo=timezone.utc)
    e = db.create("Event", title="a", created_at=t1, updated_at=t1)
    db.update("Event", e["id"], {"updated_at": t2})
    assert db.bulk_update("Event", {"title": "a"}, {"updated_at": t1, "title": "b"}) == 1
    bulk, update, create = trail(db, table="Event")
    assert create["after"] == {"id": e["id"], "title": "a", "created_at": t1.isoformat(), "updated_at": t1.isoformat()}
    assert (update["before"], update["after"]) == ({"updated_at": t1.isoformat()}, {"updated_at": t2.isoformat()})
    assert (bulk["before"], bulk["after"]) == ({"title": "a", "updated_at": t2.isoformat()},
                                               {"title": "b", "updated_at": t1.isoformat()})

    k = db.create("Kept", title="a", updated_at=t1)
    db.update("Kept", k["id"], {"title": "b"})
    update, create = trail(db, table="Kept")
    assert set(create["after"]) == {"id", "title"} and update["after"] == {"title": "b"}


@pytest.mark.parametrize("value", [1, 0, "true", None, [True]])
def test_audit_timestamps_must_be_a_bool(db, value):
    @db.model
    class Odd:
        title: str
        __dataflow__ = {"audit_timestamps": value}

    db.enable_audit_log()
    with pytest.raises(ModelError, match="audit_timestamps"):
        db.create("Odd", title="x")
    assert db.count("Odd") == 0


def test_audit_log_reads_newest_written_first_with_its_filters(app):
    t0 = datetime.now(timezone.utc)
    with app.actor("a1"):
        app.bulk_update("Account", {"balance": {"$lte": 1}}, {"status": "x"})
        app.update("Account", 1, {"status": "y"})
        app.bulk_delete("Account", {"id": 1})
    with app.actor("a2"):
        app.update("Account", 2, {"balance": 20})
    about1 = app.audit_log(table="Account", record_id=1)
    assert [(r["action"], (r["before"] or {}).get("status")) for r in about1] == [
        ("bulk_delete", "y"), ("update", "x"), ("bulk_update", "a"), ("bulk_create", None)]
    assert [r["id"] for r in about1] == sorted((r["id"] for r in about1), reverse=True)
    assert app.audit_log(table="accounts", record_id="1") == about1  # table name, key as text
    assert [r["action"] for r in app.audit_log(since=t0)] == ["update", "bulk_delete", "update", "bulk_update",
                                                              "bulk_update"]
    assert [r["record_id"] for r in app.audit_log(since=t0, limit=2)] == ["2", "1"]
    assert [r["action"] for r in app.audit_log(table="Account", actor="a1", action="bulk_update")] == [
        "bulk_update", "bulk_update"]
    assert app.audit_log(table="accounts", since=t0 + timedelta(hours=1)) == []
    assert app.audit_log(table="no_such_table") == [] and app.audit_log(record_id=999) == []
    everything = trail(app)
    assert [r["id"] for r in everything] == sorted((r["id"] for r in everything), reverse=True)


def test_anonymize_scrubs_the_records_of_audited_bulk_writes(db):
    @db.model
    class User:
        name: Annotated[str, Field(pii=True)]
        tier: str = "gold"
        note: Annotated[Optional[str], Field(pii=True)] = None

    db.enable_audit_log()
    db.bulk_create("User", [{"name": "Annabel Quist", "note": "n1"}, {"name": "Bart Zed", "note": "n2"}])
    db.bulk_update("User", {"name": {"$like": "Annabel%"}}, {"name": "Annabel Q", "note": "secret", "tier": "silver"})
    db.anonymize_user_data(1)
    text = " ".join(str(v) for row in raw(db, "SELECT old_values, new_values FROM dataflow_audit") for v in row)
    assert "Annabel" not in text
    about1 = trail(db, table="User", record_id=1)
    assert [r["action"] for r in about1] == ["anonymize_user_data", "bulk_update", "bulk_create"]
    assert about1[1]["before"] == {"name": "***", "note": "***", "tier": "gold"}
    assert about1[1]["after"] == {"name": "***", "note": "***", "tier": "silver"}
    assert about1[2]["after"] == {"id": 1, "name": "***", "tier": "gold", "note": "***"}
    (other,) = trail(db, table="User", record_id=2)
    assert other["after"]["name"] == "Bart Zed"  # another subject's records are left alone


@pytest.mark.parametrize("existing_schema_mode", [True, False])
def test_a_role_that_does_not_own_the_trail_keeps_writing_with_a_btree_time_index(db_url, backend,
                                                                                   existing_schema_mode):
    """A trail made by an earlier version (B-tree on ``at``), written by a role that may insert into it
    but does not own it (a separate schema role): the move to BRIN is skipped, audited writes go on."""
    pg_only(backend)
    import uuid

    def declare(db):
        @db.model
        class Account:
            owner: str

    with DataFlow(db_url, audit_log=True) as owner:  # the schema role makes tables, trail and trigger
        declare(owner)
        owner.create("Account", owner="o1")
    url = sa.make_url(db_url).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    role = f"df_app_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("DROP INDEX ix_dataflow_audit_at")  # as an earlier version made it
            conn.exec_driver_sql("CREATE INDEX ix_dataflow_audit_at ON dataflow_audit (at)")
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{url.database}" TO {role}')
            conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
            conn.exec_driver_sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
            conn.exec_driver_sql(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        app_url = url.set(username=role).render_as_string(hide_password=False)
        with DataFlow(app_url, audit_log=True, existing_schema_mode=existing_schema_mode) as db:
            declare(db)
            db.create("Account", owner="o2")
            assert db.bulk_update("Account", {"owner": {"$in": ["o1", "o2"]}}, {"owner": "x"}) == 2
            assert [r["action"] for r in db.audit_log(limit=None)] == ["bulk_update", "bulk_update", "create",
                                                                        "create"]
        assert raw(owner, "SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam "
                          "WHERE c.relname = 'ix_dataflow_audit_at'") == [("btree",)]
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        admin.dispose()
