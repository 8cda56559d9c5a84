"""Optimistic locking (``__dataflow__ = {"versioned": True}``): a given ``version`` must match, changes bump it.

Every write that changes existing records (update, upsert, bulk update, bulk upsert) moves the
version on by one. A caller that sends a ``version`` states which version it read: if a record it
would change is at another version, the call raises ``ConflictError`` and changes nothing.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ...errors import ConflictError
from ..call import Call
from ..policy import Policy

CHANGES = frozenset({"update", "upsert", "bulk_update", "bulk_upsert"})


class Versioning(Policy):
    name = "versioning"

    def plan(self, call: Call) -> None:
        spec = call.binding.spec
        if spec is None or not spec.versioned or call.action not in CHANGES:
            return
        call.state["versioned"] = True
        call.key_first = True  # the stored version is read (and locked) before the change
        if call.action in ("update", "bulk_update", "upsert") and isinstance(call.data, dict):
            if "version" in call.data:
                call.state["expected_version"] = call.data.pop("version")
            if call.data or call.action != "upsert":
                call.data["version"] = call.binding.table.c.version + 1

    def before_statement(self, call: Call, conn: Any) -> None:
        if "versioned" not in call.state:
            return
        expected = call.state.get("expected_version")
        if call.action in ("update", "upsert") and "key" in call.state:
            current = call.state.get("version")
            if expected is not None and expected != current:
                raise conflict(call, call.state["key"], expected, current)
            call.state["guard"] = [call.binding.table.c.version == current]
        elif call.action == "bulk_update" and expected is not None:
            clauses, params = call.state["where"]
            stmt = sa.select(sa.func.count()).select_from(call.binding.table).where(
                *clauses, call.binding.table.c.version != expected)
            stale = int(conn.execute(stmt, params).scalar_one())
            if stale:
                raise ConflictError(f"{call.model} bulk update refused: {stale} matching record(s) are not at "
                                    f"version {expected}; read them again and retry", model=call.model)
        elif call.action == "bulk_upsert":
            self._check_rows(call, conn)

    def after_statement(self, call: Call, conn: Any, info: dict) -> None:
        if call.action == "update" and "versioned" in call.state and info.get("rowcount") == 0:
            raise conflict(call, call.state["key"], call.state.get("expected_version"), None)

    def _check_rows(self, call: Call, conn: Any) -> None:
        """Bulk upsert: rows that give a version must match the stored record's version."""
        chunk, target = call.state["chunk"], call.state["target"]
        stated = call.state.get("stated", ())
        given = {tuple(r[t] for t in target): r["version"] for r in chunk
                 if id(r) in stated and r.get("version") is not None}
        if not given:
            return
        t = call.binding.table
        cols = [t.c[n] for n in target]
        cond = cols[0].in_([k[0] for k in given]) if len(cols) == 1 else sa.tuple_(*cols).in_(list(given))
        for row in conn.execute(sa.select(*cols, t.c.version).where(cond)):
            key, version = tuple(row[:-1]), row[-1]
            if given.get(key) != version:
                raise ConflictError(f"{call.model} bulk upsert refused: a record was changed by someone else "
                                    f"(it is at version {version}, the data says {given.get(key)}); read it again "
                                    f"and retry", model=call.model)


def conflict(call: Call, key: Any, expected: Any, actual: Any) -> ConflictError:
    """The record at ``key`` moved on since the caller read it (the key is not shown: errors get logged)."""
    now = f" (it is now at version {actual})" if actual is not None else ""
    action = call.action.replace("_", " ")
    return ConflictError(f"{call.model} {action} refused: the record was changed by someone else: {action} sent "
                         f"version {expected}{now}; read it again and retry", model=call.model)
