"""Each database's spelling of the SQL that DataFlow's query constructs need.

One class per database; ``constructs.py`` compiles every construct through ``sql_for(compiler)``,
so generic code never branches on a dialect's name. A method gets already-compiled SQL text for
its operands (``doc``, ``value``) and the compiler ``c`` for rendering literals.

JSON paths are tuples of object keys (str) and array indexes (int); they are rendered as quoted
literals (``'$."a"[0]'`` or ``'{"a","0"}'``) after ``fields.json_path`` has refused quotes,
backslashes and control characters in keys.
"""

from __future__ import annotations

from typing import Any, Sequence

import sqlalchemy as sa

JsonPath = tuple  # tuple[str | int, ...]


class SQLiteSQL:
    """SQLite's JSON1 functions; DataFlow's own functions come from ``sqlite_functions``."""

    kind_names = {"number": ("integer", "real"), "string": ("text",), "bool": ("true", "false"),
                  "null": ("null",), "array": ("array",), "object": ("object",)}

    def path(self, c, path: JsonPath) -> str:
        return c.render_literal_value(_dollar_path(path), sa.String())

    def kind(self, c, doc: str, path: JsonPath) -> str:
        return f"json_type({doc}, {self.path(c, path)})"

    def scalar(self, c, doc: str, path: JsonPath, kind: str) -> str:
        p = self.path(c, path)
        if kind == "bool":
            return f"(CASE json_type({doc}, {p}) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"
        names = in_list(self.kind_names[kind])
        return f"(CASE WHEN json_type({doc}, {p}) IN {names} THEN json_extract({doc}, {p}) END)"

    def text(self, c, doc: str, path: JsonPath) -> str:
        return f"({doc} -> {self.path(c, path)})"

    def value(self, c, doc: str, path: JsonPath) -> str:
        return f"({doc} -> {self.path(c, path)})"

    def parse(self, text: str) -> str:
        return text

    def length(self, c, doc: str, path: JsonPath) -> str:
        p = self.path(c, path)
        return f"(CASE WHEN json_type({doc}, {p}) = 'array' THEN json_array_length({doc}, {p}) END)"

    def equals(self, c, doc: str, path: JsonPath, value: str) -> str:
        return f"df_json_equal({doc} -> {self.path(c, path)}, {value})"

    def any_element(self, c, doc: str, path: JsonPath, alias: str, predicate: str) -> str:
        p = self.path(c, path)
        return (f"(json_type({doc}, {p}) = 'array' AND EXISTS (SELECT 1 FROM json_each({doc}, {p}) "
                f"AS {alias} WHERE {predicate}))")

    def element(self, c, doc: str, alias: str) -> str:
        return f"({doc} -> {alias}.fullkey)"

    def regex(self, value: str, pattern: str) -> str:
        return f"df_regexp({pattern}, {value})"

    def lower(self, value: str) -> str:
        return f"df_lower({value})"

    def numeric(self, value: str) -> str:
        # Decimal columns hold the text of the value on SQLite (ExactDecimal): compare as numbers.
        return f"CAST({value} AS REAL)"

    def binary(self, value: str) -> str:
        return value

    def double(self, value: str) -> str:
        return f"CAST({value} AS REAL)"

    def order(self, value: str, descending: bool) -> str:
        return f"{value} DESC" if descending else f"{value} ASC"  # NULLs first ascending already

    def json_element(self, value: str, encoding: str) -> str:
        # NULL becomes 'null' here; df_json_agg leaves out 'null' elements.
        return {"json": f"json({value})", "plain": f"json_quote({value})",
                "text": f"json_quote(CAST({value} AS TEXT))", "hex": f"json_quote(hex({value}))"}[encoding]

    def array_agg(self, c, element: str, keys: Sequence[tuple[str, bool]], distinct: bool) -> str:
        # SQLite 3.40 has no ORDER BY inside aggregates: df_json_agg sorts by the keys it is given.
        flags = "".join("d" if desc else "a" for _, desc in keys) + ("u" if distinct else "")
        args = ", ".join([element, c.render_literal_value(flags, sa.String()), *(k for k, _ in keys)])
        return f"COALESCE(df_json_agg({args}), '[]')"  # an aggregate over no rows is NULL


