"""Tenant bypass (admin jobs) never links records of two tenants.

Under ``with db.tenant(None, bypass=True):`` a foreign key to a tenant-scoped model must name a record of
the tenant of the record holding it: its own tenant field for creates, bulk loads and upserts that create;
the stored rows' tenant for updates, bulk updates and upserts that update. The refusal is the tenant path's
``ForeignKeyError`` (the words of a reference to no record), and nothing is written.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Optional

import pytest

from dataflow import DataFlow, Field
from dataflow.errors import ForeignKeyError, TenantError
from test_tenancy import app_role_url, raw  # noqa: F401  (fixtures)

WORDS = re.compile(r"Order [a-z ]+ refused: Order\.customer_id must be the id of an existing Customer "
                   r"\(no Customer has that id\)")


def declare(db: DataFlow) -> None:
    @db.model
    class Customer:
        name: str

    @db.model
    class Country:
        code: str
        __dataflow__ = {"tenant_scoped": False}

    @db.model
    class Order:
        title: str
        customer_id: Annotated[Optional[int], Field(references="Customer")] = None
        country_id: Annotated[Optional[int], Field(references="Country")] = None

    @db.model
    class Folder:
        title: str
        parent_id: Annotated[Optional[int], Field(references="Folder")] = None


def seed(db: DataFlow) -> None:
    """Customers 1 (acme) and 2 (globex); orders 1 (acme, customer 1) and 2 (globex, customer 2); country 1."""
    for t in ("acme", "globex"):
        with db.tenant(t):
            c = db.create("Customer", name=f"{t} customer")
            db.create("Order", title=f"{t} order", customer_id=c["id"])
    db.create("Country", code="FR")


@pytest.fixture
def bdb(db_url):
    db = DataFlow(db_url, multi_tenant=True)
    declare(db)
    seed(db)
    yield db
    db.close()


def orders(db_url):
    return raw(db_url, "SELECT id, title, customer_id, country_id, tenant_id FROM orders ORDER BY id")


def cross_links(db_url):
    return raw(db_url, "SELECT COUNT(*) FROM orders o JOIN customers c ON o.customer_id = c.id "
                       "WHERE o.tenant_id <> c.tenant_id")


def refused_everywhere(db, db_url, attempts, customers=(2, 10_000)) -> None:
    """Each attempt, with globex's customer and with no customer at all: the same refusal, nothing written."""
    before = orders(db_url)
    with db.tenant(None, bypass=True):
        for name, attempt in attempts.items():
            said = set()
            for customer in customers:
                with pytest.raises(ForeignKeyError) as exc:
                    attempt(customer)
                assert (exc.value.model, exc.value.field) == ("Order", "customer_id"), name
                said.add(exc.value.message)
            assert len(said) == 1, (name, said)
            assert WORDS.fullmatch(said.pop()), name
    assert orders(db_url) == before
    assert cross_links(db_url) == [(0,)]


# ---------------------------------------------------------------- refused
def test_records_written_whole_must_refer_to_their_own_tenant(bdb, db_url):
    db = bdb
    refused_everywhere(db, db_url, {
        "create": lambda c: db.create("Order", title="x", customer_id=c, tenant_id="acme"),
        "upsert creating": lambda c: db.upsert("Order", {"id": 50}, create={"title": "x", "customer_id": c,
                                                                             "tenant_id": "acme"}),
        "bulk create": lambda c: db.bulk_create("Order", [
            {"title": "ok", "customer_id": 1, "tenant_id": "acme"},
            {"title": "ok", "customer_id": 2, "tenant_id": "globex"},
            {"title": "x", "customer_id": c, "tenant_id": "acme"}]),
        "bulk create skipping": lambda c: db.bulk_create("Order", [{"title": "x", "customer_id": c,
                                                                    "tenant_id": "acme"}], on_conflict="skip"),
        "bulk create updating": lambda c: db.bulk_create("Order", [{"id": 1, "title": "x", "customer_id": c,
                                                                    "tenant_id": "acme"}], on_conflict="update"),
        "bulk create returning ids": lambda c: db.bulk_create("Order", [{"title": "x", "customer_id": c,
                                                                         "tenant_id": "acme"}], return_ids=True),
        "bulk upsert new": lambda c: db.bulk_upsert("Order", [{"id": 60, "title": "x", "customer_id": c,
                                                               "tenant_id": "acme"}]),
        "bulk upsert stored": lambda c: db.bulk_upsert("Order", [{"id": 1, "title": "x", "customer_id": c,
                                                                  "tenant_id": "acme"}]),
    })


