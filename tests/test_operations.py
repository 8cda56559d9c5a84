"""The direct API (db.create/read/update/delete/list/count/upsert/bulk_*): results and database contents."""

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Annotated, Optional

import pytest

from dataflow import (DuplicateKeyError, Field, ModelError, NotFoundError, ValidationError)

UTC = timezone.utc

PEOPLE = [
    {"name": "Ann", "email": "ann@example.com", "age": 31},
    {"name": "Bob", "email": "bob@example.com", "age": 25, "active": False},
    {"name": "Cy", "email": "cy@example.com", "age": 40},
]


def declare(db):
    @db.model
    class User:
        name: str
        email: Annotated[str, Field(unique=True)]
        age: int = 0
        active: bool = True
        nickname: Optional[str] = None

    return User


@pytest.fixture
def mem():
    """A DataFlow on an in-memory SQLite database with three Users: for checks made before any SQL runs."""
    from dataflow import DataFlow

    instance = DataFlow("sqlite:///:memory:")
    declare(instance)
    for person in PEOPLE:
        instance.create("User", person)
    yield instance
    instance.close()


@pytest.fixture
def users(db):
    """The User model with three stored records (ids 1, 2, 3)."""
    declare(db)
    for person in PEOPLE:
        db.create("User", person)
    return db


def rows(db, columns="id, name, email, age, active"):
    """(id, ...) tuples as plain SQL reads them from the users table, by id."""
    db.ensure_ready()  # a test whose first operation failed validation has not created the table yet
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT {columns} FROM users ORDER BY id")]


def names(db):
    return [r[0] for r in rows(db, "name")]


# ---------------------------------------------------------------- create
def test_create_returns_the_stored_record(db):
    declare(db)
    rec = db.create("User", name="Ann", email="ann@example.com")
    assert list(rec) == ["id", "name", "email", "age", "active", "nickname", "created_at", "updated_at"]
    assert {k: rec[k] for k in ("id", "name", "email", "age", "active", "nickname")} == {
        "id": 1, "name": "Ann", "email": "ann@example.com", "age": 0, "active": True, "nickname": None}
    assert rows(db) == [(1, "Ann", "ann@example.com", 0, True)]
    rec = db.create("User", {"name": "Bob", "email": "b@x"}, age=5, active=False)
    assert (rec["id"], rec["age"], rec["active"]) == (2, 5, False)
    assert rows(db)[1] == (2, "Bob", "b@x", 5, False)


def test_create_with_an_explicit_id_then_automatic_ids(db):
    declare(db)
    assert db.create("User", id=1, name="Ann", email="a@x")["id"] == 1
    second = db.create("User", name="Bob", email="b@x")
    db.bulk_create("User", [{"id": 10, "name": "Cy", "email": "c@x"}])
    third = db.create("User", name="Di", email="d@x")
    assert second["id"] == 2 and third["id"] == 11
    assert rows(db, "id, name") == [(1, "Ann"), (2, "Bob"), (10, "Cy"), (11, "Di")]


def test_bulk_create_with_explicit_and_automatic_ids_mixed(db):
    declare(db)
    db.bulk_create("User", [{"id": None, "name": "a", "email": "a@x"}, {"id": 50, "name": "b", "email": "b@x"}])
    db.bulk_create("User", [{"id": 60, "name": "c", "email": "c@x"}, {"id": None, "name": "d", "email": "d@x"}])
    assert rows(db, "id, name") == [(1, "a"), (50, "b"), (60, "c"), (61, "d")]


def test_create_missing_required_or_unknown_field(db):
    declare(db)
    with pytest.raises(ValidationError) as info:
        db.create("User", name="Ann")
    assert str(info.value) == "User.email is required (field type str); add it to the data"
    assert (info.value.model, info.value.field) == ("User", "email")
    with pytest.raises(ValidationError) as info:
        db.create("User", name="Ann", email="a@x", nick="A")
    assert str(info.value) == ("User has no field(s) 'nick' in data; fields are: id, name, email, age, active, "
                               "nickname, created_at, updated_at")
    assert (info.value.model, info.value.field) == ("User", "nick")
    assert rows(db) == []


