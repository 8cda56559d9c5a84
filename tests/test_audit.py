"""Audit log: every kind of write leaves its records (right actor, values before/after) in the same
transaction; a refused or failed write leaves neither change nor record; the trail reads newest first,
masks and excludes declared fields, and on PostgreSQL refuses UPDATE/DELETE."""

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Annotated

import pytest
import sqlalchemy as sa

from dataflow import DataFlow, Field
from dataflow.errors import ConflictError, DuplicateKeyError, ModelError, NotFoundError, ValidationError


def raw(db, sql, params=None):
    """Rows as plain SQL sees them, on a connection of our own."""
    engine = sa.create_engine(db.engine.url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql, params or ())]
    finally:
        engine.dispose()


@pytest.fixture
def app(db):
    @db.model
    class User:
        name: str
        email: Annotated[str, Field(unique=True)]
        status: str = "active"
        password_hash: str = ""
        notes: str = ""
        __dataflow__ = {"audit_mask": ["password_hash"], "audit_exclude": ["notes"]}

    @db.model
    class Item:
        sku: Annotated[str, Field(unique=True)]
        qty: int = 0
        __dataflow__ = {"versioned": True}

    db.enable_audit_log()
    return db


def trail(db, **kw):
    return db.audit_log(limit=None, **kw)


def test_every_kind_of_write_is_recorded_with_its_actor(app):
    with app.actor("admin"):
        ann = app.create("User", name="Ann", email="ann@x", password_hash="h1")
        app.update("users", {"id": ann["id"]}, {"status": "inactive"})
        created = app.upsert("User", {"email": "bob@x"}, {"name": "Bob"})["record"]
        app.upsert("User", {"email": "bob@x"}, {"name": "Bobby"})
        app.bulk_create("Item", [{"sku": f"s{i}", "qty": i} for i in range(5)])
        assert app.bulk_update("Item", {"qty": {"$gte": 3}}, {"qty": 0}) == 2
        app.bulk_upsert("Item", [{"sku": "s0", "qty": 9}, {"sku": "s9", "qty": 1}], conflict_on=["sku"])
    with app.actor("ops"):
        assert app.bulk_delete("Item", {"qty": 0}) == 2
    app.delete("User", created["id"])  # no actor set: the system

    records = trail(app)
    assert [r["time"] for r in records] == sorted((r["time"] for r in records), reverse=True)
    by_action = {}
    for r in records:
        by_action.setdefault(r["action"], []).append(r)
    assert {a: len(rs) for a, rs in by_action.items()} == {
        "create": 1, "update": 1, "upsert": 2, "bulk_create": 5, "bulk_update": 2, "bulk_upsert": 2,
        "bulk_delete": 2, "delete": 1}
    assert {r["actor"] for a in ("create", "update", "upsert", "bulk_create", "bulk_update", "bulk_upsert")
            for r in by_action[a]} == {"admin"}
    assert {r["actor"] for r in by_action["bulk_delete"]} == {"ops"}
    assert by_action["delete"][0]["actor"] == "system"

    create = by_action["create"][0]
    assert (create["table"], create["record_id"], create["before"]) == ("users", str(ann["id"]), None)
    assert create["after"]["name"] == "Ann" and create["after"]["email"] == "ann@x"
    assert create["after"]["password_hash"] == "***" and "notes" not in create["after"]  # masked, excluded
    assert "created_at" not in create["after"] and "updated_at" not in create["after"]

    update = by_action["update"][0]
    assert (update["before"]["status"], update["after"]["status"]) == ("active", "inactive")
    assert set(update["before"]) == {"status"}  # the fields the write set, but the timestamps DataFlow keeps

    upserts = sorted(by_action["upsert"], key=lambda r: r["id"])
    assert upserts[0]["before"] is None and upserts[0]["after"]["name"] == "Bob"
    assert (upserts[1]["before"]["name"], upserts[1]["after"]["name"]) == ("Bob", "Bobby")

    bulk = {r["after"]["sku"]: r for r in by_action["bulk_create"]}
    assert sorted(bulk) == ["s0", "s1", "s2", "s3", "s4"]
    changed = sorted((r["before"]["qty"], r["after"]["qty"], r["after"]["version"]) for r in by_action["bulk_update"])
    assert changed == [(3, 0, 2), (4, 0, 2)]  # the version bump evaluated by the database too
    bu = sorted(by_action["bulk_upsert"], key=lambda r: r["id"])
    assert {(r["before"] or {}).get("qty") for r in bu} == {0, None}
    assert {r["after"]["qty"] for r in bu} == {9, 1}
    assert sorted(r["before"]["sku"] for r in by_action["bulk_delete"]) == ["s3", "s4"]
    assert {r["record_id"] for r in by_action["bulk_delete"]} == {bulk["s3"]["record_id"], bulk["s4"]["record_id"]}
    assert all(r["before"]["sku"] for r in by_action["bulk_delete"])
    assert app.bulk_create("Item", [{"sku": "z"}]) == {"processed": 1, "inserted": 1, "success": True}  # no ids added