def test_updates_must_refer_to_the_tenant_of_each_changed_row(bdb, db_url):
    db = bdb
    refused_everywhere(db, db_url, {
        "update": lambda c: db.update("Order", 1, {"customer_id": c}),
        "update by filter": lambda c: db.update("Order", {"title": "acme order"}, {"customer_id": c}),
        "bulk update": lambda c: db.bulk_update("Order", {"tenant_id": "acme"}, {"customer_id": c}),
        "upsert updating": lambda c: db.upsert("Order", {"id": 1}, {"customer_id": c}, create={"tenant_id": "acme"}),
    })
    # A bulk update over rows of both tenants: any one target is another tenant's for some row.
    refused_everywhere(db, db_url, {
        "bulk update of both tenants": lambda c: db.bulk_update("Order", {}, {"customer_id": c, "title": "x"},
                                                                confirm_all=True),
    }, customers=(1, 2, 10_000))


def test_a_large_load_is_checked_in_chunks(bdb, db_url):
    db = bdb
    with db.tenant(None, bypass=True):
        ids = db.bulk_create("Customer", [{"name": f"c{i}", "tenant_id": "acme"} for i in range(1100)],
                             return_ids=True)["ids"]
        rows = [{"title": f"o{i}", "customer_id": c, "tenant_id": "acme"} for i, c in enumerate(ids)]
        before = orders(db_url)
        with pytest.raises(ForeignKeyError):
            db.bulk_create("Order", [*rows, {"title": "x", "customer_id": 2, "tenant_id": "acme"}])
        with pytest.raises(ForeignKeyError):  # the last chunk refuses: the ones written before roll back
            db.bulk_upsert("Order", [{**r, "id": 1000 + i} for i, r in enumerate(rows)]
                           + [{"id": 5000, "title": "x", "customer_id": 2, "tenant_id": "acme"}], batch_size=400)
        assert orders(db_url) == before
        assert db.bulk_create("Order", rows)["inserted"] == 1100
    assert raw(db_url, "SELECT COUNT(*) FROM orders") == [(1102,)]
    assert cross_links(db_url) == [(0,)]


# ---------------------------------------------------------------- allowed
def test_references_within_the_records_tenant_are_written(bdb, db_url):
    db = bdb
    with db.tenant(None, bypass=True):
        made = db.create("Order", title="a2", customer_id=1, tenant_id="acme")
        assert made["customer_id"] == 1
        assert db.update("Order", made["id"], {"customer_id": 1, "title": "a2'"})["title"] == "a2'"
        # updating: the stored row's tenant counts (globex), not the one the create branch would name
        out = db.upsert("Order", {"id": 2}, {"customer_id": 2}, create={"tenant_id": "acme"})
        assert (out["created"], out["record"]["customer_id"], out["record"]["tenant_id"]) == (False, 2, "globex")
        with pytest.raises(ForeignKeyError):
            db.upsert("Order", {"id": 2}, {"customer_id": 1}, create={"tenant_id": "acme"})
        out = db.upsert("Order", {"id": 70}, create={"title": "g70", "customer_id": 2, "tenant_id": "globex"})
        assert out["created"] and out["record"]["customer_id"] == 2
        assert db.bulk_create("Order", [{"title": "a3", "customer_id": 1, "tenant_id": "acme"},
                                        {"title": "g3", "customer_id": 2, "tenant_id": "globex"}])["inserted"] == 2
        assert db.bulk_create("Order", [{"id": 80, "title": "a80", "customer_id": 1, "tenant_id": "acme"}],
                              on_conflict="skip")["inserted"] == 1
        assert db.bulk_upsert("Order", [{"id": 1, "title": "a1", "customer_id": 1, "tenant_id": "acme"},
                                        {"id": 90, "title": "g90", "customer_id": 2, "tenant_id": "globex"}]) \
            == {"processed": 2, "inserted": 1, "updated": 1, "success": True}
        assert db.bulk_update("Order", {"tenant_id": "globex"}, {"customer_id": 2}) == 4
        assert db.bulk_update("Order", {"tenant_id": "acme"}, {"customer_id": None}) == 4  # clearing is fine
    assert raw(db_url, "SELECT tenant_id, COUNT(*), COUNT(customer_id) FROM orders GROUP BY tenant_id "
                       "ORDER BY tenant_id") == [("acme", 4, 0), ("globex", 4, 4)]
    assert cross_links(db_url) == [(0,)]


