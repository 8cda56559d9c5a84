"""Aggregation pipelines on every database: one SELECT each, MongoDB-shaped results."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from dataflow.query import compile_filter, compile_pipeline
from dfq_support import Order, insert, make_table, sql

UTC = timezone.utc


def at(day: int) -> datetime:
    return datetime(2024, 1, day, tzinfo=UTC)


ORDERS = [
    dict(customer_id=1, status="completed", amount=Decimal("10.50"), quantity=2, price=1.5, created=at(1),
         meta={"k": 1, "tag": "a"}),
    dict(customer_id=1, status="completed", amount=Decimal("20.00"), quantity=None, price=2.0, created=at(3),
         meta={"k": 2.5}),
    dict(customer_id=2, status="completed", amount=Decimal("7.25"), quantity=5, price=None, created=at(2), meta=None),
    dict(customer_id=2, status="pending", amount=Decimal("1.00"), quantity=1, price=3.0, created=at(5),
         meta={"k": "x"}),
    dict(customer_id=3, status="completed", amount=Decimal("100.00"), quantity=3, price=4.0, created=at(4),
         meta={"k": True}),
    dict(customer_id=3, status="cancelled", amount=Decimal("5.00"), quantity=3, price=4.0, created=at(6),
         meta={"k": 1}),
]

SEED_PIPELINE = [
    {"$match": {"status": "completed"}},
    {"$group": {"_id": "$customer_id", "total_spent": {"$sum": "$amount"}, "order_count": {"$sum": 1}}},
    {"$sort": {"total_spent": -1}},
    {"$limit": 100},
]

CASES = [
    ("seed aggregation", SEED_PIPELINE, [
        {"_id": 3, "total_spent": Decimal("100"), "order_count": 1},
        {"_id": 1, "total_spent": Decimal("30.5"), "order_count": 2},
        {"_id": 2, "total_spent": Decimal("7.25"), "order_count": 1}]),
    ("bare sum", [{"$sum": "$amount"}], Decimal("143.75")),
    ("bare sum of nothing", [{"$match": {"status": "none"}}, {"$sum": "$amount"}], Decimal("0")),
    ("bare avg", [{"$avg": "$price"}], 2.9),
    ("bare avg of nothing", [{"$match": {"status": "none"}}, {"$avg": "$price"}], None),
    ("bare max", [{"$max": "$amount"}], Decimal("100")),
    ("bare count", [{"$count": {}}], 6),
    ("bare push", [{"$push": "$quantity"}], [2, 5, 1, 3, 3]),
    ("bare first after sort", [{"$sort": {"quantity": -1}}, {"$first": "$id"}], 3),
    ("push after a sort with nulls", [{"$sort": {"quantity": 1}}, {"$push": "$id"}], [2, 4, 1, 5, 6, 3]),
    ("push after a descending sort with nulls", [{"$sort": {"quantity": -1}}, {"$push": "$id"}], [3, 5, 6, 1, 4, 2]),
    ("bare push of nothing", [{"$match": {"status": "none"}}, {"$push": "$quantity"}], []),
    ("bare set of nothing", [{"$match": {"status": "none"}}, {"$addToSet": "$quantity"}], []),
    ("bare first of nothing", [{"$match": {"status": "none"}}, {"$first": "$quantity"}], None),
    ("filter on a pushed array", [
        {"$group": {"_id": "$customer_id", "qs": {"$push": "$quantity"}}},
        {"$match": {"qs": {"$size": 2}}}, {"$sort": {"_id": 1}}], [{"_id": 2, "qs": [5, 1]}, {"_id": 3, "qs": [3, 3]}]),
    ("migration guide", [
        {"$match": {"quantity": {"$gt": 1}}},
        {"$group": {"_id": "$status", "count": {"$sum": 1}}},
        {"$sort": {"count": -1}}], [{"_id": "completed", "count": 3}, {"_id": "cancelled", "count": 1}]),
    ("one group", [{"$group": {"_id": None, "avg": {"$avg": "$quantity"}, "mn": {"$min": "$price"},
                               "mx": {"$max": "$status"}, "c": {"$count": {}}}}],
     [{"_id": None, "avg": 2.8, "mn": 1.5, "mx": "pending", "c": 6}]),
    ("one group of nothing", [{"$match": {"status": "none"}}, {"$group": {"_id": None, "c": {"$sum": 1}}}], []),
    ("ordered accumulators", [
        {"$sort": {"amount": -1}},
        {"$group": {"_id": "$customer_id", "first": {"$first": "$amount"}, "last": {"$last": "$status"},
                    "amounts": {"$push": "$amount"}, "statuses": {"$addToSet": "$status"}}},
        {"$sort": {"_id": 1}}], [
        {"_id": 1, "first": Decimal("20"), "last": "completed", "amounts": [Decimal("20"), Decimal("10.5")],
         "statuses": ["completed"]},
        {"_id": 2, "first": Decimal("7.25"), "last": "pending", "amounts": [Decimal("7.25"), Decimal("1")],
         "statuses": ["completed", "pending"]},
        {"_id": 3, "first": Decimal("100"), "last": "cancelled", "amounts": [Decimal("100"), Decimal("5")],
         "statuses": ["cancelled", "completed"]}]),
    ("natural order without sort", [
        {"$group": {"_id": "$customer_id", "first": {"$first": "$id"}, "last": {"$last": "$id"},
                    "ids": {"$push": "$id"}}}, {"$sort": {"_id": -1}}], [
        {"_id": 3, "first": 5, "last": 6, "ids": [5, 6]}, {"_id": 2, "first": 3, "last": 4, "ids": [3, 4]},
        {"_id": 1, "first": 1, "last": 2, "ids": [1, 2]}]),
    ("project, sort, skip, limit", [
        {"$project": {"customer_id": 1, "total": {"$multiply": ["$quantity", "$price"]},
                      "half": {"$divide": ["$quantity", 2]}, "_id": 0}},
        {"$sort": {"total": -1}}, {"$skip": 1}, {"$limit": 2}], [
        {"customer_id": 3, "total": 12.0, "half": 1.5}, {"customer_id": 1, "total": 3.0, "half": 1.0}]),
    ("composite group key, match after group", [
        {"$group": {"_id": {"c": "$customer_id", "s": "$status"}, "n": {"$sum": 1}}},
        {"$match": {"n": {"$gte": 1}, "_id.c": {"$lt": 3}}}, {"$sort": {"_id": 1}}], [
        {"_id": {"c": 1, "s": "completed"}, "n": 2}, {"_id": {"c": 2, "s": "completed"}, "n": 1},
        {"_id": {"c": 2, "s": "pending"}, "n": 1}]),
    ("count stage", [{"$count": "n"}], [{"n": 6}]),
    ("count of nothing", [{"$match": {"status": "none"}}, {"$count": "n"}], []),
    ("group by a JSON path", [
        {"$group": {"_id": "$meta.k", "ids": {"$push": "$id"}}}, {"$sort": {"_id": 1}}], [
        {"_id": None, "ids": [3]}, {"_id": 1, "ids": [1, 6]}, {"_id": 2.5, "ids": [2]}, {"_id": "x", "ids": [4]},
        {"_id": True, "ids": [5]}]),
    ("sort, limit, project", [
        {"$sort": {"customer_id": 1, "amount": -1}}, {"$limit": 3}, {"$project": {"customer_id": 1, "amount": 1}}], [
        {"customer_id": 1, "amount": Decimal("20")}, {"customer_id": 1, "amount": Decimal("10.5")},
        {"customer_id": 2, "amount": Decimal("7.25")}]),
    ("exclusion", [{"$project": {"amount": 0, "meta": 0}}, {"$limit": 1}], [
        {"id": 1, "customer_id": 1, "status": "completed", "quantity": 2, "price": 1.5, "created": at(1)}]),
    ("match after group (having)", [
        {"$group": {"_id": "$customer_id", "total": {"$sum": "$amount"}}}, {"$match": {"total": {"$gt": 20}}},
        {"$sort": {"_id": 1}}], [{"_id": 1, "total": Decimal("30.5")}, {"_id": 3, "total": Decimal("105")}]),
    ("skip then limit", [{"$sort": {"id": 1}}, {"$skip": 2}, {"$limit": 2}, {"$project": {"id": 1}}],
     [{"id": 3}, {"id": 4}]),
    ("limit then skip", [{"$sort": {"id": 1}}, {"$limit": 4}, {"$skip": 3}, {"$project": {"id": 1}}], [{"id": 4}]),
    ("limit then match keeps the order", [
        {"$sort": {"amount": -1}}, {"$limit": 3}, {"$match": {"status": "completed"}},
        {"$project": {"amount": 1}}], [{"amount": Decimal("100")}, {"amount": Decimal("20")},
                                       {"amount": Decimal("10.5")}]),
    ("rename and arithmetic", [
        {"$match": {"id": 1}},
        {"$project": {"cust": "$customer_id", "net": {"$subtract": ["$amount", 1]},
                      "gross": {"$add": ["$amount", "$price", 1]}, "theme": "$meta.tag"}}],
     [{"cust": 1, "net": Decimal("9.5"), "gross": 13.0, "theme": "a"}]),
    ("arithmetic inside an accumulator", [
        {"$group": {"_id": "$customer_id", "revenue": {"$sum": {"$multiply": ["$quantity", "$price"]}}}},
        {"$sort": {"revenue": -1, "_id": 1}}], [
        {"_id": 3, "revenue": 24.0}, {"_id": 1, "revenue": 3.0}, {"_id": 2, "revenue": 3.0}]),
    ("push JSON documents", [
        {"$group": {"_id": "$customer_id", "metas": {"$push": "$meta"}}}, {"$sort": {"_id": 1}}], [
        {"_id": 1, "metas": [{"k": 1, "tag": "a"}, {"k": 2.5}]}, {"_id": 2, "metas": [{"k": "x"}]},
        {"_id": 3, "metas": [{"k": True}, {"k": 1}]}]),
    ("add to set", [{"$match": {"customer_id": 3}}, {"$group": {"_id": None, "q": {"$addToSet": "$quantity"}}}],
     [{"_id": None, "q": [3]}]),
    ("dates", [{"$group": {"_id": None, "first": {"$min": "$created"}, "last": {"$max": "$created"},
                           "when": {"$push": "$created"}}}],
     [{"_id": None, "first": at(1), "last": at(6), "when": [at(1), at(3), at(2), at(5), at(4), at(6)]}]),
    ("match on the group key", [
        {"$group": {"_id": "$status", "n": {"$sum": 1}}}, {"$match": {"_id": "completed"}}],
     [{"_id": "completed", "n": 4}]),
    ("sum of a constant and a count accumulator", [
        {"$group": {"_id": "$status", "twice": {"$sum": 2}, "n": {"$count": {}}}}, {"$sort": {"twice": 1, "_id": 1}}],
     [{"_id": "cancelled", "twice": 2, "n": 1}, {"_id": "pending", "twice": 2, "n": 1},
      {"_id": "completed", "twice": 8, "n": 4}]),
]


def normalise(value):
    """Decimals compare by value; sets ($addToSet) by sorted content; floats to 9 places."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, float):
        return round(value, 9)
    return value


