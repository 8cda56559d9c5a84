"""GDPR/CCPA: export finds everything seeded for a subject across related models (transitively) and
nothing of another; anonymise leaves no seeded personal value anywhere (every table, audit trail
included, read with raw SQL), keeps keys and amounts, and is idempotent; compliance handlers are audited."""

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Optional

import pytest
import sqlalchemy as sa

from dataflow import Field
from dataflow.errors import ModelError, NotFoundError, ValidationError

ANN = {"name": "Annabel Quist", "email": "annabel.quist@example.org", "phone": "+44 7700 900123",
       "address": "12 Larkspur Close", "note": "gift wrap for Annabel", "nick": "annq"}
BOB = {"name": "Bartholomew Zed", "email": "bart.zed@example.org", "phone": "+44 7700 900999",
       "address": "99 Juniper Way", "note": "leave with Bart's neighbour", "nick": "bartz"}


def all_text(db) -> str:
    """Every value of every table (the audit trail and migration history included), as raw SQL returns it."""
    engine = sa.create_engine(db.engine.url, poolclass=sa.NullPool)
    try:
        names = sa.inspect(engine).get_table_names()
        out = []
        with engine.connect() as conn:
            q = engine.dialect.identifier_preparer
            for name in names:
                for row in conn.exec_driver_sql(f"SELECT * FROM {q.quote(name)}"):
                    out += [v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray, memoryview))
                            and not isinstance(v, memoryview) else str(v) for v in row]
        return "\n".join(out)
    finally:
        engine.dispose()


@pytest.fixture
def shop(db):
    @db.model
    class User:
        name: Annotated[str, Field(pii=True)]
        email: Annotated[str, Field(unique=True, pii=True)]
        nick: Annotated[str, Field(max_length=12, unique=True, pii=True)]
        referrer_id: Annotated[Optional[int], Field(references="User")] = None
        tier: str = "gold"

    @db.model
    class Profile:
        user_id: Annotated[int, Field(references="User", unique=True)]
        phone: Annotated[str, Field(pii=True)]
        born: Annotated[Optional[datetime], Field(pii=True)] = None

    @db.model
    class Order:
        user_id: Annotated[int, Field(references="User")]
        amount: Decimal
        address: str
        __dataflow__ = {"pii": ["address"]}

    @db.model
    class OrderLine:
        order_id: Annotated[int, Field(references="Order")]
        qty: int
        note: Annotated[Optional[str], Field(pii=True)] = None

    @db.model
    class Product:  # unrelated to any person
        title: str

    db.enable_audit_log()
    ids = {}
    with db.actor("seeder"):
        for who, v in (("ann", ANN), ("bob", BOB)):
            u = db.create("User", name=v["name"], email=v["email"], nick=v["nick"])
            db.create("Profile", user_id=u["id"], phone=v["phone"], born=datetime(1990, 5, 17))
            orders = [db.create("Order", user_id=u["id"], amount=Decimal(a), address=v["address"])
                      for a in ("10.50", "20.25")]
            db.bulk_create("OrderLine", [{"order_id": o["id"], "qty": 2, "note": v["note"]} for o in orders])
            db.update("User", u["id"], {"tier": "silver"})
            ids[who] = u["id"]
        db.update("User", ids["bob"], {"referrer_id": ids["ann"]})  # Bob's row points at Ann: still Bob's
        db.create("Product", title="Lamp")
    return db, ids


def test_export_finds_everything_about_the_subject_and_nothing_else(shop):
    db, ids = shop
    out = db.export_user_data(ids["ann"])
    json.dumps(out)  # JSON-safe
    datetime.fromisoformat(out["exported_at"])
    assert out["subject"] == {"model": "User", "id": ids["ann"]}
    assert out["counts"] == {"User": 1, "Profile": 1, "Order": 2, "OrderLine": 2}
    assert out["data"]["User"][0]["email"] == ANN["email"]
    assert out["data"]["Profile"][0]["phone"] == ANN["phone"]
    assert sorted(o["amount"] for o in out["data"]["Order"]) == ["10.5000000000", "20.2500000000"]
    assert {line["note"] for line in out["data"]["OrderLine"]} == {ANN["note"]}  # two hops away
    text = json.dumps(out)
    assert not any(v in text for v in BOB.values())
    with pytest.raises(NotFoundError):
        db.export_user_data(10_000)
    assert db.audit_log(action="export_user_data")[0]["record_id"] == str(ids["ann"])


