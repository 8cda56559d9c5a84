"""Reads by primary key depend on their own record: a write to another record leaves them cached, a
write to theirs (or a change to the table wholesale) makes them stale. Every other read stays
table-wide. On the in-process store and on Redis shared by two instances."""

from __future__ import annotations

import pytest

from test_cache import sharing, declare, prefix, seed, store  # noqa: F401  (fixtures)

from dataflow import NotFoundError


@pytest.fixture
def pair(db_url, store, prefix):  # noqa: F811
    with sharing(db_url, store, prefix, declare) as both:
        yield both


def reads(db, ids):
    return [db.read("Post", i, cache=True, raise_on_not_found=False) for i in ids]


def hits(db):
    return db.cache.stats()["hits"]


def test_a_write_to_one_record_leaves_the_other_records_cached(pair):
    a, b = pair
    seed(a, 3)
    ids = [p["id"] for p in a.list("Post")]
    reads(a, ids)
    assert [p["views"] for p in reads(a, ids)] == [0, 1, 2] and hits(a) == 3
    assert a.list("Post", cache=True) and a.list("Post", cache=True) and hits(a) == 4

    b.update("Post", ids[0], {"views": 10})  # the other instance (Redis): its commit reaches a's cache
    got = reads(a, ids)
    assert [p["views"] for p in got] == [10, 1, 2]
    assert hits(a) == 6  # ids[1] and ids[2] hit; ids[0] missed and was read again
    assert [p["views"] for p in a.list("Post", cache=True)] == [10, 1, 2] and hits(a) == 6  # lists: table-wide

    b.delete("Post", ids[1])
    assert reads(a, ids)[1] is None and hits(a) == 8
    with pytest.raises(NotFoundError):  # "not found" is cached too (a hit)
        a.read("Post", ids[1], cache=True)

    created = b.create("Post", {"title": "new", "views": 5})
    assert reads(a, ids)[2]["views"] == 2 and hits(a) == 12  # a create touches only its own record
    assert a.read("Post", created["id"], cache=True)["title"] == "new"

    b.upsert("Post", {"title": "p2"}, {"views": 7})
    assert reads(a, ids)[2]["views"] == 7  # the upsert changed ids[2]'s record: missed, fresh


def test_a_read_of_a_missing_key_goes_stale_when_the_record_appears(pair):
    a, b = pair
    seed(a, 1)
    ghost = a.list("Post")[0]["id"] + 100
    assert reads(a, [ghost]) == [None] and reads(a, [ghost]) == [None] and hits(a) == 1
    b.bulk_create("Post", [{"id": ghost, "title": "ghost"}])  # a bulk write: the table wholesale
    assert reads(a, [ghost])[0]["title"] == "ghost"
    b.delete("Post", ghost)
    assert reads(a, [ghost]) == [None]
    b.create("Post", {"id": ghost, "title": "back"})
    assert reads(a, [ghost])[0]["title"] == "back"


def test_wholesale_changes_make_every_read_by_id_stale(pair):
    a, b = pair
    seed(a, 3)
    ids = [p["id"] for p in a.list("Post")]
    for change in (lambda: b.bulk_update("Post", {"views": {"$gte": 0}}, {"views": 1}),
                   lambda: b.cache.invalidate_table("Post"),
                   lambda: b.bulk_delete("Post", {"title": "p0"})):
        reads(a, ids)
        before = hits(a)
        assert reads(a, ids) and hits(a) == before + 3
        change()
        fresh = [a.read("Post", i, raise_on_not_found=False) for i in ids]
        assert reads(a, ids) == fresh and hits(a) == before + 3  # every read by id missed, then fresh


def test_a_write_inside_a_transaction_reaches_reads_by_id_at_commit(pair):
    a, b = pair
    seed(a, 2)
    ids = [p["id"] for p in a.list("Post")]
    reads(a, ids)
    with b.transaction():
        b.update("Post", ids[0], {"views": 42})
        if a is not b:  # another instance: not committed, so the cached answer is still the truth
            assert reads(a, ids)[0]["views"] == 0
    assert [p["views"] for p in reads(a, ids)] == [42, 1]
    try:
        with b.transaction():
            b.update("Post", ids[1], {"views": 99})
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert [p["views"] for p in reads(a, ids)] == [42, 1]
