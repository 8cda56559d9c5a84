"""Pipelines are compiled once per shape; values are re-bound (and checked) on every call."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from dataflow.errors import FilterError
from dataflow.query import Filter, compile_filter, compile_pipeline
from dataflow.query import pipeline as pipeline_module
from dataflow.models import spec_from_class
from dataflow.schema.tables import build_table
from dfq_support import Order, insert, make_table, sql
from test_query_pipeline import ORDERS

UTC = timezone.utc
TABLE = build_table(spec_from_class(Order), sa.MetaData())


@pytest.fixture
def compilations(monkeypatch):
    """Count how often a pipeline is compiled (its stages walked and turned into SQL)."""
    calls = []
    real = pipeline_module._compile

    def counting(*args, **kw):
        calls.append(args[1].key)
        return real(*args, **kw)
    monkeypatch.setattr(pipeline_module, "_compile", counting)
    pipeline_module.CACHE.clear()
    return calls


def report(status, minimum, limit, skip=0):
    """The seed's report, with every value a caller would vary as a parameter."""
    return [
        {"$match": {"status": status, "amount": {"$gte": minimum}}},
        {"$group": {"_id": "$customer_id", "total": {"$sum": "$amount"}, "n": {"$sum": 1},
                    "weighted": {"$sum": 10}}},
        {"$sort": {"total": -1}},
        {"$skip": skip},
        {"$limit": limit},
    ]


def test_same_shape_is_compiled_once(compilations):
    a = compile_pipeline(TABLE, report("completed", 5, 10))
    b = compile_pipeline(TABLE, report("pending", 1, 3, skip=2))
    assert len(compilations) == 1
    assert pipeline_module.cache_info() == {"hits": 1, "misses": 1}
    assert b.statement is a.statement and b.key == a.key is not None
    assert a.params != b.params and set(a.params) == set(b.params)
    assert sorted(map(repr, a.params.values())) == sorted(map(repr, ["completed", Decimal(5), 10, 10, 0]))
    assert sorted(map(repr, b.params.values())) == sorted(map(repr, ["pending", Decimal(1), 10, 3, 2]))
    # the values are the caller's own (the filter's converted ones), never the compiler's stand-ins
    assert all(type(v) in (str, int, Decimal) for v in b.params.values())


def test_literals_are_bound_not_part_of_the_shape(compilations):
    def project(label, add, lit):
        return [{"$project": {"label": label, "more": {"$add": ["$quantity", add]}, "x": {"$literal": lit},
                              "status": 1}},
                {"$group": {"_id": label, "n": {"$sum": 1}}}]

    a = compile_pipeline(TABLE, project("a", 1, "$not-a-field"))
    b = compile_pipeline(TABLE, project("b", 2, "$other"))
    assert len(compilations) == 1 and b.statement is a.statement
    assert sorted(a.params.values(), key=repr) == sorted(["a", 1, "$not-a-field", "a"], key=repr)
    assert sorted(b.params.values(), key=repr) == sorted(["b", 2, "$other", "b"], key=repr)


