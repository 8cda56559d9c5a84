"""Multi-tenant isolation: two tenants with the same emails never see or change each other's rows.

Every door is tried (direct API, nodes under LocalRuntime, db.query with iteration and aggregate,
relation includes, the bulk forms, upserts, by id and by filter), inside one tenant against the
other's records; the other tenant's rows are then compared with what a raw connection saw before.
"""

from __future__ import annotations

import asyncio
import re
import logging
import threading
from typing import Annotated, Optional

import pytest
import sqlalchemy as sa
from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow, Field
from dataflow.core.engine import parse_url
from dataflow.errors import (DuplicateKeyError, ForeignKeyError, MigrationError, NotFoundError, TenantError,
                             ValidationError)

TENANTS = ("acme", "globex")


def declare(db: DataFlow) -> None:
    @db.model
    class User:
        name: str
        email: Annotated[str, Field(unique=True)]
        active: bool = True
        score: int = 0

    @db.model
    class Post:
        title: str
        author_id: Annotated[int, Field(references="User")]

    @db.model
    class Country:
        code: Annotated[str, Field(unique=True)]
        name: str
        __dataflow__ = {"tenant_scoped": False}


@pytest.fixture
def tdb(db_url):
    """Users a@x and b@x and one post each for acme (users 1, 2) and globex (users 3, 4); one shared country."""
    db = DataFlow(db_url, multi_tenant=True)
    declare(db)
    for t in TENANTS:
        with db.tenant(t):
            first = db.create("User", name=f"{t} a", email="a@x", score=1)
            db.bulk_create("User", [{"name": f"{t} b", "email": "b@x", "score": 2}])
            db.create("Post", title=f"{t} post", author_id=first["id"])
    db.create("Country", code="FR", name="France")
    yield db
    db.close()


def raw(db_url, sql, params=None):
    engine = sa.create_engine(parse_url(db_url), poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params or {})]
    finally:
        engine.dispose()


def acme_rows(db_url):
    """Everything acme has, as a raw connection sees it."""
    return (raw(db_url, "SELECT id, name, email, active, score, tenant_id FROM users WHERE tenant_id = 'acme' "
                        "ORDER BY id"),
            raw(db_url, "SELECT id, title, author_id, tenant_id FROM posts WHERE tenant_id = 'acme' ORDER BY id"))


def names(records):
    return sorted(r["name"] for r in records)


# ---------------------------------------------------------------- schema and settings
def test_schema_has_the_tenant_column_and_per_tenant_unique_constraints(tdb, db_url):
    insp = sa.inspect(sa.create_engine(parse_url(db_url), poolclass=sa.NullPool))
    cols = {c["name"]: c for c in insp.get_columns("users")}
    assert not cols["tenant_id"]["nullable"]
    assert "tenant_id" not in {c["name"] for c in insp.get_columns("countries")}
    indexed = {tuple(i["column_names"]) for i in insp.get_indexes("users")}
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("users")}
    assert ("tenant_id",) in indexed
    assert ("tenant_id", "email") in uniques | {tuple(i["column_names"]) for i in insp.get_indexes("users")
                                                if i.get("unique")}
    assert raw(db_url, "SELECT tenant_id, email FROM users ORDER BY id") == [
        ("acme", "a@x"), ("acme", "b@x"), ("globex", "a@x"), ("globex", "b@x")]
    with tdb.tenant("acme"), pytest.raises(DuplicateKeyError) as exc:
        tdb.create("User", name="again", email="a@x")
    # PostgreSQL and MySQL name the constraint (mapped to its field); SQLite lists the columns, tenant first.
    assert exc.value.field == ("tenant_id" if tdb.backend == "sqlite" else "email")
    info = tdb.get_model_info("User")["fields"]["tenant_id"]
    assert (info["required"], info["type"]) == (False, "str")


def test_settings_from_keyword_dict_and_environment(db_url, monkeypatch):
    with DataFlow(db_url, multi_tenant=True, tenant_field="org_id") as db:
        @db.model
        class Item:
            label: str

        with db.tenant("o1"):
            assert db.create("Item", label="x")["org_id"] == "o1"
        assert db.tenant_header == "X-Tenant-ID"
    with DataFlow({"database_url": db_url, "multi_tenant": True, "tenant_header": "X-Org"}) as db:
        assert db.config.multi_tenant and db.tenant_header == "X-Org"
    monkeypatch.setenv("DATAFLOW_MULTI_TENANT", "true")
    with DataFlow(db_url) as db:
        assert db.config.multi_tenant
        assert db.executor.get("tenancy") is not None


