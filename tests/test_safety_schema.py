"""Issue 8, schema half: regression tests for items 7, 8, 9(b), 13, 14, 15 and 17, on every backend."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

import pytest
import sqlalchemy as sa

from dataflow import DataFlow, Field, MigrationError, ModelError
from dataflow.errors import DatabaseError, DataFlowError, ValidationError
from dataflow.schema.history import HISTORY_TABLE

SECRET = "jane.doe@example.com"


def raw(db: DataFlow, sql: str) -> list[tuple]:
    with db.engine.begin() as conn:
        result = conn.exec_driver_sql(sql)
        return [tuple(r) for r in result] if result.returns_rows else []


def table_names(db: DataFlow) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


def full_text(exc: BaseException) -> str:
    """What a log would show of an error: its message, and every chained message but the driver's."""
    return str(exc) + "".join(str(a) for a in exc.args)


# ------------------------------------------------------------------ item 7: other apps' tables
def test_app_b_never_proposes_to_drop_app_a_tables(db_url):
    a = DataFlow(db_url)

    @a.model
    class AppAOrder:
        item: str
        __tablename__ = "app_a_orders"

    a.create("AppAOrder", {"item": "kept"})
    a.close()

    b = DataFlow(db_url)
    try:
        @b.model
        class BItem:
            name: str

        plan = b.migrate(dry_run=True)
        assert "app_a_orders" not in str(plan), str(plan)
        b.migrate(allow_destructive=True)
        assert "app_a_orders" in table_names(b)
        assert raw(b, "SELECT item FROM app_a_orders") == [("kept",)]
        # Labelled apps too: a label only ever claims tables its own models declared.
        @b.model
        class BLabelled:
            name: str
            __dataflow__ = {"app": "b"}

        b.migrate(allow_destructive=True)
        assert raw(b, "SELECT item FROM app_a_orders") == [("kept",)]
    finally:
        b.close()


def test_removed_model_of_a_labelled_app_is_proposed_for_dropping(db_url, caplog):
    first = DataFlow(db_url)

    @first.model
    class Keep:
        name: str
        __dataflow__ = {"app": "shop"}

    @first.model
    class Gone:
        name: str
        __dataflow__ = {"app": "shop"}

    first.migrate()
    first.close()

    other = DataFlow(db_url)  # another app on the same database, with its own label
    @other.model
    class Elsewhere:
        name: str
        __dataflow__ = {"app": "blog"}

    assert "gones" not in str(other.migrate(allow_destructive=True))
    other.close()

    again = DataFlow(db_url)
    try:
        @again.model
        class Keep:  # noqa: F811
            name: str
            __dataflow__ = {"app": "shop"}

        plan = again.migrate(dry_run=True)
        assert [c.description.split(":")[0] for c in plan.destructive] == ["drop table gones"]
        again.migrate(allow_destructive=True)
        assert "gones" not in table_names(again) and "elsewheres" in table_names(again)
        history = again.history()
        assert history[-1]["owners"] == {"keeps": "shop"}
    finally:
        again.close()


