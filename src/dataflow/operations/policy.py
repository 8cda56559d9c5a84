"""``Policy``: what a cross-cutting concern implements to act on every operation.

The executor calls, for each call:

1. ``plan(call)``: before anything is compiled. Narrow it (``call.where``, ``call.add``), stamp
   values into ``call.data``, note things in ``call.state``, or refuse by raising.
2. ``before_statement(call, conn)`` and ``after_statement(call, conn, info)``: inside the
   operation's transaction, around its main statement (write related rows, check versions).
   A policy that needs these for a call sets ``call.in_transaction = True`` in ``plan``, which
   takes the operation off the driver fast path. One whose ``before_statement`` also needs the
   record's key (``call.state["key"]``, locked) before an update or delete by id changes it sets
   ``call.key_first = True``; without it, such a change is one ``UPDATE/DELETE ... RETURNING``
   (``state["key"]`` is set after it).
3. ``after_commit(call, result, elapsed)``: the change is durable (invalidate caches, count).
   Inside ``db.transaction()`` these wait for the outermost block to commit (and are dropped when
   it, or the savepoint the call ran in, rolls back), unless the policy sets ``at_commit = False``
   (metrics: they time the operation itself, committed or not).
4. ``failed(call, error, elapsed)``: the operation raised (a ``DataFlowError``).

Only the hooks a policy overrides are called (the executor looks once, when it is added).
"""

from __future__ import annotations

from typing import Any

from .call import Call

HOOKS = ("plan", "before_statement", "after_statement", "after_commit", "failed")


class Policy:
    """Base class: every hook does nothing. ``name`` identifies the policy in the chain."""

    name = "policy"
    #: Run ``after_commit`` when the caller's transaction commits (True) or right after the operation.
    at_commit = True

    def plan(self, call: Call) -> None:
        """Narrow, stamp or refuse the call before it is compiled."""

    def before_statement(self, call: Call, conn: Any) -> None:
        """Inside the transaction, before the main statement."""

    def after_statement(self, call: Call, conn: Any, info: dict) -> None:
        """Inside the transaction, after the main statement (``info``: keys, rowcount, ...)."""

    def after_commit(self, call: Call, result: Any, elapsed: float) -> None:
        """After the operation's transaction committed (or after a read returned)."""

    def failed(self, call: Call, error: BaseException, elapsed: float) -> None:
        """The operation raised ``error``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def overrides(policy: Policy, hook: str) -> bool:
    """True when ``policy`` implements ``hook`` itself (not the base class's no-op)."""
    return getattr(type(policy), hook) is not getattr(Policy, hook)