def run(conn, table, pipeline, base=None):
    compiled = compile_pipeline(table, pipeline, base=base)
    assert isinstance(compiled.statement, sa.Select)
    return compiled.shape(conn.execute(compiled.statement, compiled.params).mappings().all())


def test_pipelines(engine):
    orders = make_table(engine, Order)
    with engine.begin() as conn:
        insert(conn, orders, ORDERS)
        wrong = []
        for name, pipeline, expected in CASES:
            got = run(conn, orders, pipeline)
            if isinstance(got, list):
                for doc in (d for d in got if isinstance(d, dict)):
                    for key in ("statuses", "q"):
                        if key in doc:
                            doc[key] = sorted(doc[key])
            if normalise(got) != normalise(expected) or type(got) is not type(expected):
                wrong.append(f"{name}: expected {expected!r}, got {got!r}")
    assert not wrong, "\n".join(wrong)


def test_native_types_come_back(engine):
    orders = make_table(engine, Order)
    with engine.begin() as conn:
        insert(conn, orders, ORDERS)
        [doc] = run(conn, orders, [{"$group": {"_id": None, "total": {"$sum": "$amount"},
                                                "first": {"$first": "$created"}, "n": {"$sum": 1},
                                                "avg": {"$avg": "$quantity"}}}])
    assert type(doc["total"]) is Decimal and doc["total"] == Decimal("143.75")
    assert doc["first"] == at(1) and doc["first"].tzinfo is not None
    assert type(doc["n"]) is int and type(doc["avg"]) is float


