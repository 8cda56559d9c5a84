"""One operation as data: a ``Call`` (action, model, filter, data, options, context).

Every door (direct API, node, ``db.query``, REST, aggregate, bulk, relation include) builds a
``Call`` and hands it to the executor. Policies read it and narrow it: ``call.where({...})`` ANDs
a MongoDB-style filter into whatever the call reads or changes, ``call.add(Condition(...))`` adds
a prebuilt condition, and writes may stamp values into ``call.data``. The statement is built from
the call after the policies ran, and its cache key from the same parts, so whatever a policy adds
is part of the key by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable, Mapping

from ..errors import FilterError
from .context import Context

if TYPE_CHECKING:
    from ..binding import Binding

#: Actions that only read.
READS = frozenset({"read", "list", "count", "aggregate", "include"})
#: Actions that change records.
WRITES = frozenset({"create", "update", "delete", "upsert", "bulk_create", "bulk_update", "bulk_delete",
                    "bulk_upsert"})
#: Actions whose WHERE clause selects existing records (reads, changes, and bulk loads' key look-ups).
SCOPED = frozenset({"read", "list", "count", "aggregate", "include", "update", "delete", "upsert",
                    "bulk_create", "bulk_update", "bulk_delete", "bulk_upsert"})
ACTIONS = READS | WRITES

MISSING: Any = object()


@dataclass(frozen=True)
class Condition:
    """A WHERE condition a policy adds: ``key`` names its SQL shape, ``build`` makes it for a table.

    ``params`` are bound per call under names unique to the condition (``df_<name>``).
    """

    key: Hashable
    build: Callable[[Any], Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    #: True when the condition bounds what the caller may see or change (a tenant, a middleware
    #: filter), False when it only hides rows (soft delete). Writes that would touch a row outside
    #: a bounding condition by key (upserts) are refused.
    bounds: bool = True


class Call:
    """One operation: what to do, on which model, with what; plus the context it runs in."""

    __slots__ = ("action", "binding", "ctx", "filter", "id", "data", "options", "scopes", "conditions",
                 "state", "in_transaction", "key_first", "snapshot", "parent")

    def __init__(self, action: str, binding: "Binding", ctx: Context, *, filter: Mapping | None = None,
                 id: Any = MISSING, data: Any = None, options: dict | None = None,
                 parent: "Call | None" = None) -> None:
        self.action = action
        self.binding = binding
        self.ctx = ctx
        self.filter = filter
        self.id = id
        self.data = data
        self.options = options if options is not None else {}
        self.scopes: list[Mapping[str, Any]] = []      # filters added by policies and middleware
        self.conditions: list[Condition] = []          # prebuilt conditions added by policies
        self.state: dict[str, Any] = {}                # policies' notes for later hooks
        self.in_transaction = False                    # a policy needs hooks inside the transaction
        #: A policy's ``before_statement`` needs the record's primary key (``state["key"]``), read and
        #: locked in the transaction before the change: an update or delete by id then takes lock, change,
        #: read back instead of one ``UPDATE``/``DELETE ... RETURNING`` (audit, versioning, tenancy's checks
        #: that compare the stored record). ``in_transaction`` alone keeps the one statement: its hooks run
        #: around it in its transaction, without ``state["key"]`` (row-level security only needs the transaction).
        self.key_first = False
        self.snapshot = False                          # own transaction REPEATABLE READ (Backend.snapshot_writes); a retry clears it
        self.parent = parent                           # the call an include belongs to

    @property
    def model(self) -> str:
        return self.binding.name

    @property
    def reads(self) -> bool:
        return self.action in READS

    @property
    def writes(self) -> bool:
        return self.action in WRITES

    @property
    def scoped(self) -> bool:
        return self.action in SCOPED

    def where(self, filt: Mapping[str, Any]) -> "Call":
        """AND a MongoDB-style filter into what this call reads or changes."""
        if not isinstance(filt, Mapping):
            raise FilterError(f"a scope filter must be a dict, got {type(filt).__name__}", path="scope",
                              model=self.model)
        if filt:
            self.scopes.append(filt)
        return self

    def stamp(self, name: str, value: Any) -> "Call":
        """Set field ``name`` to ``value`` on whatever this call writes (one record or every record)."""
        checked = self.binding.codec.value(name, value) if self.binding.codec else value
        self.state.setdefault("stamp", {})[name] = checked
        if isinstance(self.data, dict) and self.action in ("create", "upsert"):
            self.data[name] = checked
        return self

    def add(self, condition: Condition) -> "Call":
        """AND a prebuilt condition into what this call reads or changes."""
        self.conditions.append(condition)
        return self

    @property
    def bounded(self) -> bool:
        """True when a policy or middleware bounds what this call may see or change."""
        return bool(self.scopes) or any(c.bounds for c in self.conditions)

    def child(self, action: str, binding: "Binding", **kw: Any) -> "Call":
        """A call made on behalf of this one (a relation include), in the same context."""
        return Call(action, binding, self.ctx, parent=self, **kw)

    def __repr__(self) -> str:
        return f"Call({self.action!r}, {self.model!r})"