class PostgresSQL:
    """PostgreSQL: JSONB operators, ARE regexes, NULL ordering made explicit."""

    kind_names = {"number": ("number",), "string": ("string",), "bool": ("boolean",),
                  "null": ("null",), "array": ("array",), "object": ("object",)}

    def path(self, c, path: JsonPath) -> str:
        return c.render_literal_value("{" + ",".join(f'"{p}"' for p in path) + "}", sa.String())

    def _at(self, c, doc: str, path: JsonPath) -> str:
        return f"({doc} #> {self.path(c, path)})" if path else doc

    def kind(self, c, doc: str, path: JsonPath) -> str:
        return f"jsonb_typeof({self._at(c, doc, path)})"

    def scalar(self, c, doc: str, path: JsonPath, kind: str) -> str:
        x = self._at(c, doc, path)
        then = {"number": f"CAST({x} AS NUMERIC)", "bool": f"CAST({x} AS BOOLEAN)",
                "string": f"({doc} #>> {self.path(c, path)})"}[kind]
        return f"(CASE WHEN jsonb_typeof({x}) = '{self.kind_names[kind][0]}' THEN {then} END)"

    def text(self, c, doc: str, path: JsonPath) -> str:
        return f"CAST({self._at(c, doc, path)} AS TEXT)"

    def value(self, c, doc: str, path: JsonPath) -> str:
        return self._at(c, doc, path)

    def parse(self, text: str) -> str:
        return f"CAST({text} AS JSONB)"

    def length(self, c, doc: str, path: JsonPath) -> str:
        x = self._at(c, doc, path)
        return f"(CASE WHEN jsonb_typeof({x}) = 'array' THEN jsonb_array_length({x}) END)"

    def equals(self, c, doc: str, path: JsonPath, value: str) -> str:
        return f"({self._at(c, doc, path)} = CAST({value} AS JSONB))"

    def any_element(self, c, doc: str, path: JsonPath, alias: str, predicate: str) -> str:
        x = self._at(c, doc, path)
        return (f"EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({x}) = 'array' "
                f"THEN {x} END) AS {alias}(value) WHERE {predicate})")

    def element(self, c, doc: str, alias: str) -> str:
        return f"{alias}.value"

    def regex(self, value: str, pattern: str) -> str:
        return f"({value} ~ {pattern})"

    def lower(self, value: str) -> str:
        return f"lower({value})"

    def numeric(self, value: str) -> str:
        return value

    def binary(self, value: str) -> str:
        # MongoDB compares strings by code point; a database collation may not (en_US: 'a' < 'B').
        return f'({value} COLLATE "C")'

    def double(self, value: str) -> str:
        return f"CAST({value} AS DOUBLE PRECISION)"

    def order(self, value: str, descending: bool) -> str:
        # PostgreSQL sorts NULLs last ascending; MongoDB, SQLite and MySQL put them first.
        return f"{value} DESC NULLS LAST" if descending else f"{value} ASC NULLS FIRST"

    def json_element(self, value: str, encoding: str) -> str:
        return {"json": f"NULLIF({value}, 'null'::jsonb)", "plain": value, "text": f"CAST({value} AS TEXT)",
                "hex": f"encode({value}, 'hex')"}[encoding]

    def array_agg(self, c, element: str, keys: Sequence[tuple[str, bool]], distinct: bool) -> str:
        order = ", ".join(self.order(k, desc) for k, desc in keys)
        body = f"DISTINCT {element}" if distinct else f"{element} ORDER BY {order}" if order else element
        return f"COALESCE(jsonb_agg({body}) FILTER (WHERE {element} IS NOT NULL), '[]'::jsonb)"


