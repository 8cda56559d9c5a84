"""Issue 7's acceptance checks for the one execution path (a hostile reviewer's reading).

* a recording policy sees every operation kind through every door (direct API, Kailash nodes, db.query,
  QueryBuilder params, aggregate, bulk, relation include, upsert) with the context of the caller,
  across threads and asyncio tasks;
* a policy that adds a WHERE condition narrows every one of them (read by id and the bulk paths
  included), checked on the rows as plain SQL reads them; the statement cache never serves one
  scope's statement for another;
* ``echo=True`` and ``before_cursor_execute`` listeners see the statements of every path.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from typing import Annotated, Optional

import pytest
import sqlalchemy as sa
from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow, Field, NotFoundError
from dataflow.errors import DataFlowError, DuplicateKeyError, ValidationError
from dataflow.operations.call import Condition
from dataflow.operations.context import current, scope
from dataflow.operations.policy import Policy


# ---------------------------------------------------------------- models and helpers
def declare(db):
    @db.model
    class Team:
        name: str
        owner: str

    @db.model
    class Item:
        name: str
        email: Annotated[str, Field(unique=True)]
        owner: str
        qty: int = 0
        team_id: Annotated[Optional[int], Field(references="Team", on_delete="set_null")] = None

    return Team, Item


def seed(db):
    """Teams 1 (alice), 2 (bob); items 1 a1 (alice, team 2), 2 a2 (alice, team 1), 3 b1 (bob, team 1),
    4 b2 (bob, team 2)."""
    declare(db)
    db.create("Team", name="red", owner="alice")
    db.create("Team", name="blue", owner="bob")
    db.create("Item", name="a1", email="a1@x", owner="alice", qty=1, team_id=2)
    db.create("Item", name="a2", email="a2@x", owner="alice", qty=2, team_id=1)
    db.create("Item", name="b1", email="b1@x", owner="bob", qty=3, team_id=1)
    db.create("Item", name="b2", email="b2@x", owner="bob", qty=4, team_id=2)
    return db


def rows(db, table="items", columns="id, name, owner, qty"):
    """Rows as plain SQL reads them (no policy in the way), by id."""
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT {columns} FROM {table} ORDER BY id")]


SEEDED = [(1, "a1", "alice", 1), (2, "a2", "alice", 2), (3, "b1", "bob", 3), (4, "b2", "bob", 4)]


class Recorder(Policy):
    """Notes every hook call with the call's action, model and context."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[tuple] = []
        self._lock = threading.Lock()

    def _note(self, hook, call):
        parent = call.parent.action if call.parent is not None else None
        with self._lock:
            self.seen.append((hook, call.action, call.model, call.ctx.actor, call.ctx.request_id, parent))

    def plan(self, call):
        self._note("plan", call)

    def after_commit(self, call, result, elapsed):
        self._note("after_commit", call)

    def failed(self, call, error, elapsed):
        self._note("failed", call)

    def actions(self, hook="plan"):
        return [(s[1], s[2]) for s in self.seen if s[0] == hook]

    def clear(self):
        self.seen.clear()


class OwnerScope(Policy):
    """Scopes every scoped call to the actor's rows (``owner`` = actor) with ``call.where``."""

    name = "owner_scope"

    def plan(self, call):
        if call.scoped and call.ctx.actor is not None:
            call.where({"owner": call.ctx.actor})


class OwnerCondition(Policy):
    """The same with a prebuilt clause and a bound parameter."""

    name = "owner_condition"

    def plan(self, call):
        if call.scoped and call.ctx.actor is not None:
            call.add(Condition(key=("owner",), build=lambda t: t.c.owner == sa.bindparam("df_owner"),
                               params={"df_owner": call.ctx.actor}))


def run_nodes(*nodes):
    wf = WorkflowBuilder()
    for node_type, node_id, params in nodes:
        wf.add_node(node_type, node_id, params)
    with LocalRuntime(enable_monitoring=False) as rt:
        results, _ = rt.execute(wf.build())
    return results


