"""No error carries a stored value (issue 7): a recognisable value is seeded and every error kind forced.

The secret must appear neither in ``str(error)``, ``repr(error)``, the formatted traceback, a failed
Kailash node's report, nor anything logged or written to stderr meanwhile. Error classes have stable
codes and HTTP statuses. The calls never spell the secret in their own source line (a traceback
quotes source lines): it travels in variables.
"""

from __future__ import annotations

import logging
import socket
import traceback
from typing import Annotated, Optional

import pytest
from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow, Field
from dataflow.errors import (ConflictError, DatabaseError, DatabaseUnavailableError, DataFlowError,
                             DuplicateKeyError, FilterError, ForeignKeyError, IntegrityError, MigrationError,
                             ModelError, NotFoundError, ValidationError, http_status)

SECRET_EMAIL = "zq-secret-7@example.com"
SECRET_NAME = "Zq Secret"
SECRET_ID = 987654321
SECRETS = (SECRET_EMAIL, SECRET_NAME, "zq-secret", "Zq Secret".lower(), str(SECRET_ID))


def declare(db, unique_email=True):
    @db.model
    class Team:
        name: str

    if unique_email:
        @db.model
        class Person:
            name: str
            email: Annotated[str, Field(unique=True)]
            age: int = 0
            team_id: Annotated[Optional[int], Field(references="Team")] = None
    else:
        @db.model
        class Person:  # noqa: F811
            name: str
            email: str
            age: int = 0
            team_id: Annotated[Optional[int], Field(references="Team")] = None

    @db.model
    class Doc:
        title: str
        __dataflow__ = {"versioned": True}


@pytest.fixture
def seeded(db):
    declare(db)
    db.create("Team", name=SECRET_NAME)
    db.create("Person", name=SECRET_NAME, email=SECRET_EMAIL, team_id=1)
    db.create("Person", name="other", email="other@x")
    db.create("Doc", title=SECRET_NAME)
    return db


def leaks(text: str) -> list[str]:
    low = text.lower()
    return [s for s in SECRETS if s.lower() in low]


def check(exc: BaseException, kind: type, caplog=None, capsys=None) -> None:
    """``exc`` is a ``kind`` and shows no secret anywhere it could be read."""
    assert isinstance(exc, kind), (type(exc), str(exc))
    assert leaks(str(exc)) == [], str(exc)
    assert leaks(repr(exc)) == [], repr(exc)
    formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert leaks(formatted) == [], formatted[-2000:]
    if isinstance(exc, DataFlowError):
        assert leaks(repr(exc.to_dict())) == []
        assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__), formatted[-2000:]
    if caplog is not None:
        logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
        assert leaks(logged) == [], logged[-2000:]
    if capsys is not None:
        out, err = capsys.readouterr()
        assert leaks(out + err) == [], (out + err)[-2000:]


def raised(fn, *args, **kw) -> BaseException:
    try:
        fn(*args, **kw)
    except BaseException as exc:  # noqa: BLE001 - the test inspects whatever was raised
        return exc
    raise AssertionError(f"{fn} raised nothing")


# ---------------------------------------------------------------- duplicate keys, every write path
def test_duplicate_key_through_every_write_path(seeded, caplog, capsys):
    db = seeded
    caplog.set_level(logging.DEBUG)
    email, name = SECRET_EMAIL, SECRET_NAME
    cases = {
        "create": lambda: db.create("Person", name=name, email=email),
        "bulk_create": lambda: db.bulk_create("Person", [{"name": name, "email": email}]),
        "bulk_create return_ids": lambda: db.bulk_create("Person", [{"name": name, "email": email}],
                                                         return_ids=True),
        "bulk_create twice in data": lambda: db.bulk_create("Person", [{"name": "a", "email": email + "2"},
                                                                       {"name": "b", "email": email + "2"}]),
        "upsert": lambda: db.upsert("Person", where={"name": "nobody"}, create={"email": email}),
        "bulk_upsert": lambda: db.bulk_upsert("Person", [{"id": 77, "name": name, "email": email}],
                                              conflict_on=["id"]),
        "update": lambda: db.update("Person", 2, {"email": email}),
        "bulk_update": lambda: db.bulk_update("Person", {"name": "other"}, {"email": email}),
    }
    for label, fn in cases.items():
        exc = raised(fn)
        assert isinstance(exc, DuplicateKeyError), (label, type(exc), str(exc))
        check(exc, DuplicateKeyError, caplog, capsys)
        assert (exc.code, exc.status) == ("duplicate_key", 409)
    assert db.count("Person") == 2


