"""The SQL each operator compiles to, per dialect, without a database (assert_compile style)."""

from __future__ import annotations

import pytest

from dataflow.query import compile_filter
from dfq_support import where_sql
from test_query_errors import TABLE

# (filter, {dialect: expected WHERE clause})
CASES = [
    ({"age": {"$gt": 18, "$lt": 65}}, {
        "sqlite": "persons.age > ? AND persons.age < ?",
        "postgresql": "persons.age > %(df_f{n}_0)s::BIGINT AND persons.age < %(df_f{n}_1)s::BIGINT",
        "mysql": "persons.age > %s AND persons.age < %s"}),
    ({"age": {"$ne": 30}}, {
        "sqlite": "persons.age != ? OR persons.age IS NULL",
        "postgresql": "persons.age != %(df_f{n}_0)s::BIGINT OR persons.age IS NULL",
        "mysql": "persons.age != %s OR persons.age IS NULL"}),
    ({"age": None}, {d: "persons.age IS NULL" for d in ("sqlite", "postgresql", "mysql")}),
    ({"age": {"$exists": False}}, {d: "persons.age IS NULL" for d in ("sqlite", "postgresql", "mysql")}),
    ({"age": {"$in": [1, None]}}, {
        d: "persons.age IN (__[POSTCOMPILE_df_f{n}_0]) OR persons.age IS NULL" for d in ("sqlite", "postgresql", "mysql")}),
    ({"age": {"$nin": [1, 2]}}, {
        d: "(persons.age NOT IN (__[POSTCOMPILE_df_f{n}_0])) OR persons.age IS NULL" for d in ("sqlite", "postgresql", "mysql")}),
    ({"name": {"$regex": "^Jo", "$options": "i"}}, {
        "sqlite": "df_regexp(?, persons.name) = 1",
        "postgresql": "(persons.name ~ %(df_f{n}_0)s::VARCHAR)",
        "mysql": "(persons.name REGEXP %s) = 1"}),
    ({"name": {"$like": "J%"}}, {
        "sqlite": "persons.name LIKE ? ESCAPE '\\'",
        "postgresql": "persons.name LIKE %(df_f{n}_0)s::VARCHAR ESCAPE '\\'",
        "mysql": "persons.name LIKE %s ESCAPE '\\\\'"}),
    ({"name": {"$ilike": "j%"}}, {
        "sqlite": "df_lower(persons.name) LIKE df_lower(?) ESCAPE '\\'",
        "postgresql": "lower(persons.name) LIKE lower(%(df_f{n}_0)s::VARCHAR) ESCAPE '\\'",
        "mysql": "LOWER(persons.name) LIKE LOWER(%s) ESCAPE '\\\\'"}),
    ({"name": {"$gt": "m"}}, {
        "sqlite": "persons.name > ?",
        "postgresql": '(persons.name COLLATE "C") > %(df_f{n}_0)s::VARCHAR',
        "mysql": "persons.name > %s"}),
    ({"amount": {"$gte": 5}}, {
        "sqlite": "CAST(persons.amount AS REAL) >= ?",
        "postgresql": "persons.amount >= %(df_f{n}_0)s",
        "mysql": "persons.amount >= %s"}),
    ({"metadata.preferences.theme": "dark"}, {
        "sqlite": "(CASE WHEN json_type(persons.metadata, '$.\"preferences\".\"theme\"') IN ('text') "
                  "THEN json_extract(persons.metadata, '$.\"preferences\".\"theme\"') END) = ?",
        "postgresql": "(CASE WHEN jsonb_typeof((persons.metadata #> '{\"preferences\",\"theme\"}')) = 'string' "
                      "THEN (persons.metadata #>> '{\"preferences\",\"theme\"}') END) = %(df_f{n}_0)s::VARCHAR",
        "mysql": "(CASE WHEN JSON_TYPE(JSON_EXTRACT(persons.metadata, '$.\"preferences\".\"theme\"')) IN ('STRING') "
                 "THEN (JSON_UNQUOTE(JSON_EXTRACT(persons.metadata, '$.\"preferences\".\"theme\"')) COLLATE utf8mb4_nopad_bin) END) = %s"}),
    ({"metadata.n": {"$gt": 3}}, {
        "sqlite": "(CASE WHEN json_type(persons.metadata, '$.\"n\"') IN ('integer', 'real') "
                  "THEN json_extract(persons.metadata, '$.\"n\"') END) > ?",
        "postgresql": "(CASE WHEN jsonb_typeof((persons.metadata #> '{\"n\"}')) = 'number' "
                      "THEN CAST((persons.metadata #> '{\"n\"}') AS NUMERIC) END) > %(df_f{n}_0)s",
        "mysql": "(CASE WHEN JSON_TYPE(JSON_EXTRACT(persons.metadata, '$.\"n\"')) IN ('INTEGER', 'DOUBLE', "
                 "'DECIMAL', 'UNSIGNED INTEGER') THEN CAST(JSON_EXTRACT(persons.metadata, '$.\"n\"') AS DOUBLE) END) > %s"}),
    ({"metadata.flag": True}, {
        "sqlite": "(CASE json_type(persons.metadata, '$.\"flag\"') WHEN 'true' THEN 1 WHEN 'false' THEN 0 END) = ?",
        "postgresql": "(CASE WHEN jsonb_typeof((persons.metadata #> '{\"flag\"}')) = 'boolean' "
                      "THEN CAST((persons.metadata #> '{\"flag\"}') AS BOOLEAN) END) = %(df_f{n}_0)s",
        "mysql": "(CASE WHEN JSON_TYPE(JSON_EXTRACT(persons.metadata, '$.\"flag\"')) IN ('BOOLEAN') "
                 "THEN (JSON_EXTRACT(persons.metadata, '$.\"flag\"') = 'true') END) = %s"}),
    ({"tags": {"$contains": "premium"}}, {
        "sqlite": "(json_type(persons.tags, '$') = 'array' AND EXISTS (SELECT 1 FROM json_each(persons.tags, '$') "
                  "AS df_e0 WHERE (CASE WHEN json_type((persons.tags -> df_e0.fullkey), '$') IN ('text') "
                  "THEN json_extract((persons.tags -> df_e0.fullkey), '$') END) = ?)) = 1",
        "postgresql": "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(persons.tags) = 'array' "
                      "THEN persons.tags END) AS df_e0(value) WHERE (CASE WHEN jsonb_typeof(df_e0.value) = 'string' "
                      "THEN (df_e0.value #>> '{}') END) = %(df_f{n}_0)s::VARCHAR)",
        "mysql": "(JSON_TYPE(JSON_EXTRACT(persons.tags, '$')) = 'ARRAY' AND EXISTS (SELECT 1 FROM "
                 "JSON_TABLE(persons.tags, '$[*]' COLUMNS (v JSON PATH '$')) AS df_e0 WHERE (CASE WHEN "
                 "JSON_TYPE(JSON_EXTRACT(df_e0.v, '$')) IN ('STRING') THEN "
                 "(JSON_UNQUOTE(JSON_EXTRACT(df_e0.v, '$')) COLLATE utf8mb4_nopad_bin) END) = %s)) = 1"}),
    ({"tags": {"$size": {"$gt": 3}}}, {
        "sqlite": "(CASE WHEN json_type(persons.tags, '$') = 'array' THEN json_array_length(persons.tags, '$') END) > ?",
        "postgresql": "(CASE WHEN jsonb_typeof(persons.tags) = 'array' THEN jsonb_array_length(persons.tags) END) "
                      "> %(df_f{n}_0)s::INTEGER",
        "mysql": "(CASE WHEN JSON_TYPE(JSON_EXTRACT(persons.tags, '$')) = 'ARRAY' "
                 "THEN JSON_LENGTH(JSON_EXTRACT(persons.tags, '$')) END) > %s"}),
    ({"metadata": {"a": 1}}, {
        "sqlite": "df_json_equal(persons.metadata -> '$', ?) = 1",
        "postgresql": "(persons.metadata = CAST(%(df_f{n}_0)s::VARCHAR AS JSONB))",
        "mysql": "JSON_EQUALS(JSON_EXTRACT(persons.metadata, '$'), %s) = 1"}),
    ({"$not": {"age": 1}}, {
        "sqlite": "coalesce(persons.age = ?, 0) = 0",
        "postgresql": "NOT coalesce(persons.age = %(df_f{n}_0)s::BIGINT, false)",
        "mysql": "coalesce(persons.age = %s, false) = 0"}),
    ({"metadata.x": {"$exists": False}}, {
        "sqlite": "json_type(persons.metadata, '$.\"x\"') IS NULL",
        "postgresql": "jsonb_typeof((persons.metadata #> '{\"x\"}')) IS NULL",
        "mysql": "JSON_TYPE(JSON_EXTRACT(persons.metadata, '$.\"x\"')) IS NULL"}),
]


@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql", "mysql"])
@pytest.mark.parametrize("filt, expected", CASES, ids=[str(c[0]) for c in CASES])
def test_compiled_sql(filt, expected, backend_name):
    f = compile_filter(TABLE, filt)
    n = next(iter(f.params))[len("df_f"):].split("_")[0] if f.params else ""
    assert where_sql(f.clause, backend_name) == expected[backend_name].replace("{n}", n)


def test_values_are_bound_never_inlined():
    evil = "x'); DROP TABLE persons; --"
    f = compile_filter(TABLE, {"name": evil, "metadata.k": {"$in": [evil]}, "tags": {"$contains": evil}})
    for backend_name in ("sqlite", "postgresql", "mysql"):
        assert "DROP" not in where_sql(f.clause, backend_name)
    assert evil in f.params.values() and [evil] in f.params.values()
