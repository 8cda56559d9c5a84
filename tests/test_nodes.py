"""Generated Kailash nodes: registered names, parameters and result shapes under LocalRuntime, errors."""

import time
import warnings
from typing import Annotated

import pytest
from kailash.nodes.base import NodeRegistry
from kailash.runtime.local import LocalRuntime
from kailash.sdk_exceptions import NodeConfigurationError
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow, Field, ModelError

OPERATIONS = ["Create", "Read", "Update", "Delete", "List", "Count", "Upsert", "BulkCreate", "BulkUpdate",
              "BulkDelete", "BulkUpsert", "Aggregate"]
USER_NODES = [f"User{op}Node" for op in OPERATIONS]


@pytest.fixture(scope="module")
def rt():
    with LocalRuntime(enable_monitoring=False) as runtime:
        yield runtime


def run(rt, *nodes, connections=()):
    """Execute one workflow of ``(node type, node id, parameters)``; return its results."""
    wf = WorkflowBuilder()
    for node_type, node_id, params in nodes:
        wf.add_node(node_type, node_id, params)
    for connection in connections:
        wf.add_connection(*connection)
    results, _ = rt.execute(wf.build())
    return results


def one(rt, node_type, params):
    """Execute a single node; return its result."""
    return run(rt, (node_type, "node", params))["node"]


def declare(db):
    @db.model
    class User:
        name: str
        email: Annotated[str, Field(unique=True)]
        age: int = 0
        active: bool = True

    return User


@pytest.fixture
def users(db):
    declare(db)
    db.bulk_create("User", [
        {"name": "Ann", "email": "ann@x", "age": 31},
        {"name": "Bob", "email": "bob@x", "age": 25, "active": False},
        {"name": "Cy", "email": "cy@x", "age": 40},
    ])
    return db


def rows(db, columns="id, name, email, age, active"):
    db.ensure_ready()
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT {columns} FROM users ORDER BY id")]


def error_of(result):
    """The error string the SDK reports for a failed node."""
    assert result.get("failed") is True, result
    return result["error"]


# ---------------------------------------------------------------- registration
def test_twelve_nodes_are_registered_and_bound(db):
    declare(db)
    assert db.get_generated_nodes("User") == USER_NODES
    registered = NodeRegistry.list_nodes()
    for name in USER_NODES:
        cls = NodeRegistry.get(name)
        assert registered[name] is cls
        assert cls._db is db and cls._model == "User"


def test_nodes_are_generated_at_declaration_before_any_connection():
    db = DataFlow("postgresql://nobody@127.0.0.1:1/never")  # unreachable: nothing connects yet
    try:
        declare(db)
        assert NodeRegistry.get("UserCreateNode")._db is db
    finally:
        db.close()
    with pytest.raises(NodeConfigurationError):
        NodeRegistry.get("UserCreateNode")


# ---------------------------------------------------------------- each node
def test_create_node(db, rt):
    declare(db)
    out = one(rt, "UserCreateNode", {"name": "Ann", "email": "ann@x", "age": 31})
    assert list(out) == ["id", "name", "email", "age", "active", "created_at", "updated_at"]
    assert {k: out[k] for k in ("id", "name", "email", "age", "active")} == {
        "id": 1, "name": "Ann", "email": "ann@x", "age": 31, "active": True}
    assert out["created_at"] == out["updated_at"] and out["created_at"].endswith("+00:00")
    assert rows(db) == [(1, "Ann", "ann@x", 31, True)]


@pytest.mark.parametrize("params", [{"id": 2}, {"conditions": {"name": "Bob"}}, {"filter": {"email": "bob@x"}},
                                    {"filter": {"age": {"$lt": 30}}}])
def test_read_node(users, rt, params):
    out = one(rt, "UserReadNode", params)
    assert out["found"] is True
    assert (out["id"], out["name"], out["email"], out["age"], out["active"]) == (2, "Bob", "bob@x", 25, False)
    assert set(out) == {"id", "name", "email", "age", "active", "created_at", "updated_at", "found"}


def test_read_node_with_several_matches_returns_the_first_by_key(users, rt):
    users.update("User", 1, {"age": 32})  # moves the row to the end of a PostgreSQL heap
    assert one(rt, "UserReadNode", {"conditions": {"active": True}})["id"] == 1


