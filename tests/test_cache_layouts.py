"""Processes sharing one Redis cache with different layouts of a table (other partition fields, another
DataFlow version) fall back to table-wide tokens for it: a pinned read cached by one is never served
after the other's one-record write. Processes with the same layout keep their fine-grained hits.

Each test runs on every database, with two instances on Redis under a key prefix of its own.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Annotated, Optional

import pytest
import redis

from test_cache import REDIS, prefix  # noqa: F401  (fixture)

import dataflow
from dataflow import DataFlow, Field
from dataflow import cache_layouts
from dataflow.cache_layouts import fingerprint


def indexed(db):
    """``grp`` indexed and ``code`` unique: both pin a partition."""
    @db.model
    class Item:
        grp: int
        code: Annotated[Optional[str], Field(unique=True)] = None
        value: int = 0
        __dataflow__ = {"indexes": ["grp"]}


def plain(db):
    """The same table declared without its index and unique field: only ``id`` pins a partition."""
    @db.model
    class Item:
        grp: int
        code: Optional[str] = None
        value: int = 0


@contextmanager
def two(db_url, prefix, first, second):  # noqa: F811
    """The first instance (it makes the table), then the second on the same database and cache."""
    a = DataFlow(db_url, redis_url=REDIS, cache_prefix=prefix)
    first(a)
    b = None
    try:
        def start():
            nonlocal b
            b = DataFlow(db_url, redis_url=REDIS, cache_prefix=prefix, node_prefix="Other", auto_migrate=False)
            second(b)
            return b
        yield a, start
    finally:
        a.close()
        if b is not None:
            b.close()


def registry(prefix):  # noqa: F811
    client = redis.Redis.from_url(REDIS)
    try:
        return set(client.hgetall(f"{prefix}layouts:items"))
    finally:
        client.close()


def values(rows):
    return sorted(r["value"] for r in rows)


@pytest.mark.parametrize("reader_layout", ["indexed", "plain"])
def test_a_pinned_read_cached_before_another_layout_starts_is_not_served_after_its_write(db_url, prefix,  # noqa: F811
                                                                                         reader_layout):
    first, second = (indexed, plain) if reader_layout == "indexed" else (plain, indexed)
    with two(db_url, prefix, first, second) as (a, start):
        made = [a.create("Item", grp=1, value=i, code=f"c{i}") for i in range(3)]
        assert values(a.list("Item", {"grp": 1}, cache=True)) == [0, 1, 2]
        assert a.read("Item", made[0]["id"], cache=True)["value"] == 0
        hits = a.cache.stats()["hits"]
        assert values(a.list("Item", {"grp": 1}, cache=True)) == [0, 1, 2]
        assert a.cache.stats()["hits"] == hits + 1  # one layout: the pinned read is a hit

        b = start()
        assert fingerprint(a.binding("Item")) != fingerprint(b.binding("Item"))
        b.update("Item", made[1]["id"], {"value": 10})  # by id: b knows no partition on grp or code
        assert values(a.list("Item", {"grp": 1}, cache=True)) == [0, 2, 10]
        assert a.read("Item", filter={"code": "c2"}, cache=True)["value"] == 2
        b.update("Item", made[2]["id"], {"value": 20, "code": "c9"})
        assert a.read("Item", filter={"code": "c2"}, cache=True, raise_on_not_found=False) is None
        assert a.read("Item", filter={"code": "c9"}, cache=True)["value"] == 20
        b.create("Item", grp=1, value=30)
        assert values(a.list("Item", {"grp": 1}, cache=True)) == [0, 10, 20, 30]
        assert len(registry(prefix)) == 2


def test_each_side_sees_the_others_one_record_writes(db_url, prefix):  # noqa: F811
    with two(db_url, prefix, indexed, plain) as (a, start):
        b = start()
        made = [a.create("Item", grp=g, value=g, code=f"c{g}") for g in (1, 2)]
        for reader, writer in ((a, b), (b, a), (a, b), (b, a)):
            before = values(reader.list("Item", {"grp": 1}, cache=True))
            assert values(reader.list("Item", {"grp": 1}, cache=True)) == before
            assert reader.read("Item", made[0]["id"], cache=True)["value"] == before[0]
            writer.update("Item", made[0]["id"], {"value": before[0] + 1})
            assert values(reader.list("Item", {"grp": 1}, cache=True)) == [before[0] + 1]
            assert reader.read("Item", made[0]["id"], cache=True)["value"] == before[0] + 1
            assert reader.count("Item", {"code": "c2"}, cache=True) == 1
            writer.update("Item", made[1]["id"], {"code": "c3"})
            assert reader.count("Item", {"code": "c2"}, cache=True) == 0
            writer.update("Item", made[1]["id"], {"code": "c2"})


def test_the_same_layout_keeps_its_fine_grained_hits(db_url, prefix):  # noqa: F811
    with two(db_url, prefix, indexed, indexed) as (a, start):
        b = start()
        made = [a.create("Item", grp=g, value=g) for g in (1, 2)]
        assert values(a.list("Item", {"grp": 1}, cache=True)) == [1]
        hits = a.cache.stats()["hits"]
        b.update("Item", made[1]["id"], {"value": 5})  # another partition, the same layout
        assert values(a.list("Item", {"grp": 1}, cache=True)) == [1]
        assert a.cache.stats()["hits"] == hits + 1
        assert len(registry(prefix)) == 1


def test_a_layout_that_stops_heartbeating_gives_the_table_back_its_fine_tokens(db_url, prefix, monkeypatch):  # noqa: F811
    monkeypatch.setattr(cache_layouts, "CHECK_EVERY_S", 0.0)  # look at the registry on every use
    with two(db_url, prefix, indexed, plain) as (a, start):
        b = start()
        made = [a.create("Item", grp=g, value=g) for g in (1, 2)]
        b.read("Item", made[0]["id"], cache=True)  # b registers its layout
        assert values(a.list("Item", {"grp": 1}, cache=True)) == [1]
        a.update("Item", made[1]["id"], {"value": 5})  # mixed: every write makes a's reads of the table stale
        hits = a.cache.stats()["hits"]
        assert values(a.list("Item", {"grp": 1}, cache=True)) == [1]
        assert a.cache.stats()["hits"] == hits

        client = redis.Redis.from_url(REDIS)
        try:  # b's layout last heard of eleven minutes ago: gone
            now = int(client.time()[0])
            client.hset(f"{prefix}layouts:items", fingerprint(b.binding("Item")), now - cache_layouts.LIVE_S - 60)
        finally:
            client.close()
        a.update("Item", made[1]["id"], {"value": 6})
        assert values(a.list("Item", {"grp": 1}, cache=True)) == [1]  # stored under fine tokens again
        a.update("Item", made[1]["id"], {"value": 7})  # grp 2: the grp 1 read stays cached
        hits = a.cache.stats()["hits"]
        assert values(a.list("Item", {"grp": 1}, cache=True)) == [1]
        assert a.cache.stats()["hits"] == hits + 1
        assert registry(prefix) == {fingerprint(a.binding("Item")).encode()}  # the silent one was dropped


def test_the_dataflow_version_is_part_of_the_layout(db_url, prefix, monkeypatch):  # noqa: F811
    with two(db_url, prefix, indexed, indexed) as (a, start):
        b = start()
        same = fingerprint(b.binding("Item"))
        assert fingerprint(a.binding("Item")) == same
        monkeypatch.setattr(dataflow, "__version__", dataflow.__version__ + ".post1")
        assert fingerprint(b.binding("Item")) != same


def test_a_random_walk_over_two_layouts_never_serves_a_stale_answer(db_url, prefix):  # noqa: F811
    with two(db_url, prefix, indexed, plain) as (a, start):
        b = start()
        rng = random.Random(20261207)
        ids: list[int] = []
        reads = [
            lambda db, g, c: db.list("Item", {"grp": g}, cache=c),
            lambda db, g, c: db.count("Item", {"grp": g, "value": {"$gt": 2}}, cache=c),
            lambda db, g, c: db.list("Item", {"code": f"c{g}"}, cache=c),
            lambda db, g, c: db.read("Item", rng.choice(ids), cache=c, raise_on_not_found=False) if ids else None,
            lambda db, g, c: db.list("Item", cache=c),
        ]

        def write(db):
            op = rng.randrange(5)
            g = rng.randrange(4)
            if op == 0 or not ids:
                ids.append(db.create("Item", grp=g, value=rng.randrange(5))["id"])
            elif op == 1:
                db.update("Item", rng.choice(ids), {"value": rng.randrange(5)})
            elif op == 2:
                db.update("Item", rng.choice(ids), {"grp": g})
            elif op == 3 and not db.list("Item", {"code": f"c{g}"}):
                db.update("Item", rng.choice(ids), {"code": f"c{g}"})
            elif op == 4:
                victim = rng.choice(ids)
                db.delete("Item", victim)
                ids.remove(victim)

        for step in range(200):
            if rng.random() < 0.4:
                write(rng.choice((a, b)))
            reader = rng.choice((a, b))
            r = rng.choice(reads)
            g = rng.randrange(4)
            state = rng.getstate()
            cached = r(reader, g, True)
            rng.setstate(state)
            assert cached == r(reader, g, False), f"step {step}: a cached answer differs from the database's"
        assert a.cache.stats()["hits"] + b.cache.stats()["hits"] > 0
