"""The one path every operation takes: plan, compile, execute, in-transaction hooks, after commit.

``Executor.run(call, body)`` runs the policies' ``plan`` hooks, then ``body(call)`` (which builds
its statement from the planned call and executes it through ``transaction``/``prepared``), then
``after_commit`` or ``failed``. Driver errors become DataFlow errors here, once. Outside a
transaction, a read that met a dead connection, or a write that failed before its statement was
sent, is retried once; deadlocks are retried a few times.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import sqlalchemy as sa

from ..binding import Binding
from ..driver_errors import translate
from ..errors import DatabaseUnavailableError, DataFlowError, PoolTimeoutError, ValidationError
from ..prepared import Prepared, prepare, run_raw
from ..query import compile_filter
from .call import MISSING, Call
from .context import current, tx_state
from .policy import HOOKS, Policy, overrides

if TYPE_CHECKING:
    from ..core.dataflow import DataFlow

log = logging.getLogger("dataflow.operations")

#: Deadlocks and lock wait timeouts: how many times a write is tried before the error is reported.
DEADLOCK_ATTEMPTS = 5
#: Prepared statements kept per model before the cache starts over.
STATEMENTS_PER_MODEL = 1000


@dataclass
class Where:
    """The WHERE of a planned call: its shape ``key``, the values to bind, and how to build the clauses."""

    key: tuple
    params: dict
    builders: list[Callable[[], Any]]
    user_clause: Any = None          # the caller's own filter (for the confirm_all check)

    def clauses(self) -> list:
        return [build() for build in self.builders]


class Executor:
    """Runs every ``Call`` of one ``DataFlow`` instance through its chain of policies."""

    def __init__(self, db: "DataFlow") -> None:
        self.db = db
        self.policies: list[Policy] = []
        self._hooks: dict[str, tuple[Callable, ...]] = {h: () for h in HOOKS}
        self._timed = False
        self._now: tuple[Callable, ...] = ()         # after_commit hooks that never wait for a commit

    # ------------------------------------------------------------------ the chain
    def add(self, policy: Policy, *, first: bool = False) -> Policy:
        """Add a policy to the chain (last, or ``first``); return it."""
        if first:
            self.policies.insert(0, policy)
        else:
            self.policies.append(policy)
        self._index()
        return policy

    def remove(self, policy: Policy) -> None:
        """Take a policy out of the chain."""
        self.policies.remove(policy)
        self._index()

    def get(self, name: str) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)

    def _index(self) -> None:
        # after_commit/failed run in reverse order, like unwinding a stack.
        self._hooks = {h: tuple(getattr(p, h) for p in (self.policies if h in ("plan", "before_statement")
                                                       else reversed(self.policies)) if overrides(p, h))
                       for h in HOOKS}
        self._timed = bool(self._hooks["after_commit"] or self._hooks["failed"])
        self._now = tuple(p.after_commit for p in reversed(self.policies)
                          if overrides(p, "after_commit") and not p.at_commit)

    # ------------------------------------------------------------------ one call
    def call(self, action: str, binding: Binding, **kw: Any) -> Call:
        """A ``Call`` in the current context (an open ``db.transaction()`` of another instance is not ours)."""
        ctx = current()
        if ctx.transaction is not None and tx_state(ctx.transaction).get("owner", self.db) is not self.db:
            ctx = replace(ctx, transaction=None)
        return Call(action, binding, ctx, **kw)

    def plan(self, call: Call) -> Call:
        for hook in self._hooks["plan"]:
            hook(call)
        return call

    def run(self, call: Call, body: Callable[[Call], Any]) -> Any:
        """Plan ``call``, run ``body(call)``, then the after-commit (or failed) hooks; return the result."""
        self.plan(call)
        if not self._timed:  # nobody waits for after-commit or failure: no clock reads
            return self._attempts(call, body)
        started = time.perf_counter()
        try:
            result = self._attempts(call, body)
        except DataFlowError as exc:
            elapsed = time.perf_counter() - started
            for hook in self._hooks["failed"]:
                hook(call, exc, elapsed)
            raise
        self._after_commit(call, result, time.perf_counter() - started)
        return result

    def _attempts(self, call: Call, body: Callable[[Call], Any]) -> Any:
        """``body(call)``, tried again where ``_retry`` says it is safe."""
        attempt = 0
        while True:
            try:
                return body(call)
            except DataFlowError as exc:
                attempt += 1
                if not self._retry(call, exc, attempt):
                    raise

    def _after_commit(self, call: Call, result: Any, elapsed: float) -> None:
        tx = call.ctx.transaction
        if tx is not None and self._hooks["after_commit"]:
            # Inside db.transaction(): the change is not durable yet. Hooks that act on what is true
            # (cache invalidation, events) run when the outermost block commits, never before.
            for hook in self._now:
                hook(call, result, elapsed)
            pending = tx_state(tx).get("pending")
            later = [h for h in self._hooks["after_commit"] if h not in self._now]
            if pending is not None:
                pending[-1].extend((hook, call, result, elapsed) for hook in later)
            else:  # a connection handed in by hand, not through db.transaction(): nothing to wait for
                for hook in later:
                    hook(call, result, elapsed)
            return
        for hook in self._hooks["after_commit"]:
            hook(call, result, elapsed)

    def stream(self, call: Call, body: Callable[[Call], Iterator[Any]]) -> Iterator[Any]:
        """``run`` for a body that yields: the after-commit hooks run when the iteration ends
        (also when the consumer stops early), the failed hooks when it raises."""
        self.plan(call)
        started = time.perf_counter()

        def finished() -> None:
            self._after_commit(call, None, time.perf_counter() - started)

        try:
            yield from body(call)
        except GeneratorExit:  # the consumer stopped early: what it read was read
            finished()
            raise
        except DataFlowError as exc:
            for hook in self._hooks["failed"]:
                hook(call, exc, time.perf_counter() - started)
            raise
        finished()

    def before_statement(self, call: Call, conn: Any) -> None:
        for hook in self._hooks["before_statement"]:
            hook(call, conn)

    def after_statement(self, call: Call, conn: Any, **info: Any) -> None:
        for hook in self._hooks["after_statement"]:
            hook(call, conn, info)

    def _retry(self, call: Call, exc: DataFlowError, attempt: int) -> bool:
        """Whether to try ``call`` again after ``exc``: only where that cannot apply a change twice.

        A lost connection: a read outside a transaction is tried once more on a fresh connection, and
        so is a write that failed before its statement was sent (connecting, checking out). A write whose
        statement may have reached the server is not: the caller hears of it and decides.
        """
        if call.ctx.transaction is not None:
            return False  # the caller's transaction is gone: only the caller can start over
        if (isinstance(exc, DatabaseUnavailableError) and not isinstance(exc, PoolTimeoutError) and attempt == 1
                and (call.reads or not exc.sent)):
            log.info("retrying %s after a lost connection", "a read" if call.reads else "a write that was not sent",
                     extra={"model": call.model, "action": call.action})
            return True
        if attempt < DEADLOCK_ATTEMPTS and self._is_deadlock(exc.original):
            if call.snapshot:
                # A snapshot write that met a concurrent change meets one again on a table written that often
                # (an audited bulk update of 10,000 rows failed every attempt at 20 single-row updates a
                # second): the next attempts run at the default isolation and lock the rows as they read
                # them (the policies read Call.snapshot), so they wait for other writers instead of failing.
                call.snapshot = False
            time.sleep(random.uniform(0.005, 0.03) * attempt)
            return True
        return False

    def _is_deadlock(self, orig: BaseException | None) -> bool:
        if orig is None:
            return False
        facts = self.db.facts
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int):
            return args[0] in facts.retry_errnos
        return str(getattr(orig, "sqlstate", "") or "") in facts.retry_sqlstates

    # ------------------------------------------------------------------ WHERE
    def where(self, call: Call, *, path: str = "filter") -> Where:
        """The WHERE of a planned call: the caller's filter, the id, and what the policies added."""
        b = call.binding
        if call.filter is not None and not isinstance(call.filter, Mapping):
            raise ValidationError(f"{b.name}: {path} must be a dict, got {type(call.filter).__name__}", model=b.name)
        keys: list = []
        params: dict = {}
        builders: list = []
        user_clause = None
        if call.id is not MISSING:
            key = b.model_codec.key(call.id) if b.codec else call.id
            keys.append("id")
            params["df_id"] = key
            builders.append(lambda: b.pk == sa.bindparam("df_id", type_=b.pk.type))
        if call.filter:
            f = compile_filter(b.table, call.filter, path=path)
            if f.clause is not None:
                user_clause = f.clause
                keys.append(f.key)
                params.update(f.params)
                builders.append(lambda c=f.clause: c)
        for i, scope in enumerate(call.scopes):
            f = compile_filter(b.table, scope, path=f"scope{i}")
            if f.clause is not None:
                keys.append(f.key)
                params.update(f.params)
                builders.append(lambda c=f.clause: c)
        for cond in call.conditions:
            keys.append(cond.key)
            params.update(cond.params)
            builders.append(lambda cond=cond: cond.build(b.table))
        return Where(tuple(keys), params, builders, user_clause)

    # ------------------------------------------------------------------ statements
    def prepared(self, b: Binding, key: tuple, build: Callable[[], Any]) -> Prepared:
        """The statement for ``key`` (the call's shape), compiled once per model."""
        p = b.statements.get(key)
        if p is None:
            if len(b.statements) > STATEMENTS_PER_MODEL:  # shapes are few in practice; never grow unbounded
                b.statements.clear()
            p = b.statements[key] = prepare(self.db.engine.dialect, build())
        return p

    def execute(self, call: Call, p: Prepared, params: Mapping[str, Any]) -> list[dict]:
        """One prepared statement in its own transaction; records out, DataFlow errors on failure.

        The driver fast path is taken when nobody needs to see the statement (no ``echo``, no
        cursor-execute listeners) and no policy needs hooks inside the transaction; otherwise the
        same SQL runs through SQLAlchemy, which logs it and fires the engine's events.

        A policy may put a memo in ``call.state["memo"]`` (the query cache): ``lookup(call, p,
        params)`` answers from it (records or None) and ``store(call, p, params, records, token)``
        keeps what the database returned; both see the final statement and its values.
        """
        call.state["sql"] = p.sql  # for slow-operation logs (text only: values are never logged)
        memo = call.state.get("memo")
        if memo is not None:  # the cache keeps native records; a call asking for JSON gets them encoded
            found, token = memo.lookup(call, p, params)
            if found is None:
                found = self._execute(call, p, params, False)
                memo.store(call, p, params, found, token)
            return self.encoded(call, found) if call.options.get("json") else found
        return self._execute(call, p, params, call.options.get("json", False))

    @staticmethod
    def encoded(call: Call, records: list[dict]) -> list[dict]:
        """``records`` in their JSON-safe form (``call.options["json"]``: a node's output)."""
        return [call.binding.encoder(r) for r in records]

    def _execute(self, call: Call, p: Prepared, params: Mapping[str, Any], json: bool) -> list[dict]:
        if call.in_transaction or call.ctx.transaction is not None or self.watched():
            with self.transaction(call) as conn:
                self.before_statement(call, conn)
                sql, values = p.bound(params)
                result = conn.exec_driver_sql(sql, values)
                description = result.cursor.description if result.returns_rows and result.cursor else None
                rows = list(result.fetchall()) if result.returns_rows else []
                records = p.json_records(rows, description, call.binding.spec) if json else p.records(rows, description)
                self.after_statement(call, conn, records=records, rowcount=len(records))
                return records
        self.ready(call)
        try:
            raw = self.db.engine.raw_connection()
        except self.db.catchable as exc:
            raise self.unsent(exc, call) from None
        try:
            rows, description = run_raw(self.db, p, params, raw)
            return p.json_records(rows, description, call.binding.spec) if json else p.records(rows, description)
        except DataFlowError:
            raise
        except self.db.catchable as exc:
            raise self.translated(exc, call) from None

    def watched(self) -> bool:
        """True when statements are logged (``echo``) or listened to (cursor-execute events)."""
        engine = self.db.engine
        if engine._echo:
            return True
        if not engine._has_events:  # no connection-level listener at all (cursor events are those)
            return False
        dispatch = engine.dispatch
        return bool(dispatch.before_cursor_execute) or bool(dispatch.after_cursor_execute)

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def transaction(self, call: Call) -> Iterator[sa.Connection]:
        """A connection in a transaction (the caller's, when one is open); DataFlow errors on failure."""
        open_tx = call.ctx.transaction
        if open_tx is not None:
            try:
                yield open_tx
            except DataFlowError:
                raise
            except self.db.catchable as exc:
                raise self.translated(exc, call) from None
            return
        self.ready(call)
        try:
            connection = self.db.engine.connect()  # checks a pooled connection out (or connects)
        except self.db.catchable as exc:
            raise self.unsent(exc, call) from None
        try:
            with connection as conn:
                if self.db.facts.begin_immediate and not call.reads:
                    # A deferred SQLite transaction that reads, then writes (update, delete, upsert) deadlocks
                    # with another doing the same, and SQLite fails one at once with 'database is locked'
                    # instead of waiting. Taking the write lock at BEGIN makes the second writer wait its turn.
                    conn.execution_options(sqlite_begin="IMMEDIATE")
                if call.snapshot and self.db.facts.snapshot_writes:
                    # One snapshot for every statement (the pool puts the default back on return).
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except DataFlowError:
            raise
        except self.db.catchable as exc:
            raise self.translated(exc, call) from None

    def ready(self, call: Call) -> None:
        """Connect and migrate once; an unreachable database is reported for the operation that needed it."""
        try:
            self.db.ensure_ready()
        except DatabaseUnavailableError as exc:
            raise DatabaseUnavailableError(f"{call.model} {_label(call)}: {exc.message}", model=call.model,
                                           original=exc.original) from None

    def unsent(self, exc: BaseException, call: Call) -> DataFlowError:
        """The DataFlow error for a failure to get a connection: nothing of ``call`` was sent."""
        error = self.translated(exc, call)
        if isinstance(error, DatabaseUnavailableError):
            error.sent = False
        return error

    def translated(self, exc: BaseException, call: Call) -> DataFlowError:
        """The DataFlow error for a driver error met while running ``call``."""
        b = call.binding
        if isinstance(exc, sa.exc.TimeoutError):  # the pool, not the database: say how big it is
            from ..pool import pool_timeout

            return pool_timeout(self.db, f"{b.name} {_label(call)}")
        error = translate(exc, model=b.name, action=_label(call), where=self.db.safe_url, constraints=b.constraints)
        explain = getattr(self.db.operations, "explain", None)
        return explain(call, error) if explain is not None else error


def _label(call: Call) -> str:
    return call.action.replace("_", " ")


def matches_everything(clause: Any) -> bool:
    """True when a compiled filter selects every row (``{}``, ``{"$and": [{}]}``, ``{"$or": [{}, ...]}``).

    Judged on the condition as SQLAlchemy reduced it (``and_()``/``or_()`` fold constant parts away),
    rendered without a dialect (each database spells TRUE its own way).
    """
    if clause is None:
        return True
    try:
        text = str(clause.compile()).strip().strip("()").strip().lower()
    except Exception:
        return False
    return text in ("true", "1", "1 = 1")


__all__ = ["Executor", "Where", "matches_everything", "MISSING"]