def test_read_node_missing(users, rt):
    err = error_of(one(rt, "UserReadNode", {"id": 42}))
    assert "NotFoundError: User read: no record matches the given id" in err
    err = error_of(one(rt, "UserReadNode", {"conditions": {"name": "Nobody"}}))
    assert 'NotFoundError: User read: no record matches filter {"name": "?"}' in err
    assert one(rt, "UserReadNode", {"id": 42, "raise_on_not_found": False}) == {"found": False}


@pytest.mark.parametrize("params", [
    {"id": 2, "fields": {"age": 26, "name": "Bobby"}},
    {"id": 2, "updates": {"age": 26, "name": "Bobby"}},
    {"filter": {"email": "bob@x"}, "fields": {"age": 26, "name": "Bobby"}},
    {"conditions": {"email": "bob@x"}, "updates": {"age": 26, "name": "Bobby"}},
    {"id": 2, "age": 26, "name": "Bobby"},
])
def test_update_node(users, rt, params):
    out = one(rt, "UserUpdateNode", params)
    assert out["updated"] is True
    assert (out["id"], out["name"], out["email"], out["age"]) == (2, "Bobby", "bob@x", 26)
    assert out["updated_at"] > out["created_at"]
    assert rows(users, "id, name, age") == [(1, "Ann", 31), (2, "Bobby", 26), (3, "Cy", 40)]


def test_update_node_missing_or_ambiguous(users, rt):
    assert "NotFoundError: User update: no record matches the given id" in error_of(
        one(rt, "UserUpdateNode", {"id": 42, "fields": {"age": 1}}))
    assert one(rt, "UserUpdateNode", {"id": 42, "fields": {"age": 1}, "raise_on_not_found": False}) == {
        "updated": False}
    err = error_of(one(rt, "UserUpdateNode", {"filter": {"active": True}, "fields": {"age": 1}}))
    assert "ValidationError: User update: filter" in err and "matches more than one record" in err
    assert "use UserBulkUpdateNode" in err
    assert rows(users, "age") == [(31,), (25,), (40,)]


@pytest.mark.parametrize("params", [{"id": 2}, {"filter": {"email": "bob@x"}}, {"conditions": {"name": "Bob"}}])
def test_delete_node(users, rt, params):
    assert one(rt, "UserDeleteNode", params) == {"id": 2, "deleted": True}
    assert rows(users, "id") == [(1,), (3,)]


def test_delete_node_missing_or_ambiguous(users, rt):
    assert "NotFoundError: User delete: no record matches the given id" in error_of(one(rt, "UserDeleteNode", {"id": 42}))
    assert one(rt, "UserDeleteNode", {"id": 42, "raise_on_not_found": False}) == {"id": None, "deleted": False}
    err = error_of(one(rt, "UserDeleteNode", {"filter": {"active": True}}))
    assert "ValidationError: User delete: filter" in err and "use UserBulkDeleteNode" in err
    assert len(rows(users)) == 3


def test_list_node(users, rt):
    out = one(rt, "UserListNode", {})
    assert set(out) == {"records", "count", "limit", "offset", "has_more"}
    assert [r["name"] for r in out["records"]] == ["Ann", "Bob", "Cy"]
    assert (out["count"], out["limit"], out["offset"], out["has_more"]) == (3, 100, 0, False)
    out = one(rt, "UserListNode", {"filter": {"active": True}, "sort": {"age": -1}})
    assert [r["name"] for r in out["records"]] == ["Cy", "Ann"] and out["count"] == 2
    out = one(rt, "UserListNode", {"order_by": ["-age"], "limit": 1, "offset": 1})
    assert [r["name"] for r in out["records"]] == ["Ann"]
    assert (out["count"], out["limit"], out["offset"], out["has_more"]) == (1, 1, 1, True)
    out = one(rt, "UserListNode", {"conditions": {"age": {"$gte": 31}}, "order_by": ["name"]})
    assert [r["name"] for r in out["records"]] == ["Ann", "Cy"]


def test_list_node_sorts_by_created_at(db, rt):
    declare(db)
    for name in ("first", "second", "third"):
        db.create("User", name=name, email=f"{name}@x")
        time.sleep(0.002)
    newest = ["third", "second", "first"]
    assert [r["name"] for r in one(rt, "UserListNode", {"sort": {"created_at": -1}})["records"]] == newest
    assert [r["name"] for r in one(rt, "UserListNode", {"order_by": ["-created_at"]})["records"]] == newest


def test_list_node_default_limit_is_100(db, rt):
    declare(db)
    db.bulk_create("User", [{"name": f"u{i}", "email": f"u{i}@x"} for i in range(101)])
    out = one(rt, "UserListNode", {})
    assert (out["count"], len(out["records"]), out["limit"], out["has_more"]) == (100, 100, 100, True)
    out = one(rt, "UserListNode", {"offset": 100})
    assert ([r["id"] for r in out["records"]], out["has_more"]) == ([101], False)


