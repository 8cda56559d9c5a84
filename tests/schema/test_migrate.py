"""Auto-migration on every database: create, evolve, refuse what is unsafe, report what is destructive."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Annotated, Optional
from uuid import UUID

import pytest
import sqlalchemy as sa
from schema_helpers import columns, migrator, rows, tables

from dataflow import Field, MigrationError
from dataflow.schema.history import HISTORY_TABLE, history
from dataflow.schema.locks import MigrationLock


def insert(engine, table, *records):
    with engine.begin() as conn:
        conn.execute(sa.table(table, *[sa.column(k) for k in records[0]]).insert(), list(records))


# --------------------------------------------------------------------------------------------- create
def test_create_every_type_then_plan_is_empty(engine, backend):
    class Author:
        name: str
        email: Annotated[str, Field(unique=True, max_length=120)]
        active: bool = True
        score: float = 0.0
        balance: Decimal = Decimal("0")
        price: Annotated[Decimal, Field(precision=12, scale=2)] = Decimal("0")
        born: Optional[date] = None
        seen: Optional[datetime] = None
        token: Optional[UUID] = None
        avatar: Optional[bytes] = None
        meta: dict = {}
        tags: list = []
        bio: Annotated[Optional[str], Field(text=True)] = None
        rank: Annotated[int, Field(index=True)] = 0
        __dataflow__ = {"unique": [["name", "rank"]], "indexes": [{"fields": ["score", "rank"]}]}

    class Book:
        title: str
        author_id: Annotated[int, Field(references="Author", on_delete="cascade")]

    m = migrator(engine, Author, Book)
    plan = m.plan()
    assert not plan.is_empty and not plan.applied
    assert {"create table authors (model Author)", "create table books (model Book)"} <= set(plan.operations)
    assert tables(engine) == set(), "plan() must not change the database"

    applied = m.apply()
    assert applied.applied and applied.sql == plan.sql
    assert {"authors", "books", HISTORY_TABLE} <= tables(engine)

    again = m.plan()
    assert again.is_empty, str(again)
    assert again.sql == [] and again.destructive == []
    assert m.apply().applied is False
    [row] = history(engine)
    assert row["checksum"] == plan.checksum == again.checksum
    assert row["tables"] == ["authors", "books"] and row["destructive"] is False
    assert "CREATE TABLE authors" in row["sql"] and row["applied_at"].tzinfo is not None

    if backend == "mysql":  # case-sensitive strings need the binary collation on every table
        with engine.connect() as conn:
            found = dict(conn.exec_driver_sql(
                "SELECT table_name, table_collation FROM information_schema.tables "
                "WHERE table_schema = DATABASE()").all())
        assert set(found.values()) == {"utf8mb4_nopad_bin"}, found


# ------------------------------------------------------------------------------------------ add fields
def test_added_fields_appear_and_rows_are_kept(engine):
    class Member:
        name: str

    migrator(engine, Member).apply()
    insert(engine, "members", {"name": "ada"}, {"name": "bob"})

    class Member:  # noqa: F811 - the same model, evolved
        name: str
        age: int = 7
        label: str = "100% sure"
        nick: Optional[str] = None
        joined: Optional[datetime] = None

    plan = migrator(engine, Member).apply()
    assert plan.applied
    assert any(op.startswith("add column members.age") and "existing rows get the default" in op
               for op in plan.operations)
    assert [(r["name"], r["age"], r["label"], r["nick"]) for r in rows(engine, "members")] == [
        ("ada", 7, "100% sure", None), ("bob", 7, "100% sure", None)]
    assert migrator(engine, Member).plan().is_empty
    assert len(history(engine)) == 2


def test_existing_rows_get_defaults_of_every_type(engine):
    class Thing:
        name: str

    migrator(engine, Thing).apply()
    insert(engine, "things", {"name": "a"})
    defaults = dict(flag=True, off=False, ratio=1.5, price=Decimal("2.5"), day=date(2020, 1, 2),
                    at=datetime(2020, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc),
                    uid=UUID("12345678-1234-5678-1234-567812345678"), quote="it's 50%", version=3,
                    tags=["a", "b"], meta={"k": [1, 2]})

    class Thing:  # noqa: F811
        name: str
        flag: bool = True
        off: bool = False
        ratio: float = 1.5
        price: Decimal = Decimal("2.5")
        day: date = date(2020, 1, 2)
        at: datetime = datetime(2020, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
        uid: UUID = UUID("12345678-1234-5678-1234-567812345678")
        quote: str = "it's 50%"
        version: int = 3
        tags: list = ["a", "b"]
        meta: dict = {"k": [1, 2]}

    m = migrator(engine, Thing)
    m.apply()
    with engine.connect() as conn:  # read through the model's types
        row = conn.execute(sa.select(m.metadata.tables["things"])).mappings().one()
    assert {k: row[k] for k in defaults} == defaults
    assert m.plan().is_empty


def test_required_field_without_default_fails_and_changes_nothing(engine):
    class Member:
        name: str

    migrator(engine, Member).apply()
    insert(engine, "members", {"name": "ada"})
    before = columns(engine, "members")

    class Member:  # noqa: F811
        name: str
        nick: Optional[str] = None  # safe on its own: must not be applied either
        age: int

    m = migrator(engine, Member)
    for attempt in (m.plan, m.apply):
        with pytest.raises(MigrationError) as err:
            attempt()
        message = str(err.value)
        assert "Member.age" in message and "default" in message and "Optional" in message
        assert "Nothing was changed" in message
        assert err.value.model == "Member" and err.value.field == "age"
    assert columns(engine, "members").keys() == before.keys()
    assert len(history(engine)) == 1


def test_default_factory_cannot_fill_existing_rows(engine):
    class Member:
        name: str

    migrator(engine, Member).apply()

    class Member:  # noqa: F811
        name: str
        stamp: datetime = datetime.now

    with pytest.raises(MigrationError, match="Member.stamp.*computed by a function"):
        migrator(engine, Member).plan()


# --------------------------------------------------------------------------------------- remove fields
def test_removed_field_is_reported_made_nullable_and_dropped_only_when_allowed(engine):
    class Member:
        name: str
        legacy: str

    migrator(engine, Member).apply()
    insert(engine, "members", {"name": "ada", "legacy": "x"})

    class Member:  # noqa: F811
        name: str

    m = migrator(engine, Member)
    plan = m.plan()
    [drop] = plan.destructive
    assert drop.description.startswith("drop column members.legacy")
    assert drop.sql and any("legacy" in s or "_alembic_tmp_members" in s for s in drop.sql)
    assert "members.legacy" in str(plan) and "allow_destructive" in str(plan)
    assert plan.operations == ["make members.legacy nullable: Member has no field for it any more, "
                               "so inserts would fail on NOT NULL"]

    applied = m.apply()
    assert applied.applied and len(applied.destructive) == 1
    assert columns(engine, "members")["legacy"]["nullable"] is True
    insert(engine, "members", {"name": "bob"})  # would fail on NOT NULL
    after = m.plan()
    assert after.operations == [] and len(after.destructive) == 1 and not after.is_empty
    assert m.apply().applied is False

    dropped = m.apply(allow_destructive=True)
    assert dropped.applied and dropped.destructive == [] and dropped.destructive_applied
    assert "legacy" not in columns(engine, "members")
    assert [r["name"] for r in rows(engine, "members")] == ["ada", "bob"]
    assert m.plan().is_empty
    assert history(engine)[-1]["destructive"] is True


def test_renamed_field_keeps_its_data(engine):
    class Person:
        full_name: Annotated[str, Field(max_length=100, index=True)]

    migrator(engine, Person).apply()
    insert(engine, "persons", {"full_name": "Ada Lovelace"}, {"full_name": "Bob"})

    class Person:  # noqa: F811
        name: str  # also widened from VARCHAR(100)
        __dataflow__ = {"renamed_from": {"name": "full_name"}}

    m = migrator(engine, Person)
    plan = m.apply()
    assert plan.operations[0].startswith("rename column persons.full_name to name")
    cols = columns(engine, "persons")
    assert "name" in cols and "full_name" not in cols
    assert [r["name"] for r in rows(engine, "persons")] == ["Ada Lovelace", "Bob"]
    again = m.plan()
    assert again.operations == []
    # The index of the old field is the model's no more: reported, not dropped.
    assert [c.description.split(":")[0] for c in again.destructive] == ["drop index ix_persons_full_name on persons"]


def test_bad_renamed_from_is_refused(engine):
    class Person:
        name: str
        __dataflow__ = {"renamed_from": {"nickname": "nick"}}

    with pytest.raises(MigrationError, match="renamed_from names 'nickname'"):
        migrator(engine, Person).plan()


# ------------------------------------------------------------------------------------------------ types
def test_widening_applies_and_narrowing_is_destructive(engine):
    class Item:
        code: Annotated[str, Field(max_length=20)]
        note: Annotated[str, Field(max_length=50)]

    migrator(engine, Item).apply()
    insert(engine, "items", {"code": "abc", "note": "short"})

    class Item:  # noqa: F811
        code: Annotated[str, Field(max_length=200)]
        note: Annotated[str, Field(text=True)]

    plan = migrator(engine, Item).apply()
    assert sorted(op.split(" ")[1] for op in plan.operations) == ["items.code", "items.note"]
    assert all(op.startswith("widen") for op in plan.operations)
    assert migrator(engine, Item).plan().is_empty

    class Item:  # noqa: F811
        code: Annotated[str, Field(max_length=10)]
        note: Annotated[str, Field(text=True)]

    m = migrator(engine, Item)
    plan = m.apply()
    assert not plan.applied and [c.description.split(" ")[0] for c in plan.destructive] == ["narrow"]
    assert m.apply(allow_destructive=True).applied
    assert m.plan().is_empty
    assert rows(engine, "items")[0]["code"] == "abc"


def test_nullable_field_becomes_required_only_without_nulls(engine):
    class Member:
        name: str
        nick: Optional[str] = None

    migrator(engine, Member).apply()
    insert(engine, "members", {"name": "ada", "nick": None})

    class Member:  # noqa: F811
        name: str
        nick: str

    with pytest.raises(MigrationError, match=r"1 row\(s\) hold NULL"):
        migrator(engine, Member).apply()
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE members SET nick = 'a'")
    assert migrator(engine, Member).apply().operations == ["make members.nick NOT NULL (Member.nick)"]
    assert columns(engine, "members")["nick"]["nullable"] is False


# ------------------------------------------------------------------------------ indexes, keys, tables
def test_new_index_unique_and_foreign_key_are_applied(engine):
    class Owner:
        name: str

    class Pet:
        name: str

    migrator(engine, Owner, Pet).apply()
    insert(engine, "owners", {"name": "ada"})
    insert(engine, "pets", {"name": "rex"})

    class Pet:  # noqa: F811
        name: Annotated[str, Field(unique=True)]
        owner_id: Annotated[Optional[int], Field(references="Owner", on_delete="set_null")] = None

    plan = migrator(engine, Owner, Pet).apply()
    kinds = " | ".join(plan.operations)
    assert "add unique constraint uq_pets_name" in kinds and "add foreign key fk_pets_owner_id" in kinds
    assert "create index ix_pets_owner_id" in kinds
    assert migrator(engine, Owner, Pet).plan().is_empty
    with pytest.raises(sa.exc.IntegrityError):
        insert(engine, "pets", {"name": "rex"})
    with pytest.raises(sa.exc.IntegrityError):
        insert(engine, "pets", {"name": "tom", "owner_id": 99})


def test_unknown_tables_are_never_touched_and_removed_models_are_only_reported(engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE legacy_stuff (x INTEGER)")

    class Keep:  # only models of one app label may have tables dropped (history.droppable_tables)
        name: str
        __dataflow__ = {"app": "shop"}

    class Gone:
        name: str
        __dataflow__ = {"app": "shop"}

    migrator(engine, Keep, Gone).apply()
    plan = migrator(engine, Keep).plan()
    assert [c.description.split(":")[0] for c in plan.destructive] == ["drop table gones"]
    assert "legacy_stuff" not in str(plan)
    assert migrator(engine).plan().is_empty  # an instance without models proposes no drop at all
    migrator(engine, Keep).apply()
    assert "gones" in tables(engine)
    migrator(engine, Keep).apply(allow_destructive=True)
    assert tables(engine) == {"keeps", "legacy_stuff", HISTORY_TABLE}
    assert migrator(engine, Keep).plan().is_empty


# ---------------------------------------------------------------------------------------------- lock
def test_lock_timeout_gives_a_clear_error_and_restores_the_session(engine, backend):
    class Member:
        name: str

    setting = {"sqlite": "PRAGMA foreign_keys", "postgresql": "SHOW lock_timeout",
               "mysql": "SELECT @@SESSION.lock_wait_timeout"}[backend]
    with engine.connect() as conn:
        baseline = conn.exec_driver_sql(setting).scalar()
    holder = engine.connect()
    lock = MigrationLock(holder, timeout=5).__enter__()
    try:
        with pytest.raises(MigrationError, match=r"Could not obtain the migration lock .* within 0.3 s"):
            migrator(engine, Member, lock_timeout=0.3).apply()
    finally:
        lock.__exit__(None, None, None)
        holder.close()
    assert "members" not in tables(engine)
    assert migrator(engine, Member, lock_timeout=5).apply().applied
    # Every pooled connection got its session settings back (SQLite: foreign keys on again).
    pooled = [engine.connect() for _ in range(4)]
    try:
        assert {conn.exec_driver_sql(setting).scalar() for conn in pooled} == {baseline}
    finally:
        for conn in pooled:
            conn.close()
