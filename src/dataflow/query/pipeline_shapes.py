"""A pipeline's shape: its structure without its values, so compiled pipelines can be cached.

``template(pipeline)`` walks the pipeline once, reading each stage as ``pipeline.py`` compiles it,
and returns a ``Template``: a hashable ``key`` (stages, operators, field references, output names,
the kind of every value), the ``values`` in walk order, and ``stages``, a copy of the pipeline in
which every value that becomes a bound parameter is *marked*: the same number or string as an
instance of a private subclass (``int``, ``float``, ``Decimal``, ``str``) that knows its index in
``values``. Compiling the copy shows which parameter each value fills, so a later pipeline with the
same key re-binds its own values and skips the compilation.

Values and structure:

- ``$match`` filters: their shape and values come from ``shapes.key_and_values``, as for filters;
  ``match_offsets`` says where each stage's values start.
- Literals (``$literal``, a constant ``_id``, string/number expressions in ``$project``), the
  factor of ``{"$sum": 2}``, and the numbers of ``$limit`` and ``$skip`` are values.
- Field references, output names, ``$sort`` specs, ``$project`` inclusion flags, ``$count`` names,
  ``None`` and booleans are structure, and so is ``{"$sum": 1}`` (it compiles to ``COUNT(*)``).
- Anything malformed becomes structure too (its frozen form): it gets a key of its own, and the
  compiler reports the error on every call, since a pipeline that fails is never cached.

The walk never raises. It mirrors how ``pipeline.py``, ``accumulators.py`` and ``expressions.py``
read a pipeline: a new way of reading a value there (one that changes the SQL) belongs here too.
Two guards back this up: ``pipeline._reusable`` refuses to cache a compilation in which a marked
value did not become a parameter, or became anything else; and a test changes values at random and
checks that every pipeline keeping its key compiles to the same SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from . import shapes
from .accumulators import ACCUMULATORS
from .expressions import ARITHMETIC, is_field_ref


class Marked:
    """Mixin of a marked value: ``index`` is its position in ``Template.values``."""

    index: int


class _Int(int, Marked):
    pass


class _Float(float, Marked):
    pass


class _Decimal(Decimal, Marked):
    pass


class _Str(str, Marked):
    pass


#: How ``expressions.literal`` reads a value, in its order (bool and None are structure).
_MARKERS = ((int, _Int), (float, _Float), (Decimal, _Decimal), (str, _Str))


@dataclass
class Template:
    key: Any
    values: list = field(default_factory=list)
    stages: list = field(default_factory=list)
    match_offsets: dict = field(default_factory=dict)  # stage index -> where its filter's values start
    marked: list = field(default_factory=list)         # indexes of marked values


def is_count(value: Any, minimum: int) -> bool:
    """A valid ``$limit`` (minimum 1) or ``$skip`` (minimum 0)."""
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def is_excluded(value: Any) -> bool:
    """A ``$project`` value that leaves a field out: false or 0."""
    return value is False or (not isinstance(value, bool) and isinstance(value, (int, float)) and value == 0)


def is_included(value: Any) -> bool:
    """A ``$project`` value that keeps a field as it is: true or a number."""
    return value is True or (not isinstance(value, bool) and isinstance(value, (int, float)))


def frozen(value: Any) -> Any:
    """A hashable, type-exact form of ``value`` (structure, or something malformed)."""
    if isinstance(value, Mapping):
        return ("d", type(value), tuple((frozen(k), frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("l", type(value), tuple(frozen(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("r", type(value), repr(value))
    return (type(value), value)


def template(pipeline: Any) -> Template:
    """Key, values and marked copy of ``pipeline`` (a list or tuple of stages)."""
    walk = _Walk()
    keys = []
    for i, stage in enumerate(pipeline):
        key, stage = walk.stage(i, stage)
        keys.append(key)
        walk.out.stages.append(stage)
    walk.out.key = (type(pipeline), tuple(keys))
    return walk.out


class _Walk:
    """One walk; each method returns ``(key, template)`` for its part of the pipeline."""

    def __init__(self) -> None:
        self.out = Template(key=None)

    def mark(self, value: Any) -> tuple[Any, Any]:
        for kind, marker in _MARKERS:
            if isinstance(value, kind):
                marked = marker(value)
                marked.index = len(self.out.values)
                self.out.marked.append(marked.index)
                self.out.values.append(value)
                return ("v", type(value)), marked
        return ("=", frozen(value)), value

    def stage(self, i: int, stage: Any) -> tuple[Any, Any]:
        if not isinstance(stage, Mapping) or len(stage) != 1:
            return ("?", frozen(stage)), stage
        (name, spec), = stage.items()
        if name == "$match":
            key, spec = self.match(i, spec)
        elif name == "$group":
            key, spec = self.group(spec)
        elif name in ("$limit", "$skip"):
            key, spec = self.mark(spec) if is_count(spec, 1 if name == "$limit" else 0) else (frozen(spec), spec)
        elif name == "$project":
            key, spec = self.project(spec)
        elif name in ACCUMULATORS and not (name == "$count" and isinstance(spec, str)):
            key, spec = self.accumulator(name, spec)
        else:  # $sort, $count "name", an unknown stage: all structure
            key = frozen(spec)
        return (name, key), {name: spec}

    def match(self, i: int, spec: Any) -> tuple[Any, Any]:
        if not isinstance(spec, Mapping) or not spec:
            return frozen(spec), spec
        key, values = shapes.key_and_values(dict(spec))
        self.out.match_offsets[i] = len(self.out.values)
        self.out.values.extend(values)
        return key, spec

    def group(self, spec: Any) -> tuple[Any, Any]:
        if not isinstance(spec, dict) or "_id" not in spec:
            return frozen(spec), spec
        keys, out = [], {}
        for name, value in spec.items():
            if name == "_id":
                key, out[name] = self.group_id(value)
            elif isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ACCUMULATORS:
                (op, arg), = value.items()
                key, t = self.accumulator(op, arg)
                key, out[name] = (op, key), {op: t}
            else:
                key, out[name] = frozen(value), value
            keys.append((frozen(name), key))
        return ("G", tuple(keys)), out

    def group_id(self, spec: Any) -> tuple[Any, Any]:
        if isinstance(spec, dict) and spec:
            parts = {name: self.expression(sub) for name, sub in spec.items()}
            return ("I", tuple((frozen(n), k) for n, (k, _) in parts.items())), {n: t for n, (_, t) in parts.items()}
        return self.expression(spec)

    def accumulator(self, op: str, arg: Any) -> tuple[Any, Any]:
        if op == "$count":
            return frozen(arg), arg
        if op == "$sum" and not isinstance(arg, bool) and isinstance(arg, (int, float)):
            if arg == 1:  # COUNT(*): structure
                return ("count", type(arg)), arg
            return self.mark(arg)
        return self.expression(arg)

    def expression(self, spec: Any) -> tuple[Any, Any]:
        """As ``expressions.evaluate`` reads it."""
        if is_field_ref(spec):
            return ("$", spec), spec
        if isinstance(spec, dict) and len(spec) == 1:
            (op, args), = spec.items()
            if op == "$literal":
                key, t = self.literal(args)
                return (op, key), {op: t}
            if op in ARITHMETIC and isinstance(args, list):
                parts = [self.expression(a) for a in args]
                return (op, tuple(k for k, _ in parts)), {op: [t for _, t in parts]}
            return frozen(spec), spec
        return self.literal(spec)

    def literal(self, value: Any) -> tuple[Any, Any]:
        if value is None or isinstance(value, bool):
            return ("=", frozen(value)), value
        return self.mark(value)

    def project(self, spec: Any) -> tuple[Any, Any]:
        if not isinstance(spec, Mapping) or not spec:
            return frozen(spec), spec
        rest = [v for k, v in spec.items() if k != "_id"]
        if rest and all(is_excluded(v) for v in rest):
            return ("X", frozen(spec)), spec
        keys, out = [], {}
        for name, value in spec.items():
            key, out[name] = (("x", frozen(value)), value) if is_excluded(value) else self.projected(value)
            keys.append((frozen(name), key))
        return ("P", tuple(keys)), out

    def projected(self, value: Any) -> tuple[Any, Any]:
        if is_included(value):
            return ("i", frozen(value)), value
        if isinstance(value, Mapping) and value and not any(str(k).startswith("$") for k in value):
            parts = {name: self.projected(v) for name, v in value.items()}
            return ("N", tuple((frozen(n), k) for n, (k, _) in parts.items())), {n: t for n, (_, t) in parts.items()}
        return self.expression(value)
