"""A change by primary key that no policy watches is one statement where the database can return
what it changed (``UPDATE/DELETE ... RETURNING``: SQLite, PostgreSQL; MariaDB for DELETE): the same
results, scope and errors as the lock-change-read path it replaces."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import event

from dataflow import NotFoundError


def declare(db):
    @db.model
    class Doc:
        title: str
        owner: str = "alice"
        views: int = 0

    @db.model
    class Note:
        body: str
        __dataflow__ = {"soft_delete": True}


@contextmanager
def statements(db):
    seen: list[str] = []

    def listen(conn, cursor, statement, params, context, executemany):  # noqa: ANN001
        seen.append(" ".join(statement.split()).upper())
    event.listen(db.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", listen)


def changes(seen):
    return [s for s in seen if s.startswith(("UPDATE", "DELETE", "SELECT"))]


def test_update_and_delete_by_id_in_one_statement(db):
    declare(db)
    a = db.create("Doc", {"title": "a", "views": 1})
    b = db.create("Doc", {"title": "b", "owner": "bob"})
    dialect = db.engine.dialect
    with statements(db) as seen:
        rec = db.update("Doc", a["id"], {"views": 5})
    assert rec["views"] == 5 and rec["title"] == "a" and rec["updated_at"] >= a["updated_at"]
    assert db.read("Doc", a["id"])["views"] == 5
    if dialect.update_returning:
        assert len(changes(seen)) == 1 and changes(seen)[0].startswith("UPDATE") and "RETURNING" in changes(seen)[0]
    else:
        assert len(changes(seen)) == 3  # lock, change, read back

    # the id and the filter must both match: Bob's record is not Alice's
    with pytest.raises(NotFoundError, match="Doc update: no record matches"):
        db.operations.update("Doc", b["id"], {"owner": "alice"}, {"title": "stolen"})
    assert db.operations.update("Doc", b["id"], {"owner": "alice"}, {"title": "x"}, raise_on_not_found=False) is None
    assert db.read("Doc", b["id"])["title"] == "b"
    with pytest.raises(NotFoundError):
        db.update("Doc", 999_999, changes={"title": "x"})

    with statements(db) as seen:
        assert db.delete("Doc", a["id"]) == a["id"]
    if dialect.delete_returning:
        assert len(changes(seen)) == 1 and changes(seen)[0].startswith("DELETE")
    assert db.count("Doc") == 1
    with pytest.raises(NotFoundError):
        db.operations.delete("Doc", b["id"], {"owner": "alice"})
    assert db.delete("Doc", a["id"], raise_on_not_found=False) is None
    assert db.count("Doc") == 1


def test_soft_delete_by_id_in_one_statement(db):
    declare(db)
    n = db.create("Note", {"body": "x"})
    assert db.delete("Note", n["id"]) == n["id"]
    assert db.read("Note", n["id"], raise_on_not_found=False) is None
    assert db.read("Note", n["id"], include_deleted=True)["deleted_at"] is not None
    with pytest.raises(NotFoundError):  # deleted already: not found again
        db.delete("Note", n["id"])
    with pytest.raises(NotFoundError):
        db.update("Note", n["id"], {"body": "y"})