class MySQLSQL:
    """MySQL/MariaDB: JSON columns are text; JSON_EXTRACT returns JSON text."""

    kind_names = {"number": ("INTEGER", "DOUBLE", "DECIMAL", "UNSIGNED INTEGER"), "string": ("STRING",),
                  "bool": ("BOOLEAN",), "null": ("NULL",), "array": ("ARRAY",), "object": ("OBJECT",)}

    def path(self, c, path: JsonPath) -> str:
        return c.render_literal_value(_dollar_path(path), sa.String())

    def _at(self, c, doc: str, path: JsonPath) -> str:
        return f"JSON_EXTRACT({doc}, {self.path(c, path)})"

    def kind(self, c, doc: str, path: JsonPath) -> str:
        return f"JSON_TYPE({self._at(c, doc, path)})"

    def scalar(self, c, doc: str, path: JsonPath, kind: str) -> str:
        x = self._at(c, doc, path)
        test = f"JSON_TYPE({x}) IN {in_list(self.kind_names[kind])}"
        then = {"number": f"CAST({x} AS DOUBLE)", "string": f"(JSON_UNQUOTE({x}) COLLATE utf8mb4_nopad_bin)",
                "bool": f"({x} = 'true')"}[kind]
        return f"(CASE WHEN {test} THEN {then} END)"

    def text(self, c, doc: str, path: JsonPath) -> str:
        return f"JSON_COMPACT({self._at(c, doc, path)})"

    def value(self, c, doc: str, path: JsonPath) -> str:
        return self._at(c, doc, path)

    def parse(self, text: str) -> str:
        return text

    def length(self, c, doc: str, path: JsonPath) -> str:
        x = self._at(c, doc, path)
        return f"(CASE WHEN JSON_TYPE({x}) = 'ARRAY' THEN JSON_LENGTH({x}) END)"

    def equals(self, c, doc: str, path: JsonPath, value: str) -> str:
        return f"JSON_EQUALS({self._at(c, doc, path)}, {value})"

    def any_element(self, c, doc: str, path: JsonPath, alias: str, predicate: str) -> str:
        p = c.render_literal_value(_dollar_path(path) + "[*]", sa.String())
        return (f"(JSON_TYPE({self._at(c, doc, path)}) = 'ARRAY' AND EXISTS (SELECT 1 FROM "
                f"JSON_TABLE({doc}, {p} COLUMNS (v JSON PATH '$')) AS {alias} WHERE {predicate}))")

    def element(self, c, doc: str, alias: str) -> str:
        return f"{alias}.v"

    def regex(self, value: str, pattern: str) -> str:
        return f"({value} REGEXP {pattern})"

    def lower(self, value: str) -> str:
        return f"LOWER({value})"

    def numeric(self, value: str) -> str:
        return value

    def binary(self, value: str) -> str:
        return value  # columns use the NO PAD binary collation (schema/tables.py); so do JSON strings (scalar)

    def double(self, value: str) -> str:
        # MariaDB has no CAST(... AS DOUBLE) before 10.4.? and AVG of integers is DECIMAL cut at
        # div_precision_increment (4) places; adding a DOUBLE literal makes the value a DOUBLE.
        return f"({value} + 0E0)"

    def order(self, value: str, descending: bool) -> str:
        return f"{value} DESC" if descending else f"{value} ASC"

    def json_element(self, value: str, encoding: str) -> str:
        # JSON text of the value, NULL for NULL and for JSON null (GROUP_CONCAT leaves NULLs out).
        return {"json": f"NULLIF(JSON_COMPACT({value}), 'null')",
                "plain": f"NULLIF(JSON_EXTRACT(JSON_ARRAY({value}), '$[0]'), 'null')",
                "text": f"JSON_QUOTE(CAST({value} AS CHAR))", "hex": f"JSON_QUOTE(HEX({value}))"}[encoding]

    def array_agg(self, c, element: str, keys: Sequence[tuple[str, bool]], distinct: bool) -> str:
        # JSON_ARRAYAGG cannot leave NULLs out, GROUP_CONCAT does. Both are cut at
        # group_concat_max_len with only a warning: then return text that is not JSON, so that the
        # cut cannot pass for a shorter array. GROUP_CONCAT's ORDER BY sorts NULL as if it were 0
        # (MariaDB 10.11), so NULLs are placed explicitly.
        order = ", ".join(f"({k} IS NULL) {'ASC' if desc else 'DESC'}, {self.order(k, desc)}" for k, desc in keys)
        body = f"DISTINCT {element}" if distinct else f"{element} ORDER BY {order}" if order else element
        joined = f"CONCAT('[', COALESCE(GROUP_CONCAT({body} SEPARATOR ','), ''), ']')"
        count = f"COUNT(DISTINCT {element})" if distinct else f"COUNT({element})"
        return f"(CASE WHEN JSON_LENGTH({joined}) = {count} THEN {joined} ELSE 'truncated by group_concat_max_len' END)"


DIALECTS = {"sqlite": SQLiteSQL(), "postgresql": PostgresSQL(), "mysql": MySQLSQL(), "mariadb": MySQLSQL()}


def sql_for(compiler) -> Any:
    """The spelling class for the dialect being compiled."""
    try:
        return DIALECTS[compiler.dialect.name]
    except KeyError:
        raise NotImplementedError(
            f"DataFlow queries support sqlite, postgresql and mysql/mariadb, not {compiler.dialect.name}"
        ) from None


def _dollar_path(path: JsonPath) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f'."{p}"' for p in path)


def in_list(names: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{n}'" for n in names) + ")"