def test_tenant_scoped_must_be_a_bool(db_url):
    from dataflow import ModelError

    with DataFlow(db_url, multi_tenant=True) as db, pytest.raises(ModelError, match="tenant_scoped"):
        @db.model
        class Thing:
            label: str
            __dataflow__ = {"tenant_scoped": "no"}


# ---------------------------------------------------------------- reads
def test_every_read_sees_one_tenant(tdb):
    db = tdb
    with db.tenant("globex"):
        assert names(db.list("User")) == ["globex a", "globex b"]
        assert db.count("User") == 2
        assert db.count("User", {"tenant_id": "acme"}) == 0
        assert db.read("User", 1, raise_on_not_found=False) is None      # acme's id
        with pytest.raises(NotFoundError):
            db.read("User", 2)
        assert db.read("User", {"email": "a@x"})["name"] == "globex a"
        q = db.query("users").where({"tenant_id": "acme"})
        assert q.all() == [] and list(q) == [] and q.count() == 0 and q.first() is None
        assert names(db.query("users")) == ["globex a", "globex b"]          # iteration (streamed)
        assert names(db.query("User").where({"email": {"$in": ["a@x", "b@x"]}}).all()) == ["globex a", "globex b"]
        total = db.query("users").aggregate([{"$group": {"_id": None, "n": {"$sum": 1}, "s": {"$sum": "$score"}}}])
        assert [(r["n"], r["s"]) for r in total] == [(2, 3)]
        assert db.aggregate("User", [{"$group": {"_id": "$tenant_id", "n": {"$sum": 1}}}]) == [
            {"_id": "globex", "n": 2}]
        sql = db.query("users").where({"active": True}).to_sql()
        assert "users.tenant_id = 'globex'" in sql
        assert "tenant_id = 'globex'" in db.query_builder("User").filter({"active": True}).to_sql()
        assert names(db.stream("User")) == ["globex a", "globex b"]
    with db.tenant("acme"):
        assert names(db.list("User")) == ["acme a", "acme b"]


def test_relation_includes_are_scoped(tdb, db_url):
    db = tdb
    # A globex post pointing at acme's user 1, as hand-written SQL can store it (foreign keys are global
    # ids; DataFlow itself refuses the link, even under bypass: test_tenancy_bypass_refs.py).
    with db.tenant(None, bypass=True):
        db.create("Post", title="cross", author_id=3, tenant_id="globex")
        with db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE posts SET author_id = 1 WHERE title = 'cross'"))
    with db.tenant("globex"):
        posts = db.list("Post", include=["author"], sort={"id": 1})
        assert [(p["title"], p["author"] and p["author"]["name"]) for p in posts] == [
            ("globex post", "globex a"), ("cross", None)]          # acme's user is not included
        users = db.list("User", include=["posts"], sort={"id": 1})
        assert [[p["title"] for p in u["posts"]] for u in users] == [["globex post"], []]
        assert db.read("User", 3, include=["posts"])["posts"][0]["title"] == "globex post"
    with db.tenant("acme"):
        assert [p["title"] for p in db.read("User", 1, include=["posts"])["posts"]] == ["acme post"]