def test_anonymize_removes_every_personal_value_everywhere(shop):
    db, ids = shop
    text = all_text(db)
    assert all(v in text for v in ANN.values())  # seeded, and in the audit trail too
    totals = db.aggregate("Order", [{"$group": {"_id": "$user_id", "total": {"$sum": "$amount"}}}])
    keys = {m: sorted(r["id"] for r in db.list(m, limit=None)) for m in ("User", "Profile", "Order", "OrderLine")}

    with db.actor("dpo"):
        result = db.anonymize_user_data(ids["ann"])
    assert result["anonymized"]["User"] == {"records": 1, "fields": ["name", "email", "nick"]}
    assert result["audit_records_scrubbed"] > 0

    text = all_text(db)
    assert [v for v in ANN.values() if v in text] == []
    assert all(v in text for v in BOB.values())  # the other subject is untouched
    assert db.aggregate("Order", [{"$group": {"_id": "$user_id", "total": {"$sum": "$amount"}}}]) == totals
    assert {m: sorted(r["id"] for r in db.list(m, limit=None)) for m in keys} == keys
    ann = db.read("User", ids["ann"])
    assert ann["tier"] == "silver" and ann["email"].startswith("anon-")
    assert db.read("User", ids["bob"])["referrer_id"] == ids["ann"]  # foreign keys kept
    profile = db.list("Profile", {"user_id": ids["ann"]})[0]
    assert profile["born"] is None and profile["phone"] != ANN["phone"]
    assert [line["note"] for line in db.list("OrderLine") if line["note"] and "Annabel" in line["note"]] == []

    # unique columns stay unique: a second subject anonymised next to the first
    db.anonymize_user_data(ids["bob"])
    users = db.list("User")
    assert len({u["email"] for u in users}) == 2 and len({u["nick"] for u in users}) == 2

    again = db.anonymize_user_data(ids["ann"])  # idempotent
    assert again["anonymized"] == result["anonymized"] and again["audit_records_scrubbed"] == 0
    assert db.read("User", ids["ann"]) == ann
    record = db.audit_log(action="anonymize_user_data", actor="dpo")[0]
    assert record["record_id"] == str(ids["ann"]) and "Annabel" not in json.dumps(record)


def test_the_trail_keeps_its_records_but_not_the_values(shop):
    db, ids = shop
    before = db.audit_log(table="users", record_id=ids["ann"], limit=None)
    db.anonymize_user_data(ids["ann"])
    after = db.audit_log(table="users", record_id=ids["ann"], limit=None)
    assert [r["id"] for r in after if r["action"] != "anonymize_user_data"] == [r["id"] for r in before]
    create = next(r for r in after if r["action"] == "create")
    assert (create["after"]["name"], create["after"]["email"], create["after"]["tier"]) == ("***", "***", "gold")


def test_compliance_handlers_are_audited_without_personal_values(shop):
    db, ids = shop

    @db.compliance("gdpr")
    def handle_data_request(user_id, request_type):
        if request_type == "export":
            return db.export_user_data(user_id)
        elif request_type == "delete":
            return db.anonymize_user_data(user_id)
        raise ValueError("unknown request")

    @db.compliance("CCPA")
    def opt_out(user_id, request_type="opt_out"):
        return {"ok": True}

    with db.actor("support"):
        assert handle_data_request(ids["bob"], "export")["counts"]["Order"] == 2
        handle_data_request(user_id=ids["bob"], request_type="delete")
        with pytest.raises(ValueError):
            handle_data_request(ids["bob"], ANN["email"])  # not a word: not recorded as the kind
        assert opt_out(ids["ann"]) == {"ok": True}
    assert handle_data_request.__name__ == "handle_data_request"
    gdpr = db.audit_log(action="gdpr_request", limit=None)
    assert [(r["actor"], r["record_id"], r["after"]["request_type"], r["after"]["outcome"]) for r in gdpr] == [
        ("support", str(ids["bob"]), None, "failed"), ("support", str(ids["bob"]), "delete", "completed"),
        ("support", str(ids["bob"]), "export", "completed")]
    assert [r["record_id"] for r in db.audit_log(action="ccpa_request")] == [str(ids["ann"])]
    assert not any(v in json.dumps(gdpr) for v in (*ANN.values(), *BOB.values()))
    with pytest.raises(ValidationError, match="gdpr, ccpa"):
        db.compliance("hipaa")


def test_declarations(db):
    with pytest.raises(ModelError, match="pii"):
        @db.model
        class Bad:
            name: str
            __dataflow__ = {"pii": ["nmae"]}

    @db.model
    class Customer:
        name: Annotated[str, Field(pii=True)]
        __dataflow__ = {"subject": True}

    @db.model
    class Ticket:
        customer_id: Annotated[int, Field(references="Customer")]
        body: Annotated[str, Field(pii=True)]

    assert db.specs["Customer"].fields["name"].pii and not db.specs["Ticket"].fields["customer_id"].pii
    c = db.create("Customer", name="Cleo")
    db.create("Ticket", customer_id=c["id"], body="Cleo's printer")
    assert db.export_user_data(c["id"])["counts"] == {"Customer": 1, "Ticket": 1}
    db.anonymize_user_data(c["id"])  # without an audit log: rows only
    assert "Cleo" not in all_text(db)


def test_no_subject_model(db):
    @db.model
    class Note:
        text: str

    with pytest.raises(ModelError, match="subject"):
        db.export_user_data(1)
