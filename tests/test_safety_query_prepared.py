"""Issue 8 item 3: ``$in`` next to a case-insensitive ``$regex`` gave wrong rows on every database.

Cause: with an expanding ``IN`` in the statement, ``prepared.Prepared.bound`` applied only
``ExpandedState.processors``, which SQLAlchemy fills for the expanded (IN) parameters alone; the bind
processors of every other parameter (``compiled._bind_processors``) were skipped. So the regex
pattern reached the database unrendered (no ``(?i)``, no per-engine rendering), and any other value
needing a bind processor (a datetime or Decimal on SQLite, a UUID on SQLite/MySQL) was sent raw.
Fixed in prepared.py: ``procs = {**self.compiled._bind_processors, **state.processors}``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Optional


def _model(db):
    @db.model
    class Thing:
        n: int
        s: str
        at: Optional[datetime] = None
        price: Optional[Decimal] = None
        ref: Optional[uuid.UUID] = None
    for n, s in [(1, "Alpha"), (4, "beta"), (-1, "gamma"), (2, "apple"), (3, "Delta")]:
        db.create("Thing", {"n": n, "s": s, "at": datetime(2026, 1, n + 2, tzinfo=timezone.utc),
                            "price": Decimal(n) / 4, "ref": uuid.UUID(int=n + 2)})
    return "Thing"


def _names(db, filt):
    return sorted(r["s"] for r in db.list("Thing", filt))


def test_in_or_case_insensitive_regex_without_in_is_right(db):
    _model(db)
    f = {"$or": [{"n": -1}, {"s": {"$regex": "^a", "$options": "i"}}]}
    assert _names(db, f) == ["Alpha", "apple", "gamma"]


def test_in_or_case_insensitive_regex(db):
    _model(db)
    f = {"$or": [{"n": {"$in": [-1, 4]}}, {"s": {"$regex": "^a", "$options": "i"}}]}
    assert _names(db, f) == ["Alpha", "apple", "beta", "gamma"]


def test_in_and_regex_on_one_field(db):
    _model(db)
    assert _names(db, {"s": {"$in": ["Alpha", "beta"], "$regex": "A$", "$options": "i"}}) == ["Alpha", "beta"]
    assert _names(db, {"s": {"$in": ["Alpha", "beta"], "$regex": "a.p"}}) == []
    assert _names(db, {"s": {"$in": ["Alpha", "beta"], "$regex": "^.l"}}) == ["Alpha"]


def test_in_next_to_values_that_need_bind_processing(db):
    _model(db)
    at = datetime(2026, 1, 4, tzinfo=timezone.utc)  # the row with n == 2
    assert _names(db, {"n": {"$in": [2, 3]}, "at": {"$lte": at}}) == ["apple"]
    assert _names(db, {"n": {"$in": [2, 3]}, "price": {"$gte": Decimal("0.75")}}) == ["Delta"]
    assert _names(db, {"n": {"$in": [2, 3]}, "ref": uuid.UUID(int=5)}) == ["Delta"]