# ---------------------------------------------------------------- writes
def test_writes_never_reach_the_other_tenant(tdb, db_url):
    db = tdb
    before = acme_rows(db_url)
    with db.tenant("globex"):
        # by the other tenant's id: not found
        with pytest.raises(NotFoundError):
            db.update("User", 1, {"name": "hacked"})
        with pytest.raises(NotFoundError):
            db.delete("User", 2)
        assert db.update("User", {"id": 1}, {"name": "hacked"}, raise_on_not_found=False) is None
        # filters naming the other tenant change nothing
        assert db.bulk_update("User", {"tenant_id": "acme"}, {"score": 99}) == 0
        assert db.bulk_delete("User", {"tenant_id": "acme"}) == 0
        assert db.bulk_delete("Post", {"id": {"$in": [1]}}) == 0
        # data naming the other tenant is refused, never stored for it
        with pytest.raises(TenantError, match=r"^User create refused: the record names another tenant"):
            db.create("User", name="x", email="new@x", tenant_id="acme")
        with pytest.raises(TenantError, match=r"^data\[1\]: User bulk create refused"):
            db.bulk_create("User", [{"name": "ok", "email": "ok@x"}, {"name": "x", "email": "y@x", "tenant_id": "acme"}])
        with pytest.raises(TenantError, match="never moves"):
            db.update("User", 3, {"tenant_id": "acme"})
        with pytest.raises(TenantError, match="never moves"):
            db.bulk_update("User", {"email": "a@x"}, {"tenant_id": "acme"})
        with pytest.raises(TenantError):
            db.upsert("User", {"email": "z@x", "tenant_id": "acme"}, create={"name": "z"})
        with pytest.raises(TenantError):
            db.bulk_upsert("User", [{"name": "x", "email": "a@x", "tenant_id": "acme"}], conflict_on=["email"])
        # primary keys of the other tenant's records in bulk loads that match on conflict
        with pytest.raises(TenantError, match="belongs to another tenant"):
            db.bulk_upsert("User", [{"id": 1, "name": "hacked", "email": "a@x"}])
        with pytest.raises(TenantError, match="belongs to another tenant"):
            db.bulk_upsert("User", [{"id": 1, "name": "hacked", "email": "zz@x"}], conflict_on=["email"])
        with pytest.raises(TenantError, match="belongs to another tenant"):
            db.bulk_create("User", [{"id": 2, "name": "hacked", "email": "b@x"}], on_conflict="update")
        with pytest.raises(DuplicateKeyError):
            db.create("User", id=1, name="hacked", email="q@x")
        with pytest.raises(DuplicateKeyError):
            db.upsert("User", {"id": 2}, create={"name": "hacked", "email": "q@x"})
        assert db.bulk_create("User", [{"id": 1, "name": "hacked", "email": "q@x"}], on_conflict="skip")["inserted"] == 0
        # the same keys in globex's own records work, per tenant
        assert db.upsert("User", {"email": "a@x"}, {"score": 5})["action"] == "updated"
        assert db.bulk_upsert("User", [{"name": "globex b2", "email": "b@x"}, {"name": "globex c", "email": "c@x"}],
                              conflict_on=["email"]) == {"processed": 2, "inserted": 1, "updated": 1, "success": True}
        assert db.bulk_upsert("User", [{"name": "globex d", "email": "d@x"}])["inserted"] == 1  # unique field target
        assert db.bulk_create("User", [{"name": "dup", "email": "a@x"}], on_conflict="skip")["skipped"] == 1
        assert db.bulk_update("User", {}, {"active": False}, confirm_all=True) == 4
        assert db.update("User", {"email": "a@x"}, {"name": "globex a2", "tenant_id": "globex"})["name"] == "globex a2"
        assert db.bulk_delete("User", {"email": "d@x"}) == 1
        assert db.upsert("User", {"email": "e@x"}, create={"name": "globex e"})["record"]["tenant_id"] == "globex"
        created = db.create("User", name="globex f", email="f@x", tenant_id="globex")
        assert created["tenant_id"] == "globex"
        assert db.delete("User", created["id"]) == created["id"]
        assert db.bulk_delete("Post", {}, confirm_all=True) == 1
    assert acme_rows(db_url) == before
    assert raw(db_url, "SELECT COUNT(*) FROM users WHERE tenant_id NOT IN ('acme', 'globex')") == [(0,)]
    globex = raw(db_url, "SELECT name, score, active FROM users WHERE tenant_id = 'globex' ORDER BY id")
    assert [(n, s, bool(a)) for n, s, a in globex] == [  # a bulk upsert writes whole records (defaults too)
        ("globex a2", 5, False), ("globex b2", 0, False), ("globex c", 0, False), ("globex e", 0, True)]


def test_a_record_never_refers_to_another_tenants_record(tdb, db_url):
    """A foreign key naming the other tenant's record is refused like one naming no record at all: the
    database's own constraint knows no tenant (and the other tenant's deletes would cascade into ours)."""
    db = tdb
    before = raw(db_url, "SELECT id, title, author_id, tenant_id FROM posts ORDER BY id")
    with db.tenant("acme"):
        attempts = {
            "create": lambda u: db.create("Post", title="x", author_id=u),
            "update": lambda u: db.update("Post", 1, {"author_id": u}),
            "bulk update": lambda u: db.bulk_update("Post", {"id": 1}, {"author_id": u}),
            "upsert": lambda u: db.upsert("Post", {"id": 1}, {"author_id": u}),
            "upsert creating": lambda u: db.upsert("Post", {"id": 50}, create={"title": "x", "author_id": u}),
            "bulk create": lambda u: db.bulk_create("Post", [{"title": "ok", "author_id": 2},
                                                             {"title": "x", "author_id": u}]),
            "bulk create skipping": lambda u: db.bulk_create("Post", [{"title": "x", "author_id": u}],
                                                             on_conflict="skip"),
            "bulk upsert": lambda u: db.bulk_upsert("Post", [{"id": 1, "title": "x", "author_id": u}]),
        }
        for name, attempt in attempts.items():
            said = set()
            for user in (3, 4, 10_000):  # globex's users, and no user at all: the same refusal
                with pytest.raises(ForeignKeyError) as exc:
                    attempt(user)
                assert (exc.value.model, exc.value.field) == ("Post", "author_id"), name
                said.add(exc.value.message)
            assert len(said) == 1, (name, said)
            assert re.fullmatch(r"Post [a-z ]+ refused: Post\.author_id must be the id of an existing User "
                                r"\(no User has that id\)", said.pop()), name
        node = run(("PostCreateNode", "create", {"title": "x", "author_id": 3}))["create"]
        assert "ForeignKeyError: Post create refused: Post.author_id must be the id of an existing User" \
            in node["error"]
        # the tenant's own records are referred to as before
        mine = db.create("Post", title="mine", author_id=2)
        assert db.update("Post", mine["id"], {"author_id": 1})["author_id"] == 1
        assert db.bulk_create("Post", [{"title": "more", "author_id": 2}])["inserted"] == 1
        db.delete("Post", mine["id"])
        db.bulk_delete("Post", {"title": "more"})
    assert raw(db_url, "SELECT id, title, author_id, tenant_id FROM posts ORDER BY id") == before
    assert raw(db_url, "SELECT COUNT(*) FROM posts p JOIN users u ON p.author_id = u.id "
                       "WHERE p.tenant_id <> u.tenant_id") == [(0,)]