def test_create_duplicate_unique_value(users):
    with pytest.raises(DuplicateKeyError) as info:
        users.create("User", name="Imposter", email="ann@example.com")
    msg = str(info.value)
    assert msg.startswith("User create refused by the database (email): a record with the same unique value "
                          "already exists")
    assert (info.value.model, info.value.field) == ("User", "email")
    assert "ann@example.com" not in msg  # values stay out of error messages (they get logged)
    assert names(users) == ["Ann", "Bob", "Cy"]
    with pytest.raises(DuplicateKeyError, match=r"^User create refused by the database.*same unique value") as info:
        users.create("User", id=2, name="Dup", email="dup@x")
    assert info.value.model == "User"
    assert names(users) == ["Ann", "Bob", "Cy"]


def test_unknown_model(mem):
    db = mem
    with pytest.raises(ModelError, match=r"^No model named 'Person'; declared models: User$"):
        db.create("Person", name="x")
    with pytest.raises(ModelError, match=r"^No model or table named 'people'; declared models: User$"):
        db.read("people", 1)


# ---------------------------------------------------------------- read
def test_read_by_id_and_by_filter(users):
    assert users.read("User", 2)["email"] == "bob@example.com"
    assert users.read("User", {"email": "cy@example.com"})["id"] == 3
    assert users.read("User", filter={"name": "Ann", "age": 31})["id"] == 1
    assert users.read("users", 2)["name"] == "Bob"  # by table name too


def test_read_with_several_matches_returns_the_first_by_primary_key(users):
    # An update moves a row to the end of a PostgreSQL heap: the result must still be ordered by key.
    users.update("User", 1, {"age": 99})
    users.update("User", 3, {"active": True})
    assert users.read("User", {"active": True})["id"] == 1
    assert users.read("User", {"age": {"$gte": 30}})["id"] == 1


def test_read_missing_raises_not_found_naming_the_model(users):
    with pytest.raises(NotFoundError) as info:
        users.read("User", 99)
    assert str(info.value) == "User read: no record matches the given id"
    assert info.value.model == "User"
    with pytest.raises(NotFoundError) as info:  # the condition is named, its values are not (they get logged)
        users.read("User", {"email": "secret@example.com"})
    assert str(info.value) == 'User read: no record matches filter {"email": "?"}'
    assert users.read("User", 99, raise_on_not_found=False) is None
    assert users.read("User", {"name": "Nobody"}, raise_on_not_found=False) is None


def test_read_needs_an_id_or_a_filter(mem):
    users = mem
    with pytest.raises(ValidationError, match=r"^User read needs an 'id' or a non-empty 'filter'/'conditions'$"):
        users.read("User", {})


def test_read_with_a_wrong_id_type(mem):
    users = mem
    with pytest.raises(ValidationError, match=r"^User\.id must be an integer; got str"):
        users.read("User", "abc")


def test_read_unknown_filter_field(mem):
    users = mem
    with pytest.raises(ValidationError, match=r"nickname2"):
        users.read("User", {"nickname2": "x"})


# ---------------------------------------------------------------- update
def test_update_by_id(users):
    rec = users.update("User", 2, {"age": 26, "nickname": "B"})
    assert (rec["id"], rec["name"], rec["age"], rec["nickname"]) == (2, "Bob", 26, "B")
    assert rows(users, "id, age, nickname") == [(1, 31, None), (2, 26, "B"), (3, 40, None)]
    rec = users.update("User", {"email": "cy@example.com"}, age=41)
    assert (rec["id"], rec["age"]) == (3, 41)
    assert rows(users, "id, age") == [(1, 31), (2, 26), (3, 41)]


def test_update_by_filter_matching_several_is_refused(users):
    with pytest.raises(ValidationError) as info:
        users.update("User", {"active": True}, {"age": 0})
    assert str(info.value) == ('User update: filter {"active": "?"} matches more than one record; narrow the '
                               'filter or use UserBulkUpdateNode')
    assert rows(users, "id, age") == [(1, 31), (2, 25), (3, 40)]


