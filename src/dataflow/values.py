"""Check and convert field values on the way in; make records JSON-safe on the way out.

One converter per field is built once per model, so a bulk load of 100,000 rows pays one
dict lookup and one call per value.

Limits on values (``ValidationError`` beyond them, the same on every database): strings hold
Unicode characters only (a lone surrogate such as ``"\\ud800"`` is refused: no database can store
it); JSON values nest at most ``MAX_JSON_DEPTH`` (31) objects/arrays deep (MariaDB's limit), hold at
most ``MAX_JSON_ITEMS`` (1,000,000) values, have string keys only (``{1: "x"}`` is refused, not
stored as ``{"1": "x"}``) and finite numbers; datetimes must lie within years 1..9999 in UTC.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import date, datetime, timezone
from decimal import Context, Decimal, InvalidOperation
from itertools import repeat
from math import isfinite
from operator import itemgetter
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import ValidationError
from .models import FieldSpec, ModelSpec

UTC = timezone.utc
INT64 = (-(2**63), 2**63 - 1)
MAX_JSON_DEPTH = 31  # nested objects/arrays: MariaDB refuses a 32nd level
MAX_JSON_ITEMS = 1_000_000
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone surrogate (no database can store it; UTF-8 cannot encode it)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def json_problem(value: Any, *, max_depth: int = MAX_JSON_DEPTH, leaves: tuple = ()) -> str | None:
    """None when ``value`` is strict JSON within the limits; else what is wrong, by kind only.

    Iterative (no recursion), so a document nested 10,000 deep is refused, not a RecursionError.
    ``leaves``: more types taken as scalars (filters accept dates, UUIDs and Decimals in JSON).
    """
    stack = [(value, 0)]
    items = 0
    while stack:
        v, depth = stack.pop()
        items += 1
        if items > MAX_JSON_ITEMS:
            return f"more than {MAX_JSON_ITEMS:,} values"
        if isinstance(v, str):
            if has_surrogate(v):
                return "a string with a lone surrogate (not a Unicode character)"
        elif v is None or isinstance(v, (bool, int)):
            continue
        elif isinstance(v, float):
            if not isfinite(v):
                return "a number that is not finite (NaN or infinity)"
        elif leaves and isinstance(v, leaves):
            if isinstance(v, Decimal) and not v.is_finite():
                return "a number that is not finite (NaN or infinity)"
        elif isinstance(v, dict):
            if depth >= max_depth:
                return f"objects/arrays nested more than {max_depth} levels deep"
            for k, x in v.items():
                if not isinstance(k, str):
                    return f"an object key of type {type(k).__name__} (JSON keys are strings)"
                if has_surrogate(k):
                    return "an object key with a lone surrogate (not a Unicode character)"
                stack.append((x, depth + 1))
        elif isinstance(v, (list, tuple)):
            if depth >= max_depth:
                return f"objects/arrays nested more than {max_depth} levels deep"
            stack.extend((x, depth + 1) for x in v)
        else:
            return f"a {type(v).__name__}, which is not a JSON value"
    return None

Converter = Callable[[Any], Any]


class _Bad(Exception):
    """A value does not fit; the message says what was expected."""


def _int(v: Any) -> int:
    if type(v) is int:
        if INT64[0] <= v <= INT64[1]:
            return v
        raise _Bad("an integer within 64 bits")
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    raise _Bad("an integer")


def _float(v: Any) -> float:
    # NaN and infinities: SQLite stores NaN as NULL, MySQL refuses both; refuse them everywhere.
    if type(v) is float:
        if isfinite(v):
            return v
        raise _Bad("a finite number")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            v = float(v)
        except OverflowError:
            raise _Bad("a number within the range of a double") from None
        return _float(v)
    raise _Bad("a number")


def _bool(v: Any) -> bool:
    if v is True or v is False:
        return v
    raise _Bad("true or false")


def _decimal_for(f: FieldSpec) -> Converter:
    digits_left = f.precision - f.scale
    quantum = Decimal(1).scaleb(-f.scale)
    context = Context(prec=max(f.precision, 28))  # the default 28 digits cannot quantize NUMERIC(38, 10)

    def conv(v: Any) -> Decimal:
        if isinstance(v, bool) or not isinstance(v, (Decimal, int, float, str)):
            raise _Bad("a decimal number (Decimal, int or numeric string)")
        try:
            d = v if isinstance(v, Decimal) else Decimal(str(v))
        except InvalidOperation:
            raise _Bad("a decimal number") from None
        if not d.is_finite():
            raise _Bad("a finite decimal number")
        if d.adjusted() >= digits_left:
            raise _Bad(f"a decimal with at most {digits_left} digits before the point")
        if d.as_tuple().exponent < -f.scale and d != d.quantize(quantum, context=context):
            raise _Bad(f"a decimal with at most {f.scale} digits after the point")
        return d
    return conv


def _datetime(v: Any) -> datetime:
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise _Bad("a datetime or ISO 8601 string") from None
    if not isinstance(v, datetime):
        raise _Bad("a datetime or ISO 8601 string")
    if v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    try:
        return v.astimezone(UTC)
    except (OverflowError, ValueError):
        raise _Bad("a datetime within years 1..9999 in UTC") from None


def _date(v: Any) -> date:
    if isinstance(v, str):
        try:
            return date.fromisoformat(v)
        except ValueError:
            raise _Bad("a date or ISO 8601 date string") from None
    if isinstance(v, datetime) or not isinstance(v, date):
        raise _Bad("a date or ISO 8601 date string")
    return v


def _uuid(v: Any) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    if isinstance(v, str):
        try:
            return uuid.UUID(v)
        except ValueError:
            pass
    raise _Bad("a UUID or UUID string")


def _bytes(v: Any) -> bytes:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):  # node outputs carry bytes as base64; accept them back
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            pass
    raise _Bad("bytes or a base64 string")


def _json_of(kind: type, what: str) -> Converter:
    def conv(v: Any) -> Any:
        if not isinstance(v, kind):
            raise _Bad(what)
        problem = json_problem(v)
        if problem is not None:
            raise _Bad(f"{what} of JSON values only (str, finite number, bool, None, list, dict with "
                       f"string keys); found {problem}")
        return v
    return conv


def _is_json(v: Any) -> bool:
    """True when ``v`` is strict JSON within the limits (see ``json_problem``)."""
    return json_problem(v) is None


def _str_for(f: FieldSpec) -> Converter:
    limit = f.max_length

    def conv(v: Any) -> str:
        if type(v) is str and (limit is None or len(v) <= limit) and (v.isascii() or not has_surrogate(v)):
            return v
        if type(v) is not str:
            if not isinstance(v, str):
                raise _Bad("a string")
            v = str(v)
        if limit is not None and len(v) > limit:
            raise _Bad(f"a string of at most {limit} characters (got {len(v)})")
        if has_surrogate(v):
            raise _Bad("a string of Unicode characters (this one holds a lone surrogate)")
        return v
    return conv


def converter_for(f: FieldSpec) -> Converter:
    """The function that checks and converts one value for field ``f``."""
    t = f.pytype
    if t is str:
        return _str_for(f)
    if t is Decimal:
        return _decimal_for(f)
    simple: dict[type, Converter] = {
        int: _int, float: _float, bool: _bool, datetime: _datetime, date: _date,
        uuid.UUID: _uuid, bytes: _bytes, dict: _json_of(dict, "a JSON object (dict)"),
        list: _json_of(list, "a JSON array (list)"),
    }
    return simple[t]


def _fast_ok(f: FieldSpec, col: list) -> list | None:
    """``col`` checked in C-speed passes when every value already has the field's exact type.

    Returns the column (possibly converted), or None when a value needs the per-value path.
    """
    types = set(map(type, col))
    t = f.pytype
    if t is str:
        if types == {str} and (f.max_length is None or max(map(len, col)) <= f.max_length) \
                and not any(map(has_surrogate, col)):
            return col
    elif t is int:
        if types == {int} and min(col) >= INT64[0] and max(col) <= INT64[1]:
            return col
    elif t is float:
        if types == {float} and all(map(isfinite, col)):
            return col
        if types <= {int, float}:
            try:
                converted = list(map(float, col))
            except OverflowError:
                return None
            if all(map(isfinite, converted)):
                return converted
    elif t in (dict, list):
        if types == {t} and all(map(_is_json, col)):
            return col
    elif t in (bool, bytes, uuid.UUID, date):
        if types == {t}:
            return col
    return None


#: A column of one repeated value (a default or the shared timestamp).
Constant = repeat


class Codec:
    """Validation of input and JSON-safe output for one model."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.converters: dict[str, Converter] = {n: converter_for(f) for n, f in spec.fields.items()}
        self.required = [n for n, f in spec.fields.items() if f.required]
        defaults = [f for f in spec.fields.values() if f.has_default and not f.auto]
        self.static_defaults = {f.name: f.default for f in defaults if f.default_factory is None}
        self.factories = [(f.name, f.default_factory) for f in defaults if f.default_factory is not None]
        self.required_set = frozenset(self.required)
        self.stamps = tuple(n for n in ("created_at", "updated_at")
                            if spec.timestamps and n in spec.fields and spec.fields[n].auto)
        self.nullable = {n for n, f in spec.fields.items() if f.nullable}
        self.auto_pk = spec.fields[spec.primary_key].autoincrement

    def _error(self, name: str, value: Any, expected: str) -> ValidationError:
        f = self.spec.fields[name]
        return ValidationError(
            f"{self.spec.name}.{name} must be {expected}; got {type(value).__name__} "
            f"(field type {f.describe_type()})", model=self.spec.name, field=name)

    def unknown(self, names: Iterable[str], where: str = "data") -> ValidationError:
        bad = sorted(set(names) - set(self.spec.fields))
        return ValidationError(
            f"{self.spec.name} has no field(s) {', '.join(map(repr, bad))} in {where}; "
            f"fields are: {', '.join(self.spec.fields)}", model=self.spec.name, field=bad[0])

    def value(self, name: str, value: Any) -> Any:
        """Check one value for field ``name``."""
        conv = self.converters.get(name)
        if conv is None:
            raise self.unknown([name])
        if value is None:
            if name in self.nullable:
                return None
            raise ValidationError(f"{self.spec.name}.{name} cannot be null (field type "
                                  f"{self.spec.fields[name].describe_type()})",
                                  model=self.spec.name, field=name)
        try:
            return conv(value)
        except _Bad as bad:
            raise self._error(name, value, str(bad)) from None

    def for_create(self, data: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
        """A full row for INSERT: checked values, defaults filled, timestamps set."""
        if type(data) is not dict and not isinstance(data, Mapping):
            raise ValidationError(f"{self.spec.name}: a record must be a dict, got {type(data).__name__}",
                                  model=self.spec.name)
        convs = self.converters
        # Plain defaults first, then the given values over them: one C-level copy per row.
        row: dict[str, Any] = dict(self.static_defaults)
        for name, value in data.items():
            conv = convs.get(name)
            if conv is None:
                raise self.unknown(data)
            if value is None:
                if (name == self.spec.primary_key and self.auto_pk) or name in self.stamps:
                    continue  # the database assigns the key; DataFlow stamps the time
                row[name] = self.value(name, None)  # raises unless the field is nullable
                continue
            try:
                row[name] = conv(value)
            except _Bad as bad:
                raise self._error(name, value, str(bad)) from None
        for name, factory in self.factories:
            if name not in data:
                row[name] = factory()
        if not self.required_set <= row.keys():
            name = next(n for n in self.required if n not in row)
            raise ValidationError(
                f"{self.spec.name}.{name} is required (field type {self.spec.fields[name].describe_type()}); "
                f"add it to the data", model=self.spec.name, field=name)
        if self.stamps:
            stamp = now or datetime.now(UTC)
            for name in self.stamps:
                if row.get(name) is None:
                    row[name] = stamp
        return row

    def insert_columns(self, rows: Sequence[Mapping[str, Any]], now: datetime) -> tuple[list[str], list] | None:
        """Checked values of many rows, column by column, for a bulk INSERT.

        The fast path for the common case (every row a dict with the same keys): type checks
        run as C-level passes over each column. Returns (keys, columns), a column being a list
        or a ``repeat`` of one value; None when the rows differ in keys (use ``for_create``).
        """
        n = len(rows)
        first = rows[0]
        if set(map(type, rows)) != {dict}:
            return None
        keyset = first.keys()
        if not all(map(keyset.__eq__, map(dict.keys, rows))):
            return None
        unknown = keyset - self.converters.keys()
        if unknown:
            raise self.unknown(unknown)
        pk = self.spec.primary_key
        given = list(keyset)
        if self.auto_pk and pk in keyset:
            missing_keys = sum(r[pk] is None for r in rows)
            if missing_keys == n:
                given.remove(pk)  # the database assigns every key
            elif missing_keys:
                return None  # some keys given, some left to the database: two INSERT shapes (for_create)
        keys: list[str] = []
        columns: list = []
        for name in given:
            col = list(map(itemgetter(name), rows))
            if name in self.stamps:
                col = [now if v is None else v for v in col]
            checked = _fast_ok(self.spec.fields[name], col)
            if checked is None:
                checked = []
                for i, v in enumerate(col):
                    try:
                        checked.append(self.value(name, v))
                    except ValidationError as exc:
                        raise ValidationError(f"data[{i}]: {exc.message}", model=self.spec.name,
                                              field=name) from None
            keys.append(name)
            columns.append(checked)
        for name, value in self.static_defaults.items():
            if name not in keyset:
                keys.append(name)
                columns.append(Constant(value, n))
        for name, factory in self.factories:
            if name not in keyset:
                keys.append(name)
                columns.append([factory() for _ in range(n)])
        missing = self.required_set - set(keys)
        if missing:
            name = next(k for k in self.required if k in missing)
            raise ValidationError(f"data[0]: {self.spec.name}.{name} is required (field type "
                                  f"{self.spec.fields[name].describe_type()}); add it to every record",
                                  model=self.spec.name, field=name)
        for name in self.stamps:
            if name not in keyset:  # given ones had their None replaced by ``now`` above
                keys.append(name)
                columns.append(Constant(now, n))
        return keys, columns

    def for_update(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Checked values for UPDATE; ``updated_at`` set unless given."""
        if not isinstance(changes, Mapping):
            raise ValidationError(f"{self.spec.name}: changes must be a dict, got {type(changes).__name__}",
                                  model=self.spec.name)
        out = {name: self.value(name, value) for name, value in changes.items()}
        if self.spec.primary_key in out:
            raise ValidationError(f"{self.spec.name}.{self.spec.primary_key} is the primary key and cannot be "
                                  f"changed", model=self.spec.name, field=self.spec.primary_key)
        if self.spec.timestamps and "updated_at" in self.spec.fields and "updated_at" not in out:
            out["updated_at"] = datetime.now(UTC)
        return out

    def key(self, value: Any) -> Any:
        """A checked primary key value."""
        return self.value(self.spec.primary_key, value)


def json_safe(value: Any) -> Any:
    """A value as JSON can carry it: ISO datetimes, str for Decimal/UUID, base64 for bytes."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    return str(value)