def test_records_written_together_may_refer_to_each_other(db_url):
    with DataFlow(db_url, multi_tenant=True) as db:
        @db.model
        class Folder:
            title: str
            parent_id: Annotated[Optional[int], Field(references="Folder")] = None

        with db.tenant("acme"):
            db.bulk_create("Folder", [{"id": 1, "title": "root"}, {"id": 2, "title": "docs", "parent_id": 1}])
            assert db.create("Folder", id=3, title="self", parent_id=3)["parent_id"] == 3
            db.bulk_upsert("Folder", [{"id": 4, "title": "a", "parent_id": 1}, {"id": 5, "title": "b",
                                                                                   "parent_id": 4}])
        with db.tenant("globex"):
            db.create("Folder", id=10, title="theirs")
            with pytest.raises(ForeignKeyError):
                db.bulk_create("Folder", [{"title": "x", "parent_id": 2}])
            # a record the load names but skips (the other tenant's key) is not the load's own
            with pytest.raises(ForeignKeyError):
                db.bulk_create("Folder", [{"id": 1, "title": "x"}, {"id": 11, "title": "y", "parent_id": 1}],
                               on_conflict="skip")
            assert db.count("Folder") == 1
        with db.tenant("acme"):
            assert db.count("Folder", {"parent_id": {"$ne": None}}) == 4


def run(*nodes):
    wf = WorkflowBuilder()
    for node, nid, params in nodes:
        wf.add_node(node, nid, params)
    with LocalRuntime(enable_monitoring=False) as rt:
        results, _ = rt.execute(wf.build())
    return results


def test_nodes_are_scoped(tdb, db_url):
    db = tdb
    before = acme_rows(db_url)
    with db.tenant("globex"):
        reads = run(("UserListNode", "list", {"filter": {}}),
                    ("UserListNode", "list_acme", {"filter": {"tenant_id": "acme"}}),
                    ("UserCountNode", "count", {"filter": {}}),
                    ("UserReadNode", "read_acme", {"id": 1, "raise_on_not_found": False}),
                    ("UserAggregateNode", "aggregate", {"pipeline": [{"$group": {"_id": None, "n": {"$sum": 1}}}]}),
                    ("PostListNode", "posts", {"include": ["author"]}))
        writes = run(("UserUpdateNode", "update_acme", {"id": 2, "name": "hacked", "raise_on_not_found": False}),
                     ("UserDeleteNode", "delete_acme", {"id": 1, "raise_on_not_found": False}),
                     ("UserBulkUpdateNode", "bulk_update", {"filter": {"email": "a@x"}, "update": {"score": 7}}),
                     ("UserBulkDeleteNode", "bulk_delete", {"filter": {"tenant_id": "acme"}}),
                     ("UserCreateNode", "create_acme", {"name": "x", "email": "n@x", "tenant_id": "acme"}),
                     ("UserUpsertNode", "upsert", {"where": {"email": "b@x"}, "update": {"score": 8}}),
                     ("UserBulkUpsertNode", "bulk_upsert", {"data": [{"id": 1, "name": "hacked", "email": "a@x"}]}))
        created = run(("UserCreateNode", "create", {"name": "globex n", "email": "n@x"}),
                      ("UserBulkCreateNode", "bulk_create", {"data": [{"name": "globex m", "email": "m@x"}]}))
    assert names(reads["list"]["records"]) == ["globex a", "globex b"]
    assert reads["list_acme"]["records"] == []
    assert reads["count"]["count"] == 2
    assert reads["read_acme"] == {"found": False}
    assert reads["aggregate"]["results"][0]["n"] == 2
    assert [p["author"]["name"] for p in reads["posts"]["records"]] == ["globex a"]
    assert writes["update_acme"] == {"updated": False}
    assert writes["delete_acme"]["deleted"] is False
    assert writes["bulk_delete"]["deleted"] == 0
    assert "TenantError: User create refused" in writes["create_acme"]["error"]
    assert "TenantError: User bulk upsert refused" in writes["bulk_upsert"]["error"]
    assert created["create"]["tenant_id"] == "globex"
    assert acme_rows(db_url) == before
    assert sorted(raw(db_url, "SELECT name, score FROM users WHERE tenant_id = 'globex'")) == [
        ("globex a", 7), ("globex b", 8), ("globex m", 0), ("globex n", 0)]


