"""Relations: declared foreign keys are real constraints with on_delete; include= nests related records.

Nothing is inferred from a field's name. Including a relation costs one query per relation, never
one per row: the tests count the statements the engine sends.
"""

import json
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Optional

import pytest
import sqlalchemy as sa
from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import Field, ForeignKeyError, ModelError, NotFoundError, ValidationError

MISSING_AUTHOR = ("Post {action} refused: Post.author_id must be the id of an existing User "
                  "(no User has that id)")
STILL_REFERRED = ("User {action} refused: other records still refer to it (Post.author_id); delete or "
                  "re-point them first, or declare on_delete='cascade' or 'set_null'")


def declare(db, on_delete="restrict", **user_options):
    """Post first, User after it: every test also covers a foreign key to a model declared later."""
    if on_delete == "set_null":
        @db.model
        class Post:
            title: str
            author_id: Annotated[Optional[int], Field(references="User", on_delete="set_null")]
    else:
        @db.model
        class Post:
            title: str
            author_id: Annotated[int, Field(references="User", on_delete=on_delete)]

    @db.model
    class User:
        name: str
        __dataflow__ = dict(user_options)

    return Post, User


@pytest.fixture
def blog(db):
    """Users 1..3 (Ann, Bob, Cy); posts 1..4: Ann wrote 1 and 3, Bob 2 and 4, Cy nothing. Restrict."""
    declare(db)
    add_blog(db)
    return db


def add_blog(db):
    db.bulk_create("User", [{"name": "Ann"}, {"name": "Bob"}, {"name": "Cy"}])
    for i, author in enumerate([1, 2, 1, 2], start=1):
        db.create("Post", title=f"p{i}", author_id=author)


def rows(db, sql):
    db.ensure_ready()
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql)]


def foreign_keys(db, table="posts"):
    """(columns, referred table, referred columns, ON DELETE rule) as the database reports them."""
    db.ensure_ready()
    with db.engine.connect() as conn:
        rules = delete_rules(conn, db.backend, table)
        fks = sa.inspect(conn).get_foreign_keys(table)
    return [(fk["constrained_columns"], fk["referred_table"], fk["referred_columns"],
             rules[fk["constrained_columns"][0]]) for fk in fks]


def delete_rules(conn, backend, table):
    """Column -> the ON DELETE rule in force. The catalogs, not the inspector: MySQL's SHOW CREATE TABLE
    (which the inspector reads) leaves RESTRICT out, as its default."""
    if backend == "sqlite":
        return {r[3]: r[6] for r in conn.exec_driver_sql(f"PRAGMA foreign_key_list({table})")}
    schema = "current_schema()" if backend == "postgresql" else "DATABASE()"
    return dict(conn.exec_driver_sql(
        f"SELECT k.column_name, r.delete_rule FROM information_schema.referential_constraints r "
        f"JOIN information_schema.key_column_usage k ON k.constraint_name = r.constraint_name "
        f"AND k.constraint_schema = r.constraint_schema "
        f"WHERE r.constraint_schema = {schema} AND k.table_name = '{table}'").all())


#: The rule of a foreign key declared without on_delete: MariaDB/MySQL report RESTRICT (their NO ACTION).
UNDECLARED = {"mysql": "RESTRICT"}


@contextmanager
def statements(db):
    """The SQL statements the engine sends inside the block (BEGIN/COMMIT left out)."""
    sent: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.strip().upper() not in ("BEGIN", "COMMIT", "ROLLBACK"):
            sent.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)


def selects(sent):
    return [s for s in sent if s.lstrip().upper().startswith("SELECT")]


# ---------------------------------------------------------------- declaring references
def test_a_plain_id_field_creates_no_constraint_and_no_relation(db):
    @db.model
    class Post:
        title: str
        author_id: int

    @db.model
    class User:
        name: str

    rec = db.create("Post", title="orphan", author_id=999)
    assert rec["author_id"] == 999
    assert rows(db, "SELECT id, title, author_id FROM posts") == [(1, "orphan", 999)]
    assert foreign_keys(db) == []
    assert db.get_model_info("Post")["relations"] == {}
    assert db.get_model_info("User")["relations"] == {}
    assert db.get_model_info("Post")["fields"]["author_id"]["references"] is None
    db.delete("User", db.create("User", name="Ann")["id"])  # nothing refers to it
    with pytest.raises(ValidationError, match=r"^Post has no relation 'author' to include; relations: none"):
        db.list("Post", include=["author"])