def test_foreign_key_errors(seeded, caplog, capsys):
    db = seeded
    caplog.set_level(logging.DEBUG)
    name, email, missing = SECRET_NAME, "fk@x", SECRET_ID
    for fn in (lambda: db.create("Person", name=name, email=email, team_id=missing),
               lambda: db.update("Person", 2, {"team_id": missing}),
               lambda: db.bulk_create("Person", [{"name": name, "email": email, "team_id": missing}]),
               lambda: db.bulk_update("Person", {"name": "other"}, {"team_id": missing}),
               lambda: db.delete("Team", 1),
               lambda: db.bulk_delete("Team", {"name": name})):
        check(raised(fn), ForeignKeyError, caplog, capsys)


def test_not_found_by_id_and_by_filter_naming_the_value(seeded, caplog, capsys):
    db = seeded
    caplog.set_level(logging.DEBUG)
    email, name = SECRET_EMAIL + ".gone", SECRET_NAME
    for fn in (lambda: db.read("Person", SECRET_ID),
               lambda: db.read("Person", filter={"email": email}),
               lambda: db.read("Person", filter={"email": {"$in": [email, SECRET_NAME + "!"]}}),
               lambda: db.read("Person", filter={"$or": [{"email": email}, {"name": {"$regex": "^" + name + "!"}}]}),
               lambda: db.update("Person", {"email": email}, {"age": 1}),
               lambda: db.delete("Person", {"name": SECRET_NAME + "!"}),
               lambda: db.delete("Person", SECRET_ID)):
        exc = raised(fn)
        check(exc, NotFoundError, caplog, capsys)
        assert (exc.code, exc.status) == ("not_found", 404)


def test_validation_errors_on_bad_values(seeded, caplog, capsys):
    db = seeded
    caplog.set_level(logging.DEBUG)
    name, email = SECRET_NAME, SECRET_EMAIL
    long = SECRET_EMAIL * 20
    for fn in (lambda: db.create("Person", name=name, email="v@x", age=name),
               lambda: db.create("Person", name=long, email="v@x"),
               lambda: db.create("Person", name=name, email={"e": email}),
               lambda: db.update("Person", 1, {"age": email}),
               lambda: db.bulk_create("Person", [{"name": name, "email": "v@x", "age": email}]),
               lambda: db.bulk_update("Person", {"name": "other"}, {"age": [email]}),
               lambda: db.upsert("Person", where={"email": email}, update={"age": name}),
               lambda: db.bulk_upsert("Person", [{"name": name, "email": email, "age": name}], conflict_on=["email"]),
               lambda: db.read("Person", email)):           # a string for an integer key
        exc = raised(fn)
        check(exc, ValidationError, caplog, capsys)
        assert exc.status == 422


def test_filter_errors_with_the_value_inside(seeded, caplog, capsys):
    db = seeded
    caplog.set_level(logging.DEBUG)
    email, name = SECRET_EMAIL, SECRET_NAME
    for fn in (lambda: db.list("Person", {"email": {"$bogus": email}}),
               lambda: db.list("Person", {"age": {"$gt": name}}),
               lambda: db.list("Person", {"email": {"$regex": name + "(("}}),
               lambda: db.list("Person", {"email": {"$in": email}}),
               lambda: db.list("Person", {"$or": email}),
               lambda: db.count("Person", {"age": {"$between": [name]}}),
               lambda: db.aggregate("Person", [{"$match": {"age": {"$gt": name}}}]),
               lambda: db.query("Person").where({"email": {"$nope": email}}).all()):
        exc = raised(fn)
        check(exc, ValidationError, caplog, capsys)
        assert isinstance(exc, FilterError) or exc.code == "validation_error", (type(exc), str(exc))