# ---------------------------------------------------------------- no tenant
def test_no_tenant_fails_closed_on_every_action(tdb, db_url):
    db = tdb
    before = raw(db_url, "SELECT id, name, email, tenant_id FROM users ORDER BY id")
    attempts = {
        "create": lambda: db.create("User", name="x", email="x@x"),
        "create naming a tenant": lambda: db.create("User", name="x", email="x@x", tenant_id="acme"),
        "read": lambda: db.read("User", 1),
        "update": lambda: db.update("User", 1, {"name": "x"}),
        "delete": lambda: db.delete("User", 1),
        "list": lambda: db.list("User"),
        "count": lambda: db.count("User"),
        "aggregate": lambda: db.aggregate("User", [{"$group": {"_id": None, "n": {"$sum": 1}}}]),
        "upsert": lambda: db.upsert("User", {"email": "a@x"}, {"name": "x"}),
        "bulk_create": lambda: db.bulk_create("User", [{"name": "x", "email": "x@x"}]),
        "bulk_update": lambda: db.bulk_update("User", {"email": "a@x"}, {"name": "x"}),
        "bulk_delete": lambda: db.bulk_delete("User", {}, confirm_all=True),
        "bulk_upsert": lambda: db.bulk_upsert("User", [{"name": "x", "email": "a@x"}], conflict_on=["email"]),
        "query": lambda: db.query("users").all(),
        "query iteration": lambda: list(db.query("users")),
        "query count": lambda: db.query("users").count(),
        "to_sql": lambda: db.query("users").to_sql(),
        "include from a scoped model": lambda: db.list("Post", include=["author"]),
    }
    for attempt in attempts.values():
        with pytest.raises(TenantError, match=r"refused: no tenant is set"):
            attempt()
        with db.tenant(None), pytest.raises(TenantError):  # an explicit "no tenant" is the same
            attempt()
    with LocalRuntime(enable_monitoring=False) as rt:
        wf = WorkflowBuilder()
        wf.add_node("UserListNode", "list", {"filter": {}})
        wf.add_node("UserCreateNode", "create", {"name": "x", "email": "x@x"})
        results, _ = rt.execute(wf.build())
    assert "TenantError" in results["list"]["error"] and "TenantError" in results["create"]["error"]
    assert raw(db_url, "SELECT id, name, email, tenant_id FROM users ORDER BY id") == before


def test_bypass_for_admin_jobs_is_logged(tdb, caplog):
    db = tdb
    with caplog.at_level(logging.WARNING, logger="dataflow.tenancy"), db.actor("ops"), \
            db.tenant(None, bypass=True):
        assert db.count("User") == 4
        assert db.list("User", {"email": "a@x"}, sort={"id": 1})[1]["tenant_id"] == "globex"
        with pytest.raises(ValidationError, match=r"must name its tenant in tenant_id"):
            db.create("User", name="x", email="x@x")
        with pytest.raises(ValidationError, match=r"^data\[0\]: .*must name its tenant"):
            db.bulk_create("User", [{"name": "x", "email": "x@x"}])
        assert db.create("User", name="initech a", email="a@x", tenant_id="initech")["tenant_id"] == "initech"
        with pytest.raises(TenantError, match="never moves"):
            db.bulk_update("User", {"email": "a@x"}, {"tenant_id": "acme"})
    assert [r.getMessage() for r in caplog.records] == ["tenant isolation bypassed by actor ops"]
    assert caplog.records[0].levelno == logging.WARNING
    with pytest.raises(ValidationError, match="pass None"):
        with db.tenant("acme", bypass=True):
            pass
    with pytest.raises(ValidationError, match="non-empty string"):
        with db.tenant(""):
            pass