def test_both_declarations_make_real_constraints_with_on_delete(db):
    @db.model
    class Post:
        title: str
        author_id: int
        __dataflow__ = {"foreign_keys": {"author_id": "User"}}

    @db.model
    class Comment:
        body: str
        post_id: Annotated[int, Field(references="Post", on_delete="cascade")]
        user_id: int
        __dataflow__ = {"foreign_keys": {"user_id": {"model": "User", "on_delete": "restrict"}}}

    @db.model
    class User:
        name: str

    undeclared = UNDECLARED.get(db.backend, "NO ACTION")
    assert foreign_keys(db, "posts") == [(["author_id"], "users", ["id"], undeclared)]
    assert sorted(foreign_keys(db, "comments")) == [(["post_id"], "posts", ["id"], "CASCADE"),
                                                     (["user_id"], "users", ["id"], "RESTRICT")]
    assert db.get_model_info("Comment")["fields"]["post_id"]["references"] == "Post"
    with pytest.raises(ForeignKeyError) as info:
        db.create("Post", title="x", author_id=999)
    assert str(info.value) == MISSING_AUTHOR.format(action="create")
    with pytest.raises(ForeignKeyError) as info:
        db.create("Comment", body="x", post_id=1, user_id=1)
    assert "must be the id of an existing" in str(info.value)
    assert rows(db, "SELECT COUNT(*) FROM posts")[0][0] == 0


def test_a_reference_to_a_model_declared_later_uses_its_real_table(db):
    @db.model
    class Post:
        title: str
        author_id: Annotated[int, Field(references="Person")]

    @db.model
    class Person:
        name: str
        __dataflow__ = {"table": "people"}

    assert foreign_keys(db) == [(["author_id"], "people", ["id"], UNDECLARED.get(db.backend, "NO ACTION"))]
    db.create("Person", name="Ann")
    assert db.create("Post", title="t", author_id=1)["author_id"] == 1
    assert db.read("Post", 1, include=["author"])["author"]["name"] == "Ann"
    assert [p["title"] for p in db.read("Person", 1, include=["posts"])["posts"]] == ["t"]
    with pytest.raises(ForeignKeyError, match=r"^Post create refused: Post\.author_id must be the id of an "
                                              r"existing Person \(no Person has that id\)$"):
        db.create("Post", title="t", author_id=2)


def test_a_reference_to_an_undeclared_model_fails_at_first_use_naming_it(db):
    @db.model
    class Post:
        title: str
        author_id: Annotated[int, Field(references="Ghost")]

    message = (r"^Foreign keys reference undeclared models: Post\.author_id -> Ghost; "
               r"declare them with @db.model$")
    with pytest.raises(ModelError, match=message):
        db.create("Post", title="t", author_id=1)
    with pytest.raises(ModelError, match=message):
        db.list("Post")
    with db.engine.connect() as conn:  # nothing was created
        assert sa.inspect(conn).get_table_names() == []

    @db.model
    class Ghost:
        name: str

    db.create("Ghost", name="Boo")
    assert db.create("Post", title="t", author_id=1)["id"] == 1
    assert foreign_keys(db) == [(["author_id"], "ghosts", ["id"], UNDECLARED.get(db.backend, "NO ACTION"))]


def test_set_null_needs_an_optional_field(db):
    with pytest.raises(ModelError) as info:
        @db.model
        class Post:
            title: str
            author_id: Annotated[int, Field(references="User", on_delete="set_null")]
    assert str(info.value) == ("Post.author_id: on_delete='set_null' needs a field that can be null; "
                               "declare it Optional[int]")
    assert info.value.field == "author_id"
    assert db.list_models() == []


def test_an_unknown_on_delete_is_refused_and_leaves_the_instance_usable(db):
    with pytest.raises(ModelError) as info:
        @db.model
        class Post:
            title: str
            author_id: Annotated[int, Field(references="User", on_delete="nullify")]
    assert str(info.value) == ("Post.author_id: on_delete must be one of cascade, set_null, restrict, "
                               "no_action; got 'nullify'")
    assert db.list_models() == []

    @db.model
    class User:
        name: str

    assert db.create("User", name="Ann")["id"] == 1
    assert db.list_models() == ["User"]


