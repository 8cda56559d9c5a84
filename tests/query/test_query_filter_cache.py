"""Translations are cached by the filter's shape; values are re-bound on every call."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dataflow.errors import FilterError
from dataflow.query import all_of, compile_filter
from dataflow.query import filters as filters_module
from dfq_support import insert, make_table, matching_ids
from test_query_errors import TABLE


@pytest.fixture
def translations(monkeypatch):
    """Count how often a filter is translated (walked and validated)."""
    calls = []
    real = filters_module.translate

    def counting(*args, **kw):
        calls.append(args[1])
        return real(*args, **kw)
    monkeypatch.setattr(filters_module, "translate", counting)
    filters_module.CACHE.clear()
    return calls


def test_same_shape_is_translated_once(translations):
    a = compile_filter(TABLE, {"age": {"$gt": 18, "$lt": 65}, "name": {"$in": ["a", "b"]}})
    b = compile_filter(TABLE, {"age": {"$gt": 30, "$lt": 40}, "name": {"$in": ["c", "d", "e"]}})
    assert len(translations) == 1
    assert a.clause is b.clause
    assert list(a.params.values()) == [18, 65, ["a", "b"]]
    assert list(b.params.values()) == [30, 40, ["c", "d", "e"]]
    assert filters_module.cache_info() == {"hits": 1, "misses": 1}


@pytest.mark.parametrize("first, second", [
    ({"age": 30}, {"age": 29.5}),                          # value type
    ({"age": 30}, {"name": "x"}),                          # field
    ({"age": {"$gt": 1}}, {"age": {"$gte": 1}}),           # operator
    ({"age": 1}, {"age": None}),                           # None is structure (IS NULL)
    ({"age": {"$exists": True}}, {"age": {"$exists": False}}),
    ({"name": {"$regex": "a"}}, {"name": {"$regex": "a", "$options": "i"}}),
    ({"age": {"$in": [1]}}, {"age": {"$in": [1, None]}}),
    ({"$or": [{"age": 1}]}, {"$or": [{"age": 1}, {"age": 2}]}),
])
def test_a_different_shape_is_translated_again(translations, first, second):
    compile_filter(TABLE, first)
    compile_filter(TABLE, second)
    assert len(translations) == 2


def test_values_are_still_validated_on_a_cache_hit(translations):
    compile_filter(TABLE, {"name": {"$regex": "^a"}, "seen": {"$gte": "2024-01-01"}})
    with pytest.raises(FilterError) as info:
        compile_filter(TABLE, {"name": {"$regex": "(a"}, "seen": {"$gte": "2024-01-01"}})
    assert info.value.path == "filter.name.$regex"
    with pytest.raises(FilterError) as info:
        compile_filter(TABLE, {"name": {"$regex": "^a"}, "seen": {"$gte": "soon"}})
    assert info.value.path == "filter.seen.$gte"
    assert len(translations) == 1


def test_relative_dates_are_resolved_at_every_call(translations, monkeypatch):
    from datetime import datetime, timezone

    from dataflow.query import dates

    monkeypatch.setattr(dates, "now", lambda: datetime(2024, 5, 1, 12, tzinfo=timezone.utc))
    a = compile_filter(TABLE, {"seen": {"$gte": {"$date": "-1h"}}})
    monkeypatch.setattr(dates, "now", lambda: datetime(2024, 5, 2, 12, tzinfo=timezone.utc))
    b = compile_filter(TABLE, {"seen": {"$gte": {"$date": "-1h"}}})
    assert list(a.params.values()) == [datetime(2024, 5, 1, 11, tzinfo=timezone.utc)]
    assert list(b.params.values()) == [datetime(2024, 5, 2, 11, tzinfo=timezone.utc)]
    assert len(translations) == 1


def test_filters_of_the_same_shape_combine_without_clashing(engine):
    class Item:
        __dataflow__ = {"timestamps": False}
        age: int

    items = make_table(engine, Item)
    with engine.begin() as conn:
        insert(conn, items, [{"age": a} for a in (10, 20, 30, 40)])
        low = compile_filter(items, {"age": {"$gt": 15}})
        high = compile_filter(items, {"age": {"$gt": 25}})
        assert set(low.params) == set(high.params)  # same shape, same names
        both = low & high
        assert len(both.params) == 2 and sorted(both.params.values()) == [15, 25]
        assert matching_ids(conn, items, both) == [3, 4]
        assert matching_ids(conn, items, all_of(high, None, compile_filter(items, {"age": {"$lt": 35}}))) == [3]
        # the originals are untouched
        assert matching_ids(conn, items, low) == [2, 3, 4]
        stmt = sa.select(sa.func.count()).select_from(items).where(both.clause)
        assert conn.execute(stmt, both.params).scalar_one() == 2


def test_cached_clauses_use_sqlalchemys_statement_cache(engine):
    class Item:
        __dataflow__ = {"timestamps": False}
        tags: list

    items = make_table(engine, Item)
    with engine.begin() as conn:
        insert(conn, items, [{"tags": ["a", "b"]}, {"tags": ["b"]}])
        for value, expected in (("a", [1]), ("b", [1, 2]), ("c", [])):
            f = compile_filter(items, {"tags": {"$contains": value}, "$or": [{"tags": {"$size": {"$gt": 0}}}]})
            assert matching_ids(conn, items, f) == expected
    key_a = sa.select(items.c.id).where(compile_filter(items, {"tags": {"$contains": "a"}}).clause)._generate_cache_key()
    key_b = sa.select(items.c.id).where(compile_filter(items, {"tags": {"$contains": "zz"}}).clause)._generate_cache_key()
    assert key_a is not None and key_a.key == key_b.key