def test_nodes_are_audited_with_the_callers_actor(app):
    from kailash.runtime.local import LocalRuntime
    from kailash.workflow.builder import WorkflowBuilder

    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "Nia", "email": "nia@x"})
    with app.actor("api"), LocalRuntime() as rt:
        results, _ = rt.execute(wf.build())
    record = trail(app, action="create")[0]
    assert (record["actor"], record["record_id"]) == ("api", str(results["c"]["id"]))


@pytest.mark.parametrize("kind", ["duplicate", "validation", "bulk duplicate", "version conflict", "missing",
                                  "refused bulk delete", "bulk upsert conflict"])
def test_a_write_that_fails_leaves_neither_change_nor_record(app, kind):
    app.create("User", name="Ann", email="ann@x")
    app.create("Item", sku="a", qty=1)
    rows_before = (raw(app, "SELECT * FROM users ORDER BY id"), raw(app, "SELECT * FROM items ORDER BY id"))
    count = len(trail(app))
    errors = {"duplicate": DuplicateKeyError, "validation": ValidationError, "bulk duplicate": DuplicateKeyError,
              "version conflict": ConflictError, "missing": NotFoundError, "refused bulk delete": ValidationError,
              "bulk upsert conflict": ConflictError}
    with app.actor("admin"), pytest.raises(errors[kind]):
        if kind == "duplicate":
            app.create("User", name="Other", email="ann@x")
        elif kind == "validation":
            app.update("User", {"email": "ann@x"}, {"status": 12})
        elif kind == "bulk duplicate":
            app.bulk_create("User", [{"name": "C", "email": "c@x"}, {"name": "D", "email": "ann@x"}])
        elif kind == "version conflict":
            app.update("Item", {"sku": "a"}, {"qty": 5, "version": 7})
        elif kind == "missing":
            app.update("User", {"email": "nobody@x"}, {"status": "x"})
        elif kind == "refused bulk delete":
            app.bulk_delete("User", {})
        else:  # the first chunk is written (and audited), the second is refused: all rolled back
            app.bulk_upsert("Item", [{"sku": "a", "qty": 5}, {"sku": "new", "qty": 1},
                                     {"sku": "a", "qty": 6, "version": 9}], conflict_on=["sku"], batch_size=1)
    assert (raw(app, "SELECT * FROM users ORDER BY id"), raw(app, "SELECT * FROM items ORDER BY id")) == rows_before
    assert len(trail(app)) == count


def test_audit_log_filters_and_order(app):
    t0 = datetime.now(timezone.utc)
    with app.actor("a1"):
        u = app.create("User", name="U", email="u@x")
    with app.actor("a2"):
        for s in ("s1", "s2", "s3"):
            app.update("User", u["id"], {"status": s})
        app.create("Item", sku="k")
    assert [r["after"]["status"] for r in app.audit_log(table="User", record_id=u["id"], action="update")] == [
        "s3", "s2", "s1"]
    assert [r["action"] for r in app.audit_log(actor="a1")] == ["create"]
    assert len(app.audit_log(table="items")) == 1 and app.audit_log(table="items")[0]["model"] == "Item"
    assert len(app.audit_log(limit=2)) == 2
    assert len(app.audit_log(since=t0)) == 5
    assert app.audit_log(since=datetime.now(timezone.utc) + timedelta(hours=1)) == []
    with pytest.raises(ValidationError, match="limit"):
        app.audit_log(limit=-1)
    with pytest.raises(ValidationError, match="since"):
        app.audit_log(since="yesterday-ish")


