"""The functions ``sqlite_functions.register`` adds to a SQLite connection, used directly."""

from __future__ import annotations

import json
import sqlite3

import pytest

from dataflow.query import regex, sqlite_functions


@pytest.fixture
def conn():
    c = sqlite3.connect(":memory:")
    sqlite_functions.register(c)
    yield c
    c.close()


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


def test_like_is_case_sensitive(conn):
    assert one(conn, "SELECT 'John' LIKE 'j%'") == 0
    assert one(conn, "SELECT 'John' LIKE 'J%'") == 1


def test_regexp_takes_patterns_rendered_for_sqlite(conn):
    pattern = regex.render("^jo.n$", True, "sqlite")
    assert one(conn, "SELECT df_regexp(?, 'JOHN')", pattern) == 1
    assert one(conn, "SELECT df_regexp(?, 'JOHNNY')", pattern) == 0
    assert one(conn, "SELECT df_regexp(?, NULL)", pattern) is None
    assert one(conn, "SELECT df_regexp(?, 5)", pattern) == 0


def test_lower_folds_unicode(conn):
    assert one(conn, "SELECT df_lower('ÉCOLE')") == "école"
    assert one(conn, "SELECT lower('ÉCOLE')") == "École"  # why df_lower exists


@pytest.mark.parametrize("a, b, equal", [
    ('{"a":1,"b":[1,2]}', '{"b":[1,2],"a":1.0}', 1),
    ('[1,2]', '[2,1]', 0),
    ('[true]', '[1]', 0),
    ('{"a":null}', '{}', 0),
    ('"x"', '"x"', 1),
])
def test_json_equal(conn, a, b, equal):
    assert one(conn, "SELECT df_json_equal(?, ?)", a, b) == equal


def test_json_agg_orders_by_its_keys(conn):
    conn.execute("CREATE TABLE t (g INT, v TEXT, k1 INT, k2 TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [
        (1, "a", 2, "x"), (1, "b", 1, "y"), (1, "c", 2, "a"), (1, "d", None, "z"), (2, "e", 5, "q")])
    rows = conn.execute("SELECT g, df_json_agg(json_quote(v), 'ad', k1, k2) FROM t GROUP BY g ORDER BY g").fetchall()
    assert [(g, json.loads(v)) for g, v in rows] == [(1, ["d", "b", "a", "c"]), (2, ["e"])]
    distinct = one(conn, "SELECT df_json_agg(json_quote(k1), 'u') FROM t")  # nulls are left out
    assert sorted(json.loads(distinct)) == [1, 2, 5]
    assert one(conn, "SELECT df_json_agg(json_quote(v), '') FROM t WHERE v = 'a'") == '["a"]'