# ================================================================ 1. every door, the right context
def test_direct_api_every_operation_kind_is_seen_with_its_context(db):
    seed(db)
    rec = db.operations.executor.add(Recorder())
    with scope(actor="ann", request_id="r-1"):
        db.create("Item", name="n", email="n@x", owner="alice")
        db.read("Item", 1)
        db.read("Item", filter={"name": "a2"})
        db.update("Item", 1, {"qty": 10})
        db.delete("Item", 5)
        db.list("Item")
        db.count("Item")
        db.upsert("Item", where={"email": "u@x"}, create={"name": "u", "owner": "alice"})
        db.upsert("Item", where={"email": "u@x"}, update={"qty": 3})
        db.bulk_create("Item", [{"name": "c", "email": "c@x", "owner": "alice"}])
        db.bulk_update("Item", {"name": "c"}, {"qty": 2})
        db.bulk_delete("Item", {"name": "c"})
        db.bulk_upsert("Item", [{"name": "d", "email": "d@x", "owner": "alice"}], conflict_on=["email"])
        db.aggregate("Item", [{"$group": {"_id": None, "n": {"$sum": 1}}}])
    expected = ["create", "read", "read", "update", "delete", "list", "count", "upsert", "upsert", "bulk_create",
                "bulk_update", "bulk_delete", "bulk_upsert", "aggregate"]
    assert [a for a, m in rec.actions("plan")] == expected
    assert [a for a, m in rec.actions("after_commit")] == expected
    assert {s[2:6] for s in rec.seen} == {("Item", "ann", "r-1", None)}
    # outside the block: the default context again
    rec.clear()
    db.count("Item")
    assert rec.seen == [("plan", "count", "Item", None, None, None), ("after_commit", "count", "Item", None, None, None)]


def test_failed_hook_sees_the_error_of_every_kind_of_door(db):
    seed(db)
    rec = db.operations.executor.add(Recorder())
    with scope(actor="ann"):
        with pytest.raises(NotFoundError):
            db.read("Item", 99)
        with pytest.raises(DuplicateKeyError):
            db.create("Item", name="x", email="a1@x", owner="alice")
        with pytest.raises(DuplicateKeyError):
            db.bulk_create("Item", [{"name": "x", "email": "a1@x", "owner": "alice"}])
    assert [s[:4] for s in rec.seen] == [("plan", "read", "Item", "ann"), ("failed", "read", "Item", "ann"),
                                         ("plan", "create", "Item", "ann"), ("failed", "create", "Item", "ann"),
                                         ("plan", "bulk_create", "Item", "ann"),
                                         ("failed", "bulk_create", "Item", "ann")]


NODE_CASES = [
    ("ItemCreateNode", {"name": "n", "email": "n@x", "owner": "alice"}, "create"),
    ("ItemReadNode", {"id": 1}, "read"),
    ("ItemUpdateNode", {"id": 1, "fields": {"qty": 5}}, "update"),
    ("ItemDeleteNode", {"id": 4}, "delete"),
    ("ItemListNode", {"filter": {"owner": "alice"}}, "list"),
    ("ItemCountNode", {"filter": {"owner": "alice"}}, "count"),
    ("ItemUpsertNode", {"where": {"email": "u@x"}, "create": {"name": "u", "owner": "alice"}}, "upsert"),
    ("ItemBulkCreateNode", {"data": [{"name": "c", "email": "c@x", "owner": "alice"}]}, "bulk_create"),
    ("ItemBulkUpdateNode", {"filter": {"name": "c"}, "fields": {"qty": 2}}, "bulk_update"),
    ("ItemBulkDeleteNode", {"filter": {"name": "c"}}, "bulk_delete"),
    ("ItemBulkUpsertNode", {"data": [{"name": "d", "email": "d@x", "owner": "alice"}], "conflict_on": ["email"]},
     "bulk_upsert"),
    ("ItemAggregateNode", {"pipeline": [{"$group": {"_id": None, "n": {"$sum": 1}}}]}, "aggregate"),
]


