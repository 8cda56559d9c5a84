"""Every field type round-trips exactly on every backend; values a column cannot hold are refused."""

import base64
import json
import math
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Optional
from uuid import UUID

import pytest
from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import Field, ValidationError

UTC = timezone.utc
IST = timezone(timedelta(hours=5, minutes=30))
NEG = timezone(timedelta(hours=-7))
U1 = UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")
BLOB = bytes(range(256)) * 400  # 102,400 bytes: more than a MySQL BLOB (64 KiB) holds


def declare_sample(db):
    """One nullable field per type, so each test can set just the field it is about."""

    @db.model
    class Sample:
        i: Optional[int]
        s: Optional[str]
        short: Optional[Annotated[str, Field(max_length=10)]]
        t: Optional[Annotated[str, Field(text=True)]]
        b: Optional[bool]
        f: Optional[float]
        d: Optional[Annotated[Decimal, Field(precision=12, scale=4)]]
        dd: Optional[Decimal]
        dt: Optional[datetime]
        day: Optional[date]
        u: Optional[UUID]
        raw: Optional[bytes]
        doc: Optional[dict]
        arr: Optional[list]

    return Sample


FIELDS = ["i", "s", "short", "t", "b", "f", "d", "dd", "dt", "day", "u", "raw", "doc", "arr"]


def stored(db, field, id_):
    """The value of ``field`` as plain SQL reads it back (driver types, no DataFlow conversion)."""
    q = db.engine.dialect.identifier_preparer.quote
    with db.engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT {q(field)} FROM samples WHERE id = {int(id_)}").scalar_one()


def same(got, expected):
    """Equal, of the same type; datetimes also in UTC; decimals with the same digits (scale kept)."""
    assert type(got) is type(expected), f"{type(got).__name__} {got!r} != {type(expected).__name__} {expected!r}"
    assert got == expected
    if isinstance(expected, datetime):
        assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
    if isinstance(expected, Decimal):
        assert str(got) == str(expected)
    if isinstance(expected, float):
        assert got.hex() == expected.hex()


