"""Audit log: rows the database deletes or changes by itself (ON DELETE CASCADE / SET NULL) get their
records too, in the same transaction, following cascades through tables and self-referencing trees."""

from __future__ import annotations

from typing import Annotated, Optional

import pytest

from dataflow import Field
from dataflow.errors import ForeignKeyError


@pytest.fixture
def app(db):
    @db.model
    class Author:
        name: str
        email: str = ""
        __dataflow__ = {"audit_mask": ["email"]}

    @db.model
    class Post:
        title: str
        author_id: Annotated[int, Field(references="Author", on_delete="cascade")]
        editor_id: Annotated[Optional[int], Field(references="Author", on_delete="set_null")] = None

    @db.model
    class Comment:
        body: str
        post_id: Annotated[int, Field(references="Post", on_delete="cascade")]

    @db.model
    class Category:
        name: str
        parent_id: Annotated[Optional[int], Field(references="Category", on_delete="cascade")] = None

    db.enable_audit_log()
    return db


def seed(db):
    ann, bob = db.create("Author", name="Ann", email="ann@x"), db.create("Author", name="Bob", email="bob@x")
    p1 = db.create("Post", title="p1", author_id=ann["id"], editor_id=bob["id"])
    p2 = db.create("Post", title="p2", author_id=bob["id"], editor_id=ann["id"])
    c1 = db.create("Comment", body="c1", post_id=p1["id"])
    c2 = db.create("Comment", body="c2", post_id=p2["id"])
    return ann, bob, p1, p2, c1, c2


def cascaded(db):
    return sorted((r["action"], r["table"], r["record_id"]) for r in db.audit_log(limit=None)
                  if r["action"].startswith("cascade_"))


@pytest.mark.parametrize("how", ["delete", "bulk_delete"])
def test_a_delete_records_what_its_cascades_delete_and_set_null(app, how):
    ann, bob, p1, p2, c1, c2 = seed(app)
    with app.actor("ops"):
        if how == "delete":
            assert app.delete("Author", ann["id"]) == ann["id"]
        else:
            assert app.bulk_delete("Author", {"name": "Ann"}) == 1
    assert [p["title"] for p in app.list("Post")] == ["p2"] and app.read("Post", p2["id"])["editor_id"] is None
    assert [c["body"] for c in app.list("Comment")] == ["c2"]
    assert cascaded(app) == sorted([("cascade_delete", "posts", str(p1["id"])),
                                    ("cascade_delete", "comments", str(c1["id"])),
                                    ("cascade_set_null", "posts", str(p2["id"]))])
    records = {(r["action"], r["table"], r["record_id"]): r for r in app.audit_log(limit=None)}
    gone = records[("cascade_delete", "posts", str(p1["id"]))]
    assert (gone["actor"], gone["model"], gone["after"]) == ("ops", "Post", None)
    assert gone["before"]["title"] == "p1" and gone["before"]["author_id"] == ann["id"]
    nulled = records[("cascade_set_null", "posts", str(p2["id"]))]
    assert (nulled["before"], nulled["after"]) == ({"editor_id": ann["id"]}, {"editor_id": None})
    assert records[("cascade_delete", "comments", str(c1["id"]))]["before"]["body"] == "c1"


def test_a_self_referencing_tree_is_followed_to_its_leaves(app):
    root = app.create("Category", name="root")
    ids = [root["id"]]
    parent = root["id"]
    for depth in range(5):
        node = app.create("Category", name=f"n{depth}", parent_id=parent)
        app.create("Category", name=f"leaf{depth}", parent_id=parent)
        ids += [node["id"]]
        parent = node["id"]
    other = app.create("Category", name="other")
    app.delete("Category", root["id"])
    assert [c["name"] for c in app.list("Category")] == ["other"]
    deleted = {int(r["record_id"]) for r in app.audit_log(action="cascade_delete", limit=None)}
    assert len(deleted) == 10 and root["id"] not in deleted and other["id"] not in deleted


def test_a_delete_that_fails_leaves_no_cascade_records(app):
    @app.model
    class Invoice:
        total: int
        author_id: Annotated[int, Field(references="Author", on_delete="restrict")]

    ann, *_ = seed(app)
    app.create("Invoice", total=5, author_id=ann["id"])
    count = len(app.audit_log(limit=None))
    with pytest.raises(ForeignKeyError):
        app.delete("Author", ann["id"])
    assert len(app.audit_log(limit=None)) == count and len(app.list("Post")) == 2


def test_soft_deletes_cascade_nothing_and_record_nothing_more(db):
    @db.model
    class Owner:
        name: str
        __dataflow__ = {"soft_delete": True}

    @db.model
    class Pet:
        name: str
        owner_id: Annotated[int, Field(references="Owner", on_delete="cascade")]

    db.enable_audit_log()
    o = db.create("Owner", name="o")
    db.create("Pet", name="p", owner_id=o["id"])
    db.delete("Owner", o["id"])
    assert [p["name"] for p in db.list("Pet")] == ["p"]
    assert db.audit_log(action="cascade_delete") == []


def test_a_deep_tree_is_recorded_whole(app, backend):
    """Keys are collected round by round: no statement grows with the depth (SQLite's parser overflowed
    past 10 nested levels). MariaDB itself follows ON DELETE CASCADE at most 15 levels deep."""
    depth = 12 if backend == "mysql" else 40
    root = app.create("Category", name="root")
    parent = root["id"]
    for i in range(depth):
        parent = app.create("Category", name=f"n{i}", parent_id=parent)["id"]
    app.delete("Category", root["id"])
    assert app.count("Category") == 0
    assert len(app.audit_log(action="cascade_delete", limit=None)) == depth


def test_mariadbs_cascade_depth_limit_is_a_clear_refusal(db, backend):
    if backend != "mysql":
        pytest.skip("InnoDB's limit of 15 cascade levels")
    from dataflow.errors import ValidationError

    @db.model
    class Node:
        name: str
        parent_id: Annotated[Optional[int], Field(references="Node", on_delete="cascade")] = None

    root = db.create("Node", name="root")
    parent = root["id"]
    for i in range(20):
        parent = db.create("Node", name=f"n{i}", parent_id=parent)["id"]
    with pytest.raises(ValidationError, match="at most 15 levels deep"):
        db.delete("Node", root["id"])
    assert db.count("Node") == 21


def test_cascades_are_recorded_through_the_delete_nodes_too(app):
    """The records come from the operations layer, so every door that deletes gets them (db.query reads only)."""
    from kailash.runtime.local import LocalRuntime
    from kailash.workflow.builder import WorkflowBuilder

    ann, bob, p1, p2, c1, c2 = seed(app)
    wf = WorkflowBuilder()
    wf.add_node("AuthorDeleteNode", "d", {"id": ann["id"]})
    with app.actor("node"), LocalRuntime() as rt:
        rt.execute(wf.build())
    wf = WorkflowBuilder()
    wf.add_node("AuthorBulkDeleteNode", "b", {"filter": {"name": "Bob"}})
    with app.actor("bulk-node"), LocalRuntime() as rt:
        rt.execute(wf.build())
    assert app.count("Post") == 0 and app.count("Comment") == 0
    by_actor = {(r["actor"], r["table"], r["record_id"]) for r in app.audit_log(action="cascade_delete", limit=None)}
    assert by_actor == {("node", "posts", str(p1["id"])), ("node", "comments", str(c1["id"])),
                        ("bulk-node", "posts", str(p2["id"])), ("bulk-node", "comments", str(c2["id"]))}