def test_count_node(users, rt):
    assert one(rt, "UserCountNode", {}) == {"count": 3}
    assert one(rt, "UserCountNode", {"filter": {"active": True}}) == {"count": 2}
    assert one(rt, "UserCountNode", {"conditions": {"age": {"$gt": 100}}}) == {"count": 0}


def test_upsert_node(users, rt):
    out = one(rt, "UserUpsertNode", {"where": {"email": "di@x"}, "update": {"age": 22}, "create": {"name": "Di"}})
    assert (out["created"], out["action"]) == (True, "created")
    assert (out["record"]["id"], out["record"]["name"], out["record"]["age"]) == (4, "Di", 22)
    out = one(rt, "UserUpsertNode", {"where": {"email": "ann@x"}, "update": {"age": 32}, "create": {"name": "X"}})
    assert (out["created"], out["action"]) == (False, "updated")
    assert (out["record"]["id"], out["record"]["name"], out["record"]["age"]) == (1, "Ann", 32)
    out = one(rt, "UserUpsertNode", {"where": {"email": "cy@x", "name": "Cyrus"}, "update": {"age": 41},
                                     "conflict_on": ["email"]})
    assert out["created"] is False and out["record"]["id"] == 3
    assert rows(users, "id, name, age") == [(1, "Ann", 32), (2, "Bob", 25), (3, "Cy", 41), (4, "Di", 22)]


def test_bulk_create_node(db, rt):
    declare(db)
    data = [{"name": "A", "email": "a@x"}, {"name": "B", "email": "b@x"}, {"name": "C", "email": "c@x"}]
    assert one(rt, "UserBulkCreateNode", {"data": data}) == {"processed": 3, "inserted": 3, "success": True}
    more = [{"name": "D", "email": "d@x"}, {"name": "E", "email": "e@x"}]
    out = one(rt, "UserBulkCreateNode", {"data": more, "return_ids": True, "batch_size": 1})
    assert out == {"processed": 2, "inserted": 2, "success": True, "ids": [4, 5]}
    assert rows(db, "id, name") == [(1, "A"), (2, "B"), (3, "C"), (4, "D"), (5, "E")]


def test_bulk_create_node_on_conflict(users, rt):
    data = [{"name": "Ann2", "email": "ann@x", "age": 1}, {"name": "Di", "email": "di@x", "age": 2}]
    out = one(rt, "UserBulkCreateNode", {"data": data, "on_conflict": "skip"})
    assert (out["processed"], out["inserted"], out["success"]) == (2, 1, True)
    assert rows(users, "name, age")[0] == ("Ann", 31)
    data = [{"name": "Ann3", "email": "ann@x", "age": 3}, {"name": "Ed", "email": "ed@x", "age": 4}]
    out = one(rt, "UserBulkCreateNode", {"data": data, "on_conflict": "update", "conflict_on": ["email"]})
    assert (out["processed"], out["inserted"]) == (2, 1)
    assert rows(users, "name, email, age") == [("Ann3", "ann@x", 3), ("Bob", "bob@x", 25), ("Cy", "cy@x", 40),
                                               ("Di", "di@x", 2), ("Ed", "ed@x", 4)]


def test_bulk_create_node_is_all_or_nothing(db, rt):
    declare(db)
    data = [{"name": f"u{i}", "email": f"u{i}@x"} for i in range(600)]
    data[500]["email"] = "u3@x"
    err = error_of(one(rt, "UserBulkCreateNode", {"data": data}))
    assert "DuplicateKeyError: User bulk create refused by the database" in err
    data[500]["email"], data[550]["age"] = "u500@x", "old"
    err = error_of(one(rt, "UserBulkCreateNode", {"data": data}))
    assert "ValidationError: data[550]: User.age must be an integer; got str" in err
    assert rows(db) == []


@pytest.mark.parametrize("params", [
    {"filter": {"active": True}, "data": {"age": 0}},
    {"conditions": {"active": True}, "fields": {"age": 0}},
    {"filter": {"active": True}, "update": {"age": 0}},
])
def test_bulk_update_node(users, rt, params):
    out = one(rt, "UserBulkUpdateNode", params)
    assert (out["processed"], out["updated"]) == (2, 2)
    assert rows(users, "age") == [(0,), (25,), (0,)]


