"""A migration that changed the schema makes cached reads of the models' tables stale, in every
process sharing the cache (a changed table's rows may read differently under the same SQL)."""

from __future__ import annotations

from test_cache import REDIS, declare, prefix, seed, store  # noqa: F401  (fixtures)

from dataflow import DataFlow


def test_an_applied_migration_makes_cached_reads_stale(db_url, store, prefix):  # noqa: F811
    settings = {"cache_prefix": prefix, **({"redis_url": REDIS} if store == "redis" else {})}
    a = DataFlow(db_url, **settings)
    declare(a)
    seed(a)
    assert a.count("Post", cache=True) == 3 and a.count("Post", cache=True) == 3
    assert a.cache.stats()["hits"] == 1

    a.migrate()  # nothing to do: cached reads stay valid
    assert a.count("Post", cache=True) == 3 and a.cache.stats()["hits"] == 2

    @a.model
    class Note:
        body: str

    plan = a.migrate()  # creates notes: a schema change, so every table of the model set is bumped
    assert plan.operations
    assert a.count("Post", cache=True) == 3
    stats = a.cache.stats()
    assert (stats["hits"], stats["misses"]) == (2, 2)

    if store == "redis":  # another instance sharing Redis sees it too
        b = DataFlow(db_url, node_prefix="B", **settings)
        declare(b)
        assert b.count("Post", cache=True) == 3 and b.cache.stats()["hits"] == 1
        a.migrate()
        c = DataFlow(db_url, node_prefix="C", **settings)
        declare(c)

        @c.model
        class Label:
            text: str

        c.migrate()
        assert b.count("Post", cache=True) == 3 and b.cache.stats()["misses"] == 1
        assert b.cache.stats()["hits"] == 1
        for x in (b, c):
            x.close()
    a.close()