def test_references_to_a_shared_model_are_unrestricted(bdb, db_url):
    db = bdb
    with db.tenant(None, bypass=True):
        db.create("Order", title="a", country_id=1, tenant_id="acme")
        db.bulk_create("Order", [{"title": "g", "country_id": 1, "tenant_id": "globex"}])
        db.bulk_upsert("Order", [{"id": 2, "title": "g", "country_id": 1, "tenant_id": "globex"}])
        db.upsert("Order", {"id": 40}, create={"title": "a40", "country_id": 1, "tenant_id": "acme"})
        assert db.bulk_update("Order", {}, {"country_id": 1}, confirm_all=True) == 5
        assert db.update("Order", 1, {"country_id": 1})["country_id"] == 1
    assert raw(db_url, "SELECT COUNT(*) FROM orders WHERE country_id = 1") == [(5,)]


def test_records_of_one_load_may_refer_to_each_other(bdb, db_url):
    db = bdb
    with db.tenant(None, bypass=True):
        db.bulk_create("Folder", [{"id": 1, "title": "a root", "tenant_id": "acme"},
                                  {"id": 2, "title": "a docs", "parent_id": 1, "tenant_id": "acme"},
                                  {"id": 3, "title": "g root", "tenant_id": "globex"},
                                  {"id": 4, "title": "g docs", "parent_id": 3, "tenant_id": "globex"}])
        assert db.create("Folder", id=5, title="self", parent_id=5, tenant_id="acme")["parent_id"] == 5
        # across chunks too: chunk 2 refers to chunk 1, written before it
        db.bulk_upsert("Folder", [{"id": 6, "title": "a", "parent_id": 1, "tenant_id": "acme"},
                                  {"id": 7, "title": "b", "parent_id": 6, "tenant_id": "acme"},
                                  {"id": 8, "title": "c", "parent_id": 7, "tenant_id": "acme"}], batch_size=2)
        db.upsert("Folder", {"id": 9}, create={"title": "self", "parent_id": 9, "tenant_id": "globex"})
        db.bulk_update("Folder", {"id": {"$in": [4, 9]}}, {"parent_id": 3})
        db.update("Folder", 8, {"parent_id": 8})
        before = raw(db_url, "SELECT id, title, parent_id, tenant_id FROM folders ORDER BY id")
        attempts = {
            "a load naming the other tenant's record of the same load":
                lambda: db.bulk_create("Folder", [{"id": 20, "title": "g", "tenant_id": "globex"},
                                                  {"id": 21, "title": "a", "parent_id": 20, "tenant_id": "acme"}]),
            "a key given twice, for two tenants":
                lambda: db.bulk_create("Folder", [{"id": 20, "title": "g", "tenant_id": "globex"},
                                                  {"id": 20, "title": "a", "tenant_id": "acme"},
                                                  {"id": 21, "title": "a", "parent_id": 20, "tenant_id": "acme"}],
                                       on_conflict="skip"),
            # the load names globex's stored folder 3 as acme's, skips it, and would refer to it
            "a skipped key of another tenant":
                lambda: db.bulk_create("Folder", [{"id": 3, "title": "x", "tenant_id": "acme"},
                                                  {"id": 22, "title": "a", "parent_id": 3, "tenant_id": "acme"}],
                                       on_conflict="skip"),
            "a bulk upsert": lambda: db.bulk_upsert("Folder", [{"id": 23, "title": "a", "parent_id": 4,
                                                                 "tenant_id": "acme"}]),
            "an update": lambda: db.update("Folder", 2, {"parent_id": 3}),
            "a bulk update over both tenants": lambda: db.bulk_update("Folder", {"id": {"$in": [2, 4]}},
                                                                       {"parent_id": 1}),
        }
        for name, attempt in attempts.items():
            with pytest.raises(ForeignKeyError, match=r"Folder\.parent_id must be the id of an existing Folder") as exc:
                attempt()
            assert (exc.value.model, exc.value.field) == ("Folder", "parent_id"), name
        assert raw(db_url, "SELECT id, title, parent_id, tenant_id FROM folders ORDER BY id") == before
    assert raw(db_url, "SELECT COUNT(*) FROM folders f JOIN folders p ON f.parent_id = p.id "
                       "WHERE f.tenant_id <> p.tenant_id") == [(0,)]