# (field, value given, value expected back)
ROUND_TRIPS = [
    ("i", 0, 0), ("i", 1, 1), ("i", 2**63 - 1, 2**63 - 1), ("i", -(2**63), -(2**63)), ("i", -42, -42),
    ("s", "", ""),
    ("s", "héllo wörld — 日本語 🎉 𝄞", "héllo wörld — 日本語 🎉 𝄞"),
    ("s", "x'); DROP TABLE users;--", "x'); DROP TABLE users;--"),
    ("s", "%s %(x)s ? :name \\ \\\\ '' \"", "%s %(x)s ? :name \\ \\\\ '' \""),
    ("s", "trailing spaces   ", "trailing spaces   "),
    ("s", "  leading", "  leading"),
    ("s", "line\nbreak\ttab\r", "line\nbreak\ttab\r"),
    ("s", "Mixed CASE", "Mixed CASE"),
    ("s", "x" * 255, "x" * 255),
    ("s", "🎉" * 255, "🎉" * 255),
    ("short", "0123456789", "0123456789"),
    ("t", "long text " * 10_000, "long text " * 10_000),
    ("b", True, True), ("b", False, False),
    ("f", 0.1 + 0.2, 0.30000000000000004), ("f", 1e300, 1e300), ("f", -1e-300, -1e-300),
    ("f", 2.0, 2.0), ("f", 1.7976931348623157e308, 1.7976931348623157e308), ("f", 0.0, 0.0),
    ("f", 3, 3.0), ("f", 123456789.12345679, 123456789.12345679),
    ("d", Decimal("12345678.1234"), Decimal("12345678.1234")),
    ("d", Decimal("1.5"), Decimal("1.5000")),
    ("d", Decimal("-0.0001"), Decimal("-0.0001")),
    ("d", Decimal("0"), Decimal("0.0000")),
    ("d", "99999999.9999", Decimal("99999999.9999")),
    ("d", 7, Decimal("7.0000")),
    ("dd", Decimal("1234567890123456789012345678.0123456789"), Decimal("1234567890123456789012345678.0123456789")),
    ("dd", Decimal("0.1"), Decimal("0.1000000000")),
    ("dt", datetime(2024, 3, 1, 12, 30, 45, 123456, tzinfo=UTC), datetime(2024, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)),
    ("dt", datetime(2024, 3, 1, 18, 0, 45, 123456, tzinfo=IST), datetime(2024, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)),
    ("dt", datetime(2024, 2, 29, 20, 0, 0, 1, tzinfo=NEG), datetime(2024, 3, 1, 3, 0, 0, 1, tzinfo=UTC)),
    ("dt", datetime(2024, 3, 1, 12, 30, 45, 999999), datetime(2024, 3, 1, 12, 30, 45, 999999, tzinfo=UTC)),
    ("dt", datetime(1900, 1, 1), datetime(1900, 1, 1, tzinfo=UTC)),
    ("dt", datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC), datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC)),
    ("dt", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
     datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("dt", "2024-03-01T14:30:45.123456+02:00", datetime(2024, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)),
    ("dt", "2024-03-01T12:30:45Z", datetime(2024, 3, 1, 12, 30, 45, tzinfo=UTC)),
    ("day", date(2024, 2, 29), date(2024, 2, 29)), ("day", date(1970, 1, 1), date(1970, 1, 1)),
    ("day", date(9999, 12, 31), date(9999, 12, 31)), ("day", "2023-12-31", date(2023, 12, 31)),
    ("u", U1, U1), ("u", str(U1), U1), ("u", str(U1).upper(), U1), ("u", UUID(int=0), UUID(int=0)),
    ("raw", b"\x00", b"\x00"), ("raw", b"", b""), ("raw", b"a\x00b\x00\xff\xfe", b"a\x00b\x00\xff\xfe"),
    ("raw", BLOB, BLOB), ("raw", base64.b64encode(b"\x00\x01").decode(), b"\x00\x01"),
    ("doc", {"a": 1, "nested": {"list": [1, 2.5, None, True, "ü"]}}, {"a": 1, "nested": {"list": [1, 2.5, None, True, "ü"]}}),
    ("doc", {}, {}), ("doc", {"q": "it's \"quoted\"", "big": 2**63 - 1, "f": 0.1}, {"q": "it's \"quoted\"", "big": 2**63 - 1, "f": 0.1}),
    ("doc", {"null": None}, {"null": None}),
    ("arr", [1, "two", None, [3], {"four": 4}, False], [1, "two", None, [3], {"four": 4}, False]),
    ("arr", [], []), ("arr", ["x'); DROP TABLE users;--"], ["x'); DROP TABLE users;--"]),
]


@pytest.fixture
def mem():
    """A DataFlow on an in-memory SQLite database: for checks made before any SQL runs."""
    from dataflow import DataFlow

    instance = DataFlow("sqlite:///:memory:")
    yield instance
    instance.close()


#: Fields whose values an equality filter can find (not JSON, TEXT and BLOB columns).
EQUALITY = ("i", "s", "short", "b", "f", "d", "dd", "dt", "day", "u")


@pytest.mark.parametrize("field", dict.fromkeys(f for f, _, _ in ROUND_TRIPS))
def test_round_trip(db, field):
    declare_sample(db)
    cases = [(given, expected) for f, given, expected in ROUND_TRIPS if f == field]
    for given, expected in cases:
        same(db.create("Sample", {field: given})[field], expected)
    # the bulk path binds values its own way (COPY on PostgreSQL, executemany elsewhere)
    assert db.bulk_create("Sample", [{field: given} for given, _ in cases])["inserted"] == len(cases)
    records = db.list("Sample", limit=None)
    assert len(records) == 2 * len(cases)
    for n, (_, expected) in enumerate(cases):
        same(records[n][field], expected)                 # created one by one
        same(records[n + len(cases)][field], expected)    # bulk created
        same(db.read("Sample", records[n]["id"])[field], expected)
        assert all(records[n][other] is None for other in FIELDS if other != field)
        if field in EQUALITY:
            assert db.count("Sample", {field: expected}) == 2 * sum(e == expected for _, e in cases), expected