def test_update_missing(users):
    with pytest.raises(NotFoundError, match=r"^User update: no record matches the given id$") as info:
        users.update("User", 99, {"age": 1})
    assert info.value.model == "User"
    assert users.update("User", 99, {"age": 1}, raise_on_not_found=False) is None
    assert users.update("User", {"name": "Nobody"}, {"age": 1}, raise_on_not_found=False) is None
    assert rows(users, "id, age") == [(1, 31), (2, 25), (3, 40)]


@pytest.mark.parametrize("changes, message", [
    ({"nick": "x"}, "User has no field(s) 'nick' in data; fields are: id, name"),
    ({"age": "old"}, "User.age must be an integer; got str (field type int)"),
    ({"name": None}, "User.name cannot be null (field type str)"),
    ({"id": 7}, "User.id is the primary key and cannot be changed"),
    ({}, "User update needs changes: pass 'fields' (or 'updates') with at least one field"),
])
def test_update_refuses_bad_changes(mem, changes, message):
    users = mem
    with pytest.raises(ValidationError) as info:
        users.update("User", 1, changes)
    assert str(info.value).startswith(message)
    assert rows(users)[0] == (1, "Ann", "ann@example.com", 31, True)


def test_update_to_a_duplicate_unique_value(users):
    with pytest.raises(DuplicateKeyError) as info:
        users.update("User", 1, {"email": "bob@example.com"})
    assert str(info.value).startswith("User update refused by the database (email)")
    assert info.value.field == "email"
    assert rows(users, "id, email") == [(1, "ann@example.com"), (2, "bob@example.com"), (3, "cy@example.com")]


# ---------------------------------------------------------------- delete
def test_delete_by_id_and_by_filter(users):
    assert users.delete("User", 2) == 2
    assert users.delete("User", {"email": "cy@example.com"}) == 3
    assert rows(users, "id") == [(1,)]


def test_delete_by_filter_matching_several_is_refused(users):
    with pytest.raises(ValidationError) as info:
        users.delete("User", {"active": True})
    assert str(info.value) == ('User delete: filter {"active": "?"} matches more than one record; narrow the '
                               'filter or use UserBulkDeleteNode')
    assert names(users) == ["Ann", "Bob", "Cy"]


def test_delete_missing(users):
    with pytest.raises(NotFoundError, match=r"^User delete: no record matches the given id$") as info:
        users.delete("User", 99)
    assert info.value.model == "User"
    assert users.delete("User", 99, raise_on_not_found=False) is None
    assert users.delete("User", {"name": "Nobody"}, raise_on_not_found=False) is None
    assert names(users) == ["Ann", "Bob", "Cy"]


def test_delete_needs_an_id_or_a_filter(mem):
    users = mem
    with pytest.raises(ValidationError, match=r"^User delete needs an 'id' or a non-empty 'filter'/'conditions'$"):
        users.delete("User", {})
    assert len(rows(users)) == 3


# ---------------------------------------------------------------- list and count
def test_list_defaults_to_primary_key_order(users):
    users.update("User", 1, {"age": 1})  # moves the row on PostgreSQL
    assert [r["id"] for r in users.list("User")] == [1, 2, 3]


SORTS = [
    ({"age": -1}, ["Cy", "Ann", "Bob"]),
    ({"age": 1}, ["Bob", "Ann", "Cy"]),
    (["-age"], ["Cy", "Ann", "Bob"]),
    (["age"], ["Bob", "Ann", "Cy"]),
    ({"active": 1, "name": -1}, ["Bob", "Cy", "Ann"]),
    (["active", "-name"], ["Bob", "Cy", "Ann"]),
]


def test_list_sort_and_order_by(users):
    for sort, expected in SORTS:
        assert [r["name"] for r in users.list("User", sort=sort)] == expected, sort


