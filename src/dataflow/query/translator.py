"""Walk a filter template and build its SQLAlchemy clause and the binders of its values.

The semantics are documented in ``filters.py``; ``Translator`` is where they become SQL. A value
position of the template holds a ``shapes.Slot``; each becomes a named bind parameter whose value
a binder computes (and validates) from the filter's value at every call, so a cached translation
serves every filter of the same shape.
"""

from __future__ import annotations

import itertools
import operator
from decimal import Decimal
from typing import Any, Callable, Mapping

import sqlalchemy as sa

from ..errors import FilterError
from . import regex, shapes
from .constructs import (AnyElement, BinaryCollate, ElementDoc, JsonEquals, JsonIs, JsonKind, JsonLength,
                         JsonScalar, Lower, NumericValue, RegexMatch, RegexPattern)
from .fields import (ElementFields, Target, checked_string, coerce, json_document, json_kind, json_path,
                     json_scalar)
from .shapes import Slot, value_of

COMPARE = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
FIELD_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$regex", "$options",
                   "$like", "$ilike", "$between", "$not", "$contains", "$size", "$all", "$elemMatch")
SIZE_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
_BIND_TYPES = {"number": None, "string": sa.String, "bool": sa.Boolean}

_entry_ids = itertools.count()


class Translator:
    """Walks one filter template and builds its clause and binders."""

    def __init__(self, fields: Any, *, prefix: str | None = None) -> None:
        self.fields = fields
        self.prefix = prefix or f"df_f{next(_entry_ids)}_"
        self.binders: list[tuple[int, Callable]] = []
        self.count = 0
        self.aliases = 0

    # parameters
    def _param(self, type_: Any = None, expanding: bool = False) -> tuple[str, Any]:
        name = f"{self.prefix}{self.count}"
        self.count += 1
        return name, sa.bindparam(name, type_=type_() if isinstance(type_, type) else type_, expanding=expanding)

    def bound(self, slot: Slot, convert: Callable[[Any], Any], type_: Any = None, expanding: bool = False):
        """A parameter whose value is ``convert(value of slot)`` at every bind."""
        name, bp = self._param(type_, expanding)

        def binder(value, params, name=name, convert=convert):
            params[name] = convert(value)
        self.binders.append((slot.index, binder))
        return bp

    # filters
    def filter(self, f: Any, path: str, fields: Any = None) -> Any:
        fields = fields or self.fields
        if not isinstance(f, Mapping):
            raise FilterError(f"a filter must be a dict, got {type(f).__name__}", path=path)
        clauses = []
        for key, value in f.items():
            p = f"{path}.{key}"
            if key in shapes.LOGICAL:
                if not isinstance(value, list) or not value:
                    raise FilterError(f"{key} needs a non-empty list of filters", path=p)
                subs = [self.filter(x, f"{p}[{i}]", fields) for i, x in enumerate(value)]
                if key == "$and":
                    clauses.append(sa.and_(*subs))
                elif key == "$or":
                    clauses.append(sa.or_(*subs))
                else:
                    clauses.append(negate(sa.or_(*subs)))
            elif key == "$not":
                clauses.append(negate(self.filter(value, p, fields)))
            elif isinstance(key, str) and key.startswith("$"):
                raise FilterError(f"unknown top-level operator {key}; use $and, $or, $nor, $not, or a field name",
                                  path=p)
            else:
                clauses.append(self.field(fields.resolve(key, p), value, p))
        return sa.and_(*clauses) if clauses else sa.true()

    def field(self, target: Target, value: Any, path: str) -> Any:
        if shapes.is_operator_dict(value):
            if "$options" in value and "$regex" not in value:
                raise FilterError("$options is only valid together with $regex", path=f"{path}.$options")
            return sa.and_(*[self.operator(target, op, x, f"{path}.{op}", value)
                             for op, x in value.items() if op != "$options"])
        raw = value_of(value)
        if isinstance(raw, dict) and any(isinstance(k, str) and k.startswith("$") for k in raw) \
                and not shapes.is_date_literal(raw):
            raise FilterError("a condition mixes operators ($...) with plain keys", path=path)
        return self.eq(target, value, path)

    def operator(self, t: Target, op: str, x: Any, path: str, siblings: Mapping) -> Any:
        if op == "$eq":
            return self.eq(t, x, path)
        if op == "$ne":
            return self.ne(t, x, path)
        if op in COMPARE:
            return self.compare(t, op, x, path)
        if op in ("$in", "$nin"):
            return self.in_(t, x, path, negated=op == "$nin")
        if op == "$exists":
            if not (isinstance(x, int) and x in (0, 1)):
                raise FilterError(f"$exists needs true or false, got {type(value_of(x)).__name__}", path=path)
            value = JsonKind(t.expr, t.path) if t.is_json else t.expr
            return value.is_not(None) if x else value.is_(None)
        if op == "$regex":
            insensitive = regex.check_options(siblings.get("$options", ""), path.rsplit(".", 1)[0] + ".$options")
            return self.regex(t, x, path, insensitive)
        if op in ("$like", "$ilike"):
            return self.like(t, x, path, insensitive=op == "$ilike")
        if op == "$between":
            pair = value_of(x) if not isinstance(x, list) else x
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise FilterError("$between needs a list [low, high]", path=path)
            return sa.and_(self.compare(t, "$gte", pair[0], f"{path}[0]"),
                           self.compare(t, "$lte", pair[1], f"{path}[1]"))
        if op == "$not":
            if not shapes.is_operator_dict(x):
                raise FilterError("$not needs an operator expression such as {'$gt': 5}", path=path)
            return negate(self.field(t, x, path))
        if op == "$contains":
            return self.contains(t, x, path)
        if op == "$size":
            return self.size(t, x, path)
        if op == "$all":
            return self.all(t, x, path)
        if op == "$elemMatch":
            return self.elem_match(t, x, path)
        raise FilterError(f"unknown operator {op}; supported: {', '.join(FIELD_OPERATORS)}", path=path)

    # equality
    def is_null(self, t: Target) -> Any:
        if t.is_json:  # missing, SQL NULL or JSON null
            return JsonIs(t.expr, t.path, ["null"], missing=True)
        return t.expr.is_(None)

    def eq(self, t: Target, x: Any, path: str) -> Any:
        if x is None:
            return self.is_null(t)
        if not t.is_json:
            if isinstance(x.value, (dict, list)):
                raise FilterError(f"cannot compare a {t.pytype.__name__} field with a {type(x.value).__name__}",
                                  path=path)
            return t.expr == self.bound(x, _coercer(t.pytype, path), _bind_type(t, [x.value]))
        kind = json_kind(x.value)
        if kind == "json":
            return JsonEquals(t.expr, t.path, self.bound(x, lambda v: json_document(v, path), sa.String))
        if kind == "unsupported":
            raise FilterError(f"cannot compare a JSON value with {type(x.value).__name__}", path=path)
        return JsonScalar(t.expr, t.path, kind) == self.bound(x, lambda v: json_scalar(v, path), _BIND_TYPES[kind])

    def ne(self, t: Target, x: Any, path: str) -> Any:
        if not t.is_json:
            if x is None:
                return t.expr.is_not(None)
            bp = self.bound(x, _coercer(t.pytype, path), _bind_type(t, [x.value]))
            return sa.or_(t.expr != bp, t.expr.is_(None))
        return negate(self.eq(t, x, path))

    def compare(self, t: Target, op: str, x: Any, path: str) -> Any:
        if x is None:
            # MongoDB: {$gte: null} and {$lte: null} match null/missing; $gt/$lt null match nothing.
            return self.is_null(t) if op in ("$gte", "$lte") else sa.false()
        fn = COMPARE[op]
        if t.is_json:
            kind = json_kind(x.value)
            if kind not in _BIND_TYPES:
                raise FilterError(f"{op} compares numbers, strings, dates or booleans, got "
                                  f"{type(x.value).__name__}", path=path)
            left = JsonScalar(t.expr, t.path, kind)
            if kind == "string":
                left = BinaryCollate(left)
            return fn(left, self.bound(x, lambda v: json_scalar(v, path), _BIND_TYPES[kind]))
        left, type_ = t.expr, _bind_type(t, [x.value])
        if t.pytype is str:
            left = BinaryCollate(left)
        elif t.pytype is Decimal:
            left, type_ = NumericValue(left, sa.Numeric(asdecimal=True)), sa.Numeric(asdecimal=True)
        return fn(left, self.bound(x, _coercer(t.pytype, path), type_))

    def in_(self, t: Target, x: Any, path: str, *, negated: bool) -> Any:
        op = "$nin" if negated else "$in"
        items = value_of(x)
        if not isinstance(items, list):
            raise FilterError(f"{op} needs a list of values, got {type(items).__name__}", path=path)
        has_none = any(e is None for e in items)
        if not t.is_json:
            within = self._typed_in(t, x, items, path, op) if any(e is not None for e in items) else None
            if not negated:
                parts = [p for p in (within, t.expr.is_(None) if has_none else None) if p is not None]
                return sa.or_(*parts) if parts else sa.false()
            # NULL is a missing field: NOT IN matches it, unless None is in the list.
            if within is None:
                return t.expr.is_not(None) if has_none else sa.true()
            if has_none:
                return sa.and_(sa.not_(within), t.expr.is_not(None))
            return sa.or_(sa.not_(within), t.expr.is_(None))
        parts = [self.is_null(t)] if has_none else []
        # JSON: one IN per kind of value, and an equality per object or array listed.
        kinds = {json_kind(e) for e in items} - {"null"}
        if "unsupported" in kinds:
            raise FilterError(f"{op} values must be JSON values", path=path)
        for kind in ("number", "string", "bool"):
            if kind in kinds:
                def convert(values, kind=kind):
                    return [json_scalar(e, f"{path}[{i}]") for i, e in enumerate(values)
                            if json_kind(e) == kind]
                bp = self.bound(x, convert, _BIND_TYPES[kind], expanding=True)
                parts.append(JsonScalar(t.expr, t.path, kind).in_(bp))
        n_json = sum(1 for e in items if json_kind(e) == "json")
        for k in range(n_json):
            def pick(values, k=k):
                docs = [e for e in values if json_kind(e) == "json"]
                return json_document(docs[k], path)
            parts.append(JsonEquals(t.expr, t.path, self.bound(x, pick, sa.String)))
        clause = sa.or_(*parts) if parts else sa.false()
        return negate(clause) if negated else clause

    def _typed_in(self, t: Target, x: Any, items: list, path: str, op: str) -> Any:
        if any(isinstance(e, (dict, list)) for e in items):
            raise FilterError(f"{op} on a {t.pytype.__name__} field takes scalar values", path=path)
        pytype = t.pytype

        def convert(values):
            return [coerce(pytype, e, f"{path}[{i}]") for i, e in enumerate(values) if e is not None]
        return t.expr.in_(self.bound(x, convert, _bind_type(t, items), expanding=True))

    # strings
    def _string(self, t: Target, op: str, path: str) -> Any:
        if t.is_json:
            return JsonScalar(t.expr, t.path, "string")
        if t.pytype is not str:
            raise FilterError(f"{op} needs a string field; {t.name!r} is {t.pytype.__name__}", path=path)
        return t.expr

    def regex(self, t: Target, x: Any, path: str, insensitive: bool) -> Any:
        value = self._string(t, "$regex", path)
        if x is None or not isinstance(x.value, str):
            raise FilterError("$regex needs a string pattern", path=path)

        def check(pattern):
            if not isinstance(pattern, str):
                raise FilterError("$regex needs a string pattern", path=path)
            regex.parse(pattern, path)
            return pattern
        return RegexMatch(value, self.bound(x, check, RegexPattern(insensitive)))

    def like(self, t: Target, x: Any, path: str, *, insensitive: bool) -> Any:
        op = "$ilike" if insensitive else "$like"
        value = self._string(t, op, path)
        if x is None or not isinstance(x.value, str):
            raise FilterError(f"{op} needs a string pattern", path=path)
        pattern = self.bound(x, _like_checker(op, path), sa.String)
        if insensitive:
            return Lower(value).like(Lower(pattern), escape="\\")
        return value.like(pattern, escape="\\")

    # JSON arrays and objects
    def any_element(self, doc: Any, path: tuple, build: Callable[[Target], Any]) -> Any:
        alias = f"df_e{self.aliases}"
        self.aliases += 1
        element = Target("element", ElementDoc(doc, alias), None, ())
        return AnyElement(doc, path, alias, build(element))

    def _json_target(self, t: Target, op: str, path: str) -> Target:
        if not t.is_json:
            raise FilterError(f"{op} needs a JSON (dict or list) field; {t.name!r} is {t.pytype.__name__}",
                              path=path)
        return t

    def contains(self, t: Target, x: Any, path: str) -> Any:
        if not t.is_json and t.pytype is str:
            if x is None or not isinstance(x.value, str):
                raise FilterError("$contains on a string field needs a string", path=path)
            return t.expr.like(self.bound(x, _substring(path), sa.String), escape="\\")
        t = self._json_target(t, "$contains", path)
        return self._contains(t.expr, t.path, x, path)

    def _contains(self, doc: Any, at: tuple, x: Any, path: str, *, top: bool = True) -> Any:
        if isinstance(x, dict) and top:
            # On an array, a sub-object is contained by an element that contains it.
            return sa.or_(self._contains(doc, at, x, path, top=False),
                          self.any_element(doc, at, lambda el: self._contains(el.expr, (), x, path, top=False)))
        if isinstance(x, dict):
            conds = [JsonIs(doc, at, ["object"])]
            for key, sub in x.items():
                if not isinstance(key, str):
                    raise FilterError(f"object keys must be strings, got {type(key).__name__}", path=path)
                conds.append(self._contains_value(doc, at + json_path(key, path=f"{path}.{key}"), sub,
                                                  f"{path}.{key}"))
            return sa.and_(*conds)
        if isinstance(x, list):
            conds = [JsonIs(doc, at, ["array"])]
            for i, item in enumerate(x):
                conds.append(self.any_element(
                    doc, at, lambda el, item=item, i=i: self._element_contains(el, item, f"{path}[{i}]")))
            return sa.and_(*conds)
        return self.any_element(doc, at, lambda el: self.eq(el, x, path))

    def _contains_value(self, doc: Any, at: tuple, sub: Any, path: str) -> Any:
        if isinstance(sub, (dict, list)):
            return self._contains(doc, at, sub, path, top=False)
        return self.eq(Target("value", doc, None, at), sub, path)

    def _element_contains(self, el: Target, item: Any, path: str) -> Any:
        if isinstance(item, (dict, list)):
            return self._contains(el.expr, (), item, path, top=False)
        return self.eq(el, item, path)

    def size(self, t: Target, x: Any, path: str) -> Any:
        t = self._json_target(t, "$size", path)
        length = JsonLength(t.expr, t.path)
        if isinstance(x, dict):
            conds = []
            for op, n in x.items():
                if op not in SIZE_OPERATORS:
                    raise FilterError(f"$size takes a number or one of {', '.join(SIZE_OPERATORS)}",
                                      path=f"{path}.{op}")
                conds.append(self._size_compare(length, op, n, f"{path}.{op}"))
            return sa.and_(*conds)
        return self._size_compare(length, "$eq", x, path)

    def _size_compare(self, length: Any, op: str, n: Any, path: str) -> Any:
        if n is None or isinstance(n.value, bool) or not isinstance(n.value, int):
            raise FilterError(f"$size needs a whole number, got {type(value_of(n)).__name__}", path=path)
        bp = self.bound(n, _count_checker(path), sa.Integer)
        fns = {"$eq": operator.eq, "$ne": operator.ne, **COMPARE}
        return fns[op](length, bp)

    def all(self, t: Target, x: Any, path: str) -> Any:
        t = self._json_target(t, "$all", path)
        if not isinstance(x, list):
            raise FilterError("$all needs a list of values", path=path)
        if not x:
            return sa.false()
        conds = [JsonIs(t.expr, t.path, ["array"])]
        for i, item in enumerate(x):
            conds.append(self.any_element(t.expr, t.path,
                                          lambda el, item=item, i=i: self.eq(el, item, f"{path}[{i}]")))
        return sa.and_(*conds)

    def elem_match(self, t: Target, x: Any, path: str) -> Any:
        t = self._json_target(t, "$elemMatch", path)
        if not isinstance(x, dict) or not x:
            raise FilterError("$elemMatch needs a non-empty filter or operator expression", path=path)
        if shapes.is_operator_dict(x) and not (set(x) & shapes.LOGICAL):
            return self.any_element(t.expr, t.path, lambda el: self.field(el, x, path))
        return self.any_element(t.expr, t.path, lambda el: self.filter(x, path, ElementFields(el.expr)))


