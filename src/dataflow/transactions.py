"""``with db.transaction():``: every DataFlow operation inside the block is one database transaction.

The open connection goes into the per-call context (``Context.transaction``), so every door
(direct API, nodes a ``LocalRuntime`` executes inside the block, ``db.query``, bulk, aggregate) runs
on it: the executor uses ``call.ctx.transaction`` when it is set. An exception leaving the block
rolls everything back; a nested block is a savepoint (its failure undoes only its own work, if the
caller catches the exception). Policies' ``after_commit`` hooks (cache invalidation, events) of the
calls inside wait for the outermost commit and are dropped with whatever rolls back.

Across databases the block behaves the same: a write that failed inside it (it may have changed
some rows before failing: a bulk load has no savepoint of its own here), a read that failed in the
database, or a DataFlow node that failed, dooms the block (as PostgreSQL does on its own after any
error): it rolls back at the end and ``TransactionError`` is raised, even when the failure was
caught inside (a ``LocalRuntime`` records a failed node in its results instead of raising). Errors
raised before anything changed (``NotFoundError``, a value refused before any SQL) do not doom it.
Wrap work that may fail and be recovered from in a nested block (a savepoint).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from .errors import DatabaseError, DataFlowError, NotFoundError, TransactionError
from .operations.call import Call
from .operations.context import current, drop_tx_state, open_tx_state, scope, tx_state
from .operations.policy import Policy

if TYPE_CHECKING:
    from .core.dataflow import DataFlow

log = logging.getLogger("dataflow.transactions")

# What the block keeps for its connection (operations.context.tx_state), by key:
PENDING = "pending"   # one list of deferred after_commit hooks per open level
DOOMED = "doomed"     # one flag per open level: an operation failed at that level
OWNER = "owner"       # the DataFlow instance the transaction belongs to


@contextmanager
def transaction(db: "DataFlow") -> Iterator[sa.Connection]:
    """Open a transaction (or a savepoint inside an open one) for every operation in the block."""
    open_tx = current().transaction
    if open_tx is not None:
        if tx_state(open_tx).get(OWNER) is not db:
            raise DataFlowError("db.transaction() inside a transaction of another DataFlow instance: "
                                "one transaction spans one database")
        with _savepoint(db, open_tx):
            yield open_tx
        return
    db.ensure_ready()
    try:
        conn = db.engine.connect()
    except (sa_exc.SQLAlchemyError, *db.driver_errors) as exc:
        raise _translated(db, exc) from None
    pending: list[list] = [[]]
    try:
        if db.facts.begin_immediate:
            conn.execution_options(sqlite_begin="IMMEDIATE")  # the write lock up front (see Executor.transaction)
        state = open_tx_state(conn, **{PENDING: pending, DOOMED: [False], OWNER: db})
        try:
            # Sends to the server where a begin listener does (row-level security sets the tenant there).
            tx = conn.begin()
        except (sa_exc.SQLAlchemyError, *db.driver_errors) as exc:
            raise _translated(db, exc) from None
        try:
            with scope(transaction=conn):
                yield conn
        except BaseException:
            _rollback(tx)
            raise
        if state[DOOMED][0]:
            _rollback(tx)
            raise TransactionError("the transaction was rolled back: an operation inside it failed (see the log and "
                                   "the error it raised); nothing in the block was saved")
        try:
            tx.commit()
        except (sa_exc.SQLAlchemyError, *db.driver_errors) as exc:
            raise _translated(db, exc) from None
    finally:
        drop_tx_state(conn)
        conn.close()
    _run(pending[0])


@contextmanager
def _savepoint(db: "DataFlow", conn: sa.Connection) -> Iterator[None]:
    state = tx_state(conn)
    pending, doomed = state[PENDING], state[DOOMED]
    pending.append([])
    doomed.append(False)
    try:
        nested = conn.begin_nested()
    except (sa_exc.SQLAlchemyError, *db.driver_errors) as exc:
        pending.pop()
        doomed.pop()
        raise _translated(db, exc) from None
    ok = False
    try:
        yield
        ok = not doomed[-1]
    finally:
        mine = pending.pop()
        failed = doomed.pop()
        if ok:
            nested.commit()
            pending[-1].extend(mine)
        else:
            _rollback(nested)
    if failed:
        raise TransactionError("the savepoint was rolled back: an operation inside it failed; the rest of the "
                               "transaction goes on")


def _rollback(tx: Any) -> None:
    try:
        if tx.is_active:
            tx.rollback()
    except Exception as exc:  # the connection is gone: the server rolled back already
        log.warning("rollback failed (%s): the connection is dropped", type(exc).__name__)


def _run(pending: list) -> None:
    for hook, call, result, elapsed in pending:
        try:
            hook(call, result, elapsed)
        except Exception:  # the data is committed: a failing hook must not make it look rolled back
            log.exception("an after-commit hook failed after the transaction committed")


def _translated(db: "DataFlow", exc: BaseException) -> DataFlowError:
    from .driver_errors import translate
    from .pool import pool_timeout

    if isinstance(exc, sa_exc.TimeoutError):
        return pool_timeout(db, "transaction")
    return translate(exc, action="transaction", where=db.safe_url)


def doom(db: "DataFlow") -> None:
    """An operation of ``db`` failed in the block open now (a node reports it here: the runtime may not raise)."""
    conn = current().transaction
    if conn is not None and tx_state(conn).get(OWNER) is db:
        doomed = tx_state(conn).get(DOOMED)
        if doomed:
            doomed[-1] = True


class TransactionPolicy(Policy):
    """Marks the open transaction doomed when an operation inside it fails (at the current level)."""

    name = "transaction"
    at_commit = False

    def failed(self, call: Call, error: BaseException, elapsed: float) -> None:
        conn = call.ctx.transaction
        if conn is None or isinstance(error, NotFoundError):
            return  # NotFound is raised before anything changed
        if call.reads and not isinstance(error, DatabaseError):
            return  # a read refused before or without touching the transaction
        doomed = tx_state(conn).get(DOOMED)
        if doomed:
            doomed[-1] = True