# ---------------------------------------------------------------- constraints at work
def test_a_missing_target_is_a_foreign_key_error_naming_field_and_model(blog):
    db = blog
    before = rows(db, "SELECT id, title, author_id FROM posts ORDER BY id")
    for action, call in [
        ("create", lambda: db.create("Post", title="x", author_id=999)),
        ("update", lambda: db.update("Post", 1, {"author_id": 999})),
        ("bulk create", lambda: db.bulk_create("Post", [{"title": "x", "author_id": 1},
                                                        {"title": "y", "author_id": 999}])),
        ("bulk update", lambda: db.bulk_update("Post", {"author_id": 1}, {"author_id": 999})),
        ("upsert", lambda: db.upsert("Post", {"title": "new"}, create={"author_id": 999})),
    ]:
        with pytest.raises(ForeignKeyError) as info:
            call()
        assert str(info.value) == MISSING_AUTHOR.format(action=action)
        assert (info.value.model, info.value.field) == ("Post", "author_id")
        assert info.value.original is not None
    assert rows(db, "SELECT id, title, author_id FROM posts ORDER BY id") == before


def test_restrict_refuses_to_delete_a_referenced_record(blog):
    db = blog
    with pytest.raises(ForeignKeyError) as info:
        db.delete("User", 1)
    assert str(info.value) == STILL_REFERRED.format(action="delete")
    assert info.value.model == "User"
    with pytest.raises(ForeignKeyError) as info:
        db.bulk_delete("User", {"name": {"$in": ["Bob", "Cy"]}})
    assert str(info.value) == STILL_REFERRED.format(action="bulk delete")
    assert rows(db, "SELECT id FROM users ORDER BY id") == [(1,), (2,), (3,)]  # all or nothing
    assert db.delete("User", 3) == 3  # nobody refers to Cy
    db.bulk_delete("Post", {"author_id": 1})
    assert db.delete("User", 1) == 1
    assert rows(db, "SELECT id FROM users ORDER BY id") == [(2,)]


def test_cascade_deletes_the_referring_records(db):
    declare(db, on_delete="cascade")
    add_blog(db)
    assert db.delete("User", 1) == 1
    assert rows(db, "SELECT id, author_id FROM posts ORDER BY id") == [(2, 2), (4, 2)]
    assert db.bulk_delete("User", {"name": "Bob"}) == 1
    assert rows(db, "SELECT COUNT(*) FROM posts") == [(0,)]
    assert rows(db, "SELECT name FROM users") == [("Cy",)]


def test_set_null_clears_the_reference(db):
    declare(db, on_delete="set_null")
    add_blog(db)
    assert db.delete("User", 1) == 1
    assert rows(db, "SELECT id, author_id FROM posts ORDER BY id") == [(1, None), (2, 2), (3, None), (4, 2)]
    post = db.read("Post", 1, include=["author"])
    assert (post["author_id"], post["author"]) == (None, None)
    assert db.create("Post", title="anonymous")["author_id"] is None
    assert foreign_keys(db) == [(["author_id"], "users", ["id"], "SET NULL")]


# ---------------------------------------------------------------- model info
def test_model_info_shows_relations_both_ways(blog):
    db = blog
    assert db.get_model_info("Post")["relations"] == {
        "author": {"model": "User", "local": "author_id", "remote": "id", "kind": "one"}}
    assert db.get_model_info("User")["relations"] == {
        "posts": {"model": "Post", "local": "id", "remote": "author_id", "kind": "many"}}
    assert db.get_model_info("Post")["fields"]["author_id"]["references"] == "User"


# ---------------------------------------------------------------- include
def test_list_include_author_runs_one_query_for_the_relation(db):
    declare(db)
    db.bulk_create("User", [{"name": f"u{i}"} for i in range(1, 6)])
    db.bulk_create("Post", [{"title": f"p{i}", "author_id": i % 5 + 1} for i in range(1, 21)])
    with statements(db) as sent:
        posts = db.list("Post", include=["author"])
    assert len(selects(sent)) == 2, sent
    assert len(sent) == 2, sent
    assert [p["title"] for p in posts] == [f"p{i}" for i in range(1, 21)]
    for i, post in enumerate(posts, start=1):
        assert post["author_id"] == i % 5 + 1
        assert post["author"]["id"] == post["author_id"]
        assert post["author"]["name"] == f"u{post['author_id']}"
        assert isinstance(post["author"]["created_at"], datetime)  # native values on the direct API
    with statements(db) as sent:
        page = db.list("Post", filter={"author_id": {"$in": [2, 3]}}, sort=[("id", -1)], limit=3,
                       include=["author"])
    assert len(selects(sent)) == 2, sent
    assert [(p["title"], p["author"]["name"]) for p in page] == [("p17", "u3"), ("p16", "u2"), ("p12", "u3")]


