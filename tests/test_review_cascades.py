"""Review of the audit trail's cascade records, the tenancy guards under retries and bypass, and the
translation of concurrency failures: hostile cases, on every database."""

from __future__ import annotations

from typing import Annotated, Optional

import pytest

from dataflow import DataFlow, Field
from dataflow.errors import ConflictError, DuplicateKeyError, TenantError, TransactionError


def cascaded(db, **query):
    return sorted((r["action"], r["table"], r["record_id"]) for r in db.audit_log(limit=None, **query)
                  if r["action"].startswith("cascade_"))


# ---------------------------------------------------------------- chains, diamonds, cycles
@pytest.fixture
def shop(db):
    @db.model
    class Customer:
        name: str

    @db.model
    class Order:
        ref: str
        customer_id: Annotated[int, Field(references="Customer", on_delete="cascade")]

    @db.model
    class Line:
        sku: str
        order_id: Annotated[int, Field(references="Order", on_delete="cascade")]
        # A diamond: a line is reached from its customer directly and through its order.
        customer_id: Annotated[Optional[int], Field(references="Customer", on_delete="cascade")] = None

    @db.model
    class Note:
        text: str
        # SET NULL under a cascaded child (a note outlives its line).
        line_id: Annotated[Optional[int], Field(references="Line", on_delete="set_null")] = None
        secret: str = ""
        __dataflow__ = {"audit_exclude": ["secret"]}

    db.enable_audit_log()
    return db


def test_a_set_null_child_of_a_cascaded_child_is_recorded(shop):
    db = shop
    c = db.create("Customer", name="c")
    o = db.create("Order", ref="o", customer_id=c["id"])
    line = db.create("Line", sku="s", order_id=o["id"])
    n = db.create("Note", text="t", line_id=line["id"], secret="s3cr3t")
    db.delete("Customer", c["id"])
    assert db.read("Note", n["id"])["line_id"] is None
    assert cascaded(db) == sorted([("cascade_delete", "orders", str(o["id"])),
                                   ("cascade_delete", "lines", str(line["id"])),
                                   ("cascade_set_null", "notes", str(n["id"]))])
    rec = db.audit_log(action="cascade_set_null")[0]
    assert (rec["before"], rec["after"]) == ({"line_id": line["id"]}, {"line_id": None})


def test_a_row_reached_by_two_paths(shop):
    db = shop
    c = db.create("Customer", name="c")
    o = db.create("Order", ref="o", customer_id=c["id"])
    line = db.create("Line", sku="s", order_id=o["id"], customer_id=c["id"])
    db.delete("Customer", c["id"])
    assert db.count("Line") == 0
    lines = [r for r in db.audit_log(table="Line", limit=None)]
    assert [r["action"] for r in lines].count("cascade_delete") == 1, [r["record_id"] for r in lines]
    assert lines[0]["record_id"] == str(line["id"])


def test_a_bulk_delete_matching_nothing_records_nothing(shop):
    db = shop
    c = db.create("Customer", name="c")
    db.create("Order", ref="o", customer_id=c["id"])
    before = len(db.audit_log(limit=None))
    assert db.bulk_delete("Customer", {"name": "nobody"}) == 0
    assert len(db.audit_log(limit=None)) == before and db.count("Order") == 1


def test_cascade_records_roll_back_with_the_callers_transaction(shop):
    db = shop
    c = db.create("Customer", name="c")
    db.create("Order", ref="o", customer_id=c["id"])
    with pytest.raises(RuntimeError):
        with db.transaction():
            assert db.bulk_delete("Customer", {"name": "c"}) == 1
            assert len(db.audit_log(action="cascade_delete")) in (0, 1)  # another connection may not see it
            raise RuntimeError("abort")
    assert db.count("Order") == 1 and db.count("Customer") == 1
    assert db.audit_log(action="cascade_delete") == [] and db.audit_log(action="bulk_delete") == []


