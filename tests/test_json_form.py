"""A List asked for JSON (what ListNode outputs) is built straight from the driver's rows: it must be
exactly what encoding each native record gives, for every field type, on every backend."""

from datetime import date, datetime, timezone
from decimal import Decimal
from uuid import UUID

from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from test_types import FIELDS, declare_sample

UTC = timezone.utc

ROWS = [
    {"i": 7, "s": "x", "short": "abc", "t": "long", "b": True, "f": 1.5, "d": Decimal("12.3400"),
     "dd": Decimal("-0.0000000001"), "dt": datetime(2026, 11, 30, 5, 52, 55, 792108, tzinfo=UTC),
     "day": date(2026, 2, 28), "u": UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7"), "raw": b"\x00\xffab",
     "doc": {"a": [1, {"b": None}]}, "arr": [1, "two", 3.0]},
    {"b": False, "dt": datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)},  # whole second: no fraction in ISO form
    {"dt": datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=UTC), "i": 0, "s": ""},
    {},  # every field NULL
]


def test_json_list_is_the_encoded_records(db):
    declare_sample(db)
    for row in ROWS:
        db.create("Sample", row)
    native, _ = db.operations.list("Sample", {}, None, 100)
    as_json, more = db.operations.list("Sample", {}, None, 100, json=True)
    encode = db.binding("Sample").encoder
    assert not more and len(as_json) == len(ROWS)
    assert as_json == [encode(r) for r in native]
    first = as_json[0]
    assert first["dt"] == "2026-11-30T05:52:55.792108+00:00" and as_json[1]["dt"] == "2026-01-01T00:00:00+00:00"
    assert first["d"] == "12.3400" and first["u"] == "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    assert first["raw"] == "AP9hYg==" and first["day"] == "2026-02-28" and first["b"] is True
    assert as_json[1]["b"] is False and as_json[3] == {**{f: None for f in FIELDS}, "id": as_json[3]["id"],
                                                        "created_at": as_json[3]["created_at"],
                                                        "updated_at": as_json[3]["updated_at"]}
    # twice: the processors are built once per statement shape and reused
    assert db.operations.list("Sample", {}, None, 100, json=True)[0] == as_json

    wb = WorkflowBuilder()
    wb.add_node("SampleListNode", "list", {"limit": 10})
    with LocalRuntime(enable_monitoring=False) as rt:
        results, _ = rt.execute(wb.build())
    assert results["list"]["records"] == as_json


def test_json_list_through_the_cache_and_inside_a_transaction(db):
    """The cache keeps native records (a JSON List is encoded from them); a transaction's List is the same."""
    declare_sample(db)
    for row in ROWS[:2]:
        db.create("Sample", row)
    expected = [db.binding("Sample").encoder(r) for r in db.operations.list("Sample", {}, None, 100)[0]]
    with db.cache.asking(30):
        miss = db.operations.list("Sample", {}, None, 100, json=True)[0]
        hit = db.operations.list("Sample", {}, None, 100, json=True)[0]
        native = db.operations.list("Sample", {}, None, 100)[0]
    assert miss == hit == expected and isinstance(native[0]["dt"], datetime)
    with db.transaction():
        assert db.operations.list("Sample", {}, None, 100, json=True)[0] == expected