def negate(clause: Any) -> Any:
    """NOT, with unknown (NULL) counted as false first: a missing field fails the inner test."""
    return sa.not_(sa.func.coalesce(clause, sa.false()))


def _bind_type(t: Target, samples: list) -> Any:
    """The column's type, except that an integer column compared with fractions binds numbers."""
    if t.pytype is int:
        if any(isinstance(v, float) for v in samples):
            return sa.Double()
        if any(isinstance(v, Decimal) for v in samples):
            return sa.Numeric(asdecimal=True)
    return t.bind_type


def _coercer(pytype: type, path: str) -> Callable[[Any], Any]:
    return lambda v: coerce(pytype, v, path)


def _like_checker(op: str, path: str) -> Callable[[Any], Any]:
    def check(v):
        if not isinstance(v, str):
            raise FilterError(f"{op} needs a string pattern, got {type(v).__name__}", path=path)
        checked_string(v, path)
        if (len(v) - len(v.rstrip("\\"))) % 2:
            raise FilterError(f"{op} pattern ends with a lone escape '\\'; write '\\\\' for a backslash",
                              path=path)
        return v
    return check


def _substring(path: str) -> Callable[[Any], Any]:
    def escape(v):
        if not isinstance(v, str):
            raise FilterError(f"$contains on a string field needs a string, got {type(v).__name__}", path=path)
        checked_string(v, path)
        return "%" + v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return escape


def _count_checker(path: str) -> Callable[[Any], Any]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            what = "a negative number" if isinstance(v, int) and not isinstance(v, bool) else type(v).__name__
            raise FilterError(f"$size needs a whole number >= 0, got {what}", path=path)
        return v
    return check
