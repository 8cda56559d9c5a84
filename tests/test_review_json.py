"""Review: a List's JSON built from the rows equals the native records encoded, for text other tools wrote."""

from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

from dataflow import DataFlow

TEXTS = ["2024-01-01T10:00:00", "2024-01-01 10:00:00.5", "2024-01-01T10:00:00+02:00", "2024-01-01T10:00:00Z",
         "0001-01-01 00:00:00.000000", "9999-12-31 23:59:59.999999"]


def test_sqlite_datetime_text_with_an_offset_reads_and_encodes_alike(db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("text datetimes written by other tools: SQLite only")
    db = DataFlow(db_url, existing_schema_mode=True)
    try:
        with db.engine.begin() as c:
            c.execute(sa.text("CREATE TABLE evs (id INTEGER PRIMARY KEY NOT NULL, at DATETIME NOT NULL)"))
            for i, v in enumerate(TEXTS, 1):
                c.execute(sa.text("INSERT INTO evs (id, at) VALUES (:i, :v)"), {"i": i, "v": v})

        @db.model
        class Ev:
            at: datetime.datetime
            __tablename__ = "evs"

        native = db.list("Ev")
        assert [r["at"] for r in native][2:4] == [datetime.datetime(2024, 1, 1, 8, tzinfo=datetime.timezone.utc),
                                                  datetime.datetime(2024, 1, 1, 10, tzinfo=datetime.timezone.utc)]
        enc = db.binding("Ev").encoder
        assert db.operations.list("Ev", json=True)[0] == [enc(r) for r in native]
    finally:
        db.close()