def test_list_sort_by_created_at_descending(db):
    declare(db)
    for i in range(3):
        db.create("User", name=f"u{i}", email=f"u{i}@x")
        time.sleep(0.002)
    assert [r["name"] for r in db.list("User", sort={"created_at": -1})] == ["u2", "u1", "u0"]
    assert [r["name"] for r in db.list("User", sort=["-created_at"])] == ["u2", "u1", "u0"]


def test_list_filter_limit_offset(users):
    assert [r["name"] for r in users.list("User", {"active": True})] == ["Ann", "Cy"]
    assert [r["name"] for r in users.list("User", limit=2)] == ["Ann", "Bob"]
    assert [r["name"] for r in users.list("User", limit=2, offset=2)] == ["Cy"]
    assert [r["name"] for r in users.list("User", offset=1)] == ["Bob", "Cy"]
    assert users.list("User", limit=0) == []
    assert users.list("User", offset=10) == []
    assert users.list("User", fields=["id", "name"], limit=1) == [{"id": 1, "name": "Ann"}]
    ops = users.operations
    assert ops.list("User", limit=2)[1] is True
    assert ops.list("User", limit=3)[1] is False
    assert ops.list("User", limit=2, offset=1)[1] is False
    assert ops.list("User", limit=1, offset=1)[1] is True


def test_list_default_limit_is_100(db):
    declare(db)
    db.bulk_create("User", [{"name": f"u{i}", "email": f"u{i}@x"} for i in range(150)])
    records = db.list("User")
    assert len(records) == 100 and records[-1]["id"] == 100
    assert db.operations.list("User")[1] is True
    assert len(db.list("User", limit=None)) == 150
    assert [r["id"] for r in db.list("User", offset=140)] == list(range(141, 151))


def test_list_unknown_projection_field(mem):
    with pytest.raises(ValidationError, match=r"User has no field\(s\) \['bogus'\] in fields"):
        mem.list("User", fields=["bogus"])


@pytest.mark.parametrize("kw, message", [
    ({"limit": -1}, "User: limit must be a non-negative integer (at most 2**62), got int"),
    ({"limit": "10"}, "User: limit must be a non-negative integer (at most 2**62), got str"),
    ({"offset": -5}, "User: offset must be a non-negative integer (at most 2**62), got int"),
])
def test_list_refuses_bad_paging(mem, kw, message):
    users = mem
    with pytest.raises(ValidationError, match=re.escape(message)):
        users.list("User", **kw)


def test_count(users):
    assert users.count("User") == 3
    assert users.count("User", {"active": True}) == 2
    assert users.count("User", {"age": {"$gt": 30}}) == 2
    assert users.count("User", {"name": "Nobody"}) == 0


# ---------------------------------------------------------------- upsert
def test_upsert_creates_when_missing(users):
    out = users.upsert("User", where={"email": "di@example.com"}, update={"age": 50}, create={"name": "Di"})
    assert (out["created"], out["action"]) == (True, "created")
    rec = out["record"]
    assert (rec["id"], rec["name"], rec["email"], rec["age"]) == (4, "Di", "di@example.com", 50)
    assert rows(users, "id, name, email, age")[-1] == (4, "Di", "di@example.com", 50)


def test_upsert_updates_when_present(users):
    out = users.upsert("User", where={"email": "bob@example.com"}, update={"age": 60}, create={"name": "Ignored"})
    assert (out["created"], out["action"]) == (False, "updated")
    assert (out["record"]["id"], out["record"]["name"], out["record"]["age"]) == (2, "Bob", 60)
    assert rows(users, "id, name, age") == [(1, "Ann", 31), (2, "Bob", 60), (3, "Cy", 40)]


def test_upsert_with_conflict_on(users):
    out = users.upsert("User", where={"email": "ann@example.com", "name": "Changed"}, update={"age": 1},
                       conflict_on=["email"])
    assert out["created"] is False and out["record"]["id"] == 1
    assert rows(users, "id, age")[0] == (1, 1)
    assert len(rows(users)) == 3


