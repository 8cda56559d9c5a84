"""Every filter operator, run on each database: the rows it matches, written out by hand."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from dataflow.query import compile_filter
from dfq_support import Person, insert, make_table, matching_ids

UTC = timezone.utc
U1, U2 = uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.UUID("87654321-4321-8765-4321-876543218765")


PEOPLE = [
    dict(name="John", age=30, score=1.5, active=True, balance=Decimal("12.50"), born=date(1990, 1, 1),
         seen=datetime(2024, 1, 1, 12, tzinfo=UTC), code=U1,
         metadata={"preferences": {"theme": "dark", "size": 3}, "level": 3, "label": "Gold", "flag": True},
         tags=["premium", "beta", 1, {"k": 2, "j": "x"}]),
    dict(name="jane", age=None, score=2.0, active=False, balance=Decimal("2"), code=U2,
         metadata={"preferences": {"theme": "Dark"}, "level": "3", "label": "gold", "flag": 1}, tags=[]),
    dict(name="Bob", age=70, score=None, active=None, balance=None, born=date(1950, 6, 1),
         seen=datetime(2030, 1, 1, tzinfo=UTC), metadata=None, tags=None),
    dict(name=None, age=18, score=-3.0, active=True, balance=Decimal("-0.5"),
         metadata={"level": 10.5, "preferences": {"theme": None}, "skills": ["a", "b", "c", "d"]},
         tags=["premium", True, ["nested"]]),
    dict(name="a_b%c", age=65, score=0.0, active=False, balance=Decimal("100"), born=date(2000, 2, 29),
         seen=datetime(2024, 6, 1, tzinfo=UTC), metadata={"level": None, "list": [1, 2, 3], "holes": [None, 1]},
         tags=["x"]),
]
ALL = [1, 2, 3, 4, 5]

CASES = {
    "comparison": [
        ({"age": 30}, [1]),
        ({"age": {"$eq": 30}}, [1]),
        ({"age": {"$ne": 30}}, [2, 3, 4, 5]),
        ({"age": {"$gt": 18}}, [1, 3, 5]),
        ({"age": {"$gte": 18}}, [1, 3, 4, 5]),
        ({"age": {"$lt": 65}}, [1, 4]),
        ({"age": {"$lte": 65}}, [1, 4, 5]),
        ({"age": {"$gt": 18, "$lt": 65}}, [1]),
        ({"age": {"$gt": 29.5}}, [1, 3, 5]),
        ({"age": {"$between": [18, 30]}}, [1, 4]),
        ({"score": {"$gte": 0}}, [1, 2, 5]),
        ({"score": 2}, [2]),
        ({"active": True}, [1, 4]),
        ({"active": False}, [2, 5]),
        ({"active": {"$ne": True}}, [2, 3, 5]),
        ({"balance": {"$gt": 2}}, [1, 5]),
        ({"balance": {"$lt": 0}}, [4]),
        ({"balance": Decimal("2")}, [2]),
        ({"balance": "12.5"}, [1]),
        ({"balance": {"$in": [Decimal("2.00"), 100]}}, [2, 5]),
        ({"balance": {"$between": [Decimal("-1"), 12.5]}}, [1, 2, 4]),
        ({"code": str(U1)}, [1]),
        ({"code": {"$in": [U1, str(U2)]}}, [1, 2]),
    ],
    "null_and_sets": [
        ({"age": None}, [2]),
        ({"age": {"$eq": None}}, [2]),
        ({"age": {"$ne": None}}, [1, 3, 4, 5]),
        ({"age": {"$exists": True}}, [1, 3, 4, 5]),
        ({"age": {"$exists": False}}, [2]),
        ({"age": {"$gte": None}}, [2]),
        ({"age": {"$gt": None}}, []),
        ({"age": {"$not": {"$gt": 18}}}, [2, 4]),
        ({"age": {"$in": [18, 70]}}, [3, 4]),
        ({"age": {"$in": [18, None]}}, [2, 4]),
        ({"age": {"$nin": [18, 70]}}, [1, 2, 5]),
        ({"age": {"$nin": [18, None]}}, [1, 3, 5]),
        ({"age": {"$in": []}}, []),
        ({"age": {"$nin": []}}, ALL),
        ({"age": {"$not": {"$in": [18, 30]}}}, [2, 3, 5]),
    ],
    "strings": [
        ({"name": "John"}, [1]),
        ({"name": "john"}, []),
        ({"name": {"$gt": "Z"}}, [2, 5]),
        ({"name": {"$lt": "a"}}, [1, 3]),
        ({"name": {"$between": ["B", "K"]}}, [1, 3]),
        ({"name": {"$in": ["John", "bob"]}}, [1]),
        ({"name": {"$regex": "^J"}}, [1]),
        ({"name": {"$regex": "^j", "$options": "i"}}, [1, 2]),
        ({"name": {"$regex": "o"}}, [1, 3]),
        ({"name": {"$regex": "O", "$options": "i"}}, [1, 3]),
        ({"name": {"$regex": "^[a-z]+$"}}, [2]),
        ({"name": {"$regex": "b%c$"}}, [5]),
        ({"name": {"$regex": "^.{4}$"}}, [1, 2]),
        ({"name": {"$regex": "n(e|n)$"}}, [2]),
        ({"name": {"$regex": "^(?:Bo|Jo)[bh]"}}, [1, 3]),
        ({"name": {"$regex": "\\w_\\w"}}, [5]),
        ({"name": {"$not": {"$regex": "^J"}}}, [2, 3, 4, 5]),
        ({"name": {"$like": "J%"}}, [1]),
        ({"name": {"$like": "j%"}}, [2]),
        ({"name": {"$ilike": "j%"}}, [1, 2]),
        ({"name": {"$ilike": "%O%"}}, [1, 3]),
        ({"name": {"$like": "a\\_b\\%c"}}, [5]),
        ({"name": {"$like": "_o%"}}, [1, 3]),
        ({"name": {"$contains": "_b%"}}, [5]),
    ],
    "json_paths": [
        ({"metadata.preferences.theme": "dark"}, [1]),
        ({"metadata.preferences.theme": {"$regex": "^d", "$options": "i"}}, [1, 2]),
        ({"metadata.preferences.theme": None}, [3, 4, 5]),
        ({"metadata.preferences.theme": {"$exists": True}}, [1, 2, 4]),
        ({"metadata.preferences.theme": {"$exists": False}}, [3, 5]),
        ({"metadata.level": 3}, [1]),
        ({"metadata.level": "3"}, [2]),
        ({"metadata.level": {"$gt": 3}}, [4]),
        ({"metadata.level": {"$gte": 3}}, [1, 4]),
        ({"metadata.level": {"$lt": "4"}}, [2]),
        ({"metadata.level": {"$ne": 3}}, [2, 3, 4, 5]),
        ({"metadata.level": {"$in": [3, "3"]}}, [1, 2]),
        ({"metadata.level": {"$in": [None]}}, [3, 5]),
        ({"metadata.level": {"$nin": [3, None]}}, [2, 4]),
        ({"metadata.level": {"$between": [3, 11]}}, [1, 4]),
        ({"metadata.flag": True}, [1]),
        ({"metadata.flag": 1}, [2]),
        ({"metadata.label": {"$gt": "G"}}, [1, 2]),
        ({"metadata.label": {"$lt": "a"}}, [1]),
        ({"metadata.label": {"$ilike": "GOLD"}}, [1, 2]),
        ({"metadata": {"flag": True, "label": "Gold", "level": 3, "preferences": {"size": 3, "theme": "dark"}}}, [1]),
        ({"metadata.preferences": {"theme": "dark"}}, []),
        ({"metadata.preferences": {"theme": "Dark"}}, [2]),
        ({"metadata.list": [1, 2, 3]}, [5]),
        ({"metadata.list": [3, 2, 1]}, []),
        ({"metadata.list.1": 2}, [5]),
        ({"metadata": None}, [3]),
        ({"metadata": {"$exists": True}}, [1, 2, 4, 5]),
    ],
    "arrays": [
        ({"tags": {"$contains": "premium"}}, [1, 4]),
        ({"tags": {"$contains": 1}}, [1]),
        ({"tags": {"$contains": True}}, [4]),
        ({"tags": {"$contains": ["premium", "beta"]}}, [1]),
        ({"tags": {"$contains": {"k": 2}}}, [1]),
        ({"tags": {"$contains": [["nested"]]}}, [4]),
        ({"metadata": {"$contains": {"preferences": {"theme": "dark"}}}}, [1]),
        ({"metadata": {"$contains": {"list": [3, 1]}}}, [5]),
        ({"metadata": {"$contains": {"level": 3}}}, [1]),
        ({"metadata.skills": {"$contains": "c"}}, [4]),
        ({"tags": {"$size": 0}}, [2]),
        ({"tags": {"$size": 3}}, [4]),
        ({"tags": {"$size": {"$gt": 2}}}, [1, 4]),
        ({"tags": {"$size": {"$gte": 1, "$lt": 4}}}, [4, 5]),
        ({"tags": {"$size": {"$ne": 1}}}, [1, 2, 4]),
        ({"metadata.skills": {"$size": {"$gt": 3}}}, [4]),
        ({"tags": {"$all": ["premium", True]}}, [4]),
        ({"tags": {"$all": ["premium"]}}, [1, 4]),
        ({"tags": {"$all": []}}, []),
        ({"tags": {"$all": [{"j": "x", "k": 2}]}}, [1]),
        ({"tags": {"$elemMatch": {"k": {"$gte": 2}}}}, [1]),
        ({"tags": {"$elemMatch": {"$eq": "x"}}}, [5]),
        ({"tags": {"$elemMatch": {"$gt": 0}}}, [1]),
        ({"tags": {"$elemMatch": {"$regex": "^p"}}}, [1, 4]),
        ({"tags": {"$elemMatch": {"$or": [{"k": 2}, {"j": "y"}]}}}, [1]),
        ({"tags.0": "premium"}, [1, 4]),
        ({"tags": None}, [3]),
        ({"metadata.list": {"$contains": None}}, []),
        ({"metadata.holes": {"$contains": None}}, [5]),
        ({"metadata.holes": {"$all": [None, 1]}}, [5]),
        ({"metadata.holes": {"$elemMatch": {"$exists": True, "$eq": None}}}, [5]),
        ({"tags": {"$all": ["x", None]}}, []),
        ({"metadata.skills": {"$elemMatch": {"$in": ["b", None]}}}, [4]),
        ({"tags": {"$not": {"$size": 0}}}, [1, 3, 4, 5]),
    ],
    "dates": [
        ({"born": {"$gte": "1990-01-01"}}, [1, 5]),
        ({"born": date(1950, 6, 1)}, [3]),
        ({"born": {"$lt": {"$date": "today"}}}, [1, 3, 5]),
        ({"seen": {"$gte": "2024-01-01T12:00:00Z"}}, [1, 3, 5]),
        ({"seen": {"$gt": datetime(2024, 1, 1, 12, tzinfo=UTC)}}, [3, 5]),
        ({"seen": "2024-01-01T13:00:00+01:00"}, [1]),
        ({"seen": datetime(2024, 1, 1, 12)}, [1]),
        ({"seen": {"$lt": {"$date": "-7d"}}}, [1, 5]),
        ({"seen": {"$gte": {"$date": "-1h"}}}, [3]),
        ({"seen": {"$lt": {"$date": "today"}}}, [1, 5]),
        ({"seen": {"$between": [{"$date": "2024-01-01"}, {"$date": "2024-12-31T23:59:59Z"}]}}, [1, 5]),
    ],
    "logical": [
        ({"$or": [{"age": 30}, {"name": "Bob"}]}, [1, 3]),
        ({"$and": [{"age": {"$gt": 18}}, {"active": True}]}, [1]),
        ({"$nor": [{"age": 30}, {"active": False}]}, [3, 4]),
        ({"$not": {"age": {"$gt": 18}}}, [2, 4]),
        ({"$or": [{"metadata.level": {"$gt": 5}}, {"tags": {"$size": 0}}], "age": {"$ne": 18}}, [2]),
        ({"$or": [{"$and": [{"age": {"$gte": 65}}, {"name": {"$regex": "^B"}}]}, {"name": None}]}, [3, 4]),
        ({"$or": [{}, {"age": 1}]}, ALL),
        ({"$and": [{"name": {"$ne": None}}, {"$nor": [{"tags": {"$contains": "x"}}]}]}, [1, 2, 3]),
    ],
}


@pytest.mark.parametrize("group", list(CASES))
def test_operator_results(engine, group):
    people = make_table(engine, Person)
    with engine.begin() as conn:
        insert(conn, people, PEOPLE)
        wrong = []
        for filt, expected in CASES[group]:
            got = matching_ids(conn, people, compile_filter(people, filt))
            if got != expected:
                wrong.append(f"{filt}: expected {expected}, got {got}")
    assert not wrong, "\n".join(wrong)


def test_update_and_delete_use_the_same_clause(engine):
    import sqlalchemy as sa

    people = make_table(engine, Person)
    with engine.begin() as conn:
        insert(conn, people, PEOPLE)
        f = compile_filter(people, {"tags": {"$contains": "premium"}, "age": {"$lt": 40}})
        assert conn.execute(sa.update(people).where(f.clause).values(score=99.0), f.params).rowcount == 2
        f = compile_filter(people, {"score": 99.0})
        assert matching_ids(conn, people, f) == [1, 4]
        f = compile_filter(people, {"name": {"$regex": "^[jJ]"}})
        assert conn.execute(sa.delete(people).where(f.clause), f.params).rowcount == 2
        assert matching_ids(conn, people, compile_filter(people, None)) == [3, 4, 5]