def test_optional_none_round_trips_as_sql_null(db):
    declare_sample(db)
    rec = db.create("Sample", {field: None for field in FIELDS})
    db.bulk_create("Sample", [{field: None for field in FIELDS}])
    for id_ in (rec["id"], 2):
        got = db.read("Sample", id_)
        for field in FIELDS:
            assert got[field] is None, field
            assert stored(db, field, id_) is None, field  # SQL NULL, not JSON 'null'
    for field in FIELDS:
        assert db.count("Sample", {field: None}) == 2, field


def test_values_as_stored_in_the_database(db):
    declare_sample(db)
    aware = db.create("Sample", dt=datetime(2024, 3, 1, 18, 0, 45, 123456, tzinfo=IST))["id"]
    naive = db.create("Sample", dt=datetime(2024, 3, 1, 12, 30, 45, 123456))["id"]
    for id_ in (aware, naive):  # both stored as the same UTC wall time
        raw = stored(db, "dt", id_)
        if isinstance(raw, str):  # SQLite keeps text
            raw = datetime.fromisoformat(raw)
        if raw.tzinfo is not None:  # PostgreSQL timestamptz: the instant, in the session's zone
            raw = raw.astimezone(UTC).replace(tzinfo=None)
        assert raw == datetime(2024, 3, 1, 12, 30, 45, 123456)
    other = db.create("Sample", f=0.1 + 0.2, d=Decimal("12345678.1234"), raw=b"\x00abc\x00", i=2**63 - 1)["id"]
    assert stored(db, "f", other) == 0.30000000000000004  # an 8-byte double, not MySQL's FLOAT
    assert Decimal(str(stored(db, "d", other))) == Decimal("12345678.1234")
    assert bytes(stored(db, "raw", other)) == b"\x00abc\x00"
    assert stored(db, "i", other) == 2**63 - 1


def test_sql_text_is_stored_verbatim_and_runs_nothing(db):
    @db.model
    class User:
        name: str

    declare_sample(db)
    evil = "x'); DROP TABLE users;--"
    db.create("User", name="survivor")
    rec = db.create("Sample", s=evil)
    assert stored(db, "s", rec["id"]) == evil
    assert db.read("Sample", {"s": evil})["id"] == rec["id"]
    assert db.count("User") == 1


def test_strings_compare_case_sensitively(db):
    @db.model
    class Tag:
        label: Annotated[str, Field(unique=True)]

    db.create("Tag", label="abc")
    db.create("Tag", label="ABC")  # not a duplicate: uniqueness is case-sensitive everywhere
    assert db.count("Tag") == 2
    assert [r["label"] for r in db.list("Tag", {"label": "abc"})] == ["abc"]
    assert db.read("Tag", {"label": "ABC"})["id"] == 2


def test_nul_in_a_string_round_trips_or_is_refused_clearly(db, backend):
    declare_sample(db)
    if backend == "postgresql":  # PostgreSQL text cannot hold NUL
        with pytest.raises(ValidationError, match=r"Sample create refused by the database: a value does not fit"):
            db.create("Sample", s="a\x00b")
        assert db.count("Sample") == 0
    else:
        assert db.read("Sample", db.create("Sample", s="a\x00b")["id"])["s"] == "a\x00b"