def test_upsert_where_matching_several_is_refused(users):
    with pytest.raises(ValidationError, match=r"^User upsert: 'where' matches more than one record$"):
        users.upsert("User", where={"active": True}, update={"age": 0})
    assert rows(users, "age") == [(31,), (25,), (40,)]


def test_upsert_needs_where(mem):
    users = mem
    with pytest.raises(ValidationError, match=r"^User upsert needs 'where'"):
        users.upsert("User", where={}, update={"age": 0})


def test_upsert_create_missing_required_field(mem):
    users = mem
    with pytest.raises(ValidationError, match=r"^User\.name is required"):
        users.upsert("User", where={"email": "new@x"}, update={"age": 1})
    assert len(rows(users)) == 3


# ---------------------------------------------------------------- bulk create
def test_bulk_create(db):
    declare(db)
    out = db.bulk_create("User", PEOPLE)
    assert out == {"processed": 3, "inserted": 3, "success": True}
    assert rows(db) == [(1, "Ann", "ann@example.com", 31, True), (2, "Bob", "bob@example.com", 25, False),
                        (3, "Cy", "cy@example.com", 40, True)]


def test_bulk_create_nothing(mem):
    db = mem
    assert db.bulk_create("User", []) == {"processed": 0, "inserted": 0, "success": True}
    assert names(db) == ["Ann", "Bob", "Cy"]


def test_bulk_create_return_ids(users):
    out = users.bulk_create("User", [{"name": f"n{i}", "email": f"n{i}@x"} for i in range(5)],
                            return_ids=True, batch_size=2)
    assert out == {"processed": 5, "inserted": 5, "success": True, "ids": [4, 5, 6, 7, 8]}
    out = users.bulk_create("User", [{"name": "m", "email": "m@x"}], return_ids=True)
    assert out["ids"] == [9]
    assert rows(users, "id, name")[3:] == [(4, "n0"), (5, "n1"), (6, "n2"), (7, "n3"), (8, "n4"), (9, "m")]


def _thousand():
    return [{"name": f"user{i}", "email": f"user{i}@example.com", "age": i} for i in range(1000)]


def test_bulk_create_with_a_type_error_in_row_500_inserts_nothing(db):
    declare(db)
    _type_error_in_row_500(db, "same keys")


@pytest.mark.parametrize("shape", ["mixed keys", "return_ids"])
def test_bulk_create_type_error_on_the_other_paths(shape):
    from dataflow import DataFlow

    with DataFlow("sqlite:///:memory:") as db:
        declare(db)
        _type_error_in_row_500(db, shape)


def _type_error_in_row_500(db, shape):
    data = _thousand()
    data[500]["age"] = "five hundred"
    if shape == "mixed keys":
        data[10]["nickname"] = "ten"
    with pytest.raises(ValidationError) as info:
        db.bulk_create("User", data, return_ids=shape == "return_ids", batch_size=100)
    assert str(info.value).startswith("data[500]: User.age must be an integer; got str")
    assert (info.value.model, info.value.field) == ("User", "age")
    assert rows(db) == []


@pytest.mark.parametrize("shape", ["same keys", "mixed keys", "return_ids", "small batches"])
def test_bulk_create_with_a_duplicate_in_row_500_inserts_nothing(db, shape):
    declare(db)
    data = _thousand()
    data[500]["email"] = data[3]["email"]
    if shape == "mixed keys":
        data[10]["nickname"] = "ten"
    with pytest.raises(DuplicateKeyError) as info:
        db.bulk_create("User", data, return_ids=shape == "return_ids",
                       batch_size=100 if shape in ("small batches", "return_ids") else 5000)
    assert str(info.value).startswith("User bulk create refused by the database")
    assert info.value.model == "User"
    assert rows(db) == []


def test_bulk_create_duplicate_of_a_stored_record_inserts_nothing(users):
    data = _thousand()
    data[700]["email"] = "bob@example.com"
    with pytest.raises(DuplicateKeyError):
        users.bulk_create("User", data)
    assert names(users) == ["Ann", "Bob", "Cy"]


