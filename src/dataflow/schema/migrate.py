"""Auto-migration: plan the changes that bring the database to the models, then apply them.

``Migrator.plan()`` compares (``diff.Differ``) and renders the exact SQL with Alembic's
``Operations`` in offline mode, per table in batch mode (so SQLite rebuilds a table where it
cannot ALTER it). ``Migrator.apply()`` takes the database's migration lock (``locks``), plans
again under it (another process may have migrated meanwhile), runs that SQL, records it in
``dataflow_migrations`` (``history``) and commits. Destructive changes are reported, with their
SQL, and run only with ``allow_destructive=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import sqlalchemy as sa
from alembic.operations import Operations, ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine.default import StrCompileDialect

from ..driver_errors import driver_message
from ..errors import AbortedError, MigrationError
from ..models import ModelSpec
from ..progress import NOOP, Reporter
from . import history
from .diff import Differ, Step, label, quiet_alembic
from .locks import MigrationLock, recipe_for

log = logging.getLogger("dataflow.schema")


@dataclass(frozen=True)
class Change:
    """One change in words, and the SQL that makes it."""

    description: str
    sql: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.description + "".join(f"\n    {stmt};" for stmt in self.sql)


@dataclass
class MigrationPlan:
    """What a migration does (or did): descriptions, exact SQL, and what it leaves undone.

    ``operations`` and ``sql`` are the changes this plan applies. ``destructive`` lists the
    changes that could lose data and that this plan does *not* apply (use
    ``allow_destructive=True``). ``checksum`` identifies the model state.
    """

    dialect: str
    operations: list[str]
    sql: list[str]
    destructive: list[Change]
    checksum: str
    warnings: list[str] = field(default_factory=list)
    applied: bool = False
    destructive_applied: bool = False  # operations include destructive changes (allow_destructive)
    history_id: int | None = None
    #: Tables DataFlow recorded without an app label that no model here declares: never proposed
    #: for dropping, since nothing shows these models made them (diff.label, history.py).
    left_alone: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        """True when the database matches the models: nothing to apply, nothing destructive pending."""
        return not self.operations and not self.destructive

    def __str__(self) -> str:
        if self.is_empty:
            return f"No changes: the {self.dialect} database matches the models."
        verb = "Applied" if self.applied else "Would apply"
        lines = [f"{verb} {len(self.operations)} change(s) on {self.dialect}:"] if self.operations else [
            f"No change to apply automatically on {self.dialect}."]
        lines += [f"  - {op}" for op in self.operations]
        if self.sql:
            lines += ["SQL:"] + [f"  {stmt};" for stmt in self.sql]
        if self.destructive:
            lines.append(f"{len(self.destructive)} destructive change(s) NOT applied "
                         "(use allow_destructive=True, or `dataflow migrate --allow-destructive`):")
            lines += ["  - " + str(change).replace("\n", "\n  ") for change in self.destructive]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def model_checksum(metadata: sa.MetaData) -> str:
    """SHA-256 of the declared schema (tables, columns, types, keys, indexes), dialect-independent."""
    dialect = StrCompileDialect()
    state = []
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        state.append({
            "table": table.name,
            "columns": [[c.name, str(c.type.compile(dialect=dialect)), c.nullable, c.primary_key,
                         sorted(fk.target_fullname for fk in c.foreign_keys)] for c in table.columns],
            "indexes": sorted([i.name, [c.name for c in i.columns], bool(i.unique)] for i in table.indexes),
            "unique": sorted([u.name, [c.name for c in u.columns]] for u in table.constraints
                             if isinstance(u, sa.UniqueConstraint)),
        })
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


class _Statements:
    """Output buffer for Alembic's offline mode: one write per statement."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.statements: list[str] = []
        # Offline SQL escapes % for the driver's paramstyle; we run it without parameters.
        self._unescape = dialect.paramstyle in ("format", "pyformat")

    def write(self, text: str) -> None:
        text = text.strip()
        if text.endswith(";"):
            text = text[:-1].rstrip()
        if text:
            self.statements.append(text.replace("%%", "%") if self._unescape else text)

    def flush(self) -> None:
        pass


def _merge_alters(operations: list[ops.MigrateOperation]) -> list[ops.MigrateOperation]:
    """Fold the alterations of one column into one operation (a batch knows a column by one name)."""
    merged: list[ops.MigrateOperation] = []
    by_column: dict[str, ops.AlterColumnOp] = {}
    for op in operations:
        if not isinstance(op, ops.AlterColumnOp):
            merged.append(op)
            continue
        first = by_column.get(op.column_name)
        if first is None:
            first = by_column[op.column_name] = ops.AlterColumnOp(
                op.table_name, op.column_name, schema=op.schema, existing_type=op.existing_type,
                existing_nullable=op.existing_nullable, existing_server_default=op.existing_server_default,
                existing_comment=op.existing_comment, **op.kw)
            merged.append(first)
        for attr in ("modify_type", "modify_name"):
            if getattr(op, attr) is not None:
                setattr(first, attr, getattr(op, attr))
        if op.modify_nullable is not None:
            first.modify_nullable = op.modify_nullable
    # Renames first: later operations of the batch (indexes, constraints) use the new names.
    return sorted(merged, key=lambda o: not (isinstance(o, ops.AlterColumnOp) and o.modify_name))