# ---------------------------------------------------------------- refused values
# (field, bad value, what the message says it must be)
BAD_VALUES = [
    ("i", "abc", "Sample.i must be an integer; got str (field type Optional[int])"),
    ("i", "12", "Sample.i must be an integer; got str"),
    ("i", 1.5, "Sample.i must be an integer; got float"),
    ("i", True, "Sample.i must be an integer; got bool"),
    ("i", 2**63, "Sample.i must be an integer within 64 bits; got int"),
    ("i", -(2**63) - 1, "Sample.i must be an integer within 64 bits; got int"),
    ("s", "x" * 256, "Sample.s must be a string of at most 255 characters (got 256); got str"),
    ("s", "🎉" * 256, "Sample.s must be a string of at most 255 characters (got 256)"),
    ("short", "01234567890", "Sample.short must be a string of at most 10 characters (got 11)"),
    ("s", 5, "Sample.s must be a string; got int"),
    ("s", b"bytes", "Sample.s must be a string; got bytes"),
    ("b", 1, "Sample.b must be true or false; got int"),
    ("b", "true", "Sample.b must be true or false; got str"),
    ("f", "1.5", "Sample.f must be a number; got str"),
    ("f", True, "Sample.f must be a number; got bool"),
    ("f", float("nan"), "Sample.f must be a finite number; got float"),
    ("f", float("inf"), "Sample.f must be a finite number; got float"),
    ("f", float("-inf"), "Sample.f must be a finite number; got float"),
    ("f", 10**400, "Sample.f must be a number within the range of a double; got int"),
    ("d", Decimal("123456789.1"), "Sample.d must be a decimal with at most 8 digits before the point"),
    ("d", Decimal("1.23456"), "Sample.d must be a decimal with at most 4 digits after the point"),
    ("dd", Decimal("1234567890123456789012345678.01234567891"),
     "Sample.dd must be a decimal with at most 10 digits after the point"),
    ("dd", Decimal("12345678901234567890123456789"), "Sample.dd must be a decimal with at most 28 digits before"),
    ("d", "abc", "Sample.d must be a decimal number; got str"),
    ("d", "NaN", "Sample.d must be a finite decimal number"),
    ("d", True, "Sample.d must be a decimal number (Decimal, int or numeric string); got bool"),
    ("dt", "not a date", "Sample.dt must be a datetime or ISO 8601 string; got str"),
    ("dt", 1700000000, "Sample.dt must be a datetime or ISO 8601 string; got int"),
    ("dt", date(2024, 1, 1), "Sample.dt must be a datetime or ISO 8601 string; got date"),
    ("day", datetime(2024, 1, 1, 5), "Sample.day must be a date or ISO 8601 date string; got datetime"),
    ("day", "2024-13-01", "Sample.day must be a date or ISO 8601 date string; got str"),
    ("u", "not-a-uuid", "Sample.u must be a UUID or UUID string; got str"),
    ("u", 123, "Sample.u must be a UUID or UUID string; got int"),
    ("raw", "not base64!", "Sample.raw must be bytes or a base64 string; got str"),
    ("raw", 5, "Sample.raw must be bytes or a base64 string; got int"),
    ("doc", [1, 2], "Sample.doc must be a JSON object (dict); got list"),
    ("doc", "{}", "Sample.doc must be a JSON object (dict); got str"),
    ("arr", {"a": 1}, "Sample.arr must be a JSON array (list); got dict"),
    ("arr", "abc", "Sample.arr must be a JSON array (list); got str"),
    ("doc", {"when": datetime(2024, 1, 1)}, "Sample.doc must be a JSON object (dict) of JSON values only"),
    ("doc", {"tags": {1, 2}}, "Sample.doc must be a JSON object (dict) of JSON values only"),
    ("arr", [Decimal("1.5")], "Sample.arr must be a JSON array (list) of JSON values only"),
    ("arr", [b"x"], "Sample.arr must be a JSON array (list) of JSON values only"),
    ("doc", {"x": float("nan")}, "Sample.doc must be a JSON object (dict) of JSON values only"),
    ("arr", [float("inf")], "Sample.arr must be a JSON array (list) of JSON values only"),
]


@pytest.mark.parametrize("field, bad, message", BAD_VALUES, ids=[f"{f}-{repr(v)[:20]}" for f, v, _ in BAD_VALUES])
def test_values_that_do_not_fit_are_refused(mem, field, bad, message):
    # Checked before any SQL runs, so one database is enough; test_refusals_on_every_backend covers the rest.
    db = mem
    declare_sample(db)
    with pytest.raises(ValidationError) as info:
        db.create("Sample", {field: bad})
    assert message in str(info.value)
    assert (info.value.model, info.value.field) == ("Sample", field)
    with pytest.raises(ValidationError) as info:
        db.bulk_create("Sample", [{field: None}] * 3 + [{field: bad}])
    assert str(info.value).startswith("data[3]: ") and message in str(info.value)
    assert info.value.field == field
    assert db.count("Sample") == 0
    keep = db.create("Sample", {})
    with pytest.raises(ValidationError, match=re.escape(message.split(";")[0])):
        db.update("Sample", keep["id"], {field: bad})
    assert db.read("Sample", keep["id"])[field] is None