def test_bulk_create_missing_required_field_inserts_nothing(mem):
    db = mem
    with pytest.raises(ValidationError, match=r"^data\[0\]: User\.email is required"):
        db.bulk_create("User", [{"name": "a"}, {"name": "b"}])
    data = _thousand()
    del data[999]["email"]
    with pytest.raises(ValidationError, match=r"^data\[999\]: User\.email is required"):
        db.bulk_create("User", data)
    assert names(db) == ["Ann", "Bob", "Cy"]


def test_bulk_create_unknown_field_inserts_nothing(mem):
    db = mem
    data = _thousand()
    data[500]["nick"] = "x"
    with pytest.raises(ValidationError, match=r"User has no field\(s\) 'nick'"):
        db.bulk_create("User", data)
    assert names(db) == ["Ann", "Bob", "Cy"]


def test_bulk_create_on_conflict_skip(users):
    data = [{"name": "Dup", "email": "bob@example.com"}, {"name": "Di", "email": "di@example.com"}]
    out = users.bulk_create("User", data, on_conflict="skip")
    assert out == {"processed": 2, "inserted": 1, "success": True, "skipped": 1}
    assert rows(users, "name, email") == [("Ann", "ann@example.com"), ("Bob", "bob@example.com"),
                                          ("Cy", "cy@example.com"), ("Di", "di@example.com")]


def test_bulk_create_on_conflict_skip_counts_duplicates_within_the_data(users):
    data = [{"name": "Di", "email": "di@x"}, {"name": "Di again", "email": "di@x"}, {"name": "B", "email": "bob@example.com"}]
    out = users.bulk_create("User", data, on_conflict="skip")
    assert out == {"processed": 3, "inserted": 1, "success": True, "skipped": 2}
    assert rows(users, "name, email")[3:] == [("Di", "di@x")]


def test_bulk_create_on_conflict_skip_return_ids(users):
    data = [{"name": "Dup", "email": "bob@example.com"}, {"name": "Di", "email": "di@example.com"}]
    out = users.bulk_create("User", data, on_conflict="skip", return_ids=True)
    # (PostgreSQL spends a sequence value on the skipped row: Di's id is 4 or 5)
    di = users.read("User", {"email": "di@example.com"})["id"]
    assert out["ids"] == [2, di] and out["inserted"] == 1 and di > 3


def test_bulk_create_on_conflict_update(users):
    data = [{"name": "Bobby", "email": "bob@example.com", "age": 26},
            {"name": "Di", "email": "di@example.com", "age": 22}]
    out = users.bulk_create("User", data, on_conflict="update", conflict_on=["email"])
    assert (out["processed"], out["inserted"]) == (2, 1)
    assert rows(users, "id, name, age")[:3] == [(1, "Ann", 31), (2, "Bobby", 26), (3, "Cy", 40)]
    assert rows(users, "name, age")[3:] == [("Di", 22)]


def test_bulk_create_on_conflict_must_be_known(mem):
    users = mem
    with pytest.raises(ValidationError, match=r"on_conflict must be one of error, skip, update"):
        users.bulk_create("User", [{"name": "x", "email": "x@x"}], on_conflict="ignore")
    assert len(rows(users)) == 3


def test_bulk_create_needs_a_list(mem):
    users = mem
    with pytest.raises(ValidationError, match=r"'data' must be a list of records"):
        users.bulk_create("User", {"name": "x", "email": "x@x"})


# ---------------------------------------------------------------- bulk update / delete / upsert
def test_bulk_update(users):
    assert users.bulk_update("User", {"active": True}, {"age": 0}) == 2
    assert rows(users, "id, age") == [(1, 0), (2, 25), (3, 0)]
    assert users.bulk_update("User", {"name": "Nobody"}, {"age": 1}) == 0


