"""A plain-Python evaluator of DataFlow's filter language, as documented in query/filters.py.

It is the reference for the extension operators ($like, $ilike, $between, $contains, $size with a
comparison, top-level $not); for MongoDB's own operators it follows MongoDB, and the property tests
check it against mongomock too. Documents are dicts; a typed column holding NULL is absent.
"""

from __future__ import annotations

import operator
import re
from decimal import Decimal
from typing import Any

MISSING = object()
COMPARE = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def get(doc: Any, path: str) -> Any:
    cur = doc
    for seg in path.split("."):
        if isinstance(cur, dict) and seg in cur:
            cur = cur[seg]
        elif isinstance(cur, list) and seg.isdigit() and int(seg) < len(cur):
            cur = cur[int(seg)]
        else:
            return MISSING
    return cur


def kind(v: Any) -> str:
    if v is None or v is MISSING:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float, Decimal)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    return type(v).__name__


def same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, true != 1, objects ignore key order."""
    if kind(a) != kind(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def eq(v: Any, x: Any) -> bool:
    if x is None:
        return v is MISSING or v is None
    return v is not MISSING and same(v, x)


def compare(v: Any, op: str, x: Any) -> bool:
    if x is None:
        return (v is MISSING or v is None) if op in ("$gte", "$lte") else False
    if kind(v) != kind(x) or kind(x) not in ("number", "string", "bool"):
        return False
    return COMPARE[op](v, x)


def like(v: Any, pattern: str, insensitive: bool) -> bool:
    if not isinstance(v, str):
        return False
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    if insensitive:
        v, regex = v.lower(), "".join(out).lower()
    else:
        regex = "".join(out)
    return re.fullmatch(regex, v, re.DOTALL) is not None


def contains(v: Any, x: Any, top: bool = True) -> bool:
    if isinstance(x, dict) and top:
        return contains(v, x, top=False) or (isinstance(v, list) and any(contains(e, x, top=False) for e in v))
    if isinstance(x, dict):
        return isinstance(v, dict) and all(
            contains(v.get(k, MISSING), sub, top=False) if isinstance(sub, (dict, list)) else eq(v.get(k, MISSING), sub)
            for k, sub in x.items())
    if isinstance(x, list):
        return isinstance(v, list) and all(
            any(contains(e, item, top=False) if isinstance(item, (dict, list)) else eq(e, item) for e in v)
            for item in x)
    return isinstance(v, list) and any(eq(e, x) for e in v)


def size_matches(v: Any, cond: Any) -> bool:
    if not isinstance(v, list):
        return False
    if isinstance(cond, dict):
        ops = {"$eq": operator.eq, "$ne": operator.ne, **COMPARE}
        return all(ops[op](len(v), n) for op, n in cond.items())
    return len(v) == cond


def field_matches(v: Any, cond: Any) -> bool:
    if not (isinstance(cond, dict) and cond and all(str(k).startswith("$") for k in cond)):
        return eq(v, cond)
    results = []
    for op, x in cond.items():
        if op == "$options":
            continue
        if op == "$eq":
            results.append(eq(v, x))
        elif op == "$ne":
            results.append(not eq(v, x))
        elif op in COMPARE:
            results.append(compare(v, op, x))
        elif op == "$in":
            results.append(any(eq(v, e) for e in x))
        elif op == "$nin":
            results.append(not any(eq(v, e) for e in x))
        elif op == "$exists":
            results.append((v is not MISSING) == bool(x))
        elif op == "$regex":
            flags = re.ASCII | (re.IGNORECASE if "i" in cond.get("$options", "") else 0)
            results.append(isinstance(v, str) and re.search(x, v, flags) is not None)
        elif op in ("$like", "$ilike"):
            results.append(like(v, x, op == "$ilike"))
        elif op == "$between":
            results.append(compare(v, "$gte", x[0]) and compare(v, "$lte", x[1]))
        elif op == "$not":
            results.append(not field_matches(v, x))
        elif op == "$contains":
            results.append(contains(v, x))
        elif op == "$size":
            results.append(size_matches(v, x))
        elif op == "$all":
            results.append(bool(x) and isinstance(v, list) and all(any(eq(e, i) for e in v) for i in x))
        elif op == "$elemMatch":
            if all(str(k).startswith("$") for k in x) and not set(x) & {"$and", "$or", "$nor"}:
                results.append(isinstance(v, list) and any(field_matches(e, x) for e in v))
            else:
                results.append(isinstance(v, list) and any(matches(e if isinstance(e, dict) else {}, x) for e in v))
        else:
            raise ValueError(f"reference does not know {op}")
    return all(results)


def matches(doc: dict, filt: dict) -> bool:
    for key, value in filt.items():
        if key == "$and":
            ok = all(matches(doc, f) for f in value)
        elif key == "$or":
            ok = any(matches(doc, f) for f in value)
        elif key == "$nor":
            ok = not any(matches(doc, f) for f in value)
        elif key == "$not":
            ok = not matches(doc, value)
        else:
            ok = field_matches(get(doc, key), value)
        if not ok:
            return False
    return True