def test_list_include_posts_groups_the_reverse_side(blog):
    db = blog
    with statements(db) as sent:
        users = db.list("User", include=["posts"])
    assert len(selects(sent)) == 2, sent
    assert [(u["name"], [p["title"] for p in u["posts"]]) for u in users] == [
        ("Ann", ["p1", "p3"]), ("Bob", ["p2", "p4"]), ("Cy", [])]
    assert all(p["author_id"] == u["id"] for u in users for p in u["posts"])


def test_read_include_both_ways(blog):
    db = blog
    with statements(db) as sent:
        post = db.read("Post", 2, include=["author"])
    assert len(selects(sent)) == 2, sent
    assert (post["title"], post["author"]["id"], post["author"]["name"]) == ("p2", 2, "Bob")
    user = db.read("User", {"name": "Ann"}, include=["posts"])
    assert [(p["id"], p["title"]) for p in user["posts"]] == [(1, "p1"), (3, "p3")]
    assert db.read("User", 3, include=["posts"])["posts"] == []
    with pytest.raises(NotFoundError, match=r"^User read: no record matches the given id$"):
        db.read("User", 99, include=["posts"])
    assert db.read("User", 99, include=["posts"], raise_on_not_found=False) is None


def test_include_with_fields_still_joins_on_the_reference(blog):
    db = blog
    post = db.read("Post", 1, fields=["title"], include=["author"])
    assert post == {"title": "p1", "author": post["author"]}
    assert post["author"]["name"] == "Ann"
    users = db.list("User", fields=["name"], include=["posts"])
    assert [(u["name"], [p["title"] for p in u["posts"]]) for u in users] == [
        ("Ann", ["p1", "p3"]), ("Bob", ["p2", "p4"]), ("Cy", [])]
    assert all(set(u) == {"name", "posts"} for u in users)


def test_an_unknown_include_is_a_validation_error_listing_the_relations(blog):
    db = blog
    with pytest.raises(ValidationError) as info:
        db.list("Post", include=["writer"])
    assert str(info.value) == "Post has no relation 'writer' to include; relations: author"
    assert (info.value.model, info.value.field) == ("Post", "writer")
    with pytest.raises(ValidationError, match=r"^User has no relation 'author' to include; relations: posts$"):
        db.read("User", 1, include=["author"])
    # Checked before any SQL: also when nothing matches.
    with pytest.raises(ValidationError, match=r"^Post has no relation 'writer' to include; relations: author$"):
        db.list("Post", filter={"title": "nothing"}, include=["writer"])
    with pytest.raises(ValidationError, match=r"^Post has no relation 'writer' to include; relations: author$"):
        db.read("Post", 99, include=["writer"])


def test_include_given_as_one_name(blog):
    db = blog
    assert db.read("Post", 1, include="author")["author"]["name"] == "Ann"
    assert [len(u["posts"]) for u in db.list("User", include="posts")] == [2, 2, 0]


def test_a_model_referring_to_itself(db):
    @db.model
    class Category:
        name: str
        parent_id: Annotated[Optional[int], Field(references="Category", on_delete="cascade")] = None

    assert db.get_model_info("Category")["relations"] == {
        "parent": {"model": "Category", "local": "parent_id", "remote": "id", "kind": "one"},
        "categories": {"model": "Category", "local": "id", "remote": "parent_id", "kind": "many"}}
    db.create("Category", name="root")
    db.create("Category", name="a", parent_id=1)
    db.create("Category", name="b", parent_id=2)
    db.create("Category", name="other")
    with statements(db) as sent:
        tree = db.list("Category", include=["parent", "categories"])
    assert len(selects(sent)) == 3, sent  # the list and one per relation
    assert [(c["name"], c["parent"] and c["parent"]["name"], [k["name"] for k in c["categories"]])
            for c in tree] == [("root", None, ["a"]), ("a", "root", ["b"]), ("b", "a", []), ("other", None, [])]
    assert db.delete("Category", 1) == 1  # cascades down the chain
    assert rows(db, "SELECT name FROM categories") == [("other",)]


