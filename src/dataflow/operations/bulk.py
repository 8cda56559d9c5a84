"""Many records in one transaction, all or nothing: bulk create, update, delete and upsert."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Sequence

import sqlalchemy as sa

from ..binding import Binding
from ..errors import DuplicateKeyError, ValidationError
from ..progress import NOOP, ProgressArg, Reporter, reporter
from ..schema.bulk import insert_columns, insert_rows
from ..schema.upsert import insert_on_conflict
from .base import DEFAULT_BATCH, ON_CONFLICT, UTC, OperationsBase, _group_by_keys, _is_unique, _version_of
from .call import Call
from .chunks import chunks
from .executor import matches_everything


class BulkOperations(OperationsBase):
    # Progress (``progress=``, see dataflow/progress.py): bulk loads report after each chunk of
    # ``batch_size`` records, counting records processed (skipped ones too); bulk update and delete
    # are one statement each: ``(0, None)`` before it, ``(n, n)`` after it. Every report comes inside
    # the transaction, so a callback that raises leaves nothing written.

    # ---------------------------------------------------------------- create
    def bulk_create(self, model: str, data: Sequence[Mapping[str, Any]], *, batch_size: int = DEFAULT_BATCH,
                    on_conflict: str = "error", return_ids: bool = False,
                    conflict_on: Sequence[str] | None = None, progress: ProgressArg = None) -> dict:
        """Insert many records in one transaction (COPY on PostgreSQL); all or nothing."""
        b = self.db.binding(model, modelled=True)
        if not isinstance(data, (list, tuple)):
            raise ValidationError(f"{b.name} bulk create: 'data' must be a list of records", model=b.name)
        if on_conflict not in ON_CONFLICT:
            raise ValidationError(f"{b.name} bulk create: on_conflict must be one of {', '.join(ON_CONFLICT)}",
                                  model=b.name)
        batch_size = self._limit(b, batch_size, "batch_size") or DEFAULT_BATCH
        report = reporter(progress, f"{b.name} bulk create", model=b.name)
        call = self._call("bulk_create", b, data=data, options={
            "batch_size": batch_size, "on_conflict": on_conflict, "return_ids": return_ids,
            "conflict_on": conflict_on})
        with report:
            return self.executor.run(call, lambda c: self._bulk_create(c, report))

    def _bulk_create(self, call: Call, report: Reporter = NOOP) -> dict:
        b, opts = call.binding, call.options
        on_conflict, return_ids = opts["on_conflict"], opts["return_ids"]
        data = _stamped(call)
        now = datetime.now(UTC)
        report.begin(len(data))
        step = report.step if report.active else None
        if on_conflict == "error" and not return_ids and data:
            fast = b.model_codec.insert_columns(data, now)
            if fast is not None:
                with self.executor.transaction(call) as conn:
                    self.executor.before_statement(call, conn)
                    insert_columns(self.db.backend, conn, b.table, *fast, watched=_no_copy(self.executor, call),
                                   step=step, chunk=opts["batch_size"])
                    self._advance_sequence(conn, b, fast[0])
                    self.executor.after_statement(call, conn, rowcount=len(data))
                    report.finish()
                return {"processed": len(data), "inserted": len(data), "success": True}
        rows = self._checked_rows(b, data, now)
        ids: list = []
        inserted = 0
        with self.executor.transaction(call) as conn:
            self.executor.before_statement(call, conn)
            for keys, group in _group_by_keys(rows):
                if on_conflict == "error" and not return_ids:
                    insert_rows(self.db.backend, conn, b.table, keys, group, watched=_no_copy(self.executor, call),
                                step=step, chunk=opts["batch_size"])
                    inserted += len(group)
                    self._advance_sequence(conn, b, keys)
                    continue
                target: list[str] = []
                if on_conflict == "error":
                    stmt = b.table.insert()
                else:
                    target = self._conflict_target(b, opts["conflict_on"], keys, "bulk create")
                    stmt = insert_on_conflict(self.db.backend, b.table, target, keys,
                                              update=on_conflict == "update", bump=_version_of(b))
                for chunk in chunks(group, opts["batch_size"]):
                    if target:
                        self._guard_other_keys(conn, call, target, chunk)
                    # New records: distinct conflict keys not stored yet (a key twice in the data is one record).
                    new = len(chunk) if on_conflict == "error" else self._new_keys(conn, call, target, chunk)
                    if return_ids and on_conflict != "skip":
                        result = conn.execute(stmt.returning(b.pk, sort_by_parameter_order=True), chunk)
                        ids.extend(result.scalars().all())
                    else:
                        conn.execute(stmt, chunk)
                    inserted += new
                    if return_ids and on_conflict == "skip":
                        ids.extend(self._keys_of(conn, call, target, chunk))
                    report.advance(len(chunk))
                self._advance_sequence(conn, b, keys)
            self.executor.after_statement(call, conn, rowcount=inserted, keys=ids or None)
            report.finish()
        out: dict[str, Any] = {"processed": len(rows), "inserted": inserted, "success": True}
        if on_conflict == "skip":
            out["skipped"] = len(rows) - inserted
        if return_ids:
            out["ids"] = ids
        return out

    def _checked_rows(self, b: Binding, data: Sequence[Mapping[str, Any]], now: datetime) -> list[dict]:
        """Every record checked for INSERT, one at a time; an error names the record's index."""
        rows = []
        for i, item in enumerate(data):
            try:
                rows.append(b.model_codec.for_create(item, now))
            except ValidationError as exc:
                raise ValidationError(f"data[{i}]: {exc.message}", model=b.name, field=exc.field) from None
        return rows

    def _conflict_target(self, b: Binding, conflict_on: Sequence[str] | None, keys: Sequence[str],
                         action: str) -> list[str]:
        """The fields that identify a duplicate; every record (of this key set) must carry them."""
        target = self._target(b, conflict_on, keys)
        missing = [t for t in target if t not in keys]
        if missing:
            raise ValidationError(f"{b.name} {action}: every record needs the conflict field(s) {missing}",
                                  model=b.name, field=missing[0])
        return target

    def _target(self, b: Binding, conflict_on: Sequence[str] | None, keys: Sequence[str]) -> list[str]:
        # Multi-tenant: unique constraints are per tenant (tenant column first); records carry the tenant.
        tenant = [b.model_spec.tenant] if b.model_spec.tenant else []
        if conflict_on:
            unknown = [c for c in conflict_on if c not in b.model_spec.fields]
            if unknown:
                raise b.model_codec.unknown(unknown, "conflict_on")
            if tenant and not _is_unique(b.table, conflict_on) and _is_unique(b.table, [*tenant, *conflict_on]):
                conflict_on = [*tenant, *conflict_on]
            if not _is_unique(b.table, conflict_on):
                # Else PostgreSQL and SQLite fail with a driver error and MySQL ignores the target.
                raise ValidationError(f"{b.name}: conflict_on {list(conflict_on)} must be the primary key, a unique "
                                      f"field or a unique group of fields; declare it unique "
                                      f"(Field(unique=True) or __dataflow__ 'unique')", model=b.name,
                                      field=conflict_on[0])
            return list(conflict_on)
        if b.pk.name in keys:
            return [b.pk.name]
        uniques = [f.name for f in b.model_spec.fields.values() if f.unique and f.name != b.model_spec.tenant]
        if uniques:
            return [*tenant, uniques[0]]
        raise ValidationError(f"{b.name}: say which fields identify a duplicate with 'conflict_on' "
                              f"(no primary key in the data and no unique field)", model=b.name)

    # ---------------------------------------------------------------- update / delete
    def bulk_update(self, model: str, filter: Mapping | None, changes: Mapping[str, Any], *,
                    confirm_all: bool = False, progress: ProgressArg = None) -> int:
        """Apply the same changes to every record matching ``filter``; return how many changed."""
        b = self.db.binding(model, modelled=True)
        if not changes:
            raise ValidationError(f"{b.name} bulk update needs changes in 'data' (or 'fields'/'update')",
                                  model=b.name)
        report = reporter(progress, f"{b.name} bulk update", model=b.name)
        call = self._call("bulk_update", b, filter=filter, data=b.model_codec.for_update(changes),
                          options={"confirm_all": confirm_all})
        with report:
            return self.executor.run(call, lambda c: self._bulk_update(c, report))

    def _bulk_update(self, call: Call, report: Reporter = NOOP) -> int:
        b = call.binding
        where = self._guarded_where(call)
        clauses = where.clauses()
        with self.executor.transaction(call) as conn:
            call.state["where"] = (clauses, where.params)
            self.executor.before_statement(call, conn)
            report.begin(None)
            report.started()
            n = conn.execute(sa.update(b.table).where(*clauses).values(call.data), where.params).rowcount
            self.executor.after_statement(call, conn, rowcount=n)
            report.finish(n)
            return n

    def bulk_delete(self, model: str, filter: Mapping | None, *, confirm_all: bool = False,
                    progress: ProgressArg = None) -> int:
        """Delete every record matching ``filter``; a filter that selects everything needs ``confirm_all=True``."""
        b = self.db.binding(model, modelled=True)
        report = reporter(progress, f"{b.name} bulk delete", model=b.name)
        call = self._call("bulk_delete", b, filter=filter, options={"confirm_all": confirm_all})
        with report:
            return self.executor.run(call, lambda c: self._bulk_delete(c, report))

    def _bulk_delete(self, call: Call, report: Reporter = NOOP) -> int:
        b = call.binding
        where = self._guarded_where(call)
        clauses = where.clauses()
        stmt: Any
        if call.state.get("soft_delete"):
            stmt = sa.update(b.table).where(*clauses).values(deleted_at=datetime.now(UTC))
        else:
            stmt = sa.delete(b.table).where(*clauses)
        with self.executor.transaction(call) as conn:
            call.state["where"] = (clauses, where.params)
            self.executor.before_statement(call, conn)
            report.begin(None)
            report.started()
            n = conn.execute(stmt, where.params).rowcount
            self.executor.after_statement(call, conn, rowcount=n)
            report.finish(n)
            return n

    def _guarded_where(self, call: Call):
        """The WHERE of a bulk update/delete; the caller's filter must select something less than
        everything, judged on the compiled condition (``{"$and": [{}]}`` is everything), unless confirmed."""
        where = self._where(call)
        if not call.options.get("confirm_all") and matches_everything(where.user_clause):
            verb = "change" if call.action == "bulk_update" else "delete"
            raise ValidationError(f"{call.model} {call.action.replace('_', ' ')} with a filter that matches every "
                                  f"record would {verb} every record; pass confirm_all=True if you mean it",
                                  model=call.model)
        return where

    # ---------------------------------------------------------------- upsert
    def bulk_upsert(self, model: str, data: Sequence[Mapping[str, Any]], *, conflict_on: Sequence[str] | None = None,
                    batch_size: int = DEFAULT_BATCH, progress: ProgressArg = None) -> dict:
        """Insert new records and update existing ones (matched on ``conflict_on``); all or nothing."""
        b = self.db.binding(model, modelled=True)
        if not isinstance(data, (list, tuple)):
            raise ValidationError(f"{b.name} bulk upsert: 'data' must be a list of records", model=b.name)
        batch_size = self._limit(b, batch_size, "batch_size") or DEFAULT_BATCH
        report = reporter(progress, f"{b.name} bulk upsert", model=b.name)
        call = self._call("bulk_upsert", b, data=data, options={"conflict_on": conflict_on, "batch_size": batch_size})
        with report:
            return self.executor.run(call, lambda c: self._bulk_upsert(c, report))

    def _bulk_upsert(self, call: Call, report: Reporter = NOOP) -> dict:
        b = call.binding
        data = _stamped(call)
        rows = self._checked_rows(b, data, datetime.now(UTC))
        report.begin(len(rows))
        if "versioned" in call.state:  # the rows whose caller stated a version (the others got the default)
            call.state["stated"] = {id(row) for row, raw in zip(rows, data) if "version" in raw}
        inserted = updated = 0
        with self.executor.transaction(call) as conn:
            for keys, group in _group_by_keys(rows):
                target = self._conflict_target(b, call.options["conflict_on"], keys, "bulk upsert")
                stmt = insert_on_conflict(self.db.backend, b.table, target, keys, update=True, bump=_version_of(b))
                for chunk in chunks(group, call.options["batch_size"]):
                    call.state["chunk"], call.state["target"] = chunk, target
                    self.executor.before_statement(call, conn)  # policies refuse first (a tenant's keys)
                    self._guard_other_keys(conn, call, target, chunk)
                    new = self._new_keys(conn, call, target, chunk)
                    conn.execute(stmt, chunk)
                    updated += len(chunk) - new
                    inserted += new
                    self.executor.after_statement(call, conn, rowcount=len(chunk), inserted=new)
                    report.advance(len(chunk))
                self._advance_sequence(conn, b, keys)
            report.finish()
        return {"processed": len(rows), "inserted": inserted, "updated": updated, "success": True}

    # ---------------------------------------------------------------- lookups by conflict key
    def _new_keys(self, conn, call: Call, target: list[str], chunk: list[dict]) -> int:
        """How many distinct conflict keys of ``chunk`` are not stored yet (for inserted/updated counts).

        Counting before the INSERT works alike everywhere (MySQL's rowcount does not). When a policy
        bounds the call (a tenant, a middleware filter), a key stored outside the bound refuses the
        call: its INSERT ... ON CONFLICT would otherwise change a record the caller may not see.
        """
        b = call.binding
        cols = [b.table.c[t] for t in target]
        keys = {tuple(r[t] for t in target) for r in chunk}
        cond = cols[0].in_([k[0] for k in keys]) if len(cols) == 1 else sa.tuple_(*cols).in_(list(keys))
        count = sa.select(sa.func.count()).select_from(b.table)
        stored = int(conn.execute(count.where(cond)).scalar_one())
        if stored and call.bounded and (call.action == "bulk_upsert" or call.options.get("on_conflict") == "update"):
            where = self._where(call)
            visible = int(conn.execute(count.where(cond, *where.clauses()), where.params).scalar_one())
            if visible != stored:
                raise ValidationError(f"{b.name} {call.action.replace('_', ' ')} refused: {stored - visible} "
                                      f"record(s) with the same {', '.join(target)} exist outside your scope",
                                      model=b.name, field=target[0])
        return len(keys) - stored

    def _guard_other_keys(self, conn, call: Call, target: list[str], chunk: list[dict]) -> None:
        """MySQL: refuse rows that collide with a stored record on a unique key other than the target.

        ``ON DUPLICATE KEY UPDATE`` fires on any unique key, so such a row would silently rewrite the
        other record (another owner's, even) where PostgreSQL and SQLite raise: raise the same here.
        """
        if not self.db.facts.upsert_any_unique or not chunk:
            return
        b = call.binding
        t = b.table
        for group in _unique_groups(t):
            if set(group) == set(target) or not all(g in chunk[0] for g in group):
                continue
            wanted = {tuple(r[g] for g in group): tuple(r[k] for k in target) for r in chunk}
            cols = [t.c[g] for g in group]
            cond = cols[0].in_([k[0] for k in wanted]) if len(cols) == 1 else sa.tuple_(*cols).in_(list(wanted))
            for row in conn.execute(sa.select(*cols, *[t.c[k] for k in target]).where(cond)):
                stored, its_target = tuple(row[:len(group)]), tuple(row[len(group):])
                if wanted.get(stored) != its_target:
                    raise DuplicateKeyError(f"{b.name} {call.action.replace('_', ' ')} refused by the database "
                                            f"({group[0]}): a record with the same unique value already exists",
                                            model=b.name, field=group[0])

    def _keys_of(self, conn, call: Call, target: list[str], chunk: list[dict]) -> list:
        """Primary keys of the stored records matching ``chunk``'s conflict keys, in chunk order (in scope)."""
        b = call.binding
        cols = [b.table.c[t] for t in target]
        keys = [tuple(r[t] for t in target) for r in chunk]
        cond = cols[0].in_([k[0] for k in keys]) if len(cols) == 1 else sa.tuple_(*cols).in_(keys)
        where = self._where(call)
        found = {tuple(r[1:]): r[0] for r in conn.execute(sa.select(b.pk, *cols).where(cond, *where.clauses()),
                                                           where.params)}
        return [found[k] for k in keys if k in found]


def _no_copy(executor, call: Call) -> bool:
    """True when a bulk load must not use COPY: statements are watched, or a policy noted that the table
    refuses it (PostgreSQL refuses COPY FROM into a table with row-level security)."""
    return executor.watched() or bool(call.state.get("rls"))


def _stamped(call: Call) -> Sequence[Mapping[str, Any]]:
    """The call's records with the values policies stamped on every record."""
    stamp = call.state.get("stamp")
    if not stamp:
        return call.data
    return [{**r, **stamp} if isinstance(r, Mapping) else r for r in call.data]


def _unique_groups(table: sa.Table) -> list[list[str]]:
    """The column names of the primary key, each unique constraint and each unique index."""
    groups = [[c.name for c in cons.columns] for cons in table.constraints
              if isinstance(cons, (sa.PrimaryKeyConstraint, sa.UniqueConstraint)) and cons.columns]
    groups += [[c.name for c in i.columns] for i in table.indexes if i.unique]
    return groups
