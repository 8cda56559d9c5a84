"""The fluent query (db.query) and the query builder (Model.query_builder()) on every backend."""

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import FilterError, ModelError, ValidationError


@pytest.fixture
def people(db):
    @db.model
    class Person:
        name: str
        age: int
        team: str = "eng"

    db.bulk_create("Person", [{"name": n, "age": a, "team": t} for n, a, t in [
        ("ann", 31, "eng"), ("bob", 17, "sales"), ("cy", 45, "eng"), ("di", 22, "ops"), ("ed", 60, "sales")]])
    return Person


def names(records):
    return [r["name"] for r in records]


def test_where_sort_limit_skip_fields(db, people):
    q = db.query("persons").where({"age": {"$gt": 18}}).sort({"age": -1})
    assert names(q.all()) == ["ed", "cy", "ann", "di"]
    assert names(db.query("Person").where({"age": {"$gt": 18}}).sort({"age": -1}).skip(1).limit(2).all()) == [
        "cy", "ann"]
    assert db.query("persons").fields(["name"]).sort(["-age"]).first() == {"name": "ed"}
    assert names(iter(db.query("persons").where({"team": "eng"}))) == ["ann", "cy"]


def test_where_calls_and_together_and_mutate_in_place(db, people):
    q = db.query("persons")
    q.where({"team": "sales"})           # the seed's middleware style: no reassignment
    q.where({"age": {"$gt": 18}})
    assert names(q.all()) == ["ed"]
    q2 = db.query("persons").where({"age": {"$gt": 18}}).where({"age": {"$lt": 40}})  # same key twice
    assert q2.conditions == {"$and": [{"age": {"$gt": 18}}, {"age": {"$lt": 40}}]}
    assert names(q2.all()) == ["ann", "di"]


def test_count_exists_and_first(db, people):
    assert db.query("persons").where({"age": {"$gte": 45}}).count() == 2
    assert db.query("persons").where({"age": {"$gte": 45}}).limit(1).count() == 2  # count ignores the page
    assert db.query("persons").where({"name": "zed"}).exists() is False
    assert db.query("persons").where({"name": "zed"}).first() is None


def test_aggregate_scoped_by_where(db, people):
    result = db.query("persons").where({"age": {"$gt": 18}}).aggregate([
        {"$group": {"_id": "$team", "n": {"$sum": 1}}}, {"$sort": {"n": -1, "_id": 1}}])
    assert result == [{"_id": "eng", "n": 2}, {"_id": "ops", "n": 1}, {"_id": "sales", "n": 1}]
    assert db.query("persons").where({"team": "eng"}).aggregate([{"$sum": "$age"}]) == 76


def test_to_sql_shows_the_select(db, people, backend):
    sql = db.query("persons").where({"age": {"$gt": 18}}).sort({"age": -1}).limit(3).to_sql()
    assert "FROM persons" in sql and "ORDER BY" in sql and "18" in sql
    pg = db.query("persons").where({"name": "x"}).to_sql("postgresql")
    assert "persons.name" in pg


def test_errors_are_clear(db, people):
    with pytest.raises(FilterError, match=r"filter\.age\.\$gtx"):
        db.query("persons").where({"age": {"$gtx": 1}}).all()
    with pytest.raises(FilterError, match="nope"):
        db.query("persons").where({"nope": 1}).count()
    with pytest.raises(ValidationError, match="limit must be a non-negative integer"):
        db.query("persons").limit(-1)
    with pytest.raises(ModelError, match="No model or table named 'ghosts'"):
        db.query("ghosts").all()


def test_query_builder_to_params_feeds_list_and_count_nodes(db, people):
    q = people.query_builder()
    q.filter({"age": {"$gt": 18}})
    q.filter({"team": {"$in": ["eng", "sales"]}})
    q.sort({"age": 1})
    q.limit(2)
    params = q.to_params()
    assert params == {"filter": {"age": {"$gt": 18}, "team": {"$in": ["eng", "sales"]}},
                      "sort": {"age": 1}, "limit": 2}
    wf = WorkflowBuilder()
    wf.add_node("PersonListNode", "list", params)
    wf.add_node("PersonCountNode", "count", {"filter": params["filter"]})
    with LocalRuntime(enable_monitoring=False) as rt:
        results, _ = rt.execute(wf.build())
    assert names(results["list"]["records"]) == ["ann", "cy"]
    assert results["list"]["has_more"] is True
    assert results["count"] == {"count": 3}
    assert "LIMIT" in q.to_sql()


def test_query_builder_checks_filters_when_given(db, people):
    with pytest.raises(FilterError, match=r"filter\.age\.\$regex"):
        people.query_builder().filter({"age": {"$regex": 5}})
    with pytest.raises(FilterError):
        people.query_builder().sort({"missing": 1})


def test_unmodelled_table_is_reflected(db, backend):
    """A table made by another tool: db.query finds it by name, filters, counts and aggregates it."""
    db.migrate()
    ts = "TIMESTAMP" if backend != "mysql" else "DATETIME(6)"
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE legacy_orders (id INTEGER PRIMARY KEY, customer VARCHAR(20), "
                             f"amount INTEGER, placed {ts})")
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        conn.execute(sa.text("INSERT INTO legacy_orders VALUES (1, 'a', 10, :t), (2, 'a', 5, :t), (3, 'b', 7, :t2)"),
                     {"t": now, "t2": now - timedelta(days=3)})
    q = db.query("legacy_orders")
    assert [r["id"] for r in q.where({"customer": "a"}).all()] == [1, 2]
    assert db.query("legacy_orders").where({"amount": {"$gte": 7}}).count() == 2
    assert db.query("legacy_orders").aggregate([
        {"$group": {"_id": "$customer", "total": {"$sum": "$amount"}}}, {"$sort": {"_id": 1}}]) == [
        {"_id": "a", "total": 15}, {"_id": "b", "total": 7}]
    with pytest.raises(ModelError, match="No model named 'legacy_orders'"):
        db.create("legacy_orders", {"customer": "c"})  # writes need a model