def test_bulk_update_empty_filter_needs_confirm_all(users):
    for empty in ({}, None):
        with pytest.raises(ValidationError) as info:
            users.bulk_update("User", empty, {"age": 0})
        assert str(info.value) == ("User bulk update with a filter that matches every record would change every record; "
                                   "pass confirm_all=True if you mean it")
    assert rows(users, "age") == [(31,), (25,), (40,)]
    assert users.bulk_update("User", {}, {"age": 7}, confirm_all=True) == 3
    assert rows(users, "age") == [(7,), (7,), (7,)]


def test_bulk_update_refuses_bad_changes(mem):
    users = mem
    with pytest.raises(ValidationError, match=r"User\.age must be an integer"):
        users.bulk_update("User", {"active": True}, {"age": "x"})
    with pytest.raises(ValidationError, match=r"User has no field\(s\) 'agee'"):
        users.bulk_update("User", {"active": True}, {"agee": 1})
    assert rows(users, "age") == [(31,), (25,), (40,)]


def test_bulk_update_to_a_duplicate_changes_nothing(users):
    with pytest.raises(DuplicateKeyError):
        users.bulk_update("User", {"active": True}, {"email": "same@x"})
    assert rows(users, "email") == [("ann@example.com",), ("bob@example.com",), ("cy@example.com",)]


def test_bulk_delete(users):
    assert users.bulk_delete("User", {"active": True}) == 2
    assert names(users) == ["Bob"]
    assert users.bulk_delete("User", {"name": "Nobody"}) == 0


def test_bulk_delete_empty_filter_needs_confirm_all(users):
    for empty in ({}, None):
        with pytest.raises(ValidationError) as info:
            users.bulk_delete("User", empty)
        assert str(info.value) == ("User bulk delete with a filter that matches every record would delete every record; "
                                   "pass confirm_all=True if you mean it")
    assert names(users) == ["Ann", "Bob", "Cy"]
    assert users.bulk_delete("User", {}, confirm_all=True) == 3
    assert rows(users) == []


def test_bulk_upsert(users):
    data = [{"name": "Bobby", "email": "bob@example.com", "age": 26},
            {"name": "Di", "email": "di@example.com", "age": 22},
            {"name": "Ed", "email": "ed@example.com"}]
    out = users.bulk_upsert("User", data, conflict_on=["email"])
    assert (out["processed"], out["inserted"], out["updated"]) == (3, 2, 1)
    assert rows(users, "name, email, age") == [
        ("Ann", "ann@example.com", 31), ("Bobby", "bob@example.com", 26), ("Cy", "cy@example.com", 40),
        ("Di", "di@example.com", 22), ("Ed", "ed@example.com", 0)]


def test_bulk_upsert_with_a_bad_row_changes_nothing(mem):
    users = mem
    data = [{"name": "Bobby", "email": "bob@example.com"}, {"name": "Di", "email": "di@example.com", "age": "x"}]
    with pytest.raises(ValidationError, match=r"^data\[1\]: User\.age must be an integer"):
        users.bulk_upsert("User", data, conflict_on=["email"])
    assert names(users) == ["Ann", "Bob", "Cy"]


def test_bulk_upsert_counts_duplicates_within_the_data(users):
    data = [{"name": "Di", "email": "di@x"}, {"name": "Di 2", "email": "di@x"}, {"name": "Bobby", "email": "bob@example.com"}]
    out = users.bulk_upsert("User", data, conflict_on=["email"])
    assert (out["processed"], out["inserted"], out["updated"]) == (3, 1, 2)
    assert rows(users, "name, email")[1:] == [("Bobby", "bob@example.com"), ("Cy", "cy@example.com"), ("Di 2", "di@x")]


@pytest.mark.parametrize("conflict_on", [["nickname"], ["name", "age"]])
def test_conflict_on_must_be_unique(mem, conflict_on):
    users = mem
    data = [{"name": "Ann", "email": "ann2@example.com", "age": 31}]
    message = (f"User: conflict_on {conflict_on} must be the primary key, a unique field or a unique group of "
               f"fields; declare it unique")
    with pytest.raises(ValidationError, match=re.escape(message)):
        users.bulk_upsert("User", data, conflict_on=conflict_on)
    with pytest.raises(ValidationError, match=re.escape(message)):
        users.bulk_create("User", data, on_conflict="skip", conflict_on=conflict_on)
    assert len(rows(users)) == 3