def test_bulk_update_node_seed_example(users, rt):
    out = one(rt, "UserBulkUpdateNode", {"conditions": {"active": False}, "data": {"active": True}})
    assert (out["processed"], out["updated"]) == (1, 1)
    assert rows(users, "active") == [(True,), (True,), (True,)]


def test_bulk_update_node_empty_filter(users, rt):
    err = error_of(one(rt, "UserBulkUpdateNode", {"data": {"age": 1}}))
    assert "ValidationError: User bulk update with a filter that matches every record would change every record" in err
    out = one(rt, "UserBulkUpdateNode", {"filter": {}, "data": {"age": 1}, "confirm_all": True})
    assert out["updated"] == 3 and rows(users, "age") == [(1,), (1,), (1,)]


@pytest.mark.parametrize("params", [{"filter": {"active": True}}, {"conditions": {"active": True}}])
def test_bulk_delete_node(users, rt, params):
    out = one(rt, "UserBulkDeleteNode", params)
    assert (out["processed"], out["deleted"]) == (2, 2)
    assert rows(users, "name") == [("Bob",)]


def test_bulk_delete_node_empty_filter_needs_confirm_all(users, rt):
    for params in ({}, {"filter": {}}, {"conditions": {}}):
        err = error_of(one(rt, "UserBulkDeleteNode", params))
        assert ("ValidationError: User bulk delete with a filter that matches every record would delete every record; "
                "pass confirm_all=True if you mean it") in err
    assert len(rows(users)) == 3
    out = one(rt, "UserBulkDeleteNode", {"confirm_all": True})
    assert (out["processed"], out["deleted"]) == (3, 3)
    assert rows(users) == []