def test_conflict_error(seeded, caplog, capsys):
    db = seeded
    caplog.set_level(logging.DEBUG)
    name = SECRET_NAME
    db.update("Doc", 1, {"title": name + " v2"})
    for fn in (lambda: db.update("Doc", 1, {"title": name, "version": 1}),
               lambda: db.bulk_update("Doc", {"title": {"$ne": "x"}}, {"title": name, "version": 1}),
               lambda: db.upsert("Doc", where={"id": 1}, update={"title": name, "version": 1}),
               lambda: db.bulk_upsert("Doc", [{"id": 1, "title": name, "version": 1}], conflict_on=["id"])):
        exc = raised(fn)
        check(exc, ConflictError, caplog, capsys)
        assert (exc.code, exc.status) == ("conflict", 409)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_database_unavailable_shows_neither_values_nor_password(scheme, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    db = DataFlow(f"{scheme}://u:{SECRET_NAME.replace(' ', '')}@127.0.0.1:{_closed_port()}/x")
    try:
        declare(db)
        name, email = SECRET_NAME, SECRET_EMAIL
        for fn in (lambda: db.create("Person", name=name, email=email),
                   lambda: db.read("Person", filter={"email": email}),
                   lambda: db.bulk_create("Person", [{"name": name, "email": email}]),
                   lambda: db.migrate()):
            exc = raised(fn)
            assert isinstance(exc, DatabaseUnavailableError), (type(exc), str(exc))
            check(exc, DatabaseUnavailableError, caplog, capsys)
            assert "ZqSecret" not in str(exc) + repr(exc) + repr(db)  # repr(db.config): its own test below
            assert (exc.code, exc.status, http_status(exc)) == ("database_unavailable", 503, 503)
    finally:
        db.close()


def test_migration_error_over_duplicated_values_quotes_none(db_url, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    first = DataFlow(db_url)
    declare(first, unique_email=False)
    first.create("Person", name=SECRET_NAME, email=SECRET_EMAIL)
    first.create("Person", name=SECRET_NAME, email=SECRET_EMAIL)
    first.close()
    capsys.readouterr()
    second = DataFlow(db_url)
    try:
        declare(second, unique_email=True)
        exc = raised(second.migrate)
        check(exc, MigrationError, caplog, capsys)
        assert exc.code == "migration_error"
        exc = raised(second.count, "Person")  # the automatic migration of the first operation too
        check(exc, MigrationError, caplog, capsys)
    finally:
        second.close()


def test_an_unknown_include_name_is_not_echoed_in_the_error_field(seeded):
    name = SECRET_NAME
    exc = raised(seeded.read, "Person", 1, include=[name])
    check(exc, ValidationError)  # the message hides a name that is not an identifier; so must to_dict()


# ---------------------------------------------------------------- Kailash nodes
def run_node(node_type, params):
    wf = WorkflowBuilder()
    wf.add_node(node_type, "n", params)
    with LocalRuntime(enable_monitoring=False) as rt:
        results, _ = rt.execute(wf.build())
    return results["n"]


def test_failed_nodes_report_and_log_no_values(seeded, caplog, capsys):
    # INFO, not DEBUG: the SDK itself logs every node's inputs at DEBUG ("Validated inputs for n: {...}").
    caplog.set_level(logging.INFO)
    email, name = SECRET_EMAIL, SECRET_NAME
    cases = [
        ("PersonCreateNode", {"name": name, "email": email}, "DuplicateKeyError"),
        ("PersonBulkCreateNode", {"data": [{"name": name, "email": email}]}, "DuplicateKeyError"),
        ("PersonCreateNode", {"name": name, "email": "n@x", "team_id": SECRET_ID}, "ForeignKeyError"),
        ("PersonReadNode", {"filter": {"email": email + "!"}}, "NotFoundError"),
        ("PersonCreateNode", {"name": name, "email": "n@x", "age": email}, "ValidationError"),
        ("PersonListNode", {"filter": {"email": {"$bogus": email}}}, "FilterError"),
        ("PersonUpdateNode", {"id": 2, "fields": {"email": email}}, "DuplicateKeyError"),
        ("PersonUpsertNode", {"where": {"name": "nobody"}, "create": {"email": email}}, "DuplicateKeyError"),
        ("DocUpdateNode", {"id": 1, "fields": {"title": name, "version": 99}}, "ConflictError"),
    ]
    for node_type, params, kind in cases:
        result = run_node(node_type, params)
        assert result.get("failed") is True, (node_type, result)
        assert kind in result["error"], (node_type, result["error"])
        assert leaks(repr(result)) == [], (node_type, result)
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert leaks(logged) == [], logged[-3000:]
    out, err = capsys.readouterr()
    assert leaks(out + err) == [], (out + err)[-3000:]


# ---------------------------------------------------------------- passwords, codes and statuses
def test_repr_of_config_and_instance_shows_no_password():
    db = DataFlow("postgresql://u:s3cret@127.0.0.1/x")
    try:
        for text in (repr(db.config), str(db.config), repr(db), str(db), db.safe_url):
            assert "s3cret" not in text, text
    finally:
        db.close()


@pytest.mark.parametrize("cls, code, status", [
    (ValidationError, "validation_error", 422), (FilterError, "filter_error", 422), (ModelError, "model_error", 422),
    (NotFoundError, "not_found", 404), (DuplicateKeyError, "duplicate_key", 409), (ConflictError, "conflict", 409),
    (ForeignKeyError, "foreign_key", 409), (IntegrityError, "integrity_error", 409),
    (DatabaseUnavailableError, "database_unavailable", 503), (DatabaseError, "database_error", 500),
    (MigrationError, "migration_error", 500), (DataFlowError, "dataflow_error", 500),
])
def test_every_error_class_has_a_stable_code_and_status(cls, code, status):
    exc = cls("m", model="M")
    assert (cls.code, cls.status, exc.code, exc.status, http_status(exc)) == (code, status, code, status, status)
    assert exc.to_dict()["code"] == code
    if cls is ForeignKeyError:
        assert http_status(exc, creating=True) == 422
    assert http_status(ValueError("x")) == 500
    codes = {c.code for c in (ValidationError, FilterError, ModelError, NotFoundError, DuplicateKeyError,
                              ConflictError, ForeignKeyError, IntegrityError, DatabaseUnavailableError,
                              DatabaseError, MigrationError, DataFlowError)}
    assert len(codes) == 12  # each class its own code
