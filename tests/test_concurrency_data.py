"""Optimistic locking (``versioned``) and soft delete (``soft_delete``): results and the rows behind them."""

import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import ConflictError, NotFoundError

UTC = timezone.utc


def rows(db, sql):
    db.ensure_ready()
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql)]


def run(*nodes):
    """Execute one workflow of ``(node type, node id, parameters)`` under LocalRuntime; return its results."""
    wf = WorkflowBuilder()
    for node_type, node_id, params in nodes:
        wf.add_node(node_type, node_id, params)
    with LocalRuntime(enable_monitoring=False) as rt:
        results, _ = rt.execute(wf.build())
    return results


def in_threads(n, work):
    """Run ``work(i)`` on ``n`` threads started together; return the exceptions they raised, by type and message."""
    errors: Counter = Counter()
    start = threading.Barrier(n)

    def target(i):
        start.wait()
        try:
            work(i)
        except Exception as exc:  # noqa: BLE001 - collected and asserted on by the caller
            errors[f"{type(exc).__name__}: {exc}"] += 1

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


# ---------------------------------------------------------------- optimistic locking
@pytest.fixture
def docs(db):
    """Versioned Docs 1 (a) and 2 (b), both at version 1."""
    @db.model
    class Doc:
        title: str
        hits: int = 0
        __dataflow__ = {"versioned": True}

    db.create("Doc", title="a")
    db.bulk_create("Doc", [{"title": "b"}])
    return db


def test_version_starts_at_one(docs):
    db = docs
    assert db.read("Doc", 1)["version"] == 1
    assert db.create("Doc", title="c")["version"] == 1
    assert rows(db, "SELECT id, title, version FROM docs ORDER BY id") == [(1, "a", 1), (2, "b", 1), (3, "c", 1)]
    assert db.get_model_info("Doc")["fields"]["version"]["type"] == "int"


def test_a_stale_version_is_a_conflict_and_changes_nothing(docs):
    db = docs
    assert db.update("Doc", 1, {"title": "first", "version": 1})["version"] == 2
    with pytest.raises(ConflictError) as info:
        db.update("Doc", 1, {"title": "second", "version": 1})
    assert str(info.value) == ("Doc update refused: the record was changed by someone else: update sent version 1 (it is now at "
                               "version 2); read it again and retry")
    assert info.value.model == "Doc"
    with pytest.raises(ConflictError, match=r"^Doc update refused: the record was changed by someone else: update sent version 3 "):
        db.update("Doc", {"title": "first"}, {"hits": 5, "version": 3})  # by filter; a future version too
    assert rows(db, "SELECT id, title, hits, version FROM docs ORDER BY id") == [(1, "first", 0, 2), (2, "b", 0, 1)]


def test_an_update_without_version_proceeds_and_increments(docs):
    db = docs
    rec = db.update("Doc", 1, {"title": "x"})
    assert (rec["title"], rec["version"]) == ("x", 2)
    assert db.update("Doc", {"title": "x"}, hits=3)["version"] == 3
    assert rows(db, "SELECT id, title, hits, version FROM docs ORDER BY id") == [(1, "x", 3, 3), (2, "b", 0, 1)]


def test_an_update_with_the_current_version_succeeds_and_increments(docs):
    db = docs
    for expected in (1, 2, 3):
        current = db.read("Doc", 1)["version"]
        assert current == expected
        rec = db.update("Doc", 1, {"hits": current * 10, "version": current})
        assert (rec["hits"], rec["version"]) == (current * 10, current + 1)
    assert rows(db, "SELECT hits, version FROM docs WHERE id = 1") == [(30, 4)]


def test_bulk_update_increments_the_versions_it_changes(docs):
    db = docs
    db.create("Doc", title="a")
    db.update("Doc", 1, {"hits": 1})
    assert db.bulk_update("Doc", {"title": "a"}, {"hits": 7}) == 2
    assert rows(db, "SELECT id, hits, version FROM docs ORDER BY id") == [(1, 7, 3), (2, 0, 1), (3, 7, 2)]
    assert db.bulk_update("Doc", {}, {"hits": 0}, confirm_all=True) == 3
    assert rows(db, "SELECT id, hits, version FROM docs ORDER BY id") == [(1, 0, 4), (2, 0, 2), (3, 0, 3)]


