"""The operations as data: each one's parameters (with their aliases) and its result keys.

The generated Kailash nodes (``nodes.py``) are derived from this table, and the field names a
model may not use are derived from it too (``RESERVED``): a parameter added here is reserved at
once. Names follow kailash-dataflow 2.20.1's (a compatible superset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Param:
    """One node parameter: its name, the other names it is known by, and its default."""

    name: str
    aliases: tuple[str, ...] = ()
    default: Any = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class Operation:
    """One operation: the node suffix, the operations-layer method, parameters and result keys."""

    node: str                 # "Create" -> UserCreateNode
    action: str               # "create" -> db.operations.create
    params: tuple[Param, ...]
    takes_fields: bool        # the model's fields are parameters too (flat record or flat changes)
    returns: tuple[str, ...]  # result keys
    merges_record: bool = False  # the result is a record's fields plus ``returns`` (Read, Update)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The canonical parameters: each alias folded into its name (the first non-None wins), defaults filled."""
        out: dict[str, Any] = {}
        for p in self.params:
            value = next((given[n] for n in p.names if given.get(n) is not None), None)
            out[p.name] = p.default if value is None else value
        return out

    @property
    def names(self) -> frozenset[str]:
        return frozenset(n for p in self.params for n in p.names)


FILTER = Param("filter", ("conditions",))
ID = Param("id")
RAISE = Param("raise_on_not_found", default=True)
INCLUDE = Param("include")
INCLUDE_DELETED = Param("include_deleted", default=False)
FIELDS = Param("fields")
CHANGES = Param("changes", ("fields", "updates", "update"))
CONFLICT_ON = Param("conflict_on")
BATCH = Param("batch_size")
RECORDS = Param("data", ("records",), default=())
CONFIRM_ALL = Param("confirm_all", default=False)

OPERATIONS: tuple[Operation, ...] = (
    Operation("Create", "create", (), True, ()),
    Operation("Read", "read", (ID, FILTER, RAISE, INCLUDE, INCLUDE_DELETED, FIELDS), False, ("found",), True),
    Operation("Update", "update", (ID, FILTER, CHANGES, RAISE), True, ("updated",), True),
    Operation("Delete", "delete", (ID, FILTER, RAISE), False, ("id", "deleted")),
    Operation("List", "list", (FILTER, Param("sort", ("order_by",)), Param("limit"), Param("offset", ("skip",), 0),
                               FIELDS, INCLUDE, INCLUDE_DELETED), False,
              ("records", "count", "limit", "offset", "has_more")),
    Operation("Count", "count", (FILTER, INCLUDE_DELETED), False, ("count",)),
    Operation("Upsert", "upsert", (Param("where", ("filter", "conditions")), Param("update"), Param("create"),
                                   CONFLICT_ON), False, ("created", "action", "record")),
    Operation("BulkCreate", "bulk_create", (RECORDS, BATCH, Param("on_conflict", default="error"),
                                            Param("return_ids", default=False), CONFLICT_ON), False,
              ("processed", "inserted", "skipped", "ids", "success")),
    Operation("BulkUpdate", "bulk_update", (FILTER, Param("changes", ("data", "fields", "update", "updates")),
                                            CONFIRM_ALL), False, ("processed", "updated", "success")),
    Operation("BulkDelete", "bulk_delete", (FILTER, CONFIRM_ALL), False, ("processed", "deleted", "success")),
    Operation("BulkUpsert", "bulk_upsert", (RECORDS, CONFLICT_ON, BATCH), False,
              ("processed", "inserted", "updated", "success")),
    Operation("Aggregate", "aggregate", (Param("pipeline", default=()), FILTER), False, ("results", "result", "count")),
)

BY_NODE: dict[str, Operation] = {op.node: op for op in OPERATIONS}

#: Keys the Kailash runtime may add to a node's inputs.
RUNTIME_KEYS = frozenset({"context", "config"})

#: Field names a model may not take: every node parameter, and the result keys that sit beside a
#: record's fields (``found``, ``updated``). ``id`` is a field wherever it is a parameter; ``changes``
#: is the canonical name of the update aliases, never a parameter itself.
RESERVED: frozenset[str] = frozenset(
    {n for op in OPERATIONS for n in op.names} | {k for op in OPERATIONS if op.merges_record for k in op.returns}
    | RUNTIME_KEYS) - {"id", "changes"}
