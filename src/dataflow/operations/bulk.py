"""Many records in one transaction, all or nothing: bulk create, update, delete and upsert."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

import sqlalchemy as sa

from ..binding import Binding
from ..errors import ValidationError
from ..schema.bulk import insert_columns, insert_rows
from ..schema.upsert import insert_on_conflict
from .base import DEFAULT_BATCH, ON_CONFLICT, UTC, OperationsBase, _chunks, _group_by_keys, _is_unique, _version_of


class BulkOperations(OperationsBase):
    def bulk_create(self, model: str, data: Sequence[Mapping[str, Any]], *, batch_size: int = DEFAULT_BATCH,
                    on_conflict: str = "error", return_ids: bool = False,
                    conflict_on: Sequence[str] | None = None) -> dict:
        """Insert many records in one transaction (COPY on PostgreSQL); all or nothing."""
        b = self.db.binding(model, modelled=True)
        if not isinstance(data, (list, tuple)):
            raise ValidationError(f"{b.name} bulk create: 'data' must be a list of records", model=b.name)
        if on_conflict not in ON_CONFLICT:
            raise ValidationError(f"{b.name} bulk create: on_conflict must be one of {', '.join(ON_CONFLICT)}, "
                                  f"got {on_conflict!r}", model=b.name)
        batch_size = self._limit(b, batch_size, "batch_size") or DEFAULT_BATCH
        now = datetime.now(UTC)
        if on_conflict == "error" and not return_ids and data:
            fast = b.codec.insert_columns(data, now)
            if fast is not None:
                with self.transaction(b, "bulk create") as conn:
                    insert_columns(self.db.backend, conn, b.table, *fast)
                    self._advance_sequence(conn, b, fast[0])
                return {"processed": len(data), "inserted": len(data), "success": True}
        rows = self._checked_rows(b, data, now)
        ids: list = []
        inserted = 0
        with self.transaction(b, "bulk create") as conn:
            for keys, group in _group_by_keys(rows):
                if on_conflict == "error" and not return_ids:
                    insert_rows(self.db.backend, conn, b.table, keys, group)
                    inserted += len(group)
                    self._advance_sequence(conn, b, keys)
                    continue
                target: list[str] = []
                if on_conflict == "error":
                    stmt = b.table.insert()
                else:
                    target = self._conflict_target(b, conflict_on, keys)
                    stmt = insert_on_conflict(self.db.backend, b.table, target, keys,
                                              update=on_conflict == "update", bump=_version_of(b))
                for chunk in _chunks(group, batch_size):
                    # New records: distinct conflict keys not stored yet (a key twice in the data is one record).
                    new = len(chunk) if on_conflict == "error" else self._new_keys(conn, b, target, chunk)
                    if return_ids and on_conflict != "skip":
                        result = conn.execute(stmt.returning(b.pk, sort_by_parameter_order=True), chunk)
                        ids.extend(result.scalars().all())
                    else:
                        conn.execute(stmt, chunk)
                    inserted += new
                    if return_ids and on_conflict == "skip":
                        ids.extend(self._keys_of(conn, b, target, chunk))
                self._advance_sequence(conn, b, keys)
        out = {"processed": len(rows), "inserted": inserted, "success": True}
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
                rows.append(b.codec.for_create(item, now))
            except ValidationError as exc:
                raise ValidationError(f"data[{i}]: {exc.message}", model=b.name, field=exc.field) from None
        return rows

    def _conflict_target(self, b: Binding, conflict_on: Sequence[str] | None, keys: Sequence[str]) -> list[str]:
        if conflict_on:
            unknown = [c for c in conflict_on if c not in b.spec.fields]
            if unknown:
                raise b.codec.unknown(unknown, "conflict_on")
            if not _is_unique(b.table, conflict_on):
                # Else PostgreSQL and SQLite fail with a driver error and MySQL ignores the target.
                raise ValidationError(f"{b.name}: conflict_on {list(conflict_on)} must be the primary key, a unique "
                                      f"field or a unique group of fields; declare it unique "
                                      f"(Field(unique=True) or __dataflow__ 'unique')", model=b.name,
                                      field=conflict_on[0])
            return list(conflict_on)
        if b.pk.name in keys:
            return [b.pk.name]
        uniques = [f.name for f in b.spec.fields.values() if f.unique]
        if uniques:
            return [uniques[0]]
        raise ValidationError(f"{b.name}: say which fields identify a duplicate with 'conflict_on' "
                              f"(no primary key in the data and no unique field)", model=b.name)

    def bulk_update(self, model: str, filter: Mapping | None, changes: Mapping[str, Any], *,
                    confirm_all: bool = False) -> int:
        """Apply the same changes to every record matching ``filter``; return how many changed."""
        b = self.db.binding(model, modelled=True)
        if not changes:
            raise ValidationError(f"{b.name} bulk update needs changes in 'data' (or 'fields'/'update')",
                                  model=b.name)
        if not filter and not confirm_all:
            raise ValidationError(f"{b.name} bulk update with an empty filter would change every record; "
                                  f"pass confirm_all=True if you mean it", model=b.name)
        values = b.codec.for_update(changes)
        if b.spec.versioned:
            values.pop("version", None)
            values["version"] = b.table.c.version + 1
        clauses, params = self._where(b, filter)
        with self.transaction(b, "bulk update") as conn:
            return conn.execute(sa.update(b.table).where(*clauses).values(values), params).rowcount

    def bulk_delete(self, model: str, filter: Mapping | None, *, confirm_all: bool = False) -> int:
        """Delete every record matching ``filter``; an empty filter needs ``confirm_all=True``."""
        b = self.db.binding(model, modelled=True)
        if not filter and not confirm_all:
            raise ValidationError(f"{b.name} bulk delete with an empty filter would delete every record; "
                                  f"pass confirm_all=True if you mean it", model=b.name)
        clauses, params = self._where(b, filter)
        if b.spec.soft_delete:
            stmt = sa.update(b.table).where(*clauses).values(deleted_at=datetime.now(UTC))
        else:
            stmt = sa.delete(b.table).where(*clauses)
        with self.transaction(b, "bulk delete") as conn:
            return conn.execute(stmt, params).rowcount

    def bulk_upsert(self, model: str, data: Sequence[Mapping[str, Any]], *, conflict_on: Sequence[str] | None = None,
                    batch_size: int = DEFAULT_BATCH) -> dict:
        """Insert new records and update existing ones (matched on ``conflict_on``); all or nothing."""
        b = self.db.binding(model, modelled=True)
        if not isinstance(data, (list, tuple)):
            raise ValidationError(f"{b.name} bulk upsert: 'data' must be a list of records", model=b.name)
        now = datetime.now(UTC)
        rows = self._checked_rows(b, data, now)
        inserted = updated = 0
        with self.transaction(b, "bulk upsert") as conn:
            for keys, group in _group_by_keys(rows):
                target = self._conflict_target(b, conflict_on, keys)
                missing = [t for t in target if t not in keys]
                if missing:
                    raise ValidationError(f"{b.name} bulk upsert: every record needs the conflict field(s) "
                                          f"{missing}", model=b.name, field=missing[0])
                stmt = insert_on_conflict(self.db.backend, b.table, target, keys, update=True, bump=_version_of(b))
                for chunk in _chunks(group, batch_size):
                    new = self._new_keys(conn, b, target, chunk)
                    conn.execute(stmt, chunk)
                    updated += len(chunk) - new
                    inserted += new
                self._advance_sequence(conn, b, keys)
        return {"processed": len(rows), "inserted": inserted, "updated": updated, "success": True}

    def _advance_sequence(self, conn, b: Binding, keys: Iterable[str]) -> None:
        """PostgreSQL: keys given explicitly do not move a serial's sequence; move it past the largest.

        Without this, the next automatic key collides with a stored one (``create(id=1)`` then
        ``create()`` raised a DuplicateKeyError). SQLite and MySQL continue after the largest key already.
        """
        if self.db.backend != "postgresql" or not b.codec.auto_pk or b.pk.name not in keys:
            return
        q = conn.dialect.identifier_preparer
        table, pk = q.format_table(b.table), q.quote(b.pk.name)
        seq = conn.exec_driver_sql("SELECT pg_get_serial_sequence(%s, %s)", (table, b.pk.name)).scalar()
        if seq:  # a quoted name from the server itself
            conn.exec_driver_sql(
                f"SELECT setval(%s::regclass, m) FROM (SELECT MAX({pk}) AS m FROM {table}) AS s "
                f"WHERE m > (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {seq})", (seq,))

    def _new_keys(self, conn, b: Binding, target: list[str], chunk: list[dict]) -> int:
        """How many distinct conflict keys of ``chunk`` are not stored yet (for inserted/updated counts).

        Counting before the INSERT works alike everywhere (MySQL's rowcount does not).
        """
        cols = [b.table.c[t] for t in target]
        keys = {tuple(r[t] for t in target) for r in chunk}
        if len(cols) == 1:
            cond = cols[0].in_([k[0] for k in keys])
        else:
            cond = sa.tuple_(*cols).in_(list(keys))
        stored = int(conn.execute(sa.select(sa.func.count()).select_from(b.table).where(cond)).scalar_one())
        return len(keys) - stored

    def _keys_of(self, conn, b: Binding, target: list[str], chunk: list[dict]) -> list:
        """Primary keys of the stored records matching ``chunk``'s conflict keys, in chunk order."""
        cols = [b.table.c[t] for t in target]
        keys = [tuple(r[t] for t in target) for r in chunk]
        cond = cols[0].in_([k[0] for k in keys]) if len(cols) == 1 else sa.tuple_(*cols).in_(keys)
        found = {tuple(r[1:]): r[0] for r in conn.execute(sa.select(b.pk, *cols).where(cond))}
        return [found[k] for k in keys if k in found]

    # ---------------------------------------------------------------- relations