def test_excluded_field_of_a_cascaded_child_stays_out(shop):
    db = shop
    c = db.create("Customer", name="c")
    o = db.create("Order", ref="o", customer_id=c["id"])
    line = db.create("Line", sku="s", order_id=o["id"])
    db.create("Note", text="t", line_id=line["id"], secret="s3cr3t")
    db.bulk_delete("Line", {"sku": "s"})
    for r in db.audit_log(limit=None):
        assert "s3cr3t" not in repr(r)


def test_a_row_that_refers_to_itself_can_be_deleted(db):
    @db.model
    class Node:
        name: str
        parent_id: Annotated[Optional[int], Field(references="Node", on_delete="cascade")] = None

    db.enable_audit_log()
    root = db.create("Node", name="root")
    db.update("Node", root["id"], {"parent_id": root["id"]})  # a root that is its own parent
    kid = db.create("Node", name="kid", parent_id=root["id"])
    assert db.delete("Node", root["id"]) == root["id"]
    assert db.count("Node") == 0
    assert cascaded(db) == [("cascade_delete", "nodes", str(kid["id"]))]


def test_a_cycle_of_two_rows_can_be_deleted(db):
    @db.model
    class Peer:
        name: str
        other_id: Annotated[Optional[int], Field(references="Peer", on_delete="cascade")] = None

    db.enable_audit_log()
    a = db.create("Peer", name="a")
    b = db.create("Peer", name="b", other_id=a["id"])
    db.update("Peer", a["id"], {"other_id": b["id"]})
    assert db.delete("Peer", a["id"]) == a["id"]
    assert db.count("Peer") == 0
    assert cascaded(db) == [("cascade_delete", "peers", str(b["id"]))]


# ---------------------------------------------------------------- tenancy
@pytest.fixture
def tenants(db_url):
    db = DataFlow(db_url, multi_tenant=True, audit_log=True)

    @db.model
    class Plan:
        name: str
        __dataflow__ = {"tenant_scoped": False}

    @db.model
    class Account:
        name: str
        email: str = ""
        plan_id: Annotated[int, Field(references="Plan", on_delete="cascade")]
        __dataflow__ = {"audit_mask": ["email"]}

    yield db
    db.close()


def test_a_tenant_never_reads_another_tenants_cascaded_rows(tenants):
    db = tenants
    plan = db.create("Plan", name="basic")
    with db.tenant("globex"):
        g = db.create("Account", name="globex-secret-name", email="g@x", plan_id=plan["id"])
    with db.tenant("acme"):
        db.create("Account", name="acme-a", plan_id=plan["id"])
        with pytest.raises(TenantError, match="records of other tenants refer to it"):
            db.delete("Plan", plan["id"])  # a tenant may not reach into other tenants' rows
    with db.tenant(None, bypass=True):
        db.delete("Plan", plan["id"])  # a shared record: the database cascades into every tenant
    with db.tenant("acme"):
        seen = db.audit_log(limit=None)
    assert "globex-secret-name" not in repr(seen)
    with db.tenant("globex"):
        mine = db.audit_log(action="cascade_delete")
    assert [(r["record_id"], r["before"]["name"], r["before"]["email"]) for r in mine] == \
        [(str(g["id"]), "globex-secret-name", "***")]


def test_gdpr_anonymize_scrubs_cascade_set_null_records_of_rows_still_owned(db):
    @db.model
    class User:
        name: str
        email: Annotated[str, Field(pii=True)]

    @db.model
    class Team:
        name: str

    @db.model
    class Member:
        nick: Annotated[str, Field(pii=True)]
        user_id: Annotated[int, Field(references="User", on_delete="cascade")]
        team_id: Annotated[Optional[int], Field(references="Team", on_delete="set_null")] = None

    db.enable_audit_log()
    u = db.create("User", name="u", email="u@x")
    team = db.create("Team", name="t")
    m = db.create("Member", nick="nick-secret", user_id=u["id"], team_id=team["id"])
    db.delete("Team", team["id"])  # the member stays (team_id nulled), still owned by the user
    db.anonymize_user_data(u["id"])
    about = db.audit_log(table="Member", record_id=m["id"], limit=None)
    assert {r["action"] for r in about} == {"create", "cascade_set_null"}
    assert "nick-secret" not in repr(about)


