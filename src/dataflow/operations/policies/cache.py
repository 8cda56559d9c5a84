"""The query cache on the one path: cacheable reads get a memo, writes replace their table's version.

``plan``: a read (read, list, count, aggregate) that asked for caching (``cache=True``,
``.cached(ttl)``), or whose model has ``cache_ttl``, or with a global ``cache_ttl``, gets the
cache's memo: the executor looks the final statement up before running it and stores what came
back (see ``dataflow.cache``). Reads inside ``db.transaction()`` are never cached (they may see
the block's own uncommitted writes). While a ``@cached`` function runs, every planned call records
its table as a dependency of the function.

``after_commit``: a write (any of the eight write actions, through any door) replaces its table's
version token, and a one-record write also its record's row token (reads by primary key depend on
those, see ``dataflow.cache``; the table's wide token instead while processes with another layout of the
table share the store, see ``dataflow.cache_layouts``): inside ``db.transaction()`` that happens when the
outer block commits. ``failed``
does the same for writes: a write whose outcome is unknown (a connection lost during COMMIT) must
not leave entries that might be stale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ..call import Call
from ..policy import Policy

if TYPE_CHECKING:
    from ...cache import Cache

CACHEABLE = frozenset({"read", "list", "count", "aggregate"})


class CachePolicy(Policy):
    name = "cache"

    def __init__(self, cache: "Cache") -> None:
        self.cache = cache

    def plan(self, call: Call) -> None:
        from ...cache import track

        track(call, self.cache)
        if call.action not in CACHEABLE or call.parent is not None or call.ctx.transaction is not None \
                or call.options.get("stream"):
            return
        ttl = self.cache.ttl_for(call)
        if ttl:
            call.state["memo"] = self.cache.memo
            call.state["cache_ttl"] = ttl

    def after_commit(self, call: Call, result: Any, elapsed: float) -> None:
        if call.writes:
            changed = _changed(call, result)
            if changed is None or not self.cache.fine(call.binding):  # not known, or another layout shares the store
                self.cache.bump([call.binding.table.name])
            else:
                self.cache.bump_rows(call.binding.table.name, *changed)
            self._cascaded(call)

    def failed(self, call: Call, error: BaseException, elapsed: float) -> None:
        if call.writes:
            self.cache.bump([call.binding.table.name])
            self._cascaded(call)

    def _cascaded(self, call: Call) -> None:
        """A (hard) delete also changes the tables whose foreign keys say ON DELETE CASCADE / SET NULL."""
        if call.action in ("delete", "bulk_delete") and not call.state.get("soft_delete"):
            tables = _referring(call.binding.table)
            if tables:
                self.cache.bump(tables)


def _changed(call: Call, result: Any) -> tuple[list[Any], list[tuple[str, Any]]] | None:
    """What a one-record write changed, from its result: (primary keys, partitions before and after);
    None when that is not known exactly (the table's wide token moves instead)."""
    b = call.binding
    pk = b.pk.name
    if call.action == "delete":  # the key only: other partition values of the record are not known
        if result is None:
            return [], []
        return ([result], [(pk, result)]) if b.partitions <= {pk} else None
    if call.action not in ("create", "update", "upsert"):
        return None
    record = result
    if call.action == "upsert":
        if not (isinstance(result, tuple) and len(result) == 2):
            return None
        created, record = result
        if created:
            return _of(b, pk, record)
    if record is None:  # an update that matched nothing changed nothing
        return [], []
    if call.action != "create" and isinstance(call.data, Mapping) and b.partitions & set(call.data):
        return None  # a partition field changed: its value before is not known here
    return _of(b, pk, record)


def _of(b: Any, pk: str, record: Any) -> tuple[list[Any], list[tuple[str, Any]]] | None:
    from ...cache import partitions_of

    if not isinstance(record, Mapping) or pk not in record:
        return None
    parts = partitions_of(b, record)
    return None if parts is None else ([record[pk]], parts)


def _referring(table: Any) -> list[str]:
    """Tables a delete from ``table`` changes through the database's ON DELETE actions, transitively."""
    from ...schema.tables import delete_actions

    out: list[str] = []
    todo = [table]
    while todo:
        for other, _, _ in delete_actions(todo.pop()):
            if other is not table and other.name not in out:
                out.append(other.name)
                todo.append(other)
    return out
