"""The per-call context: who is calling, for which tenant, in which request.

One ``Context`` lives in a context variable, so code running inside a request, a ``with`` block,
a worker thread started with ``contextvars.copy_context()`` or a Kailash node execution (the
runtime carries the caller's context into its nodes) sees the same values without passing them.
No operation takes the tenant or the actor as an argument.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Iterator, Mapping

SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class Context:
    """Who and what an operation runs for; immutable, replaced (never mutated) by ``scope``."""

    tenant: str | None = None
    tenant_bypass: bool = False      # admin jobs: ``with db.tenant(None, bypass=True):``
    actor: str | None = None
    request: Any = None              # the Starlette request while serving one
    request_id: str | None = None
    transaction: Any = None          # the open ``db.transaction()`` (a connection), if any

    @property
    def actor_or_system(self) -> str:
        return self.actor if self.actor is not None else SYSTEM_ACTOR


_CURRENT: ContextVar[Context] = ContextVar("dataflow_context", default=Context())  # noqa: B039 - frozen


def current() -> Context:
    """The context of the code running now."""
    return _CURRENT.get()


@contextmanager
def scope(**changes: Any) -> Iterator[Context]:
    """Run a block with some context fields replaced: ``with scope(actor="admin"): ...``."""
    token = _CURRENT.set(replace(_CURRENT.get(), **changes))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


#: What ``db.transaction()`` keeps about its open connection (owner, deferred hooks, doomed flags),
#: by connection. Kept beside the connection, not in ``conn.info``: a Connection whose link was lost
#: (a server restart) refuses to show its ``info`` until rolled back, and the block must still read
#: this to fail cleanly. A connection handed in by hand (``scope(transaction=conn)``) has none.
_NONE: Mapping[str, Any] = MappingProxyType({})
_TX_STATE: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


def tx_state(conn: Any) -> Mapping[str, Any]:
    """What ``db.transaction()`` keeps for ``conn`` (empty for a connection it did not open)."""
    return _TX_STATE.get(conn, _NONE)


def open_tx_state(conn: Any, **state: Any) -> dict[str, Any]:
    """Start keeping ``state`` for ``conn`` (``db.transaction()`` opened it)."""
    kept = _TX_STATE[conn] = dict(state)
    return kept


def drop_tx_state(conn: Any) -> None:
    _TX_STATE.pop(conn, None)
