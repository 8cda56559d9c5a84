"""SQL constructs whose spelling differs per database.

A compiled filter or pipeline does not know which database will run it, so every dialect-specific
piece is a small SQLAlchemy construct here, compiled late by ``@compiles``. Each database's
spelling lives in one class in ``dialects.py`` (``SQLiteSQL``, ``PostgresSQL``, ``MySQLSQL``): generic
code never branches on a dialect's name.

JSON values are addressed as (document, path): the document is a JSON column or an array element,
the path a tuple of object keys (str) and array indexes (int). Typed accessors return SQL NULL
unless the value there has the asked-for JSON kind, which gives MongoDB's type bracketing
(``{"$gt": 3}`` only compares numbers) and makes missing and mistyped values compare as unknown.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal as T
from sqlalchemy.types import TypeDecorator

from . import regex
from .dialects import JsonPath, in_list
from .dialects import sql_for as _sql

# -- the constructs ----------------------------------------------------------------------------

class _Construct(ColumnElement):
    """Base: children come from ``_traverse_internals`` (for caching, cloning and binds)."""

    _traverse_internals: list = []

    @property
    def _from_objects(self):
        return list(itertools.chain(*[c._from_objects for c in self.get_children()]))


class JsonKind(_Construct):
    """The database's name for the JSON kind at ``path`` (NULL when missing)."""

    __visit_name__ = "df_json_kind"
    _traverse_internals = [("doc", T.dp_clauseelement), ("path", T.dp_plain_obj)]

    def __init__(self, doc, path: JsonPath = ()) -> None:
        self.doc, self.path = doc, tuple(path)
        self.type = sa.String()


class JsonIs(_Construct):
    """True when the value at ``path`` has one of ``kinds``; ``missing=True`` also accepts absence."""

    __visit_name__ = "df_json_is"
    _traverse_internals = [("doc", T.dp_clauseelement), ("path", T.dp_plain_obj), ("kinds", T.dp_plain_obj),
                           ("missing", T.dp_boolean)]

    def __init__(self, doc, path: JsonPath, kinds: Sequence[str], *, missing: bool = False) -> None:
        self.doc, self.path, self.kinds, self.missing = doc, tuple(path), tuple(kinds), missing
        self.type = sa.Boolean()


class JsonScalar(_Construct):
    """The number, string or boolean at ``path``; NULL when missing or of another kind."""

    __visit_name__ = "df_json_scalar"
    _traverse_internals = [("doc", T.dp_clauseelement), ("path", T.dp_plain_obj), ("kind", T.dp_string)]
    _types = {"number": sa.Float, "string": sa.String, "bool": sa.Boolean}

    def __init__(self, doc, path: JsonPath, kind: str) -> None:
        self.doc, self.path, self.kind = doc, tuple(path), kind
        self.type = self._types[kind]()


class JsonText(_Construct):
    """The JSON text of the value at ``path`` (compact); NULL when missing."""

    __visit_name__ = "df_json_text"
    _traverse_internals = [("doc", T.dp_clauseelement), ("path", T.dp_plain_obj)]

    def __init__(self, doc, path: JsonPath = ()) -> None:
        self.doc, self.path = doc, tuple(path)
        self.type = sa.String()


class JsonValue(_Construct):
    """The JSON value at ``path`` as a JSON document (JSON text; JSONB on PostgreSQL)."""

    __visit_name__ = "df_json_value"
    _traverse_internals = [("doc", T.dp_clauseelement), ("path", T.dp_plain_obj)]

    def __init__(self, doc, path: JsonPath = ()) -> None:
        self.doc, self.path = doc, tuple(path)
        self.type = sa.JSON()


class JsonParse(_Construct):
    """JSON text (from ``JsonText``) as a JSON document again."""

    __visit_name__ = "df_json_parse"
    _traverse_internals = [("value", T.dp_clauseelement)]

    def __init__(self, value) -> None:
        self.value = value
        self.type = sa.JSON()


class JsonLength(_Construct):
    """The length of the array at ``path``; NULL when it is not an array."""

    __visit_name__ = "df_json_length"
    _traverse_internals = [("doc", T.dp_clauseelement), ("path", T.dp_plain_obj)]

    def __init__(self, doc, path: JsonPath = ()) -> None:
        self.doc, self.path = doc, tuple(path)
        self.type = sa.Integer()