def test_every_node_kind_runs_through_the_executor_with_the_callers_context(db):
    seed(db)
    rec = db.operations.executor.add(Recorder())
    assert len(NODE_CASES) == len(db.get_generated_nodes("Item")) == 12
    for node_type, params, action in NODE_CASES:
        rec.clear()
        with scope(actor="nodes", request_id=f"req-{action}"):
            result = run_nodes((node_type, "n", params))["n"]
        assert not (isinstance(result, dict) and result.get("failed")), (node_type, result)
        assert rec.seen == [("plan", action, "Item", "nodes", f"req-{action}", None),
                            ("after_commit", action, "Item", "nodes", f"req-{action}", None)], node_type


def test_query_api_and_iteration_are_seen(db):
    seed(db)
    rec = db.operations.executor.add(Recorder())
    with scope(actor="q", request_id="rq"):
        q = db.query("Item").where({"owner": "alice"})
        assert [r["name"] for r in q.all()] == ["a1", "a2"]
        assert q.first()["name"] == "a1"
        assert q.count() == 2
        assert q.aggregate([{"$group": {"_id": None, "n": {"$sum": 1}}}])[0]["n"] == 2
        assert [r["name"] for r in q] == ["a1", "a2"]
    assert rec.actions("plan") == [("list", "Item"), ("list", "Item"), ("count", "Item"), ("aggregate", "Item"),
                                   ("list", "Item")]
    assert {s[3:5] for s in rec.seen} == {("q", "rq")}
    # iteration is an operation like the others: its after-commit hook runs (timing, metrics, cache)
    assert rec.actions("after_commit") == rec.actions("plan")


def test_query_builder_params_through_the_list_node(db):
    seed(db)
    rec = db.operations.executor.add(Recorder())
    params = db.query_builder("Item").filter({"qty": {"$gte": 2}}).sort("-qty").limit(2).to_params()
    with scope(actor="qb", request_id="rqb"):
        out = run_nodes(("ItemListNode", "l", params))["l"]
    assert [r["name"] for r in out["records"]] == ["b2", "b1"]
    assert rec.seen == [("plan", "list", "Item", "qb", "rqb", None), ("after_commit", "list", "Item", "qb", "rqb", None)]


def test_relation_include_is_a_child_call_with_the_parents_context(db):
    seed(db)
    rec = db.operations.executor.add(Recorder())
    with scope(actor="inc", request_id="ri"):
        item = db.read("Item", 1, include=["team"])
        teams = db.list("Team", include=["items"])
        node = run_nodes(("ItemListNode", "l", {"include": ["team"], "limit": 2}))["l"]
    assert item["team"]["name"] == "blue"
    assert [len(t["items"]) for t in teams] == [2, 2]
    assert [r["team"]["name"] for r in node["records"]] == ["blue", "red"]
    plans = [s for s in rec.seen if s[0] == "plan"]
    assert plans == [("plan", "read", "Item", "inc", "ri", None), ("plan", "include", "Team", "inc", "ri", "read"),
                     ("plan", "list", "Team", "inc", "ri", None), ("plan", "include", "Item", "inc", "ri", "list"),
                     ("plan", "list", "Item", "inc", "ri", None), ("plan", "include", "Team", "inc", "ri", "list")]


def test_threads_with_different_contexts_never_mix(db):
    seed(db)
    rec = db.operations.executor.add(Recorder())
    errors: list = []

    def work(i):
        with scope(actor=f"t{i}", request_id=f"r{i}"):
            ctx = contextvars.copy_context()

        def body():
            for _ in range(5):
                db.read("Item", 1)
                db.count("Item")
                assert current().actor == f"t{i}"
        try:
            ctx.run(body)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(rec.seen) == 6 * 5 * 2 * 2
    assert all(s[4] == "r" + s[3][1:] for s in rec.seen), [s for s in rec.seen if s[4] != "r" + s[3][1:]][:3]
    for i in range(6):
        assert sum(1 for s in rec.seen if s[3] == f"t{i}") == 20


def test_asyncio_tasks_with_different_contexts_never_mix(db):
    seed(db)
    rec = db.operations.executor.add(Recorder())

    async def task(i):
        with scope(actor=f"a{i}", request_id=f"q{i}"):
            for _ in range(4):
                await asyncio.sleep(0)
                await asyncio.to_thread(db.count, "Item")  # to_thread copies the task's context
                db.read("Item", 2)

    async def main():
        await asyncio.gather(*(task(i) for i in range(5)))

    asyncio.run(main())
    assert len(rec.seen) == 5 * 4 * 2 * 2
    assert all(s[4] == "q" + s[3][1:] for s in rec.seen)
    assert current().actor is None