def test_bulk_update_writes_one_record_per_row(app):
    app.bulk_create("Item", [{"sku": f"b{i}", "qty": i % 3} for i in range(300)])
    n = app.bulk_update("Item", {"qty": 1}, {"qty": 7})
    records = trail(app, action="bulk_update")
    assert n == 100 == len(records) == len({r["record_id"] for r in records})
    assert {(r["before"]["qty"], r["after"]["qty"]) for r in records} == {(1, 7)}


def test_the_audit_table_is_made_by_migration_with_its_indexes(app):
    app.create("User", name="U", email="u@x")
    insp = sa.inspect(app.engine)
    assert "dataflow_audit" in insp.get_table_names()
    indexed = {tuple(i["column_names"]) for i in insp.get_indexes("dataflow_audit")}
    assert {("table_name", "record_id"), ("at",)} <= indexed
    assert app.schema_diff().is_empty


def test_on_postgresql_the_time_index_is_brin_also_in_a_trail_made_with_a_btree(app, backend, db_url):
    """Every record of a statement has the same time: a B-tree on it keeps deduplicating its last page."""
    if backend != "postgresql":
        pytest.skip("BRIN is PostgreSQL's")
    method = "SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam WHERE c.relname = 'ix_dataflow_audit_at'"
    app.create("User", name="U", email="u@x")
    assert raw(app, method) == [("brin",)]
    engine = sa.create_engine(app.engine.url, poolclass=sa.NullPool)
    with engine.begin() as conn:  # as an earlier version made it
        conn.exec_driver_sql("DROP INDEX ix_dataflow_audit_at")
        conn.exec_driver_sql("CREATE INDEX ix_dataflow_audit_at ON dataflow_audit (at)")
    engine.dispose()
    with DataFlow(db_url, audit_log=True) as again:
        again.audit_log(limit=1)
        assert raw(app, method) == [("brin",)]
        assert again.schema_diff().is_empty


def test_audit_log_setting_and_bad_declarations(db_url, monkeypatch):
    monkeypatch.setenv("DATAFLOW_AUDIT_LOG", "1")
    with DataFlow(db_url) as db:
        assert db.config.audit_log and db.executor.get("audit") is not None
    monkeypatch.delenv("DATAFLOW_AUDIT_LOG")
    with DataFlow(db_url, audit_log=True) as db:
        assert db.executor.get("audit") is not None

        @db.model
        class Thing:
            name: str
            __dataflow__ = {"audit_mask": ["nope"]}

        with pytest.raises(ModelError, match="audit_mask"):
            db.create("Thing", name="x")
    with DataFlow(db_url) as db, pytest.raises(ValidationError, match="not enabled"):
        db.audit_log()


def test_the_trail_is_append_only(app, backend):
    app.create("User", name="U", email="u@x")
    for write in (lambda: app.update("dataflow_audit", 1, {"actor": "forged"}),
                  lambda: app.delete("dataflow_audit", 1),
                  lambda: app.bulk_delete("dataflow_audit", {}, confirm_all=True)):
        with pytest.raises(ModelError):  # not a model: the operations layer never writes it
            write()
    if backend != "postgresql":
        return
    engine = sa.create_engine(app.engine.url, poolclass=sa.NullPool)
    try:
        for sql in ("UPDATE dataflow_audit SET actor = 'forged'", "DELETE FROM dataflow_audit",
                    "TRUNCATE dataflow_audit"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                with engine.begin() as conn:
                    conn.exec_driver_sql(sql)
    finally:
        engine.dispose()
    assert [r["actor"] for r in trail(app)] == ["system"]


def test_an_instance_without_the_audit_log_never_drops_the_trail(db_url):
    with DataFlow(db_url, audit_log=True) as db:
        @db.model
        class User:
            name: str

        db.create("User", name="a")
    with DataFlow(db_url) as db:
        @db.model
        class User:  # noqa: F811 - the same model, declared by a second program
            name: str

        assert db.schema_diff().is_empty
        db.migrate(allow_destructive=True)
        assert raw(db, "SELECT count(*) FROM dataflow_audit") == [(1,)]
        assert len({i["name"] for i in sa.inspect(db.engine).get_indexes("dataflow_audit")}) == 2


def test_bulk_create_that_updates_or_skips_is_audited_for_what_it_changed(app):
    app.bulk_create("Item", [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 1}])
    out = app.bulk_create("Item", [{"sku": "b", "qty": 5}, {"sku": "c", "qty": 5}], on_conflict="skip")
    assert out["inserted"] == 1 and "ids" not in out
    assert sorted(r["after"]["sku"] for r in trail(app, action="bulk_create")) == ["a", "b", "c"]
    app.bulk_create("Item", [{"sku": "a", "qty": 9}], on_conflict="update", conflict_on=["sku"])
    latest = trail(app, action="bulk_create")[0]
    assert (latest["after"]["sku"], latest["after"]["qty"]) == ("a", 9)
    app.bulk_create("Item", [{"id": 1, "sku": "a"}, {"id": 50, "sku": "z"}], on_conflict="skip")  # keys given
    assert trail(app, action="bulk_create")[0]["after"]["sku"] == "z"
    assert len(trail(app, action="bulk_create")) == 5