def test_include_skips_soft_deleted_related_records(db):
    @db.model
    class Post:
        title: str
        author_id: Annotated[int, Field(references="User")]
        __dataflow__ = {"soft_delete": True}

    @db.model
    class User:
        name: str
        __dataflow__ = {"soft_delete": True}

    add_blog(db)
    db.delete("Post", 3)
    db.delete("User", 2)  # soft: the foreign key does not fire, Bob's posts stay
    assert [p["title"] for p in db.read("User", 1, include=["posts"])["posts"]] == ["p1"]
    assert [(p["title"], p["author"] and p["author"]["name"]) for p in db.list("Post", include=["author"])] == [
        ("p1", "Ann"), ("p2", None), ("p4", None)]


# ---------------------------------------------------------------- nodes
def run(rt, *nodes):
    wf = WorkflowBuilder()
    for node_type, node_id, params in nodes:
        wf.add_node(node_type, node_id, params)
    results, _ = rt.execute(wf.build())
    return results


def test_include_through_nodes_is_json_safe(blog):
    db = blog
    with LocalRuntime(enable_monitoring=False) as rt:
        results = run(rt, ("PostListNode", "posts", {"include": ["author"], "filter": {"author_id": 1}}),
                      ("UserReadNode", "user", {"id": 2, "include": ["posts"]}),
                      ("PostReadNode", "bad", {"id": 1, "include": ["writer"]}))
    posts = results["posts"]
    assert posts["count"] == 2
    assert [(p["title"], p["author"]["name"]) for p in posts["records"]] == [("p1", "Ann"), ("p3", "Ann")]
    nested = posts["records"][0]["author"]["created_at"]
    assert isinstance(nested, str)
    assert datetime.fromisoformat(nested) == db.read("User", 1)["created_at"]
    user = results["user"]
    assert (user["found"], user["name"]) == (True, "Bob")
    assert [p["title"] for p in user["posts"]] == ["p2", "p4"]
    assert all(isinstance(p["created_at"], str) for p in user["posts"])
    json.dumps(posts)
    json.dumps(user)
    assert results["bad"]["failed"] is True
    assert "ValidationError: Post has no relation 'writer' to include; relations: author" in results["bad"]["error"]


def test_foreign_key_errors_through_nodes(blog):
    db = blog
    with LocalRuntime(enable_monitoring=False) as rt:
        results = run(rt, ("PostCreateNode", "orphan", {"title": "x", "author_id": 999}),
                      ("UserDeleteNode", "referenced", {"id": 1}))
    assert results["orphan"]["failed"] is True
    assert "ForeignKeyError: " + MISSING_AUTHOR.format(action="create") in results["orphan"]["error"]
    assert "ForeignKeyError: " + STILL_REFERRED.format(action="delete") in results["referenced"]["error"]
    assert rows(db, "SELECT COUNT(*) FROM posts") == [(4,)]
    assert rows(db, "SELECT COUNT(*) FROM users") == [(3,)]



def test_two_keys_to_one_model_get_distinct_reverse_names(db):
    @db.model
    class User:
        name: str

    @db.model
    class Post:
        title: str
        author_id: int
        editor_id: Optional[int] = None
        __dataflow__ = {"foreign_keys": {"author_id": "User", "editor_id": "User"}}

    assert set(db.get_model_info("User")["relations"]) == {"posts", "posts_editor"}
    a, e = db.create("User", name="a"), db.create("User", name="e")
    db.create("Post", title="t", author_id=a["id"], editor_id=e["id"])
    edited = db.read("User", e["id"], include=["posts", "posts_editor"])
    assert edited["posts"] == [] and [p["title"] for p in edited["posts_editor"]] == ["t"]


def test_a_model_that_cannot_be_built_leaves_the_instance_usable(db):
    @db.model
    class User:
        name: str

    with pytest.raises(ModelError, match="unknown field 'nope'"):
        @db.model
        class Bad:
            x: int
            __dataflow__ = {"unique": ["nope"]}

    assert db.list_models() == ["User"]
    assert db.create("User", name="still works")["name"] == "still works"