def test_base_filter_is_anded_first(engine):
    orders = make_table(engine, Order)
    with engine.begin() as conn:
        insert(conn, orders, ORDERS)
        base = compile_filter(orders, {"status": "completed"})
        assert run(conn, orders, [{"$sum": "$amount"}], base=base) == Decimal("137.75")
        # a $match of the same shape as the base filter does not clash with it
        assert run(conn, orders, [{"$match": {"status": "pending"}}, {"$count": "n"}], base=base) == []
        base = compile_filter(orders, {"created": {"$gte": {"$date": "2024-01-04"}}})
        assert run(conn, orders, [{"$match": {"status": "completed"}}, {"$sum": "$amount"}], base=base) == \
            Decimal("100")


def test_ordered_accumulators_compile_per_database():
    table = make_table(sa.create_engine("sqlite://"), Order)
    compiled = compile_pipeline(table, [{"$sort": {"amount": -1}}, {"$group": {
        "_id": "$customer_id", "first": {"$first": "$amount"}, "all": {"$push": "$status"}}}])
    text = {b: sql(compiled.statement, b) for b in ("sqlite", "postgresql", "mysql")}
    assert "COALESCE(df_json_agg(json_quote(" in text["sqlite"] and "'da'" in text["sqlite"]  # keys: amount desc, id asc
    assert "jsonb_agg(" in text["postgresql"] and "ORDER BY" in text["postgresql"].split("jsonb_agg(")[1]
    assert "GROUP_CONCAT(" in text["mysql"] and "ORDER BY" in text["mysql"].split("GROUP_CONCAT(")[1]
    for t in text.values():
        assert "first_value(" in t and "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING" in t
        assert t.count("SELECT") == 2  # one statement: the grouping SELECT over one subquery


def test_a_cut_json_array_is_an_error_not_a_shorter_list(engine, backend):
    """MariaDB cuts JSON_ARRAYAGG at group_concat_max_len with only a warning."""
    from dataflow.errors import DatabaseError

    if backend != "mysql":
        pytest.skip("group_concat_max_len is MySQL/MariaDB's")
    orders = make_table(engine, Order)
    with engine.begin() as conn:
        insert(conn, orders, ORDERS)
        conn.exec_driver_sql("SET SESSION group_concat_max_len = 16")
        with pytest.raises(DatabaseError, match="group_concat_max_len"):
            run(conn, orders, [{"$push": "$status"}])
        with pytest.raises(DatabaseError, match="group_concat_max_len"):
            run(conn, orders, [{"$addToSet": "$status"}])