def test_a_shared_model_needs_no_tenant(tdb):
    db = tdb
    assert db.read("Country", {"code": "FR"})["name"] == "France"
    with db.tenant("acme"):
        db.update("Country", {"code": "FR"}, {"name": "République française"})
        assert db.count("Country") == 1
    with db.tenant("globex"):
        assert db.read("Country", 1)["name"] == "République française"
    assert db.bulk_upsert("Country", [{"code": "FR", "name": "France"}, {"code": "DE", "name": "Germany"}],
                          conflict_on=["code"])["inserted"] == 1


# ---------------------------------------------------------------- concurrency and the statement cache
def test_threads_with_different_tenants_never_mix(tdb):
    db = tdb
    errors: list = []
    barrier = threading.Barrier(len(TENANTS))

    def work(tenant):
        try:
            with db.tenant(tenant):
                barrier.wait()
                for i in range(15):
                    db.create("User", name=f"{tenant} t{i}", email=f"t{i}@x")
                    seen = {r["tenant_id"] for r in db.list("User", limit=None)}
                    assert seen == {tenant}, seen
                    assert db.read("User", {"email": "a@x"})["name"] == f"{tenant} a"
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in TENANTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.tenant("acme"):
        assert db.count("User") == 17


def test_asyncio_tasks_with_different_tenants_never_mix(tdb):
    db = tdb

    async def work(tenant):
        with db.tenant(tenant):
            for _ in range(10):
                await asyncio.sleep(0)  # the other task runs here, with its own tenant
                assert {r["tenant_id"] for r in db.list("User")} == {tenant}
                records = await asyncio.to_thread(db.list, "User")  # carried into the worker thread
                assert {r["tenant_id"] for r in records} == {tenant}
        return tenant

    async def main():
        return await asyncio.gather(*(work(t) for t in TENANTS * 2))

    assert asyncio.run(main()) == list(TENANTS * 2)


def test_the_statement_cache_never_serves_one_tenant_to_another(tdb):
    db = tdb
    for i in range(6):
        tenant = TENANTS[i % 2]
        with db.tenant(tenant):
            assert db.read("User", {"email": "a@x"})["name"] == f"{tenant} a"
            assert names(db.list("User", {"active": True})) == [f"{tenant} a", f"{tenant} b"]
            assert db.count("User", {"email": "b@x"}) == 1
            assert db.aggregate("User", [{"$group": {"_id": "$tenant_id", "n": {"$sum": 1}}}]) == [
                {"_id": tenant, "n": 2}]
            assert db.query("users").where({"score": {"$gte": 1}}).first()["tenant_id"] == tenant
            mine, theirs = (1, 3) if tenant == "acme" else (3, 1)
            assert db.read("User", mine)["tenant_id"] == tenant
            assert db.read("User", theirs, raise_on_not_found=False) is None


# ---------------------------------------------------------------- migration
def test_an_existing_table_gains_the_tenant_column_by_migration(db_url):
    with DataFlow(db_url) as plain:
        @plain.model
        class User:
            name: str
            email: Annotated[str, Field(unique=True)]

        plain.create("User", name="old", email="a@x")
    with DataFlow(db_url, multi_tenant=True) as db:
        declare(db)
        with pytest.raises(MigrationError, match=r"tenant column .* set tenant_default"):
            db.migrate()
    assert raw(db_url, "SELECT name FROM users") == [("old",)]
    with DataFlow(db_url, multi_tenant=True, tenant_default="legacy") as db:
        declare(db)
        plan = db.migrate()
        assert re.search(r"drop (unique constraint|index) uq_users_email", str(plan))  # reported, applied if allowed
        db.migrate(allow_destructive=True)
        with db.tenant("legacy"):
            assert [u["name"] for u in db.list("User")] == ["old"]
        with db.tenant("acme"):
            assert db.create("User", name="new", email="a@x")["tenant_id"] == "acme"
    assert raw(db_url, "SELECT tenant_id, email FROM users ORDER BY id") == [("legacy", "a@x"), ("acme", "a@x")]


# ---------------------------------------------------------------- PostgreSQL: row-level security
@pytest.fixture
def app_role_url(ordinary_role):
    """The test database as an ordinary role (superusers are not bound by row-level security)."""
    return ordinary_role[0]