@pytest.mark.parametrize("first, second", [
    ([{"$match": {"quantity": 30}}], [{"$match": {"quantity": 29.5}}]),       # value kind
    ([{"$match": {"quantity": 30}}], [{"$match": {"customer_id": 30}}]),      # field
    ([{"$match": {"quantity": {"$gt": 1}}}], [{"$match": {"quantity": {"$gte": 1}}}]),  # operator
    ([{"$match": {"quantity": 1}}], [{"$match": {"quantity": None}}]),        # None is structure
    ([{"$group": {"_id": "$status", "n": {"$sum": 1}}}],
     [{"$group": {"_id": "$status", "n": {"$sum": 2}}}]),                     # $sum 1 is COUNT(*)
    ([{"$group": {"_id": "$status", "n": {"$sum": 2}}}],
     [{"$group": {"_id": "$status", "n": {"$sum": 2.5}}}]),
    ([{"$group": {"_id": "$status", "n": {"$sum": 1}}}],
     [{"$group": {"_id": "$customer_id", "n": {"$sum": 1}}}]),                       # field reference
    ([{"$group": {"_id": "$status", "n": {"$sum": 1}}}],
     [{"$group": {"_id": "$status", "m": {"$sum": 1}}}]),                     # output name
    ([{"$group": {"_id": "$status", "n": {"$sum": "$quantity"}}}],
     [{"$group": {"_id": "$status", "n": {"$avg": "$quantity"}}}]),                # accumulator
    ([{"$sort": {"price": 1}}], [{"$sort": {"price": -1}}]),                  # direction
    ([{"$sort": {"price": 1}}], [{"$sort": {"price": 1}}, {"$limit": 5}]),    # another stage
    ([{"$limit": 5}, {"$skip": 1}], [{"$skip": 1}, {"$limit": 5}]),           # stage order
    ([{"$project": {"price": 1}}], [{"$project": {"price": 0}}]),             # inclusion / exclusion
    ([{"$project": {"x": {"$literal": True}}}], [{"$project": {"x": {"$literal": False}}}]),
    ([{"$project": {"x": {"$literal": 1}}}], [{"$project": {"x": {"$literal": "1"}}}]),
    ([{"$count": "a"}], [{"$count": "b"}]),
])
def test_a_different_shape_is_compiled_again(compilations, first, second):
    compile_pipeline(TABLE, first)
    compile_pipeline(TABLE, second)
    assert len(compilations) == 2
    assert pipeline_module.cache_info() == {"hits": 0, "misses": 2}


def test_the_base_filter_and_the_path_are_part_of_the_shape(compilations):
    pipe = [{"$group": {"_id": "$status", "n": {"$sum": 1}}}]
    compile_pipeline(TABLE, pipe, base=compile_filter(TABLE, {"quantity": {"$gt": 18}}))
    compile_pipeline(TABLE, pipe, base=compile_filter(TABLE, {"quantity": {"$gt": 30}}))  # same shape: hit
    compile_pipeline(TABLE, pipe, base=compile_filter(TABLE, {"quantity": {"$lt": 30}}))  # another operator
    compile_pipeline(TABLE, pipe)                                                      # no base
    compile_pipeline(TABLE, pipe, path="stages")                                       # errors name it
    assert len(compilations) == 4
    # a base combined afresh for each call (as the operations layer ANDs in soft-delete) still hits
    for quantity in (1, 2):
        f = compile_filter(TABLE, {"quantity": {"$gt": quantity}})
        deleted = TABLE.c.created.is_(None)
        compiled = compile_pipeline(TABLE, pipe, base=Filter(sa.and_(f.clause, deleted), f.params))
        assert list(compiled.params.values()) == [quantity]
    assert len(compilations) == 5


def test_a_base_that_holds_its_own_values_is_not_cached(compilations, engine):
    table = make_table(engine, Order)
    with engine.begin() as conn:
        insert(conn, table, ORDERS)
        for customer, expected in ((1, 2), (3, 2)):
            base = Filter(table.c.customer_id == customer, {})  # the value lives in the clause
            compiled = compile_pipeline(table, [{"$count": "n"}], base=base)
            assert compiled.key is None
            assert compiled.shape(conn.execute(compiled.statement, compiled.params).all()) == [{"n": expected}]
    assert len(compilations) == 2


