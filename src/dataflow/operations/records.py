"""One record at a time, and the reads: create, read, update, delete, list, count, aggregate, upsert."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Sequence

import sqlalchemy as sa

from ..errors import DataFlowError, ValidationError
from ..query import Filter, compile_pipeline
from .base import DEFAULT_LIMIT, UTC, OperationsBase, _join_fields, _shape


class RecordOperations(OperationsBase):
    def create(self, model: str, data: Mapping[str, Any]) -> dict:
        """Insert one record; return it as stored, primary key included."""
        b = self.db.binding(model, modelled=True)
        row = b.codec.for_create(data)
        keys = tuple(row)
        if self.db.engine.dialect.insert_returning and not (self.db.backend == "postgresql" and b.pk.name in row):
            p = self._prepared(b, ("create", keys), lambda: b.table.insert().values(
                {k: sa.bindparam(k, type_=b.table.c[k].type) for k in keys}).returning(*b.table.c))
            return self._run(b, "create", p, row)[0]
        with self.transaction(b, "create") as conn:
            if self.db.engine.dialect.insert_returning:
                record = dict(conn.execute(b.table.insert().returning(*b.table.c), row).mappings().one())
            else:
                result = conn.execute(b.table.insert(), row)
                record = self._select_one(conn, b, result.inserted_primary_key[0])
            self._advance_sequence(conn, b, row)
            return record

    def read(self, model: str, id: Any = None, filter: Mapping | None = None, *,
             raise_on_not_found: bool = True, include: Sequence[str] | None = None,
             include_deleted: bool = False, fields: Sequence[str] | None = None) -> dict | None:
        """One record by id or filter (the first by primary key when several match)."""
        b = self.db.binding(model)
        if not include:
            if id is not None:
                key = b.codec.key(id) if b.codec else id
                soft = b.spec is not None and b.spec.soft_delete and not include_deleted
                p = self._prepared(b, ("read-id", tuple(fields or ()), soft), lambda: sa.select(
                    *self._projection(b, fields)).where(
                        b.pk == sa.bindparam("df_id", type_=b.pk.type),
                        *([b.table.c.deleted_at.is_(None)] if soft else [])).limit(1))
                rows, what = self._run(b, "read", p, {"df_id": key}), f"{b.pk.name}={id!r}"
            elif filter:
                clauses, params, shape = self._where_keyed(b, filter, include_deleted=include_deleted)
                p = self._prepared(b, ("read", shape, tuple(fields or ())), lambda: sa.select(
                    *self._projection(b, fields)).where(*clauses).order_by(b.pk).limit(1))
                rows, what = self._run(b, "read", p, params), f"filter {_shape(filter)}"
            else:
                self._key_clause(b, id, filter, "read", include_deleted)  # raises: needs id or filter
            if not rows and raise_on_not_found:
                raise self._missing(b, "read", what)
            return rows[0] if rows else None
        rels = self._relations(b, include)
        selected, hidden = _join_fields(fields, rels)
        clauses, params, what = self._key_clause(b, id, filter, "read", include_deleted)
        stmt = sa.select(*self._projection(b, selected)).where(*clauses).order_by(b.pk).limit(1)
        with self.transaction(b, "read") as conn:
            row = conn.execute(stmt, params).mappings().first()
            record = dict(row) if row is not None else None
            if record is not None:
                self._attach(conn, b, [record], rels, hidden)
        if record is None and raise_on_not_found:
            raise self._missing(b, "read", what)
        return record

    def update(self, model: str, id: Any = None, filter: Mapping | None = None,
               changes: Mapping[str, Any] | None = None, *, raise_on_not_found: bool = True) -> dict | None:
        """Change one record (by id, or a filter matching exactly one); return it after the change."""
        b = self.db.binding(model, modelled=True)
        if not changes:
            raise ValidationError(f"{b.name} update needs changes: pass 'fields' (or 'updates') with at least "
                                  f"one field", model=b.name)
        values = b.codec.for_update(changes)
        expected = values.pop("version", None) if b.spec.versioned else None
        clauses, params, what = self._key_clause(b, id, filter, "update")
        with self.transaction(b, "update") as conn:
            key, version = self._one_key(conn, b, clauses, params, "update", what, raise_on_not_found)
            if key is None:
                return None
            cond = [b.pk == key]
            if b.spec.versioned:
                if expected is not None and expected != version:
                    raise self._conflict(b, key, expected, version)
                cond.append(b.table.c.version == version)
                values["version"] = version + 1
            result = conn.execute(sa.update(b.table).where(*cond).values(values))
            if result.rowcount == 0:
                raise self._conflict(b, key, expected, None)
            return self._select_one(conn, b, key)

    def delete(self, model: str, id: Any = None, filter: Mapping | None = None, *,
               raise_on_not_found: bool = True) -> Any:
        """Delete one record (soft delete sets ``deleted_at``); return its key, or None when missing."""
        b = self.db.binding(model, modelled=True)
        clauses, params, what = self._key_clause(b, id, filter, "delete")
        with self.transaction(b, "delete") as conn:
            key, _ = self._one_key(conn, b, clauses, params, "delete", what, raise_on_not_found)
            if key is None:
                return None
            if b.spec.soft_delete:
                conn.execute(sa.update(b.table).where(b.pk == key).values(deleted_at=datetime.now(UTC)))
            else:
                conn.execute(sa.delete(b.table).where(b.pk == key))
            return key

    def list(self, model: str, filter: Mapping | None = None, sort: Any = None, limit: int | None = DEFAULT_LIMIT,
             offset: int = 0, fields: Sequence[str] | None = None, *, include: Sequence[str] | None = None,
             include_deleted: bool = False) -> tuple[list[dict], bool]:
        """Records matching ``filter``, sorted (primary key by default); and whether more follow."""
        b = self.db.binding(model)
        limit = self._limit(b, limit, "limit")
        offset = self._limit(b, offset, "offset") or 0
        fetch = None if limit is None else limit + 1
        if include:
            rels = self._relations(b, include)
            selected, hidden = _join_fields(fields, rels)
            stmt, params = self.select_statement(b, filter, sort, fetch, offset, selected,
                                                 include_deleted=include_deleted)
            with self.transaction(b, "list") as conn:
                result = conn.execute(stmt, params)
                keys = tuple(result.keys())
                records = [dict(zip(keys, row)) for row in result.all()]
                if records:
                    self._attach(conn, b, records[:limit] if limit is not None else records, rels, hidden)
        else:
            clauses, params, shape = self._where_keyed(b, filter, include_deleted=include_deleted)
            key = ("list", shape, repr(sort), tuple(fields or ()), fetch is None, bool(offset))

            def build() -> sa.Select:
                stmt = self._ordered_select(b, clauses, sort, fields)
                if fetch is not None:
                    stmt = stmt.limit(sa.bindparam("df_limit", type_=sa.Integer()))
                return stmt.offset(sa.bindparam("df_offset", type_=sa.Integer())) if offset else stmt

            p = self._prepared(b, key, build)
            records = self._run(b, "list", p, {**params, "df_limit": fetch, "df_offset": offset})
        has_more = limit is not None and len(records) > limit
        if has_more:
            records.pop()
        return records, has_more

    def count(self, model: str, filter: Mapping | None = None, *, include_deleted: bool = False) -> int:
        """How many records match ``filter``."""
        b = self.db.binding(model)
        clauses, params, shape = self._where_keyed(b, filter, include_deleted=include_deleted)
        p = self._prepared(b, ("count", shape), lambda: sa.select(
            sa.func.count().label("count")).select_from(b.table).where(*clauses))
        return int(self._run(b, "count", p, params)[0]["count"])

    def aggregate(self, model: str, pipeline: Sequence[Mapping], filter: Mapping | None = None) -> Any:
        """Run an aggregation pipeline as one SELECT; MongoDB-shaped results."""
        b = self.db.binding(model)
        if not isinstance(pipeline, (list, tuple)):
            raise ValidationError(f"{b.name}: pipeline must be a list of stages", model=b.name)
        clauses, params = self._where(b, filter)
        base = Filter(sa.and_(*clauses), params) if clauses else None
        compiled = compile_pipeline(b.table, list(pipeline), base=base)
        if compiled.key is None:  # a shape the pipeline cache does not keep: through SQLAlchemy each time
            with self.transaction(b, "aggregate") as conn:
                return compiled.shape(conn.execute(compiled.statement, compiled.params).mappings().all())
        p = self._prepared(b, ("aggregate", compiled.key), lambda: compiled.statement)
        return compiled.shape(self._run(b, "aggregate", p, compiled.params))

    def upsert(self, model: str, where: Mapping[str, Any], update: Mapping[str, Any] | None = None,
               create: Mapping[str, Any] | None = None, conflict_on: Sequence[str] | None = None) -> tuple[bool, dict]:
        """Update the record matching ``where``, or create it from ``where`` + ``create``; (created, record)."""
        b = self.db.binding(model, modelled=True)
        if not where or not isinstance(where, Mapping):
            raise ValidationError(f"{b.name} upsert needs 'where': the fields that identify the record", model=b.name)
        if conflict_on:
            unknown = [c for c in conflict_on if c not in b.spec.fields]
            if unknown:
                raise b.codec.unknown(unknown, "conflict_on")
            where = {k: v for k, v in {**(create or {}), **(update or {}), **where}.items() if k in conflict_on}
        values = b.codec.for_update(update) if update else {}
        if values and b.spec.versioned:
            values["version"] = b.table.c.version + 1  # every change moves the version, as update does
        clauses, params = self._where(b, where, path="where")
        for attempt in (1, 2):
            try:
                with self.transaction(b, "upsert") as conn:
                    stmt = sa.select(b.pk).where(*clauses).order_by(b.pk).limit(2)
                    if self.db.backend != "sqlite":
                        stmt = stmt.with_for_update()
                    keys = conn.execute(stmt, params).scalars().all()
                    if len(keys) > 1:
                        raise ValidationError(f"{b.name} upsert: 'where' matches more than one record", model=b.name)
                    if keys:
                        if values:
                            conn.execute(sa.update(b.table).where(b.pk == keys[0]).values(values))
                        return False, self._select_one(conn, b, keys[0])
                    row = b.codec.for_create({**(create or {}), **(update or {}), **where})
                    if self.db.engine.dialect.insert_returning:
                        rec = conn.execute(b.table.insert().returning(*b.table.c), row).mappings().one()
                        self._advance_sequence(conn, b, row)
                        return True, dict(rec)
                    pk = conn.execute(b.table.insert(), row).inserted_primary_key[0]
                    self._advance_sequence(conn, b, row)
                    return True, self._select_one(conn, b, pk)
            except DataFlowError as exc:
                # Another writer inserted the same key between our SELECT and INSERT: update it instead.
                if attempt == 2 or type(exc).__name__ != "DuplicateKeyError":
                    raise
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- bulk