def _batches(steps: list[Step]) -> list[tuple[str | None, list[Step]]]:
    """One batch per existing table, at the place of its first step; every other step alone."""
    groups: dict[str | int, list[Step]] = {}
    for position, step in enumerate(steps):
        groups.setdefault(step.table if step.table is not None else position, []).append(step)
    return [(key if isinstance(key, str) else None, group) for key, group in groups.items()]


class Migrator:
    """Bring the database behind ``engine`` to the tables of ``metadata`` (built from ``specs``)."""

    def __init__(self, engine: sa.Engine, metadata: sa.MetaData, specs: dict[str, ModelSpec], *,
                 lock_timeout: float = 30.0, owner: str | None = None) -> None:
        self.engine = engine
        self.owner = owner  # the app label of models that declare none (diff.label)
        self.metadata = metadata
        self.specs = specs
        self.lock_timeout = lock_timeout
        recipe_for(engine.dialect)  # fail early on an unsupported database

    def plan(self, *, allow_destructive: bool = False) -> MigrationPlan:
        """Compare the models with the database and return what ``apply()`` would do; change nothing.

        Raises ``MigrationError`` when the models cannot be reached safely (e.g. a new required
        field without a default), naming the model, the field and what to do.
        """
        with self._database_errors("compare the models with"), self.engine.connect() as conn:
            return self._plan(conn, allow_destructive)

    def apply(self, *, allow_destructive: bool = False, progress: Reporter = NOOP) -> MigrationPlan:
        """Apply the plan under the database's migration lock, record it, and return it.

        Waits at most ``lock_timeout`` seconds for another process's migration; then plans again,
        so that when three processes start at once one migrates and the others find nothing to do.
        ``progress`` hears of each statement as it is applied (total: the statements of the plan made
        under the lock); nothing to apply is ``(0, 0)``.
        """
        first = self.plan(allow_destructive=allow_destructive)
        if not first.sql:
            progress.finish(0)
            self._report(first)
            return first
        with self._database_errors("migrate"), self.engine.connect() as conn, \
                MigrationLock(conn, timeout=self.lock_timeout) as lock:
            plan = self._plan(conn, allow_destructive)
            progress.begin(len(plan.sql))
            if plan.sql:
                self._execute(conn, lock, plan, progress)
                plan.history_id = history.record(
                    conn, operations=plan.operations, sql=plan.sql, checksum=plan.checksum,
                    tables=self.metadata.tables, destructive=plan.destructive_applied, owners=self._owners())
                plan.applied = True
            progress.finish()
            lock.commit()
        self._report(plan)
        return plan

    def _owners(self) -> dict[str, str | None]:
        return {spec.table: label(spec, self.owner) for spec in self.specs.values()}

    @contextmanager
    def _database_errors(self, action: str) -> Iterator[None]:
        """Driver errors outside a statement of ours (connecting, reflecting) as MigrationError."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            raise MigrationError(f"Could not {action} the {self.engine.dialect.name} database: "
                                 f"{driver_message(exc, action)}", original=exc) from None

    # -- planning ------------------------------------------------------------------------------
    def _plan(self, conn: sa.Connection, allow_destructive: bool) -> MigrationPlan:
        differ = Differ(conn, self.metadata, self.specs, owner=self.owner).run()
        if differ.problems:
            message, model, field_name = differ.problems[0]
            if len(differ.problems) > 1:
                message = "\n".join(["The models cannot be migrated safely:"] + [f"- {p[0]}" for p in differ.problems])
            raise MigrationError(message + "\nNothing was changed.", model=model, field=field_name)
        steps = differ.steps
        dropped = {(s.table, s.op.column_name) for s in steps
                   if s.destructive and isinstance(s.op, ops.DropColumnOp)}
        if allow_destructive:  # a column about to be dropped need not be made nullable first
            steps = [s for s in steps if not (s.drops_column and (s.table, s.drops_column) in dropped)]
        chosen = [s for s in steps if allow_destructive or not s.destructive]
        left = [] if allow_destructive else [s for s in steps if s.destructive]
        return MigrationPlan(
            dialect=conn.dialect.name,
            operations=[s.description for s in chosen],
            sql=self._render(conn, chosen),
            destructive=[Change(s.description, tuple(self._render(conn, [s]))) for s in left],
            checksum=model_checksum(self.metadata),
            warnings=differ.warnings,
            destructive_applied=any(s.destructive for s in chosen),
            left_alone=sorted(differ.left_alone),
        )

    def _render(self, conn: sa.Connection, steps: list[Step]) -> list[str]:
        """The exact SQL of ``steps`` on this database (Alembic offline mode, a batch per table)."""
        out = _Statements(conn.dialect)
        with quiet_alembic():
            context = MigrationContext.configure(dialect=conn.dialect, opts={"as_sql": True, "output_buffer": out})
        operations = Operations(context)
        with warnings.catch_warnings():
            # Alembic flags AUTO_INCREMENT-keeping (MySQL) on every dialect's ALTER; harmless elsewhere.
            warnings.filterwarnings("ignore", message="autoincrement and existing_autoincrement only make sense")
            for table, group in _batches(steps):
                if table is None:
                    operations.invoke(group[0].op)
                    continue
                copy_from = sa.Table(table, sa.MetaData(), autoload_with=conn, resolve_fks=False)
                with operations.batch_alter_table(table, copy_from=copy_from) as batch:
                    for op in _merge_alters([s.op for s in group]):
                        batch.invoke(op)
        return out.statements

    # -- applying ------------------------------------------------------------------------------
    def _execute(self, conn: sa.Connection, lock: MigrationLock, plan: MigrationPlan,
                 progress: Reporter = NOOP) -> None:
        # Violations that exist before are the data's; the migration must not add any.
        before = {row[:3] for row in lock.verify()}
        for number, stmt in enumerate(plan.sql, 1):
            try:
                conn.exec_driver_sql(stmt, execution_options={"no_parameters": True})
            except sa.exc.DBAPIError as exc:
                partial = self._record_partial(conn, lock, plan, number)
                raise MigrationError(
                    f"Migration failed on {plan.dialect} at statement {number} of {len(plan.sql)}:\n"
                    f"  {stmt}\n{driver_message(exc, 'migrate')}\n" + self._aftermath(lock, number, partial),
                    original=exc) from None
            try:
                progress.advance(1)
            except AbortedError as exc:  # the caller's callback raised: stop as after a failed statement
                partial = self._record_partial(conn, lock, plan, number + 1, stopped=f"stopped by the progress "
                                               f"callback after statement {number} of {len(plan.sql)}")
                raise AbortedError(f"{exc.message} after statement {number} of {len(plan.sql)}.\n"
                                   + self._aftermath(lock, number + 1, partial, stopped=True),
                                   original=exc.original) from exc.__cause__
        broken = [row for row in lock.verify() if row[:3] not in before]
        if broken:
            # Table names only: the row ids are stored values, which errors never show.
            counts: dict[str, int] = {}
            for row in broken:
                counts[f"{row[0]} -> {row[2]}"] = counts.get(f"{row[0]} -> {row[2]}", 0) + 1
            shown = "; ".join(f"{n} row(s) {link}" for link, n in sorted(counts.items()))
            raise MigrationError(
                f"The migration would leave {len(broken)} row(s) breaking foreign keys ({shown}). "
                "Nothing was changed (rolled back).")

    def _record_partial(self, conn: sa.Connection, lock: MigrationLock, plan: MigrationPlan,
                        number: int, stopped: str | None = None) -> int | None:
        """On a database that commits each schema statement, record the statements that ran.

        ``number`` is the statement that did not run (one past the last when every one ran).
        Without this row, ``dataflow_migrations`` would not show changes that are in the database.
        Returns the history id, or None when nothing ran or nothing could be recorded.
        """
        if lock.recipe.transactional_ddl or number <= 1:
            return None
        done = plan.sql[:number - 1]
        stopped = stopped or f"stopped at statement {number} of {len(plan.sql)}"
        try:
            # The failed statement may have left the transaction unusable: record on a clean one.
            lock.rollback()
            lock.begin()
            history_id = history.record(
                conn, operations=[f"PARTIAL: {stopped}; the {number - 1} statement(s) of {len(plan.sql)} "
                                  f"before that were applied. Planned:"]
                + [f"  {op}" for op in plan.operations],
                sql=done, checksum=plan.checksum, tables=self.metadata.tables,
                destructive=plan.destructive_applied, owners=self._owners(), partial=True)
            lock.commit()
            return history_id
        except sa.exc.DBAPIError:
            log.warning("could not record the partial migration in %s", history.HISTORY_TABLE, exc_info=False)
            return None

    @staticmethod
    def _aftermath(lock: MigrationLock, number: int, partial: int | None = None, stopped: bool = False) -> str:
        if lock.recipe.transactional_ddl or number <= 1:
            return "Nothing was changed (the migration was rolled back)."
        recorded = (f" They are recorded as partial migration #{partial} in {history.HISTORY_TABLE}."
                    if partial is not None else "")
        again = "Migrate again to finish" if stopped else "Fix the cause and migrate again"
        which = "that ran" if stopped else "before it"
        return (f"This database commits each schema statement: the {number - 1} statement(s) {which} "
                f"were applied.{recorded} {again}; the next plan starts from the current state.")

    def _report(self, plan: MigrationPlan) -> None:
        if plan.left_alone:
            log.info("not proposing to drop table(s) %s: no model here declares them, and the migration "
                     "history does not show that models of this app made them (label the models with "
                     "__dataflow__ = {'app': ...} to let a migration propose dropping the tables of removed "
                     "models)", ", ".join(plan.left_alone))
        for op in plan.operations if plan.applied else ():
            log.info("migrated: %s", op)
        for change in plan.destructive:
            log.warning("destructive change not applied (use allow_destructive=True): %s", change)
        for warning in plan.warnings:
            log.warning("%s", warning)