@pytest.mark.parametrize("column", [[1.5, float("nan")], [1.5, float("inf")], [1, 10**400]])
def test_bulk_create_of_one_type_still_checks_every_float(mem, column):
    db = mem
    declare_sample(db)
    with pytest.raises(ValidationError, match=r"^data\[1\]: Sample\.f must be a (finite number|number within)"):
        db.bulk_create("Sample", [{"f": v} for v in column])
    assert db.count("Sample") == 0


@pytest.mark.parametrize("field, bad", [("doc", {"when": datetime(2024, 1, 1)}), ("arr", [float("nan")])])
def test_bulk_create_of_one_type_still_checks_json_content(mem, field, bad):
    db = mem
    declare_sample(db)
    good = {} if field == "doc" else []
    with pytest.raises(ValidationError, match=rf"^data\[1\]: Sample\.{field} must be a JSON .* of JSON values only"):
        db.bulk_create("Sample", [{field: good}, {field: bad}])
    assert db.count("Sample") == 0


REFUSED_EVERYWHERE = [
    ("s", "y" * 300, "Sample.s must be a string of at most 255 characters (got 300)"),
    ("short", "y" * 11, "Sample.short must be a string of at most 10 characters (got 11)"),
    ("i", "abc", "Sample.i must be an integer; got str"),
    ("f", float("nan"), "Sample.f must be a finite number"),
    ("dd", Decimal("1" * 29), "Sample.dd must be a decimal with at most 28 digits before the point"),
    ("doc", {"when": datetime(2024, 1, 1)}, "Sample.doc must be a JSON object (dict) of JSON values only"),
]


def test_refusals_on_every_backend(db):
    """Too long, wrong type, not representable: a ValidationError naming model and field, never truncation."""
    declare_sample(db)
    db.create("Sample", s="ok")
    for field, bad, message in REFUSED_EVERYWHERE:
        for attempt in (lambda: db.create("Sample", {field: bad}),
                        lambda: db.bulk_create("Sample", [{field: None}, {field: bad}]),
                        lambda: db.bulk_create("Sample", [{field: bad}], on_conflict="skip"),
                        lambda: db.update("Sample", 1, {field: bad})):
            with pytest.raises(ValidationError) as info:
                attempt()
            assert message in str(info.value)
            assert (info.value.model, info.value.field) == ("Sample", field)
    assert [(r["id"], r["s"], r["i"], r["doc"]) for r in db.list("Sample")] == [(1, "ok", None, None)]


def test_null_for_a_required_field_is_refused(mem):
    db = mem
    @db.model
    class Person:
        name: str
        age: int

    with pytest.raises(ValidationError, match=r"Person\.age cannot be null \(field type int\)") as info:
        db.create("Person", name="a", age=None)
    assert (info.value.model, info.value.field) == ("Person", "age")
    with pytest.raises(ValidationError, match=r"Person\.name cannot be null"):
        db.bulk_create("Person", [{"name": "a", "age": 1}, {"name": None, "age": 2}])
    assert db.count("Person") == 0


# ---------------------------------------------------------------- node outputs are JSON-safe
VALUES = {
    "i": 2**63 - 1, "s": "héllo 🎉", "b": False, "f": 0.1 + 0.2, "d": Decimal("12.34"),
    "dd": Decimal("-0.5"), "dt": datetime(2024, 3, 1, 18, 0, 45, 123456, tzinfo=IST), "day": date(2024, 2, 29),
    "u": U1, "raw": b"\x00\xffbin", "doc": {"k": [1, None]}, "arr": ["a", 1],
}
JSON = {
    "i": 2**63 - 1, "s": "héllo 🎉", "b": False, "f": 0.30000000000000004, "d": "12.3400",
    "dd": "-0.5000000000", "dt": "2024-03-01T12:30:45.123456+00:00", "day": "2024-02-29",
    "u": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "raw": base64.b64encode(b"\x00\xffbin").decode(),
    "doc": {"k": [1, None]}, "arr": ["a", 1],
}