class JsonEquals(_Construct):
    """The value at ``path`` equals the JSON document ``value`` (JSON text), ignoring key order."""

    __visit_name__ = "df_json_equals"
    _traverse_internals = [("doc", T.dp_clauseelement), ("path", T.dp_plain_obj), ("value", T.dp_clauseelement)]

    def __init__(self, doc, path: JsonPath, value) -> None:
        self.doc, self.path, self.value = doc, tuple(path), value
        self.type = sa.Boolean()


class AnyElement(_Construct):
    """Some element of the array at ``path`` satisfies ``predicate`` (built on ``ElementDoc(alias)``)."""

    __visit_name__ = "df_any_element"
    _traverse_internals = [("doc", T.dp_clauseelement), ("path", T.dp_plain_obj), ("alias", T.dp_string),
                           ("predicate", T.dp_clauseelement)]

    def __init__(self, doc, path: JsonPath, alias: str, predicate) -> None:
        self.doc, self.path, self.alias, self.predicate = doc, tuple(path), alias, predicate
        self.type = sa.Boolean()


class ElementDoc(_Construct):
    """One array element as a JSON document, inside ``AnyElement(..., alias, ...)``."""

    __visit_name__ = "df_element_doc"
    _traverse_internals = [("doc", T.dp_clauseelement), ("alias", T.dp_string)]

    def __init__(self, doc, alias: str) -> None:
        self.doc, self.alias = doc, alias
        self.type = sa.JSON()

    @property
    def _from_objects(self):
        return []


class RegexPattern(TypeDecorator):
    """A bound regex: the subset's pattern, rendered for the database when bound."""

    impl = sa.String
    cache_ok = True

    def __init__(self, insensitive: bool = False) -> None:
        super().__init__()
        self.insensitive = insensitive

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return regex.render(value, self.insensitive, regex.DIALECT_FLAVOR.get(dialect.name, "python"))


class RegexMatch(_Construct):
    """``value`` matches the bound subset ``pattern`` (a search, as in MongoDB)."""

    __visit_name__ = "df_regex_match"
    _traverse_internals = [("value", T.dp_clauseelement), ("pattern", T.dp_clauseelement)]

    def __init__(self, value, pattern) -> None:
        self.value, self.pattern = value, pattern
        self.type = sa.Boolean()


class _Unary(_Construct):
    _traverse_internals = [("value", T.dp_clauseelement)]

    def __init__(self, value, type_=None) -> None:
        self.value = value
        self.type = type_ if type_ is not None else value.type


class Lower(_Unary):
    """Lower-case a string the same way on every database (SQLite's lower() is ASCII-only)."""

    inherit_cache = True

    __visit_name__ = "df_lower"


class NumericValue(_Unary):
    """A Decimal column as a number (text on SQLite, see ``ExactDecimal``)."""

    inherit_cache = True

    __visit_name__ = "df_numeric"


class AsDouble(_Unary):
    """A number as an 8-byte double (so AVG is a double everywhere, not MariaDB's 4-place DECIMAL)."""

    inherit_cache = True

    __visit_name__ = "df_double"


class BinaryCollate(_Unary):
    """A string compared and sorted by code point, as MongoDB does."""

    inherit_cache = True

    __visit_name__ = "df_binary"


class OrderKey(_Construct):
    """One ORDER BY item, NULLs first ascending and last descending on every database."""

    __visit_name__ = "df_order_key"
    _traverse_internals = [("value", T.dp_clauseelement), ("descending", T.dp_boolean),
                           ("nullable", T.dp_boolean)]

    def __init__(self, value, descending: bool = False, *, nullable: bool = True) -> None:
        # nullable=False (a NOT NULL column): no NULLS FIRST/LAST, so an index on the column serves the sort.
        self.value, self.descending, self.nullable = value, descending, nullable
        self.type = value.type