def test_upserts_increment_the_versions_of_the_records_they_change(docs):
    db = docs
    db.update("Doc", 1, {"hits": 1})
    db.update("Doc", 1, {"hits": 2})  # Doc 1 at version 3: a reset to 1 would show
    out = db.upsert("Doc", {"title": "a"}, update={"hits": 3})
    assert (out["created"], out["record"]["hits"], out["record"]["version"]) == (False, 3, 4)
    assert db.upsert("Doc", {"title": "new"}, update={"hits": 1})["record"]["version"] == 1
    assert db.bulk_upsert("Doc", [{"id": 1, "title": "a", "hits": 4}, {"id": 9, "title": "nine"}]) == {
        "processed": 2, "inserted": 1, "updated": 1, "success": True}
    db.bulk_create("Doc", [{"id": 2, "title": "b", "hits": 5}], on_conflict="update")
    db.bulk_create("Doc", [{"id": 1, "title": "skipped"}], on_conflict="skip")
    assert rows(db, "SELECT id, title, hits, version FROM docs ORDER BY id") == [
        (1, "a", 4, 5), (2, "b", 5, 2), (3, "new", 1, 1), (9, "nine", 0, 1)]
    with pytest.raises(ConflictError, match=r"update sent version 4 \(it is now at version 5\)"):
        db.update("Doc", 1, {"hits": 0, "version": 4})


def test_two_writers_holding_the_same_read(docs):
    db = docs
    mine, theirs = db.read("Doc", 1), db.read("Doc", 1)
    db.update("Doc", 1, {"title": "theirs", "version": theirs["version"]})
    with pytest.raises(ConflictError, match=r"update sent version 1 \(it is now at version 2\)"):
        db.update("Doc", 1, {"title": "mine", "version": mine["version"]})
    fresh = db.read("Doc", 1)
    assert db.update("Doc", 1, {"title": "mine", "version": fresh["version"]})["version"] == 3
    assert rows(db, "SELECT title, version FROM docs WHERE id = 1") == [("mine", 3)]


def test_concurrent_read_modify_write_loses_no_increment(docs):
    db = docs
    threads, rounds = 6, 5

    def work(_):
        for _ in range(rounds):
            while True:  # the optimistic loop: read, write with the version read, retry on a conflict
                rec = db.read("Doc", 1)
                try:
                    db.update("Doc", 1, {"hits": rec["hits"] + 1, "version": rec["version"]})
                    break
                except ConflictError:
                    continue

    assert in_threads(threads, work) == Counter()
    total = threads * rounds
    assert rows(db, "SELECT hits, version FROM docs WHERE id = 1") == [(total, total + 1)]


def test_concurrent_updates_without_version_all_proceed(docs):
    db = docs
    threads, rounds = 6, 5

    def work(i):
        for r in range(rounds):
            db.update("Doc", 1, {"title": f"t{i}-{r}"})

    assert in_threads(threads, work) == Counter()
    assert rows(db, "SELECT version FROM docs WHERE id = 1") == [(threads * rounds + 1,)]


def test_versions_through_the_update_node(docs):
    db = docs
    results = run(("DocUpdateNode", "ok", {"id": 1, "fields": {"title": "n1"}, "version": 1}))
    assert (results["ok"]["updated"], results["ok"]["title"], results["ok"]["version"]) == (True, "n1", 2)
    results = run(("DocUpdateNode", "stale", {"id": 1, "title": "n2", "version": 1}),
                  ("DocUpdateNode", "blind", {"id": 2, "title": "b2"}))
    assert results["stale"]["failed"] is True
    assert ("ConflictError: Doc update refused: the record was changed by someone else: update sent version 1 (it is now at version 2)"
            in results["stale"]["error"])
    assert results["blind"]["version"] == 2
    results = run(("DocBulkUpdateNode", "bulk", {"filter": {}, "data": {"hits": 1}, "confirm_all": True}))
    assert results["bulk"]["updated"] == 2
    assert rows(db, "SELECT id, title, hits, version FROM docs ORDER BY id") == [(1, "n1", 1, 3), (2, "b2", 1, 3)]


# ---------------------------------------------------------------- soft delete
@pytest.fixture
def notes(db):
    """Soft-deleting Notes 1 (a), 2 (b), 3 (a)."""
    @db.model
    class Note:
        body: str
        __dataflow__ = {"soft_delete": True}

    db.bulk_create("Note", [{"body": "a"}, {"body": "b"}, {"body": "a"}])
    return db


def stored(db):
    """(id, body, deleted?) for every row in the table, deleted or not."""
    return [(i, body, deleted is not None) for i, body, deleted in
            rows(db, "SELECT id, body, deleted_at FROM notes ORDER BY id")]