def test_conflict_on_a_unique_group(db):
    @db.model
    class Stock:
        __dataflow__ = {"unique": [["shop", "sku"]]}
        shop: str
        sku: str
        qty: int

    db.bulk_create("Stock", [{"shop": "a", "sku": "x", "qty": 1}, {"shop": "b", "sku": "x", "qty": 2}])
    out = db.bulk_upsert("Stock", [{"shop": "a", "sku": "x", "qty": 5}, {"shop": "a", "sku": "y", "qty": 6}],
                         conflict_on=["shop", "sku"])
    assert (out["inserted"], out["updated"]) == (1, 1)
    assert [(r["shop"], r["sku"], r["qty"]) for r in db.list("Stock")] == [("a", "x", 5), ("b", "x", 2), ("a", "y", 6)]


def test_bulk_upsert_needs_the_conflict_fields(db):
    @db.model
    class Item:
        code: Annotated[Optional[str], Field(unique=True)]
        label: str

    with pytest.raises(ValidationError, match=r"^Item bulk upsert: every record needs the conflict field\(s\) "
                                              r"\['code'\]"):
        db.bulk_upsert("Item", [{"label": "x"}], conflict_on=["code"])
    for on_conflict in ("skip", "update"):  # bulk create with a conflict policy: the same check, not a KeyError
        with pytest.raises(ValidationError, match=r"^Item bulk create: every record needs the conflict field\(s\) "
                                                  r"\['code'\]"):
            db.bulk_create("Item", [{"code": "a", "label": "x"}, {"label": "y"}], on_conflict=on_conflict,
                           conflict_on=["code"])
    assert db.count("Item") == 0


# ---------------------------------------------------------------- timestamps
def test_created_at_and_updated_at_are_maintained(db):
    declare(db)
    before = datetime.now(UTC)
    rec = db.create("User", name="Ann", email="a@x")
    created = rec["created_at"]
    assert created.tzinfo is not None and created.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= created <= datetime.now(UTC) + timedelta(seconds=1)
    assert rec["updated_at"] == created
    time.sleep(0.01)
    updated = db.update("User", rec["id"], {"age": 1})
    assert updated["created_at"] == created and updated["updated_at"] > created
    time.sleep(0.01)
    db.bulk_update("User", {"name": "Ann"}, {"age": 2})
    again = db.read("User", rec["id"])
    assert again["created_at"] == created and again["updated_at"] > updated["updated_at"]
    time.sleep(0.01)
    db.upsert("User", where={"email": "a@x"}, update={"age": 3})
    up = db.read("User", rec["id"])
    assert up["created_at"] == created and up["updated_at"] > again["updated_at"]


def test_bulk_timestamps(users):
    first = users.read("User", 2)
    time.sleep(0.01)
    users.bulk_upsert("User", [{"name": "Bobby", "email": "bob@example.com"}], conflict_on=["email"])
    after = users.read("User", 2)
    assert after["created_at"] == first["created_at"] and after["updated_at"] > first["updated_at"]
    users.bulk_create("User", [{"name": "Di", "email": "di@x"}, {"name": "Ed", "email": "ed@x"}])
    di, ed = users.list("User", {"name": {"$in": ["Di", "Ed"]}})
    assert di["created_at"] == di["updated_at"] == ed["created_at"]
    assert di["created_at"] > first["created_at"]


def test_operations_on_a_model_without_timestamps(db):
    @db.model
    class Tag:
        __dataflow__ = {"timestamps": False}
        label: str

    rec = db.create("Tag", label="a")
    assert rec == {"id": 1, "label": "a"}
    assert db.update("Tag", 1, {"label": "b"}) == {"id": 1, "label": "b"}
    assert db.bulk_create("Tag", [{"label": "c"}])["inserted"] == 1
    assert db.list("Tag") == [{"id": 1, "label": "b"}, {"id": 2, "label": "c"}]