def test_cached_shapes_give_each_call_its_own_results(engine, compilations):
    table = make_table(engine, Order)
    with engine.begin() as conn:
        insert(conn, table, ORDERS)

        def run(pipeline, base=None):
            compiled = compile_pipeline(table, pipeline, base=base)
            return compiled.shape(conn.execute(compiled.statement, compiled.params).mappings().all())

        assert run(report("completed", 5, 10)) == [
            {"_id": 3, "total": Decimal("100"), "n": 1, "weighted": 10},
            {"_id": 1, "total": Decimal("30.5"), "n": 2, "weighted": 20},
            {"_id": 2, "total": Decimal("7.25"), "n": 1, "weighted": 10}]
        assert run(report("completed", 8, 1, skip=1)) == [{"_id": 1, "total": Decimal("30.5"), "n": 2,
                                                            "weighted": 20}]
        assert run(report("completed", 15, 10)) == [{"_id": 3, "total": Decimal("100"), "n": 1, "weighted": 10},
                                                    {"_id": 1, "total": Decimal("20"), "n": 1, "weighted": 10}]
        assert run(report("pending", 0, 10)) == [{"_id": 2, "total": Decimal("1"), "n": 1, "weighted": 10}]
        assert run(report("none", 0, 10)) == []
        assert len(compilations) == 1

        # a relative date is resolved again at every call, and the base filter re-binds too
        since = {"created": {"$gte": {"$date": "2024-01-04"}}}
        assert run([{"$match": since}, {"$sum": "$amount"}], base=compile_filter(table, {"status": "completed"})) \
            == Decimal("100")
        since = {"created": {"$gte": {"$date": "2024-01-02"}}}
        assert run([{"$match": since}, {"$sum": "$amount"}], base=compile_filter(table, {"status": "pending"})) \
            == Decimal("1")
        assert len(compilations) == 2

        # constant group keys and literals come back as the values of this call
        for label, bonus in (("all", 1), ("every", 2.5)):
            got = run([{"$group": {"_id": label, "n": {"$sum": 1}}},
                       {"$project": {"n": 1, "plus": {"$add": ["$n", bonus]}, "tag": {"$literal": label}}}])
            assert got == [{"_id": label, "n": 6, "plus": 6 + bonus, "tag": label}]
        assert len(compilations) == 4  # 1 and 2.5 are values of different kinds: two shapes

        # the cached statement gives what a fresh compilation gives
        pipe = report("completed", 10, 2, skip=1)
        cached = run(pipe)
        pipeline_module.CACHE.clear()
        assert run(pipe) == cached == [{"_id": 1, "total": Decimal("30.5"), "n": 2, "weighted": 20}]


LIMITED = [{"$match": {"status": "x"}}, {"$limit": 5}, {"$skip": 1}, {"$project": {"x": {"$add": ["$price", 1]}}}]


def limited(**stage):
    """``LIMITED`` with one stage's operand replaced."""
    (name, value), = stage.items()
    return [s if next(iter(s)) != f"${name}" else {f"${name}": value} for s in LIMITED]


@pytest.mark.parametrize("good, bad, path", [
    ([{"$match": {"status": {"$regex": "^a"}}}], [{"$match": {"status": {"$regex": "(a"}}}],
     "pipeline[0].$match.status.$regex"),
    ([{"$match": {"created": {"$gte": "2024-01-01"}}}], [{"$match": {"created": {"$gte": "soon"}}}],
     "pipeline[0].$match.created.$gte"),
    (LIMITED, limited(limit=0), "pipeline[1].$limit"),
    (LIMITED, limited(limit=-1), "pipeline[1].$limit"),
    (LIMITED, limited(limit=True), "pipeline[1].$limit"),
    (LIMITED, limited(limit="5"), "pipeline[1].$limit"),
    (LIMITED, limited(skip=-1), "pipeline[2].$skip"),
    (LIMITED, limited(project={"x": {"$literal": [1]}}), "pipeline[3].$project.x"),
    (LIMITED, limited(project={"x": {"$add": ["$price", "1"]}}), "pipeline[3].$project.x.$add[1]"),
])
def test_malformed_values_on_a_cached_shape_still_raise(compilations, good, bad, path):
    compile_pipeline(TABLE, good)
    for _ in range(2):  # a failure is never cached: it raises every time, before any SQL
        with pytest.raises(FilterError) as info:
            compile_pipeline(TABLE, bad)
        assert info.value.path == path
    hits = pipeline_module.cache_info()["hits"]
    assert compile_pipeline(TABLE, good).key is not None
    assert pipeline_module.cache_info()["hits"] == hits + 1  # the good shape is still cached


def test_relative_dates_in_a_match_are_resolved_at_every_call(compilations, monkeypatch):
    from dataflow.query import dates

    pipe = [{"$match": {"created": {"$gte": {"$date": "-1h"}}}}, {"$count": "n"}]
    monkeypatch.setattr(dates, "now", lambda: datetime(2024, 5, 1, 12, tzinfo=UTC))
    a = compile_pipeline(TABLE, pipe)
    monkeypatch.setattr(dates, "now", lambda: datetime(2024, 5, 2, 12, tzinfo=UTC))
    b = compile_pipeline(TABLE, pipe)
    assert list(a.params.values()) == [datetime(2024, 5, 1, 11, tzinfo=UTC)]
    assert list(b.params.values()) == [datetime(2024, 5, 2, 11, tzinfo=UTC)]
    assert len(compilations) == 1