# ================================================================ 2. a WHERE added by a policy narrows every door
@pytest.fixture(params=["where", "condition"])
def scoped(db, request):
    seed(db)
    db.operations.executor.add(OwnerScope() if request.param == "where" else OwnerCondition())
    return db


def test_scoped_read_by_id_and_filter(scoped):
    db = scoped
    with scope(actor="alice"):
        assert db.read("Item", 1)["name"] == "a1"
        with pytest.raises(NotFoundError) as info:
            db.read("Item", 3)
        assert str(info.value) == "Item read: no record matches the given id"
        with pytest.raises(NotFoundError):
            db.read("Item", filter={"name": "b1"})
        with pytest.raises(NotFoundError):  # the caller's filter must not replace the policy's
            db.read("Item", filter={"owner": "bob"})
        assert db.read("Item", 3, raise_on_not_found=False) is None
        assert db.read("Item", filter={"qty": {"$gte": 2}})["name"] == "a2"


def test_scoped_update_and_delete_by_id_leave_other_rows_alone(scoped):
    db = scoped
    with scope(actor="alice"):
        with pytest.raises(NotFoundError):
            db.update("Item", 3, {"qty": 99})
        with pytest.raises(NotFoundError):
            db.update("Item", {"email": "b2@x"}, {"qty": 99})
        assert db.update("Item", 3, {"qty": 99}, raise_on_not_found=False) is None
        with pytest.raises(NotFoundError):
            db.delete("Item", 4)
        with pytest.raises(NotFoundError):
            db.delete("Item", {"owner": "bob"})
        assert db.delete("Item", 4, raise_on_not_found=False) is None
        assert db.update("Item", 1, {"qty": 11})["qty"] == 11
    assert rows(db) == [(1, "a1", "alice", 11), (2, "a2", "alice", 2), (3, "b1", "bob", 3), (4, "b2", "bob", 4)]


def test_scoped_list_count_aggregate_and_query(scoped):
    db = scoped
    with scope(actor="alice"):
        assert [r["name"] for r in db.list("Item")] == ["a1", "a2"]
        assert db.list("Item", {"owner": "bob"}) == []
        assert db.count("Item") == 2
        assert db.count("Item", {"qty": {"$gte": 2}}) == 1
        groups = db.aggregate("Item", [{"$group": {"_id": "$owner", "n": {"$sum": 1}, "q": {"$sum": "$qty"}}}])
        assert groups == [{"_id": "alice", "n": 2, "q": 3}]
        assert db.aggregate("Item", [{"$match": {"owner": "bob"}}, {"$count": "n"}]) in ([], [{"n": 0}])
        q = db.query("Item")
        assert [r["name"] for r in q.all()] == ["a1", "a2"]
        assert q.sort("-qty").first()["name"] == "a2"
        assert db.query("Item").count() == 2
        assert [r["name"] for r in db.query("Item")] == ["a1", "a2"]
        assert db.query("Item").where({"owner": "bob"}).all() == []
        out = run_nodes(("ItemListNode", "l", {}), ("ItemCountNode", "c", {}), ("ItemReadNode", "r", {"id": 3}))
    assert [r["name"] for r in out["l"]["records"]] == ["a1", "a2"]
    assert out["c"]["count"] == 2
    assert out["r"].get("failed") is True and "NotFoundError" in out["r"]["error"]
    with scope(actor="bob"):
        assert [r["name"] for r in db.list("Item")] == ["b1", "b2"]