def test_delete_sets_deleted_at_and_keeps_the_row(notes):
    db = notes
    before = datetime.now(UTC)
    assert db.delete("Note", 2) == 2
    assert stored(db) == [(1, "a", False), (2, "b", True), (3, "a", False)]
    deleted_at = db.read("Note", 2, include_deleted=True)["deleted_at"]
    assert before - timedelta(seconds=5) <= deleted_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert db.get_model_info("Note")["fields"]["deleted_at"]["nullable"] is True


def test_soft_deleted_records_are_skipped_unless_asked_for(notes):
    db = notes
    db.delete("Note", 1)
    assert [r["id"] for r in db.list("Note")] == [2, 3]
    assert [r["id"] for r in db.list("Note", {"body": "a"})] == [3]
    assert [r["id"] for r in db.list("Note", {"body": "a"}, include_deleted=True)] == [1, 3]
    assert [r["id"] for r in db.list("Note", include_deleted=True)] == [1, 2, 3]
    assert (db.count("Note"), db.count("Note", {"body": "a"}), db.count("Note", include_deleted=True)) == (2, 1, 3)
    assert db.read("Note", {"body": "a"})["id"] == 3
    assert db.read("Note", {"body": "a"}, include_deleted=True)["id"] == 1
    assert db.read("Note", 1, include_deleted=True)["deleted_at"] is not None


def test_reading_a_soft_deleted_id_is_not_found(notes):
    db = notes
    db.delete("Note", 1)
    with pytest.raises(NotFoundError) as info:
        db.read("Note", 1)
    assert str(info.value) == "Note read: no record matches the given id"
    assert db.read("Note", 1, raise_on_not_found=False) is None
    with pytest.raises(NotFoundError, match=r"^Note delete: no record matches the given id$"):
        db.delete("Note", 1)  # once is enough: deleted_at is not moved
    with pytest.raises(NotFoundError, match=r"^Note update: no record matches the given id$"):
        db.update("Note", 1, {"body": "z"})
    assert stored(db) == [(1, "a", True), (2, "b", False), (3, "a", False)]


def test_bulk_delete_soft_deletes(notes):
    db = notes
    assert db.bulk_delete("Note", {"body": "a"}) == 2
    assert stored(db) == [(1, "a", True), (2, "b", False), (3, "a", True)]
    assert db.bulk_delete("Note", {"body": "a"}) == 0  # already deleted
    assert db.count("Note") == 1
    assert db.bulk_delete("Note", {}, confirm_all=True) == 1
    assert stored(db) == [(1, "a", True), (2, "b", True), (3, "a", True)]
    assert db.list("Note") == [] and db.count("Note") == 0
    assert db.bulk_update("Note", {}, {"body": "z"}, confirm_all=True) == 0  # deleted rows are not changed
    assert stored(db) == [(1, "a", True), (2, "b", True), (3, "a", True)]


def test_soft_delete_through_nodes(notes):
    db = notes
    results = run(("NoteDeleteNode", "del", {"id": 1}), ("NoteBulkDeleteNode", "bulk", {"filter": {"body": "b"}}))
    assert results["del"] == {"id": 1, "deleted": True}
    assert results["bulk"]["deleted"] == 1
    results = run(("NoteReadNode", "gone", {"id": 1, "raise_on_not_found": False}),
                  ("NoteReadNode", "missing", {"id": 1}),
                  ("NoteReadNode", "kept", {"id": 1, "include_deleted": True}),
                  ("NoteListNode", "live", {}),
                  ("NoteListNode", "all", {"include_deleted": True}),
                  ("NoteCountNode", "count", {}),
                  ("NoteCountNode", "count_all", {"include_deleted": True}))
    assert results["gone"] == {"found": False}
    assert "NotFoundError: Note read: no record matches the given id" in results["missing"]["error"]
    kept = results["kept"]
    assert kept["found"] is True and isinstance(kept["deleted_at"], str)
    assert datetime.fromisoformat(kept["deleted_at"]) == db.read("Note", 1, include_deleted=True)["deleted_at"]
    assert [r["id"] for r in results["live"]["records"]] == [3]
    assert [(r["id"], r["deleted_at"] is None) for r in results["all"]["records"]] == [(1, False), (2, False),
                                                                                       (3, True)]
    assert (results["count"]["count"], results["count_all"]["count"]) == (1, 3)
    assert stored(db) == [(1, "a", True), (2, "b", True), (3, "a", False)]