def test_records_carry_the_tenant_and_a_tenant_reads_its_own_trail(app):
    from dataflow.operations.context import scope

    with scope(tenant="acme", request_id="req-1"):
        app.create("User", name="A", email="a@x")
    with scope(tenant="globex"):
        app.create("User", name="G", email="g@x")
        assert [r["tenant"] for r in app.audit_log()] == ["globex"]
    records = app.audit_log()
    assert [(r["tenant"], r["request_id"]) for r in records] == [("globex", None), ("acme", "req-1")]


def test_bulk_update_records_each_rows_own_before_and_the_same_after(app):
    from dataflow.operations.context import scope

    app.bulk_create("User", [{"name": f"u{i}", "email": f"u{i}@x", "status": f"st{i % 4}", "password_hash": f"h{i}",
                              "notes": f"n{i}"} for i in range(40)])
    stored = dict(raw(app, "SELECT id, status FROM users"))
    with scope(actor="ops", tenant="acme", request_id="r-7"):
        n = app.bulk_update("User", {"status": {"$in": ["st1", "st2"]}},
                            {"status": "moved", "password_hash": "h", "notes": "n"})
    records = trail(app, action="bulk_update")
    assert n == 20 == len(records) == len({r["record_id"] for r in records})
    assert {int(r["record_id"]) for r in records} == {k for k, s in stored.items() if s in ("st1", "st2")}
    for r in records:
        assert r["before"]["status"] == stored[int(r["record_id"])]
        assert (r["after"]["status"], r["before"]["password_hash"], r["after"]["password_hash"]) == ("moved", "***", "***")
        assert set(r["before"]) == set(r["after"]) == {"status", "password_hash"}  # notes: excluded
        assert (r["actor"], r["tenant"], r["request_id"]) == ("ops", "acme", "r-7")


def test_the_timestamps_dataflow_keeps_are_recorded_only_when_asked(db):
    @db.model
    class Ticket:
        title: str
        __dataflow__ = {"audit_timestamps": True}

    @db.model
    class Plain:
        title: str

    db.enable_audit_log()
    t = db.create("Ticket", title="a")
    db.bulk_create("Ticket", [{"title": "b"}])
    assert db.bulk_update("Ticket", {"title": {"$in": ["a", "b"]}}, {"title": "c"}) == 2
    changed = db.read("Ticket", t["id"])
    records = db.audit_log(table="Ticket", action="bulk_update", limit=None)
    assert all(set(r["before"]) == set(r["after"]) == {"title", "updated_at"} for r in records)
    assert {r["after"]["updated_at"] for r in records} == {changed["updated_at"].isoformat()}
    assert t["updated_at"].isoformat() in {r["before"]["updated_at"] for r in records}
    created = db.audit_log(table="Ticket", action="create")[0]["after"]
    assert created["created_at"] == t["created_at"].isoformat()

    p = db.create("Plain", title="a")
    db.update("Plain", p["id"], {"title": "b"})
    update, create = db.audit_log(table="Plain")
    assert (update["before"], update["after"]) == ({"title": "a"}, {"title": "b"})
    assert set(create["after"]) == {"id", "title"}

    @db.model
    class Odd:
        title: str
        __dataflow__ = {"audit_timestamps": "yes"}

    with pytest.raises(ModelError, match="audit_timestamps"):
        db.create("Odd", title="x")


def test_a_bulk_update_that_fails_leaves_neither_change_nor_record(app):
    app.bulk_create("User", [{"name": f"u{i}", "email": f"u{i}@x"} for i in range(3)])
    rows = raw(app, "SELECT * FROM users ORDER BY id")
    count = len(trail(app))
    with pytest.raises(DuplicateKeyError):  # the records are written first, then the UPDATE fails
        app.bulk_update("User", {"name": {"$in": ["u0", "u1"]}}, {"email": "same@x"})
    assert raw(app, "SELECT * FROM users ORDER BY id") == rows
    assert len(trail(app)) == count