def test_scoped_bulk_update_and_delete_touch_only_scoped_rows(scoped):
    db = scoped
    with scope(actor="alice"):
        assert db.bulk_update("Item", {"qty": {"$gte": 0}}, {"qty": 50}) == 2
        assert db.bulk_update("Item", {}, {"name": "z"}, confirm_all=True) == 2
    assert rows(db) == [(1, "z", "alice", 50), (2, "z", "alice", 50), (3, "b1", "bob", 3), (4, "b2", "bob", 4)]
    with scope(actor="alice"):
        out = run_nodes(("ItemBulkUpdateNode", "u", {"filter": {"owner": "bob"}, "fields": {"qty": 0}}))["u"]
        assert out.get("failed") is not True and out["updated"] == 0, out
        assert db.bulk_delete("Item", {"qty": {"$gte": 0}}) == 2
    assert rows(db) == [(3, "b1", "bob", 3), (4, "b2", "bob", 4)]
    with scope(actor="alice"):
        assert db.bulk_delete("Item", {}, confirm_all=True) == 0
    assert rows(db) == [(3, "b1", "bob", 3), (4, "b2", "bob", 4)]


def test_scoped_include_is_narrowed(scoped):
    db = scoped
    with scope(actor="alice"):
        a1 = db.read("Item", 1, include=["team"])  # a1 is in bob's team
        a2 = db.read("Item", 2, include=["team"])
        teams = db.list("Team", include=["items"])
        listed = db.list("Item", include=["team"])
    assert a1["team"] is None and a2["team"]["name"] == "red"
    assert [t["name"] for t in teams] == ["red"]
    assert [i["name"] for i in teams[0]["items"]] == ["a2"]  # b1 is in red, but bob's
    assert [(i["name"], i["team"] and i["team"]["name"]) for i in listed] == [("a1", None), ("a2", "red")]


def test_scoped_upserts_cannot_change_out_of_scope_rows(scoped):
    db = scoped
    with scope(actor="alice"):
        with pytest.raises(DataFlowError):
            db.upsert("Item", where={"email": "b1@x"}, update={"qty": 77}, create={"name": "x", "owner": "alice"})
        with pytest.raises(ValidationError, match="outside your scope"):
            db.bulk_upsert("Item", [{"name": "b1", "email": "b1@x", "owner": "bob", "qty": 77}],
                           conflict_on=["email"])
        with pytest.raises(ValidationError, match="outside your scope"):
            db.bulk_create("Item", [{"name": "b1", "email": "b1@x", "owner": "bob", "qty": 77}],
                           on_conflict="update", conflict_on=["email"])
        node = run_nodes(("ItemBulkUpsertNode", "u", {"data": [{"name": "b2", "email": "b2@x", "owner": "bob",
                                                                 "qty": 77}], "conflict_on": ["email"]}))["u"]
        assert node.get("failed") is True, node
        # in scope, an upsert still works
        assert db.upsert("Item", where={"email": "a1@x"}, update={"qty": 8})["record"]["qty"] == 8
    assert rows(db) == [(1, "a1", "alice", 8), (2, "a2", "alice", 2), (3, "b1", "bob", 3), (4, "b2", "bob", 4)]


def test_scoped_upserts_on_the_key_cannot_take_over_a_row_by_another_unique_field(scoped):
    """conflict_on the id, but the email belongs to bob's row: MySQL's ON DUPLICATE KEY UPDATE fires on
    any unique key, so the statement would rewrite bob's row (owner included)."""
    db = scoped
    with scope(actor="alice"):
        with pytest.raises(DataFlowError):
            db.bulk_upsert("Item", [{"id": 50, "name": "hijack", "email": "b1@x", "owner": "alice", "qty": 666}],
                           conflict_on=["id"])
        with pytest.raises(DataFlowError):
            db.bulk_create("Item", [{"id": 51, "name": "hijack", "email": "b2@x", "owner": "alice", "qty": 667}],
                           on_conflict="update", conflict_on=["id"])
    assert rows(db) == SEEDED


def test_scoped_bulk_create_skip_returns_only_in_scope_ids(scoped):
    db = scoped
    with scope(actor="alice"):
        out = db.bulk_create("Item", [{"name": "a1", "email": "a1@x", "owner": "alice"},
                                      {"name": "b1", "email": "b1@x", "owner": "bob"},
                                      {"name": "n", "email": "n@x", "owner": "alice"}],
                             on_conflict="skip", return_ids=True, conflict_on=["email"])
    assert out["inserted"] == 1 and out["skipped"] == 2
    new_id = [r[0] for r in rows(db) if r[1] == "n"]  # PostgreSQL's ON CONFLICT spends sequence values
    assert 3 not in out["ids"]
    assert sorted(out["ids"]) == [1, *new_id]
    assert rows(db)[:4] == SEEDED


