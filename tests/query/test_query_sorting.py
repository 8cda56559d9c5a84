"""compile_sort: accepted forms, and MongoDB's order (NULL first, code points, numbers) everywhere."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Optional

import pytest
import sqlalchemy as sa

from dataflow.query import compile_sort
from dfq_support import insert, make_table, sql
from test_query_errors import TABLE

SAME = [
    {"age": -1, "name": 1},
    ["-age", "name"],
    [("age", -1), ("name", 1)],
    [("age", "desc"), ("name", "asc")],
    [{"age": -1}, {"name": 1}],
]


@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql", "mysql"])
def test_sort_forms_are_equivalent(backend_name):
    rendered = {sql(sa.select(TABLE.c.id).order_by(*compile_sort(TABLE, s)), backend_name) for s in SAME}
    assert len(rendered) == 1
    assert sql(sa.select(TABLE.c.id).order_by(*compile_sort(TABLE, "name")), backend_name) == \
        sql(sa.select(TABLE.c.id).order_by(*compile_sort(TABLE, [("name", 1)])), backend_name)
    assert sql(sa.select(TABLE.c.id).order_by(*compile_sort(TABLE, "-name")), backend_name) == \
        sql(sa.select(TABLE.c.id).order_by(*compile_sort(TABLE, [("name", -1)])), backend_name)


def test_order_by_sql_per_dialect():
    keys = compile_sort(TABLE, {"age": -1, "name": 1, "amount": 1})
    stmt = sa.select(TABLE.c.id).order_by(*keys)
    assert sql(stmt, "sqlite").endswith(
        "ORDER BY persons.age DESC, persons.name ASC, CAST(persons.amount AS REAL) ASC")
    assert sql(stmt, "postgresql").endswith(
        'ORDER BY persons.age DESC NULLS LAST, (persons.name COLLATE "C") ASC NULLS FIRST, '
        'persons.amount ASC NULLS FIRST')
    assert sql(stmt, "mysql").endswith("ORDER BY persons.age DESC, persons.name ASC, persons.amount ASC")


class Row:
    __dataflow__ = {"timestamps": False}
    name: Optional[str] = None
    rank: Optional[int] = None
    price: Optional[Decimal] = None
    at: Optional[datetime] = None
    meta: Optional[dict] = None


UTC = timezone.utc
ROWS = [
    dict(name="b", rank=3, price=Decimal("9.5"), at=datetime(2024, 1, 2, tzinfo=UTC), meta={"k": 3}),
    dict(name="B", rank=None, price=Decimal("10"), at=None, meta={"k": "a"}),
    dict(name="a", rank=1, price=Decimal("-1"), at=datetime(2023, 12, 31, 23, 59, tzinfo=UTC), meta={}),
    dict(name=None, rank=2, price=None, at=datetime(2024, 1, 1, tzinfo=UTC), meta={"k": True}),
    dict(name="é", rank=5, price=Decimal("100"), at=datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC), meta={"k": {"x": 1}}),
    dict(name="Z", rank=4, price=Decimal("0.25"), at=datetime(2025, 1, 1, tzinfo=UTC), meta={"k": 1.5}),
    dict(name="aa", rank=0, price=Decimal("9.49"), at=datetime(2020, 1, 1, tzinfo=UTC), meta={"k": [1]}),
]


@pytest.mark.parametrize("sort, expected", [
    ({"name": 1}, [4, 2, 6, 3, 7, 1, 5]),           # NULL first, then by code point: B Z a aa b é
    ({"name": -1}, [5, 1, 7, 3, 6, 2, 4]),          # NULL last descending
    ({"rank": 1}, [2, 7, 3, 4, 1, 6, 5]),
    ({"rank": -1}, [5, 6, 1, 4, 3, 7, 2]),
    ({"price": 1}, [4, 3, 6, 7, 1, 2, 5]),          # numeric, also on SQLite (text there)
    ({"at": 1}, [2, 7, 3, 4, 5, 1, 6]),
    ({"meta.k": 1}, [3, 6, 1, 2, 5, 7, 4]),         # missing, numbers, strings, objects, arrays, booleans
    ({"meta.k": -1}, [4, 7, 5, 2, 1, 6, 3]),
])
def test_sort_order_on_every_database(engine, sort, expected):
    rows = make_table(engine, Row)
    with engine.begin() as conn:
        insert(conn, rows, ROWS)
        stmt = sa.select(rows.c.id).order_by(*compile_sort(rows, sort), rows.c.id)
        assert [r[0] for r in conn.execute(stmt)] == expected