def test_bulk_upsert_node(users, rt):
    data = [{"name": "Bobby", "email": "bob@x", "age": 26}, {"name": "Di", "email": "di@x", "age": 22}]
    out = one(rt, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"]})
    assert (out["processed"], out["inserted"], out["updated"]) == (2, 1, 1)
    assert rows(users, "name, email, age") == [("Ann", "ann@x", 31), ("Bobby", "bob@x", 26), ("Cy", "cy@x", 40),
                                               ("Di", "di@x", 22)]


# ---------------------------------------------------------------- workflows and errors
def test_connection_from_create_user_to_create_post(db, rt):
    declare(db)

    @db.model
    class Post:
        title: str
        author_id: int

    results = run(rt, ("UserCreateNode", "create_user", {"name": "Ann", "email": "ann@x"}),
                  ("PostCreateNode", "create_post", {"title": "Hello"}),
                  connections=[("create_user", "id", "create_post", "author_id")])
    db.create("User", name="Bob", email="bob@x")
    results2 = run(rt, ("UserCreateNode", "create_user", {"name": "Cy", "email": "cy@x"}),
                   ("PostCreateNode", "create_post", {"title": "Second"}),
                   connections=[("create_user", "id", "create_post", "author_id")])
    assert results["create_post"]["author_id"] == results["create_user"]["id"] == 1
    assert results2["create_post"]["author_id"] == results2["create_user"]["id"] == 3
    assert [(p["title"], p["author_id"]) for p in db.list("Post")] == [("Hello", 1), ("Second", 3)]


@pytest.mark.parametrize("node_type, params, expected", [
    ("UserCreateNode", {"name": "A", "email": "a@x", "age": "abc"},
     "ValidationError: User.age must be an integer; got str (field type int)"),
    ("UserCreateNode", {"name": "A"}, "ValidationError: User.email is required (field type str); add it to the data"),
    ("UserCreateNode", {"name": "A", "email": "ann@x"},
     "DuplicateKeyError: User create refused by the database (email): a record with the same unique value"),
    ("UserCreateNode", {"name": "A", "email": "a@x", "bogus": 1},
     "ValidationError: UserCreateNode: unknown parameter(s) ['bogus']; User fields and parameters are: id, name"),
    ("UserReadNode", {"id": 1, "limit": 5}, "ValidationError: UserReadNode: unknown parameter(s) ['limit']"),
    ("UserListNode", {"filter": {"nope": 1}}, "nope"),
    ("UserUpdateNode", {"id": 1, "fields": {"nick": "x"}}, "ValidationError: User has no field(s) 'nick'"),
    ("UserBulkCreateNode", {"data": [{"name": "A", "email": "a@x", "age": "old"}]},
     "ValidationError: data[0]: User.age must be an integer; got str"),
    ("UserBulkCreateNode", {"data": [{"name": "A", "email": "a@x"}], "on_conflict": "merge"},
     "ValidationError: User bulk create: on_conflict must be one of error, skip, update"),
])
def test_failing_node_reports_our_exception_class_and_message(users, rt, node_type, params, expected):
    err = error_of(one(rt, node_type, params))
    assert expected in err
    assert rows(users, "id, name, age") == [(1, "Ann", 31), (2, "Bob", 25), (3, "Cy", 40)]


def test_a_failed_node_leaves_the_others_results(users, rt):
    results = run(rt, ("UserCreateNode", "good", {"name": "Di", "email": "di@x"}),
                  ("UserReadNode", "bad", {"id": 99}))
    assert results["good"]["id"] == 4
    assert "NotFoundError: User read: no record matches the given id" in error_of(results["bad"])


# ---------------------------------------------------------------- instances and the process-wide registry
def test_a_second_open_instance_cannot_take_the_node_names(db, rt, tmp_path):
    declare(db)
    other = DataFlow(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        with pytest.raises(ModelError, match=r"^User: node names such as UserCreateNode are bound to another open "
                                             r"DataFlow instance \(.*\); .* node_prefix='Other'\)$"):
            declare(other)
        assert all(NodeRegistry.get(name)._db is db for name in USER_NODES)  # the first keeps its nodes
        assert other.list_models() == []  # nothing half-declared on the second
        one(rt, "UserCreateNode", {"name": "Ann", "email": "ann@x"})
        assert db.count("User") == 1
    finally:
        other.close()
    assert NodeRegistry.get("UserCreateNode")._db is db  # closing the refused instance took nothing away


def test_a_node_prefix_lets_two_instances_declare_one_model(db, rt, tmp_path):
    declare(db)
    with DataFlow(f"sqlite:///{tmp_path / 'shop.db'}", node_prefix="Shop") as shop:
        declare(shop)
        assert shop.get_generated_nodes("User") == [f"Shop{n}" for n in USER_NODES]
        one(rt, "ShopUserCreateNode", {"name": "Ann", "email": "ann@x"})
        one(rt, "UserCreateNode", {"name": "Bob", "email": "bob@x"})
        assert (shop.count("User"), db.count("User")) == (1, 1)
    assert "ShopUserCreateNode" not in NodeRegistry.list_nodes()
    assert NodeRegistry.get("UserCreateNode")._db is db


def test_closing_an_instance_frees_its_names(db, tmp_path):
    other = DataFlow(f"sqlite:///{tmp_path / 'other.db'}")
    declare(other)
    other.close()
    declare(db)  # no error: the names' holder is closed
    assert NodeRegistry.get("UserCreateNode")._db is db


def test_the_same_instance_redeclaring_does_not_warn(db):
    declare(db)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        declare(db)
    assert NodeRegistry.get("UserReadNode")._db is db


def test_close_unregisters_only_its_own_models(db, tmp_path):
    declare(db)
    with DataFlow(f"sqlite:///{tmp_path / 'other.db'}") as other:
        @other.model
        class Order:
            total: float

        assert NodeRegistry.get("OrderCreateNode")._db is other
    assert "OrderCreateNode" not in NodeRegistry.list_nodes()
    assert NodeRegistry.get("UserCreateNode")._db is db


def test_aggregate_node_returns_json_numbers(db, rt):
    from decimal import Decimal

    @db.model
    class Sale:
        region: str
        amount: Decimal

    db.bulk_create("Sale", [{"region": r, "amount": Decimal(a)} for r, a in
                            [("n", "10.25"), ("n", "4.75"), ("s", "7.50"), ("s", "0.50"), ("e", "1.00")]])
    grouped = one(rt, "SaleAggregateNode", {
        "pipeline": [{"$group": {"_id": "$region", "total": {"$sum": "$amount"}, "n": {"$sum": 1}}},
                     {"$sort": {"total": -1}}],
        "filter": {"region": {"$ne": "e"}}})
    assert grouped == {"results": [{"_id": "n", "total": 15.0, "n": 2}, {"_id": "s", "total": 8.0, "n": 2}],
                       "count": 2}
    assert all(isinstance(r["total"], float) for r in grouped["results"])
    assert one(rt, "SaleAggregateNode", {"pipeline": [{"$sum": "$amount"}]}) == {"result": 24.0}
    failed = one(rt, "SaleAggregateNode", {"pipeline": [{"$group": {"_id": "$nope"}}]})
    assert "FilterError" in failed["error"] and "nope" in failed["error"]