def test_audited_bulk_update_in_a_tenant_records_only_that_tenants_rows(db_url):
    with DataFlow(db_url, multi_tenant=True, audit_log=True) as db:
        @db.model
        class Account:
            owner: str
            balance: int = 0

        for t in ("acme", "globex"):
            with db.tenant(t):
                db.bulk_create("Account", [{"owner": f"{t}{i}", "balance": i} for i in range(5)])
        with db.tenant("acme"), db.actor("ops"):
            assert db.bulk_update("Account", {"balance": {"$gte": 2}}, {"balance": 100}) == 3
        records = db.audit_log(action="bulk_update", limit=None)
        assert len(records) == 3 and {r["tenant"] for r in records} == {"acme"}
        assert sorted(r["before"]["balance"] for r in records) == [2, 3, 4]
        acme = dict(raw(db, "SELECT id, balance FROM accounts WHERE tenant_id = 'acme'"))
        assert {int(r["record_id"]) for r in records} == {k for k, v in acme.items() if v == 100}
        assert sorted(b for _, b in raw(db, "SELECT id, balance FROM accounts WHERE tenant_id = 'globex'")) == [
            0, 1, 2, 3, 4]


def test_a_row_changed_while_a_bulk_update_runs_is_recorded_with_its_newer_value(app, backend):
    """PostgreSQL: the records and the UPDATE read one snapshot; a row another session changes after it
    fails the UPDATE (serialization failure), and the operation starts over with the newer value."""
    if backend != "postgresql":
        pytest.skip("REPEATABLE READ snapshots are PostgreSQL's")
    users = [app.create("User", name=f"u{i}", email=f"u{i}@x", status="a") for i in range(3)]
    target = users[1]["id"]
    engine = sa.create_engine(app.engine.url, poolclass=sa.NullPool)
    result: dict = {}
    try:
        with engine.connect() as other:
            other.exec_driver_sql("BEGIN")
            other.exec_driver_sql("UPDATE users SET status = 'b' WHERE id = %(id)s", {"id": target})

            def run():
                with app.actor("ops"):
                    result["n"] = app.bulk_update("User", {"status": {"$in": ["a", "b"]}}, {"status": "c"})

            worker = threading.Thread(target=run)
            worker.start()
            for _ in range(200):  # until the bulk UPDATE waits for the other session's row lock
                with engine.connect() as look:  # not `other`: its transaction would keep one view of the stats
                    waiting = look.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND starts_with(query, 'UPDATE users')").scalar()
                if waiting:
                    break
                time.sleep(0.02)
            assert waiting, "the bulk update never waited for the row"
            other.exec_driver_sql("COMMIT")
            worker.join(30)
    finally:
        engine.dispose()
    assert result["n"] == 3
    assert raw(app, "SELECT DISTINCT status FROM users") == [("c",)]
    records = trail(app, action="bulk_update")
    assert len(records) == 3
    before = {int(r["record_id"]): r["before"]["status"] for r in records}
    assert before == {users[0]["id"]: "a", target: "b", users[2]["id"]: "a"}  # the value it overwrote


def test_a_bulk_updates_lock_lets_a_row_referencing_the_records_in(app, backend):
    """PostgreSQL: the records' rows are locked FOR NO KEY UPDATE (as the UPDATE itself does), so a
    concurrent INSERT that references one of them through a foreign key is not held up."""
    if backend != "postgresql":
        pytest.skip("row lock strengths are PostgreSQL's")

    @app.model
    class Note:
        user_id: Annotated[int, Field(references="User")]
        text: str

    user = app.create("User", name="U", email="u@x")
    engine = sa.create_engine(app.engine.url, poolclass=sa.NullPool)
    try:
        with app.transaction():
            assert app.bulk_update("User", {"id": user["id"]}, {"status": "locked"}) == 1
            with engine.begin() as conn:  # another session; a FOR UPDATE lock would make it wait
                conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
                conn.exec_driver_sql("INSERT INTO notes (user_id, text, created_at, updated_at) "
                                     "VALUES (%(u)s, 'hi', now(), now())", {"u": user["id"]})
    finally:
        engine.dispose()
    assert [n["text"] for n in app.list("Note")] == ["hi"]