def test_the_query_api_reuses_the_shape(db, compilations):
    @db.model
    class Member:
        department: str
        age: int

    db.bulk_create("Member", [{"department": d, "age": a} for d, a in
                              [("eng", 20), ("eng", 30), ("sales", 40), ("ops", 17), ("ops", 50), ("ops", 60)]])
    pipe = [{"$group": {"_id": "$department", "count": {"$sum": 1}}}, {"$sort": {"count": -1, "_id": 1}}]
    q = db.query("members")
    assert q.where({"age": {"$gt": 18}}).aggregate(pipe) == [
        {"_id": "eng", "count": 2}, {"_id": "ops", "count": 2}, {"_id": "sales", "count": 1}]
    assert db.query("members").where({"age": {"$gt": 35}}).aggregate(pipe + [{"$limit": 2}]) == [
        {"_id": "ops", "count": 2}, {"_id": "sales", "count": 1}]
    assert db.query("members").where({"age": {"$gt": 45}}).aggregate(pipe + [{"$limit": 1}]) == [
        {"_id": "ops", "count": 2}]
    assert len(compilations) == 2


#: Operators that may stand in for each other (a changed operator must change the shape).
_FAMILIES = [("$sum", "$avg", "$min", "$max", "$first", "$last", "$push", "$addToSet"),
             ("$add", "$subtract", "$multiply", "$divide"), ("$gt", "$gte", "$lt", "$lte", "$eq", "$ne"),
             ("$limit", "$skip"), ("$quantity", "$price", "$customer_id", "$amount")]


def _swapped(name, rng):
    for family in _FAMILIES:
        if name in family and rng.random() < 0.3:
            return rng.choice(family)
    return name


def _perturbed(value, rng):
    """``value`` with some of its parts changed: numbers moved, strings lengthened, booleans flipped,
    operators and field references swapped for others of their kind."""
    if isinstance(value, dict):
        return {_swapped(k, rng): _perturbed(v, rng) for k, v in value.items()}
    if isinstance(value, str) and value in _FAMILIES[-1]:
        return _swapped(value, rng)
    if isinstance(value, list):
        return [_perturbed(v, rng) for v in value]
    if rng.random() < 0.5:
        return value
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, Decimal)):
        return value + 1
    if isinstance(value, float):
        return value + 0.25
    if isinstance(value, str):
        return value + "z"
    return value


def _outcome(pipeline):
    try:
        compiled = compile_pipeline(TABLE, pipeline)
    except FilterError as exc:
        return ("error", exc.path)
    return ({b: sql(compiled.statement, b) for b in ("sqlite", "postgresql", "mysql")}, compiled.params)


def test_pipelines_with_the_same_key_compile_to_the_same_sql():
    """Change values at random: whenever the shape key stays the same, a cached compilation gives
    exactly the SQL and parameters of a fresh one (and the same error, for a value that is wrong)."""
    from test_query_pipeline import CASES

    from dataflow.query.pipeline_shapes import template

    rng = random.Random(20240501)
    pipelines = [p for _, p, _ in CASES] + [report("completed", 5, 10, skip=1), LIMITED,
                                             [{"$project": {"a": "lit", "b": {"$literal": "$x"}, "c": None,
                                                            "d": {"$multiply": ["$price", 2, 0.5]}}}]]
    same = 0
    for pipeline in pipelines:
        for _ in range(12):
            sibling = _perturbed(pipeline, rng)
            if template(sibling).key != template(pipeline).key:
                continue
            same += 1
            pipeline_module.CACHE.clear()
            fresh = _outcome(sibling)
            pipeline_module.CACHE.clear()
            _outcome(pipeline)
            assert _outcome(sibling) == fresh, (pipeline, sibling)
    assert same > 100