def test_postgresql_row_level_security_is_a_second_wall(app_role_url, db_url):
    with DataFlow(app_role_url, multi_tenant=True) as db:
        declare(db)
        for t in TENANTS:
            with db.tenant(t):
                db.create("User", name=f"{t} a", email="a@x")
                db.bulk_create("User", [{"name": f"{t} b", "email": "b@x"}])   # no COPY under RLS
        policies = raw(db_url, "SELECT tablename FROM pg_policies WHERE policyname = 'dataflow_tenant' ORDER BY 1")
        assert policies == [("posts",), ("users",)]
        assert raw(db_url, "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'users'") == [(True,)]

        def hand_written(sql="SELECT name FROM users ORDER BY id"):
            with db.engine.connect() as conn:  # DataFlow's engine, SQL of our own
                return [r[0] for r in conn.exec_driver_sql(sql)]

        with db.tenant("acme"):
            assert hand_written() == ["acme a", "acme b"]
            with pytest.raises(sa.exc.ProgrammingError, match="row-level security"), db.engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO users (name, email, tenant_id) VALUES ('x', 'x@x', 'globex')")
            with db.engine.begin() as conn:  # an UPDATE of another tenant's rows finds none
                assert conn.exec_driver_sql("UPDATE users SET name = 'x' WHERE tenant_id = 'globex'").rowcount == 0
        with db.tenant("globex"):
            assert hand_written() == ["globex a", "globex b"]
            assert [u["name"] for u in db.list("User")] == ["globex a", "globex b"]
        assert hand_written() == []                      # no tenant: no row (fail closed)
        with db.tenant("acme"):
            hand_written()
        assert hand_written() == []                      # the setting ended with its transaction
        with db.tenant(None, bypass=True):
            assert len(hand_written()) == 4
    assert raw(db_url, "SELECT tenant_id, name FROM users ORDER BY id") == [
        ("acme", "acme a"), ("acme", "acme b"), ("globex", "globex a"), ("globex", "globex b")]


def test_an_update_or_delete_by_id_under_row_level_security_is_one_statement_and_still_walled(app_role_url, db_url):
    """Row-level security needs a transaction, not the record's key first: an update or delete by id stays one
    ``UPDATE/DELETE ... RETURNING`` (no ``SELECT ... FOR UPDATE``, no read back) in a transaction whose tenant is
    set; with the tenant condition taken off the call, the database's policy alone still keeps the other
    tenant's record out of reach, and so it does for hand-written SQL on ``db.engine``."""
    from dataflow.operations.policy import Policy

    with DataFlow(app_role_url, multi_tenant=True) as db:
        declare(db)
        ids = {}
        for t in TENANTS:
            with db.tenant(t):
                ids[t] = [db.create("User", name=f"{t} {n}", email=f"{n}@x")["id"] for n in "ab"]
        seen: list[str] = []

        def listen(conn, cursor, statement, parameters, context, executemany):
            seen.append(statement)

        sa.event.listen(db.engine, "before_cursor_execute", listen)
        try:
            with db.tenant("acme"):
                assert db.update("User", ids["acme"][0], {"score": 5})["score"] == 5
                assert len(seen) == 1 and seen[0].startswith("UPDATE users SET") and "RETURNING" in seen[0]
                seen.clear()
                assert db.delete("User", ids["acme"][1]) == ids["acme"][1]
                assert len(seen) == 1 and seen[0].startswith("DELETE FROM users") and "RETURNING" in seen[0]
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", listen)

        class Unscoped(Policy):
            """A tenant condition lost by mistake: only row-level security is left."""
            name = "unscoped"

            def plan(self, call):
                call.conditions[:] = [c for c in call.conditions if c.key[0] != "tenant"]

        db.executor.add(Unscoped())
        globex = raw(db_url, "SELECT id, name, score FROM users WHERE tenant_id = 'globex' ORDER BY id")
        with db.tenant("acme"):
            assert db.update("User", ids["acme"][0], {"score": 6})["score"] == 6   # the tenant is set: acme's own
            with pytest.raises(NotFoundError):
                db.update("User", ids["globex"][0], {"score": 7})
            with pytest.raises(NotFoundError):
                db.delete("User", ids["globex"][1])
            assert db.update("User", ids["globex"][0], {"score": 7}, raise_on_not_found=False) is None
            with db.engine.begin() as conn:  # hand-written SQL through DataFlow's engine
                assert conn.exec_driver_sql("UPDATE users SET score = 8 WHERE id = %s", (ids["globex"][0],)).rowcount == 0
                assert conn.exec_driver_sql("DELETE FROM users WHERE id = %s", (ids["globex"][1],)).rowcount == 0
        assert raw(db_url, "SELECT id, name, score FROM users WHERE tenant_id = 'globex' ORDER BY id") == globex
        assert raw(db_url, "SELECT id, score FROM users WHERE tenant_id = 'acme' ORDER BY id") == [(ids["acme"][0], 6)]