def test_statement_cache_never_serves_one_scope_for_another(scoped):
    db = scoped
    for i in range(12):
        who, other = ("alice", "bob") if i % 2 == 0 else ("bob", "alice")
        mine = [1, 2] if who == "alice" else [3, 4]
        theirs = [3, 4] if who == "alice" else [1, 2]
        with scope(actor=who):
            assert db.read("Item", mine[0])["owner"] == who
            assert db.read("Item", theirs[0], raise_on_not_found=False) is None
            assert db.read("Item", filter={"id": theirs[1]}, raise_on_not_found=False) is None
            assert [r["id"] for r in db.list("Item")] == mine
            assert [r["id"] for r in db.list("Item", limit=1, offset=1)] == mine[1:]
            assert [r["id"] for r in db.list("Item", {"owner": other})] == []
            assert db.count("Item") == 2
            assert db.count("Item", {"owner": other}) == 0
            assert db.aggregate("Item", [{"$group": {"_id": "$owner", "n": {"$sum": 1}}}]) == [{"_id": who, "n": 2}]
            assert db.update("Item", theirs[0], {"qty": 100 + i}, raise_on_not_found=False) is None
            assert db.bulk_update("Item", {"qty": {"$lt": 1000}}, {"qty": i}) == 2
            assert [r["name"] for r in db.query("Item").all()] == [db.read("Item", k)["name"] for k in mine]
    assert [r[3] for r in rows(db)] == [10, 10, 11, 11]


# ================================================================ 3. echo and engine events on every path
OPERATIONS = [
    ("create", lambda db: db.create("Item", name="n", email="n@x", owner="alice"), "INSERT"),
    ("read by id", lambda db: db.read("Item", 1), "SELECT"),
    ("read by filter", lambda db: db.read("Item", filter={"name": "a2"}), "SELECT"),
    ("read include", lambda db: db.read("Item", 1, include=["team"]), "SELECT"),
    ("list", lambda db: db.list("Item"), "SELECT"),
    ("query all", lambda db: db.query("Item").all(), "SELECT"),
    ("query iteration", lambda db: [r for r in db.query("Item")], "SELECT"),  # not list(): __len__ counts
    ("list include", lambda db: db.list("Team", include=["items"]), "SELECT"),
    ("count", lambda db: db.count("Item"), "SELECT"),
    ("aggregate", lambda db: db.aggregate("Item", [{"$group": {"_id": "$owner", "n": {"$sum": 1}}}]), "SELECT"),
    ("update", lambda db: db.update("Item", 1, {"qty": 9}), "UPDATE"),
    ("delete", lambda db: db.delete("Item", 4), "DELETE"),
    ("upsert", lambda db: db.upsert("Item", where={"email": "u@x"}, create={"name": "u", "owner": "x"}), "INSERT"),
    ("bulk create", lambda db: db.bulk_create("Item", [{"name": "c", "email": "c@x", "owner": "x"},
                                                       {"name": "d", "email": "d@x", "owner": "x"}]), "INSERT|COPY"),
    ("bulk create skip", lambda db: db.bulk_create("Item", [{"name": "e", "email": "e@x", "owner": "x"}],
                                                   on_conflict="skip", return_ids=True), "INSERT"),
    ("bulk update", lambda db: db.bulk_update("Item", {"owner": "bob"}, {"qty": 1}), "UPDATE"),
    ("bulk delete", lambda db: db.bulk_delete("Item", {"owner": "bob"}), "DELETE"),
    ("bulk upsert", lambda db: db.bulk_upsert("Item", [{"name": "f", "email": "a1@x", "owner": "alice"}],
                                              conflict_on=["email"]), "INSERT"),
]


def _verbs(texts, verbs):
    return [t for t in texts if any(t.lstrip().upper().startswith(v) for v in verbs.split("|"))]


def test_echo_logs_every_statement_on_every_path(db_url, caplog):
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine.Engine")
    db = DataFlow(db_url, echo=True)
    try:
        seed(db)
        missing = []
        for label, op, verb in OPERATIONS:
            caplog.clear()
            op(db)
            logged = [r.getMessage() for r in caplog.records if r.name == "sqlalchemy.engine.Engine"]
            if not _verbs(logged, verb):
                missing.append(label)
        assert missing == []
    finally:
        db.close()