def test_a_child_declared_on_another_instance_is_not_followed(db, db_url):
    """Known gap (documented, not fixed): the walk follows the declaring instance's metadata only."""
    @db.model
    class Folder:
        name: str

    db.enable_audit_log()
    db.create("Folder", name="f")
    other = DataFlow(db_url, node_prefix="Other")
    try:
        @other.model
        class Folder:  # noqa: F811  the same table, declared again on the second instance
            name: str

        @other.model
        class Doc:
            title: str
            folder_id: Annotated[int, Field(references="Folder", on_delete="cascade")]

        other.create("Doc", title="d", folder_id=1)
        db.delete("Folder", 1)
        assert other.count("Doc") == 0
        assert db.audit_log(action="cascade_delete") == []  # the database deleted the doc; no record
    finally:
        other.close()


# ---------------------------------------------------------------- concurrency errors
def test_a_unique_violation_stays_a_duplicate_key_error(db):
    @db.model
    class Tag:
        code: Annotated[str, Field(unique=True)]

    db.create("Tag", code="a")
    with pytest.raises(DuplicateKeyError):
        db.create("Tag", code="a")
    with pytest.raises(DuplicateKeyError), db.transaction():
        db.create("Tag", code="a")


def test_a_real_deadlock_in_callers_transactions_is_a_conflict_and_leaves_nothing(db, backend):
    if backend == "sqlite":
        pytest.skip("SQLite: one writer at a time, no deadlocks")
    import threading

    @db.model
    class Slot:
        label: str
        n: int = 0

    a, b = db.create("Slot", label="a"), db.create("Slot", label="b")
    db.create("Slot", label="kept")
    barrier = threading.Barrier(2, timeout=20)
    outcome: dict = {}

    def work(first, second, name):
        try:
            with db.transaction():
                db.create("Slot", label=f"new-{name}")
                db.update("Slot", first["id"], {"n": 1})
                barrier.wait()
                db.update("Slot", second["id"], {"n": 2})
            outcome[name] = "committed"
        except Exception as exc:  # noqa: BLE001  the outcome is checked below
            outcome[name] = exc

    threads = [threading.Thread(target=work, args=(a, b, "x")), threading.Thread(target=work, args=(b, a, "y"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    failed = [e for e in outcome.values() if e != "committed"]
    assert len(failed) == 1 and isinstance(failed[0], ConflictError), outcome
    assert failed[0].status == 409 and "run it again" in failed[0].message and "UPDATE" not in failed[0].message
    loser = next(k for k, v in outcome.items() if v != "committed")
    assert db.count("Slot", {"label": f"new-{loser}"}) == 0
    assert db.count("Slot", {"label": {"$ne": f"new-{loser}"}}) == 4


def test_a_lock_wait_timeout_caught_inside_a_transaction_still_dooms_it(db, backend, db_url):
    """MySQL's lock wait timeout undoes only the statement; caught inside db.transaction(), the block must
    not commit what ran before it (nor is it retried: the executor never retries in a caller's block)."""
    if backend != "mysql":
        pytest.skip("MySQL's 1205 (PostgreSQL's lock_timeout is 55P03, see the review notes)")
    import sqlalchemy as sa

    @db.model
    class Box:
        label: str

    box = db.create("Box", label="locked")
    holder = sa.create_engine(db.engine.url, poolclass=sa.pool.NullPool)
    try:
        with holder.connect() as h:
            h.exec_driver_sql("BEGIN")
            h.exec_driver_sql("SELECT id FROM boxes WHERE id = %s FOR UPDATE", (box["id"],))
            with pytest.raises(TransactionError, match="rolled back"):
                with db.transaction() as conn:
                    conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
                    db.create("Box", label="before")
                    with pytest.raises(ConflictError, match="run it again"):
                        db.update("Box", box["id"], {"label": "changed"})
                    db.create("Box", label="after")
            h.exec_driver_sql("ROLLBACK")
    finally:
        holder.dispose()
    assert sorted(r["label"] for r in db.list("Box")) == ["locked"]