def _assert_json_safe(record):
    for k, v in JSON.items():
        assert record[k] == v and type(record[k]) is type(v), k
    assert record["b"] is False
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert datetime.fromisoformat(record["created_at"]).utcoffset() == timedelta(0)


def test_node_outputs_are_json_safe(db):
    declare_sample(db)
    with LocalRuntime(enable_monitoring=False) as rt:
        wf = WorkflowBuilder()
        wf.add_node("SampleCreateNode", "create", dict(VALUES))
        wf.add_node("SampleReadNode", "read", {})
        wf.add_connection("create", "id", "read", "id")
        results, _ = rt.execute(wf.build())
        wf = WorkflowBuilder()
        wf.add_node("SampleListNode", "list", {"filter": {"u": str(U1)}})
        wf.add_node("SampleUpsertNode", "upsert", {"where": {"s": "héllo 🎉"}, "update": {"b": True}})
        later, _ = rt.execute(wf.build())
    _assert_json_safe(results["create"])
    _assert_json_safe(results["read"])
    assert results["read"]["found"] is True
    _assert_json_safe(later["list"]["records"][0])
    assert later["list"]["count"] == 1 and later["list"]["has_more"] is False
    up = later["upsert"]
    assert up["created"] is False and up["action"] == "updated"
    assert up["record"]["b"] is True and up["record"]["d"] == "12.3400" and up["record"]["raw"] == JSON["raw"]
    json.dumps(later, allow_nan=False)


def test_node_output_values_are_accepted_back_as_input(db):
    declare_sample(db)
    wf = WorkflowBuilder()
    wf.add_node("SampleCreateNode", "first", dict(VALUES))
    with LocalRuntime(enable_monitoring=False) as rt:
        out = rt.execute(wf.build())[0]["first"]
        wf = WorkflowBuilder()
        wf.add_node("SampleCreateNode", "second", {k: out[k] for k in JSON})
        again = rt.execute(wf.build())[0]["second"]
    assert {k: again[k] for k in JSON} == JSON
    a, b = db.list("Sample")
    assert {k: a[k] for k in VALUES} == {k: b[k] for k in VALUES}
    assert b["raw"] == b"\x00\xffbin" and b["u"] == U1 and b["d"] == Decimal("12.3400")


def test_direct_api_returns_native_types(db):
    declare_sample(db)
    rec = db.read("Sample", db.create("Sample", VALUES)["id"])
    expected_types = {"i": int, "s": str, "b": bool, "f": float, "d": Decimal, "dd": Decimal, "dt": datetime,
                      "day": date, "u": UUID, "raw": bytes, "doc": dict, "arr": list}
    assert {k: type(rec[k]) for k in expected_types} == expected_types
    assert type(rec["created_at"]) is datetime and rec["created_at"].tzinfo is not None
    assert not math.isnan(rec["f"])


def test_trailing_spaces_and_control_characters_count_everywhere(db):
    """MariaDB's utf8mb4_bin pads with spaces ('a' = 'a ', '\\n' < ''); our tables' collation does not."""
    from typing import Optional

    @db.model
    class Tag:
        label: str
        meta: Optional[dict] = None
        __dataflow__ = {"unique": ["label"]}

    db.bulk_create("Tag", [{"label": "a", "meta": {"k": "a"}}, {"label": "a ", "meta": {"k": "a "}},
                           {"label": "\n", "meta": {"k": "\n"}}])  # 'a' and 'a ' are two values
    assert [t["label"] for t in db.list("Tag", {"label": "a"})] == ["a"]
    assert [t["label"] for t in db.list("Tag", {"label": {"$gt": ""}}, sort={"label": 1})] == ["\n", "a", "a "]
    assert [t["label"] for t in db.list("Tag", {"meta.k": "a"})] == ["a"]
    assert [t["label"] for t in db.list("Tag", {"meta.k": {"$gt": ""}}, sort={"label": 1})] == ["\n", "a", "a "]