class JsonElement(_Construct):
    """A value ready to go into a JSON array: ``encoding`` is json, plain, text or hex."""

    __visit_name__ = "df_json_element"
    _traverse_internals = [("value", T.dp_clauseelement), ("encoding", T.dp_string)]

    def __init__(self, value, encoding: str) -> None:
        self.value, self.encoding = value, encoding
        self.type = sa.JSON()


class JsonArrayAgg(_Construct):
    """Aggregate ``element`` into a JSON array, in the order of ``keys`` (OrderKey list)."""

    __visit_name__ = "df_json_array_agg"
    _traverse_internals = [("element", T.dp_clauseelement), ("keys", T.dp_clauseelement_tuple),
                           ("distinct", T.dp_boolean)]
    # An aggregate: it must not be mistaken for a plain column by GROUP BY logic.
    _is_aggregate = True

    def __init__(self, element, keys: Sequence[OrderKey] = (), *, distinct: bool = False) -> None:
        self.element, self.keys, self.distinct = element, tuple(keys), distinct
        self.type = sa.String()  # JSON text (a list already on PostgreSQL): decoded by the pipeline


# -- compilation -------------------------------------------------------------------------------

@compiles(JsonKind)
def _json_kind(el, c, **kw):
    return _sql(c).kind(c, c.process(el.doc, **kw), el.path)


@compiles(JsonIs)
def _json_is(el, c, **kw):
    sql = _sql(c)
    kind = sql.kind(c, c.process(el.doc, **kw), el.path)
    names = in_list([n for k in el.kinds for n in sql.kind_names[k]])
    if el.missing:
        return f"({kind} IS NULL OR {kind} IN {names})" if el.kinds else f"({kind} IS NULL)"
    return f"({kind} IN {names})"


@compiles(JsonScalar)
def _json_scalar(el, c, **kw):
    return _sql(c).scalar(c, c.process(el.doc, **kw), el.path, el.kind)


@compiles(JsonText)
def _json_text(el, c, **kw):
    return _sql(c).text(c, c.process(el.doc, **kw), el.path)


@compiles(JsonValue)
def _json_value(el, c, **kw):
    return _sql(c).value(c, c.process(el.doc, **kw), el.path)


@compiles(JsonParse)
def _json_parse(el, c, **kw):
    return _sql(c).parse(c.process(el.value, **kw))


@compiles(JsonLength)
def _json_length(el, c, **kw):
    return _sql(c).length(c, c.process(el.doc, **kw), el.path)


@compiles(JsonEquals)
def _json_equals(el, c, **kw):
    return _sql(c).equals(c, c.process(el.doc, **kw), el.path, c.process(el.value, **kw))


@compiles(AnyElement)
def _any_element(el, c, **kw):
    return _sql(c).any_element(c, c.process(el.doc, **kw), el.path, el.alias, c.process(el.predicate, **kw))


@compiles(ElementDoc)
def _element_doc(el, c, **kw):
    return _sql(c).element(c, c.process(el.doc, **kw), el.alias)


@compiles(RegexMatch)
def _regex_match(el, c, **kw):
    return _sql(c).regex(c.process(el.value, **kw), c.process(el.pattern, **kw))


@compiles(Lower)
def _lower(el, c, **kw):
    return _sql(c).lower(c.process(el.value, **kw))


@compiles(NumericValue)
def _numeric(el, c, **kw):
    return _sql(c).numeric(c.process(el.value, **kw))


@compiles(AsDouble)
def _double(el, c, **kw):
    return _sql(c).double(c.process(el.value, **kw))


@compiles(BinaryCollate)
def _binary(el, c, **kw):
    return _sql(c).binary(c.process(el.value, **kw))


@compiles(OrderKey)
def _order_key(el, c, **kw):
    value = c.process(el.value, **kw)
    if not el.nullable:
        return f"{value} DESC" if el.descending else f"{value} ASC"
    return _sql(c).order(value, el.descending)


@compiles(JsonElement)
def _json_element(el, c, **kw):
    return _sql(c).json_element(c.process(el.value, **kw), el.encoding)


@compiles(JsonArrayAgg)
def _json_array_agg(el, c, **kw):
    keys = [(c.process(k.value, **kw), k.descending) for k in el.keys]
    return _sql(c).array_agg(c, c.process(el.element, **kw), keys, el.distinct)