def test_a_tenant_id_with_quotes_reaches_row_level_security_as_one_value(app_role_url, db_url):
    """The tenant travels with BEGIN as a quoted literal: quotes, backslashes and SQL in it are data."""
    hostile = "a'b\\c'); SELECT set_config('dataflow.bypass', 'on', true); --"
    with DataFlow(app_role_url, multi_tenant=True) as db:
        declare(db)
        with db.tenant("globex"):
            db.create("User", name="globex a", email="a@x")
        with db.tenant(hostile):
            assert db.create("User", name="h", email="a@x")["tenant_id"] == hostile
            with db.engine.connect() as conn:
                assert conn.exec_driver_sql(
                    "SELECT current_setting('dataflow.tenant'), current_setting('dataflow.bypass')").all() == [
                    (hostile, "off")]
                assert [r[0] for r in conn.exec_driver_sql("SELECT name FROM users")] == ["h"]
    assert raw(db_url, "SELECT tenant_id FROM users ORDER BY id") == [("globex",), (hostile,)]


def test_a_retried_bulk_load_checks_its_keys_again(tdb, db_url, backend):
    """The key guard runs in every attempt: a load retried after a serialization failure (here a real
    40001 from PostgreSQL, raised once after the first attempt's check passed, once another tenant's
    record took the key) is refused, not let through on the strength of the first attempt's check."""
    if backend != "postgresql":
        pytest.skip("raises a real serialization failure with PostgreSQL's DO ... RAISE")
    from dataflow.operations.policy import Policy

    taken = 1000
    acme = acme_rows(db_url)

    class FailOnce(Policy):
        name = "fail_once"
        attempts = 0

        def before_statement(self, call, conn):
            if call.action != "bulk_upsert":
                return
            FailOnce.attempts += 1
            if FailOnce.attempts == 1:  # meanwhile acme's record takes the key, then the attempt fails
                engine = sa.create_engine(parse_url(db_url), poolclass=sa.NullPool)
                with engine.begin() as other:
                    other.exec_driver_sql(f"INSERT INTO users (id, name, email, active, score, tenant_id, created_at, "
                                          f"updated_at) VALUES ({taken}, 'acme late', 'late@x', true, 0, 'acme', now(), now())")
                engine.dispose()
                conn.exec_driver_sql("DO $$ BEGIN RAISE EXCEPTION 'try again' USING ERRCODE = '40001'; END $$")

    tdb.executor.add(FailOnce())
    with tdb.tenant("globex"), pytest.raises(TenantError, match="another tenant"):
        tdb.bulk_upsert("User", [{"id": taken, "name": "globex took it", "email": "z@x"}], conflict_on=["id"])
    assert FailOnce.attempts == 1  # the second attempt was refused by the guard, before this hook
    assert raw(db_url, f"SELECT name, tenant_id FROM users WHERE id = {taken}") == [("acme late", "acme")]
    assert acme_rows(db_url)[1] == acme[1]


@pytest.mark.parametrize("rule", ["cascade", "set_null"])
def test_a_tenant_cannot_delete_a_shared_record_whose_cascade_reaches_other_tenants(db_url, rule):
    with DataFlow(db_url, multi_tenant=True) as db:
        @db.model
        class Region:
            code: str
            __dataflow__ = {"tenant_scoped": False}

        # Built with type(): the module's string annotations could not name this test's `rule`.
        db.model(type("Shop", (), {"region_id": None, "__annotations__": {
            "name": str, "region_id": Annotated[Optional[int], Field(references="Region", on_delete=rule)]}}))

        eu, us = db.create("Region", code="eu"), db.create("Region", code="us")
        for t in TENANTS:
            with db.tenant(t):
                db.create("Shop", name=f"{t} eu", region_id=eu["id"])
        with db.tenant("acme"):
            db.create("Shop", name="acme us", region_id=us["id"])
        before = raw(db_url, "SELECT id, name, region_id, tenant_id FROM shops ORDER BY id")
        with db.tenant("acme"):
            with pytest.raises(TenantError, match="records of other tenants refer to it"):
                db.delete("Region", eu["id"])
            with pytest.raises(TenantError, match="records of other tenants refer to it"):
                db.bulk_delete("Region", {"code": {"$in": ["eu", "us"]}})
            assert raw(db_url, "SELECT id, name, region_id, tenant_id FROM shops ORDER BY id") == before
            assert db.count("Region") == 2
            assert db.delete("Region", us["id"]) == us["id"]  # only acme's shop refers to it
            shops = {s["name"]: s for s in db.list("Shop")}
            assert ("acme us" in shops) == (rule == "set_null")
        with db.tenant(None, bypass=True):
            assert db.delete("Region", eu["id"]) == eu["id"]
        left = raw(db_url, "SELECT name, region_id FROM shops ORDER BY name")
        assert left == ([] if rule == "cascade" else [("acme eu", None), ("acme us", None), ("globex eu", None)])