def test_before_cursor_execute_listener_sees_every_path(db):
    seed(db)
    seen: list[str] = []
    sa.event.listen(db.engine, "before_cursor_execute", lambda conn, cur, stmt, params, ctx, many: seen.append(stmt))
    missing = []
    for label, op, verb in OPERATIONS:
        seen.clear()
        op(db)
        if not _verbs(seen, verb):
            missing.append(label)
    assert missing == []
    # and the results were right with the listener on (the fallback path returns the same records)
    assert db.read("Item", 2)["qty"] == 2
    assert db.count("Item", {"owner": "bob"}) == 0
    assert db.count("Item") == 7


def test_listener_added_after_statements_were_cached_still_sees_them(db):
    seed(db)
    for _ in range(3):  # warm the prepared-statement cache on the fast path
        db.read("Item", 1)
        db.count("Item")
        db.list("Item")
    seen: list[str] = []

    def listen(conn, cur, stmt, params, ctx, many):
        seen.append(stmt)

    sa.event.listen(db.engine, "before_cursor_execute", listen)
    db.read("Item", 1)
    db.count("Item")
    db.list("Item")
    assert len(_verbs(seen, "SELECT")) == 3
    sa.event.remove(db.engine, "before_cursor_execute", listen)
    seen.clear()
    assert db.read("Item", 2)["name"] == "a2"
    assert seen == []


# ================================================================ in-transaction hooks and varying scope shapes
class InTransaction(Policy):
    """Asks for the in-transaction hooks on every call and notes them; can refuse after the statement."""

    name = "in_tx"

    def __init__(self, refuse: bool = False) -> None:
        self.seen: list[tuple[str, str]] = []
        self.refuse = refuse

    def plan(self, call):
        call.in_transaction = True

    def before_statement(self, call, conn):
        self.seen.append(("before", call.action))

    def after_statement(self, call, conn, info):
        self.seen.append(("after", call.action))
        if self.refuse and call.writes:
            raise ValidationError(f"{call.model} {call.action} refused by the audit policy", model=call.model)


def test_in_transaction_hooks_run_around_every_operations_statement(db):
    seed(db)
    pol = db.operations.executor.add(InTransaction())
    missing = []
    for label, op, _verb in OPERATIONS:
        pol.seen.clear()
        op(db)
        if not ("before" in [s[0] for s in pol.seen] and "after" in [s[0] for s in pol.seen]):
            missing.append(label)
    assert missing == []


def test_a_refusal_after_the_statement_rolls_every_write_back(db):
    seed(db)
    db.operations.executor.add(InTransaction(refuse=True))
    writes = [(label, op) for label, op, verb in OPERATIONS if verb != "SELECT"]
    for label, op in writes:
        with pytest.raises(ValidationError, match="refused by the audit policy"):
            op(db)
        assert rows(db) == SEEDED, label
        assert rows(db, "teams", "id, name, owner") == [(1, "red", "alice"), (2, "blue", "bob")], label


class InScope(Policy):
    """``owner IN (...)`` with a list whose length changes per call (an expanding parameter)."""

    name = "in_scope"
    allowed: list = []

    def plan(self, call):
        if call.scoped:
            call.where({"owner": {"$in": list(self.allowed)}})


def test_expanding_and_null_scopes_are_not_mixed_up_by_the_cache(db):
    seed(db)
    pol = db.operations.executor.add(InScope())
    cases = [(["alice"], [1, 2]), (["alice", "bob"], [1, 2, 3, 4]), ([], []), (["bob"], [3, 4]),
             (["carol", "bob", "alice"], [1, 2, 3, 4]), (["alice"], [1, 2])]
    for _ in range(2):
        for allowed, ids in cases:
            pol.allowed = allowed
            assert [r["id"] for r in db.list("Item")] == ids, allowed
            assert db.count("Item") == len(ids), allowed
            assert (db.read("Item", 3, raise_on_not_found=False) is not None) == (3 in ids), allowed
