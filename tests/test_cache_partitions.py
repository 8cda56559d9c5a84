"""Reads pinned by a plain equality on a key field (primary key, unique, foreign key, indexed) depend on
that partition only: writes to records of other partitions leave them cached; a write that moves a
record between partitions, a delete and bulk changes make every pinned read stale. A random walk of
writes and cached reads checks that no cached answer ever differs from the database's."""

from __future__ import annotations

import random
from typing import Annotated, Optional

import pytest

from test_cache import sharing, prefix, store  # noqa: F401  (fixtures)

from dataflow import Field


def declare(db):
    @db.model
    class Item:
        grp: int
        code: Annotated[Optional[str], Field(unique=True)] = None
        value: int = 0
        label: str = ""
        __dataflow__ = {"indexes": ["grp"]}


@pytest.fixture
def pair(db_url, store, prefix):  # noqa: F811
    with sharing(db_url, store, prefix, declare) as both:
        yield both


def hits(db):
    return db.cache.stats()["hits"]


def test_writes_to_one_partition_leave_the_others_cached(pair):
    a, b = pair
    assert a.binding("Item").partitions == {"id", "grp", "code"}
    made = [a.create("Item", grp=g, value=g, code=f"c{i}") for i, g in enumerate((1, 1, 2, 2))]

    def reads():
        return (len(a.list("Item", {"grp": 1}, cache=True)), len(a.list("Item", {"grp": 2}, cache=True)),
                a.count("Item", {"grp": 2, "value": {"$gte": 0}}, cache=True),
                a.read("Item", filter={"code": "c2"}, cache=True)["value"])
    assert reads() == (2, 2, 2, 2)
    base = hits(a)
    assert reads() == (2, 2, 2, 2) and hits(a) == base + 4

    b.update("Item", made[0]["id"], {"value": 10})  # partitions grp=1, code=c1, id: the grp=2 reads stay
    assert reads() == (2, 2, 2, 2) and hits(a) == base + 4 + 3

    b.create("Item", grp=2, value=7)  # grp=2 gains a record: its reads go stale, grp=1 and code=c2 stay
    assert reads() == (2, 3, 3, 2) and hits(a) == base + 7 + 2

    b.update("Item", made[1]["id"], {"grp": 2})  # moves between partitions: everything pinned is stale
    assert reads() == (1, 4, 4, 2) and hits(a) == base + 9

    b.update("Item", {"code": "c2"}, {"value": 5})  # by a unique field, as a filter
    assert reads() == (1, 4, 4, 5)

    b.delete("Item", made[0]["id"])  # a delete does not know the record's other partitions: all stale
    assert reads() == (0, 4, 4, 5)
    assert len(a.list("Item", cache=True)) == 4  # unpinned reads are table-wide, as before


def test_a_random_walk_never_serves_a_stale_answer(pair):
    a, b = pair
    rng = random.Random(20261130)
    ids: list[int] = []
    reads = [
        lambda db, g, c: db.list("Item", {"grp": g}, cache=c),
        lambda db, g, c: db.count("Item", {"grp": g, "value": {"$gt": 2}}, cache=c),
        lambda db, g, c: db.list("Item", {"code": f"c{g}"}, cache=c),
        lambda db, g, c: db.list("Item", {"grp": None} if g == 0 else {"$or": [{"grp": g}, {"value": g}]}, cache=c),
        lambda db, g, c: db.read("Item", rng.choice(ids), cache=c, raise_on_not_found=False) if ids else None,
        lambda db, g, c: db.list("Item", cache=c),
    ]

    def write(db):
        op = rng.choices(range(8), weights=(12, 13, 25, 25, 5, 10, 5, 5))[0]
        g = rng.randrange(4)
        if op <= 1 or not ids:
            code = rng.choice([None, f"n{len(ids)}-{rng.randrange(10 ** 6)}"])
            ids.append(db.create("Item", grp=g, value=rng.randrange(5), code=code)["id"])
        elif op == 2:
            db.update("Item", rng.choice(ids), {"value": rng.randrange(5)})
        elif op == 3:
            db.update("Item", rng.choice(ids), {"grp": g})
        elif op == 4:
            victim = rng.choice(ids)
            db.delete("Item", victim)
            ids.remove(victim)
        elif op == 5:
            db.upsert("Item", {"code": f"c{g}"}, {"value": rng.randrange(5)}, {"grp": g})
        elif op == 6:
            db.bulk_update("Item", {"grp": g}, {"label": f"l{rng.randrange(9)}"})
        else:
            db.update("Item", rng.choice(ids), {"code": f"c{g}"}) if not db.list("Item", {"code": f"c{g}"}) else None

    for step in range(300):
        if rng.random() < 0.3:
            write(rng.choice((a, b)))
        r = rng.choices(reads, weights=(4, 2, 2, 1, 2, 1))[0]
        g = rng.randrange(4)
        state = rng.getstate()
        cached = r(a, g, True)
        rng.setstate(state)  # the same random record for the fresh read
        fresh = r(a, g, False)
        assert cached == fresh, f"step {step}: a cached answer differs from the database's"
    assert hits(a) > 0
