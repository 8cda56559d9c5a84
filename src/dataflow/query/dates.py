"""Date values in filters: ISO strings, ``datetime`` objects and ``{"$date": ...}`` forms."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from ..errors import FilterError

UTC = timezone.utc

_RELATIVE = re.compile(r"\s*([+-]?)\s*([0-9]{1,9})\s*([mhdw])\s*")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def now() -> datetime:
    """The current time, aware UTC (a function so tests can pin it)."""
    return datetime.now(UTC)


def is_date_literal(value: Any) -> bool:
    """True for ``{"$date": ...}``."""
    return isinstance(value, dict) and len(value) == 1 and "$date" in value


def resolve_date(value: Any, *, path: str = "filter") -> datetime:
    """Turn ``{"$date": "today"|"-5m"|"-1h"|"-7d"|"-2w"|ISO string}`` into an aware UTC datetime.

    ``"today"`` is midnight UTC of the current day; ``"-5m"`` is five minutes ago (``m`` minutes,
    ``h`` hours, ``d`` days, ``w`` weeks; a leading ``+`` or no sign means the future); an ISO 8601
    string is parsed, naive values taken as UTC. A bare string or datetime is accepted too.
    """
    raw = value["$date"] if is_date_literal(value) else value
    where = f"{path}.$date" if is_date_literal(value) else path
    try:
        return _resolve(raw, where)
    except (OverflowError, ValueError):  # an offset or a time zone beyond years 1..9999 in UTC
        raise FilterError("the date lies outside years 1..9999 in UTC", path=where) from None


def _resolve(raw: Any, where: str) -> datetime:
    if isinstance(raw, datetime):
        return raw.replace(tzinfo=UTC) if raw.tzinfo is None else raw.astimezone(UTC)
    if isinstance(raw, date):
        return datetime.combine(raw, time(), UTC)
    if not isinstance(raw, str):
        raise FilterError(f"a date must be 'today', a relative offset like '-5m', or an ISO 8601 "
                          f"string, got {type(raw).__name__}", path=where)
    text = raw.strip()
    if text.lower() == "today":
        return datetime.combine(now().date(), time(), UTC)
    if text.lower() == "now":
        return now()
    match = _RELATIVE.fullmatch(text)
    if match:
        sign, amount, unit = match.groups()
        delta = timedelta(**{_UNITS[unit]: int(amount)})
        return now() - delta if sign == "-" else now() + delta
    return parse_iso(text, path=where)


def parse_iso(text: str, *, path: str) -> datetime:
    """Parse an ISO 8601 date or datetime string into an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise FilterError("the text is not an ISO 8601 date/time, 'today', or an offset like '-5m', "
                          "'-1h', '-7d', '-2w'", path=path) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def to_date(value: Any, *, path: str) -> date:
    """A filter value for a ``date`` column."""
    if isinstance(value, datetime) or is_date_literal(value):
        return resolve_date(value, path=path).date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return resolve_date(value, path=path).date()
    raise FilterError(f"expected a date (ISO 'YYYY-MM-DD' string or date), got {type(value).__name__}", path=path)


def to_datetime(value: Any, *, path: str) -> datetime:
    """A filter value for a ``datetime`` column: aware UTC."""
    if isinstance(value, (datetime, date, str)) or is_date_literal(value):
        return resolve_date(value, path=path)
    raise FilterError(f"expected a datetime (ISO 8601 string, datetime or {{'$date': ...}}), "
                      f"got {type(value).__name__}", path=path)
