"""{"$date": ...} values: today, relative offsets, ISO strings; always aware UTC."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from dataflow.errors import FilterError
from dataflow.query import dates, resolve_date

UTC = timezone.utc
NOW = datetime(2024, 5, 17, 15, 30, 45, 123456, tzinfo=UTC)


@pytest.fixture(autouse=True)
def pinned_now(monkeypatch):
    monkeypatch.setattr(dates, "now", lambda: NOW)


@pytest.mark.parametrize("value, expected", [
    ({"$date": "today"}, datetime(2024, 5, 17, tzinfo=UTC)),
    ({"$date": "-5m"}, NOW - timedelta(minutes=5)),
    ({"$date": "-1h"}, NOW - timedelta(hours=1)),
    ({"$date": "-7d"}, NOW - timedelta(days=7)),
    ({"$date": "-2w"}, NOW - timedelta(weeks=2)),
    ({"$date": "+1d"}, NOW + timedelta(days=1)),
    ({"$date": "3h"}, NOW + timedelta(hours=3)),
    ({"$date": "2024-01-01"}, datetime(2024, 1, 1, tzinfo=UTC)),
    ({"$date": "2024-01-01T10:00:00"}, datetime(2024, 1, 1, 10, tzinfo=UTC)),
    ({"$date": "2024-01-01T10:00:00Z"}, datetime(2024, 1, 1, 10, tzinfo=UTC)),
    ({"$date": "2024-01-01T10:00:00+02:00"}, datetime(2024, 1, 1, 8, tzinfo=UTC)),
    ({"$date": datetime(2024, 1, 1, 10)}, datetime(2024, 1, 1, 10, tzinfo=UTC)),
    ({"$date": date(2024, 1, 1)}, datetime(2024, 1, 1, tzinfo=UTC)),
    ("2024-01-01T10:00:00.5+00:00", datetime(2024, 1, 1, 10, 0, 0, 500000, tzinfo=UTC)),
])
def test_resolve_date(value, expected):
    got = resolve_date(value)
    assert got == expected
    assert got.tzinfo == UTC


@pytest.mark.parametrize("value", [{"$date": "yesterday"}, {"$date": "-5x"}, {"$date": 5}, {"$date": "2024-13-01"}])
def test_bad_dates_raise(value):
    with pytest.raises(FilterError) as info:
        resolve_date(value, path="filter.seen.$gte")
    assert info.value.path == "filter.seen.$gte.$date"