def test_a_bulk_load_never_moves_a_stored_record_to_another_tenant(bdb, db_url):
    """An update on conflict would move the record, and every reference to it, to the other tenant."""
    db = bdb
    before = orders(db_url), raw(db_url, "SELECT id, name, tenant_id FROM customers ORDER BY id")
    with db.tenant(None, bypass=True):
        attempts = {
            "bulk upsert": lambda: db.bulk_upsert("Customer", [{"id": 1, "name": "x", "tenant_id": "globex"}]),
            "bulk create updating": lambda: db.bulk_create("Customer", [{"id": 1, "name": "x", "tenant_id": "globex"}],
                                                           on_conflict="update"),
            "a key given for two tenants": lambda: db.bulk_upsert("Customer", [
                {"id": 7, "name": "x", "tenant_id": "acme"}, {"id": 7, "name": "y", "tenant_id": "globex"}],
                batch_size=1),
        }
        for name, attempt in attempts.items():
            with pytest.raises(TenantError, match=r"refused: a record names the id of a record that belongs to "
                                                  r"another tenant$") as exc:
                attempt()
            assert (exc.value.model, exc.value.field) == ("Customer", "id"), name
        # skipping, or failing on, a taken key changes nothing: not refused here
        assert db.bulk_create("Customer", [{"id": 1, "name": "x", "tenant_id": "globex"}],
                              on_conflict="skip")["inserted"] == 0
    assert (orders(db_url), raw(db_url, "SELECT id, name, tenant_id FROM customers ORDER BY id")) == before
    assert cross_links(db_url) == [(0,)]


def test_uuid_keys_are_compared_as_keys(db_url):
    """Keys given as strings or UUIDs (CHAR(36) on MySQL and SQLite, native on PostgreSQL) match alike."""
    with DataFlow(db_url, multi_tenant=True) as db:
        @db.model
        class Node:
            id: uuid.UUID = uuid.uuid4
            title: str
            parent_id: Annotated[Optional[uuid.UUID], Field(references="Node")] = None

        a, g, n = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        with db.tenant(None, bypass=True):
            db.bulk_create("Node", [{"id": a, "title": "a", "tenant_id": "acme"},
                                    {"id": g, "title": "g", "tenant_id": "globex"},
                                    {"id": n, "title": "n", "parent_id": str(a), "tenant_id": "acme"}])
            with pytest.raises(ForeignKeyError):
                db.bulk_create("Node", [{"title": "x", "parent_id": str(g), "tenant_id": "acme"}])
            with pytest.raises(ForeignKeyError):
                db.update("Node", n, {"parent_id": g})
            with pytest.raises(TenantError):
                db.bulk_upsert("Node", [{"id": str(a), "title": "x", "tenant_id": "globex"}])
            db.bulk_upsert("Node", [{"id": str(a), "title": "a2", "tenant_id": "acme"},
                                    {"id": uuid.uuid4(), "title": "y", "parent_id": a, "tenant_id": "acme"}])
            assert db.update("Node", n, {"parent_id": str(a)})["parent_id"] == a
            assert db.count("Node") == 4
    assert raw(db_url, "SELECT COUNT(*) FROM nodes f JOIN nodes p ON f.parent_id = p.id "
                       "WHERE f.tenant_id <> p.tenant_id") == [(0,)]


def test_row_level_security_under_bypass(app_role_url, db_url):  # noqa: F811
    """PostgreSQL with row-level security on: under bypass the policy lets every row through, the check holds."""
    with DataFlow(app_role_url, multi_tenant=True) as db:
        declare(db)
        seed(db)
        refused_everywhere(db, db_url, {
            "create": lambda c: db.create("Order", title="x", customer_id=c, tenant_id="acme"),
            "bulk create": lambda c: db.bulk_create("Order", [{"title": "x", "customer_id": c, "tenant_id": "acme"}]),
            "bulk upsert": lambda c: db.bulk_upsert("Order", [{"id": 1, "title": "x", "customer_id": c,
                                                               "tenant_id": "acme"}]),
            "update": lambda c: db.update("Order", 1, {"customer_id": c}),
            "bulk update": lambda c: db.bulk_update("Order", {"title": "acme order"}, {"customer_id": c}),
        })
        with db.tenant(None, bypass=True):
            db.create("Order", title="a", customer_id=1, tenant_id="acme")
            db.bulk_create("Order", [{"title": "g", "customer_id": 2, "tenant_id": "globex"}])
            assert db.bulk_update("Order", {"tenant_id": "globex"}, {"customer_id": 2}) == 2
    assert raw(db_url, "SELECT COUNT(*) FROM orders") == [(4,)]
    assert cross_links(db_url) == [(0,)]