def test_unlabelled_removed_model_is_left_alone_and_said_at_info(db_url, caplog):
    first = DataFlow(db_url)

    @first.model
    class Keep:
        name: str

    @first.model
    class Gone:
        name: str

    first.migrate()
    first.close()
    again = DataFlow(db_url)
    try:
        @again.model
        class Keep:  # noqa: F811
            name: str

        with caplog.at_level(logging.INFO, logger="dataflow.schema"):
            plan = again.migrate(allow_destructive=True)
        assert plan.destructive == [] and plan.left_alone == ["gones"] and "gones" in table_names(again)
        assert any("gones" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    finally:
        again.close()


# ------------------------------------------------------------------ item 8: ":word" in a default
def test_new_column_default_with_colon_words_is_stored_verbatim(db_url):
    default = "state:open :new 50% 'q'"
    first = DataFlow(db_url)

    @first.model
    class Ticket:
        title: str

    first.create("Ticket", {"title": "old"})
    first.close()
    again = DataFlow(db_url)
    try:
        @again.model
        class Ticket:  # noqa: F811
            title: str
            status: str = "state:open :new 50% 'q'"

        plan = again.migrate()
        assert plan.applied
        raw(again, "INSERT INTO tickets (title) VALUES ('by another tool')")
        assert raw(again, "SELECT title, status FROM tickets ORDER BY id") == [
            ("old", default), ("by another tool", default)]
        assert again.read("Ticket", id=1)["status"] == default
        assert again.migrate(dry_run=True).is_empty
    finally:
        again.close()


# ------------------------------------------------------------------ item 9(b): no row values in migration errors
def test_migration_error_does_not_quote_row_values(db_url):
    first = DataFlow(db_url)

    @first.model
    class Member:
        code: str

    first.create("Member", {"code": SECRET})
    first.create("Member", {"code": SECRET})
    first.close()
    again = DataFlow(db_url)
    try:
        @again.model
        class Member:  # noqa: F811
            code: Annotated[str, Field(unique=True)]

        with pytest.raises(MigrationError) as info:
            again.migrate()
        text = full_text(info.value)
        assert SECRET not in text and "jane" not in text, text
        assert "uq_members_code" in text or "members.code" in text, text
        assert info.value.original is not None  # kept for the caller
    finally:
        again.close()


def test_driver_messages_lose_quoted_values():
    from dataflow.driver_errors import _redact

    assert _redact("Duplicate entry 'a@b.c' for key 'uq_t_code'") == "Duplicate entry for key 'uq_t_code'"
    assert _redact("Incorrect integer value: 'secret' for column `db`.`t`.`n` at row 1") == \
        "Incorrect integer value for column `db`.`t`.`n` at row 1"
    assert _redact('invalid input syntax for type integer: "secret"') == "invalid input syntax for type integer"
    assert _redact('value "12345678901" is out of range for type integer') == \
        "value is out of range for type integer"
    assert "secret" not in _redact("Key (code)=(secret) is duplicated.")


# ------------------------------------------------------------------ item 13: table names
@pytest.mark.parametrize("name", ["o'brien", "pct%table", "a" * 82, "has space", "1starts_with_digit", "naïve"])
def test_bad_table_names_are_refused_at_declaration(name):
    db = DataFlow("sqlite:///:memory:")
    try:
        with pytest.raises(ModelError, match="table name"):
            @db.model
            class Odd:
                title: str
                __tablename__ = name
    finally:
        db.close()


def test_a_63_byte_table_name_works_across_restarts(db_url):
    name = "t" * 63
    for round_ in range(2):
        db = DataFlow(db_url)
        try:
            @db.model
            class Longname:
                title: str
                __tablename__ = name

            db.bulk_create("Longname", [{"id": 10 * round_ + 1, "title": "x"}, {"id": 10 * round_ + 2, "title": "y"}])
            assert db.count("Longname") == 2 * (round_ + 1)
        finally:
            db.close()


# ------------------------------------------------------------------ item 14: statement too large, not "unreachable"
def test_too_many_parameters_names_the_limit(db, backend):
    if backend != "postgresql":
        pytest.skip("the 65,535-parameter limit is PostgreSQL's")

    @db.model
    class Num:
        n: int

    db.create("Num", {"n": 1})
    with pytest.raises(DataFlowError) as info:
        db.list("Num", filter={"n": {"$in": list(range(70_000))}})
    assert "unreachable" not in str(info.value) and "65,535" in str(info.value)
    assert isinstance(info.value, ValidationError)
    assert db.count("Num") == 1  # the instance still works


def test_value_larger_than_max_allowed_packet_names_it(db, backend):
    if backend != "mysql":
        pytest.skip("max_allowed_packet is MySQL's")

    @db.model
    class Blob:
        payload: bytes = b""

    db.create("Blob", {"payload": b"ok"})
    packet = raw(db, "SELECT @@max_allowed_packet")[0][0]
    if packet > 64 * 2**20:
        pytest.skip("the server allows packets larger than this test sends")
    with pytest.raises(DataFlowError) as info:
        db.create("Blob", {"payload": b"x" * (packet + 2**20)})
    text = str(info.value)
    assert "max_allowed_packet" in text and "check that the server is running" not in text, text
    assert db.count("Blob") == 1


# ------------------------------------------------------------------ item 15: MySQL key length, partial migrations
def test_index_key_too_long_for_innodb_fails_before_any_statement(db, backend):
    @db.model
    class Harmless:
        name: str

    @db.model
    class Wide:
        title: Annotated[str, Field(max_length=1000)]
        kind: Annotated[str, Field(max_length=10)]
        __dataflow__ = {"indexes": [["title", "kind"]]}

    if backend != "mysql":
        assert db.migrate().applied
        return
    with pytest.raises(MigrationError, match=r"Wide.*3,072") as info:
        db.migrate()
    assert "Nothing was changed" in str(info.value)
    assert table_names(db) == set()  # not even the harmless table


def test_mysql_migration_stopped_part_way_is_recorded(db_url, backend):
    first = DataFlow(db_url)

    @first.model
    class Member:
        code: str

    first.create("Member", {"code": SECRET})
    first.create("Member", {"code": SECRET})
    first.close()
    again = DataFlow(db_url)
    try:
        @again.model
        class Member:  # noqa: F811
            code: Annotated[str, Field(unique=True)]
            nick: str = "n"

        @again.model
        class Extra:
            name: str

        before = len(again.history())
        with pytest.raises(MigrationError) as info:
            again.migrate()
        history = again.history()
        if backend != "mysql":  # transactional DDL: nothing ran, nothing recorded
            assert len(history) == before and "extras" not in table_names(again)
            assert "Nothing was changed" in str(info.value)
            return
        assert "extras" in table_names(again)  # MySQL committed the statements before the failure
        assert len(history) == before + 1
        row = history[-1]
        assert row["partial"] is True and "CREATE TABLE extras" in row["sql"]
        assert "PARTIAL" in row["description"] and f"#{row['id']}" in str(info.value)
        assert SECRET not in row["sql"] + row["description"] + str(info.value)
        # Fix the data; the next migration finishes the work.
        raw(again, "UPDATE members SET code = 'other' WHERE id = 2")
        assert again.migrate().applied
        assert again.history()[-1]["partial"] is False and again.migrate(dry_run=True).is_empty
    finally:
        again.close()


# ------------------------------------------------------------------ item 17: existing schema without timestamps
# The hand-made tables differ from the models in ways that only warn (INTEGER for int, ...).
mismatch_ok = pytest.mark.filterwarnings("ignore::dataflow.schema.existing.SchemaMismatchWarning")

HAND_MADE = {
    "sqlite": "CREATE TABLE products (id INTEGER PRIMARY KEY, name VARCHAR(255) NOT NULL, price INTEGER NOT NULL)",
    "postgresql": "CREATE TABLE products (id SERIAL PRIMARY KEY, name VARCHAR(255) NOT NULL, price INTEGER NOT NULL)",
    "mysql": "CREATE TABLE products (id INTEGER AUTO_INCREMENT PRIMARY KEY, name VARCHAR(255) NOT NULL, "
             "price INTEGER NOT NULL)",
}


@mismatch_ok
def test_existing_schema_without_timestamps_works(db_url, backend, caplog):
    setup = DataFlow(db_url)
    raw(setup, HAND_MADE[backend])
    raw(setup, "INSERT INTO products (name, price) VALUES ('pen', 3)")
    setup.close()
    db = DataFlow(db_url, existing_schema_mode=True)
    try:
        @db.model
        class Product:
            name: str
            price: int

        with caplog.at_level(logging.INFO, logger="dataflow.schema"):
            assert db.read("Product", id=1) == {"id": 1, "name": "pen", "price": 3}
        assert any("created_at" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
        made = db.create("Product", {"name": "ink", "price": 5})
        assert set(made) == {"id", "name", "price"}
        db.update("Product", made["id"], {"price": 6})
        assert [r["price"] for r in db.list("Product", sort=[("id", 1)])] == [3, 6]
        assert db.bulk_create("Product", [{"name": "cap", "price": 1}]) is not None
        assert db.count("Product") == 3
        with pytest.raises(ValidationError, match="created_at"):  # not a field of this model any more
            db.create("Product", {"name": "x", "price": 1, "created_at": None})
        assert {c["name"] for c in sa.inspect(db.engine).get_columns("products")} == {"id", "name", "price"}
    finally:
        db.close()


@mismatch_ok
def test_existing_schema_with_one_timestamp_stamps_it(db_url, backend):
    setup = DataFlow(db_url)
    ts = {"sqlite": "TIMESTAMP", "postgresql": "TIMESTAMP WITH TIME ZONE", "mysql": "DATETIME(6)"}[backend]
    raw(setup, HAND_MADE[backend].replace("price INTEGER NOT NULL)", f"price INTEGER NOT NULL, updated_at {ts})"))
    setup.close()
    db = DataFlow(db_url, existing_schema_mode=True)
    try:
        @db.model
        class Product:
            name: str
            price: int

        made = db.create("Product", {"name": "ink", "price": 5})
        assert "created_at" not in made and made["updated_at"] is not None
        assert raw(db, "SELECT COUNT(*) FROM products WHERE updated_at IS NOT NULL") == [(1,)]
    finally:
        db.close()


@mismatch_ok
def test_declared_timestamp_missing_from_the_table_is_still_an_error(db_url, backend):
    setup = DataFlow(db_url)
    raw(setup, HAND_MADE[backend])
    setup.close()
    db = DataFlow(db_url, existing_schema_mode=True)
    try:
        @db.model
        class Product:
            name: str
            price: int
            created_at: datetime

        with pytest.raises((MigrationError, DatabaseError), match=r"products.created_at .*does not exist") as info:
            db.count("Product")
        assert "DataFlow adds this field" not in str(info.value)  # the model declared it
    finally:
        db.close()


def test_history_from_before_labels_is_upgraded_and_its_tables_never_dropped(db_url):
    first = DataFlow(db_url)

    @first.model
    class Keep:
        name: str
        __dataflow__ = {"app": "shop"}

    @first.model
    class Gone:
        name: str
        __dataflow__ = {"app": "shop"}

    first.migrate()
    # As an older DataFlow left it: no owners or partial columns.
    raw(first, f"ALTER TABLE {HISTORY_TABLE} DROP COLUMN owners")
    raw(first, f"ALTER TABLE {HISTORY_TABLE} DROP COLUMN partial")
    first.close()
    again = DataFlow(db_url)
    try:
        @again.model
        class Keep:  # noqa: F811
            name: str
            __dataflow__ = {"app": "shop"}

        @again.model
        class Added:
            name: str
            __dataflow__ = {"app": "shop"}

        assert again.migrate(allow_destructive=True).applied
        assert "gones" in table_names(again)  # recorded without a label: not provably this app's
        old, new = again.history()
        assert old["owners"] == {"gones": None, "keeps": None} and old["partial"] is False
        assert new["owners"] == {"addeds": "shop", "keeps": "shop"}
    finally:
        again.close()


def test_long_table_names_keep_every_index(db_url):
    from dataflow.schema.diff import owned_name
    from dataflow.schema.tables import key_name

    name = "t" * 63
    long_names = {key_name("ix", name, f) for f in ("kind", "other")}
    assert len(long_names) == 2 and all(len(n) == 63 and owned_name(n, name) for n in long_names)
    assert not owned_name(key_name("ix", "u" * 63, "kind"), name)
    for round_ in range(2):
        db = DataFlow(db_url)
        try:
            @db.model
            class Longname:
                title: Annotated[str, Field(unique=True)]
                kind: Annotated[str, Field(index=True)]
                other: Annotated[int, Field(index=True)] = 0
                __tablename__ = name

            db.create("Longname", {"title": f"x{round_}", "kind": "k"})
            assert db.migrate(dry_run=True).is_empty
            inspector = sa.inspect(db.engine)
            indexed = {tuple(i["column_names"]) for i in inspector.get_indexes(name)}
            indexed |= {tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)}
            assert {("title",), ("kind",), ("other",)} <= indexed
            with pytest.raises(DataFlowError):
                db.create("Longname", {"title": "x0", "kind": "k"})
        finally:
            db.close()
