"""Create, read, update, delete, list, count, upsert and the bulk forms: the one place that runs SQL.

Nodes, the fluent query API and the web layer all call these methods. Every method runs in one
transaction; a bulk method is all-or-nothing. Results are records of native Python values.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from .binding import Binding, Relation
from .driver_errors import translate
from .errors import ConflictError, DatabaseError, DataFlowError, ForeignKeyError, NotFoundError, ValidationError
from .query import compile_filter, compile_pipeline, compile_sort
from .prepared import Prepared, prepare
from .prepared import run as run_prepared
from .schema.bulk import insert_columns, insert_rows
from .schema.upsert import insert_on_conflict

if TYPE_CHECKING:
    from .core.dataflow import DataFlow

UTC = timezone.utc
DEFAULT_LIMIT = 100
DEFAULT_BATCH = 5000
ON_CONFLICT = ("error", "skip", "update")
#: Actions that only read: on SQLite their transactions stay deferred, so readers never queue behind writers.
READ_ACTIONS = frozenset({"read", "list", "count", "aggregate"})


class Operations:
    """The operations layer of one ``DataFlow`` instance."""

    def __init__(self, db: "DataFlow") -> None:
        self.db = db

    # ---------------------------------------------------------------- plumbing
    @contextmanager
    def transaction(self, b: Binding, action: str) -> Iterator[sa.Connection]:
        """A connection in a transaction; database errors leave as DataFlow errors."""
        self._ready(b, action)
        try:
            with self.db.engine.connect() as conn:
                if self.db.backend == "sqlite" and action not in READ_ACTIONS:
                    # A deferred SQLite transaction that reads, then writes (update, delete, upsert) deadlocks
                    # with another doing the same, and SQLite fails one at once with 'database is locked'
                    # instead of waiting. Taking the write lock at BEGIN makes the second writer wait its turn.
                    conn.execution_options(sqlite_begin="IMMEDIATE")
                with conn.begin():
                    yield conn
        except DataFlowError:
            raise
        except (sa_exc.SQLAlchemyError, *self.db.driver_errors) as exc:
            raise self._translated(exc, b, action) from exc

    def _ready(self, b: Binding, action: str) -> None:
        """Connect and migrate once; an unreachable database is reported for the operation that needed it."""
        try:
            self.db.ensure_ready()
        except DatabaseError as exc:
            raise DatabaseError(f"{b.name} {action}: {exc.message}", model=b.name, original=exc.original) from exc

    def _translated(self, exc: BaseException, b: Binding, action: str) -> DataFlowError:
        error = translate(exc, model=b.name, action=action, where=self.db.safe_url, constraints=b.constraints)
        if isinstance(error, ForeignKeyError):
            error = self._explain_fk(b, error, action)
        return error

    def _prepared(self, b: Binding, key: tuple, build) -> Prepared:
        """The statement for ``key``, compiled once per binding (``build`` makes it the first time)."""
        p = b.statements.get(key)
        if p is None:
            if len(b.statements) > 1000:  # shapes are few in practice; never let them grow unbounded
                b.statements.clear()
            p = b.statements[key] = prepare(self.db.engine.dialect, build())
        return p

    def _run(self, b: Binding, action: str, p: Prepared, params: Mapping[str, Any]) -> list[dict]:
        """One prepared statement in its own transaction; records out, DataFlow errors on failure."""
        self._ready(b, action)
        try:
            return run_prepared(self.db, p, params)
        except DataFlowError:
            raise
        except (sa_exc.SQLAlchemyError, *self.db.driver_errors) as exc:
            raise self._translated(exc, b, action) from exc

    def _explain_fk(self, b: Binding, error: ForeignKeyError, action: str) -> ForeignKeyError:
        """Name the field and the model it must point at (SQLite's message names neither)."""
        refs = {f.name: f.references for f in b.spec.fields.values() if f.references} if b.spec else {}
        if action.endswith("delete"):
            incoming = [f"{r.target}.{r.remote}" for r in b.relations.values() if r.many]
            msg = (f"{b.name} {action} refused: other records still refer to it ({', '.join(incoming) or 'a foreign key'}); "
                   f"delete or re-point them first, or declare on_delete='cascade' or 'set_null'")
            return ForeignKeyError(msg, model=b.name, field=error.field, original=error.original)
        fields = [error.field] if error.field in refs else list(refs)
        if not fields:
            return error
        what = " or ".join(f"{b.name}.{f} must be the id of an existing {refs[f]}" for f in fields)
        return ForeignKeyError(f"{b.name} {action} refused: {what} (no {refs[fields[0]]} has that id)",
                               model=b.name, field=fields[0], original=error.original)

    def _where(self, b: Binding, filt: Mapping | None, *, include_deleted: bool = False,
               path: str = "filter") -> tuple[list, dict]:
        """WHERE clauses and their parameters: the filter, soft-delete, and scoping hooks."""
        clauses, params, _ = self._where_keyed(b, filt, include_deleted=include_deleted, path=path)
        return clauses, params

    def _where_keyed(self, b: Binding, filt: Mapping | None, *, include_deleted: bool = False,
                     path: str = "filter") -> tuple[list, dict, tuple]:
        """``_where`` plus a key naming the clauses' shape (the filter compiler reuses one clause per shape)."""
        if filt is not None and not isinstance(filt, Mapping):
            raise ValidationError(f"{b.name}: {path} must be a dict, got {type(filt).__name__}", model=b.name)
        f = compile_filter(b.table, filt, path=path)
        clauses = [f.clause] if f.clause is not None else []
        soft = b.spec is not None and b.spec.soft_delete and not include_deleted
        if soft:
            clauses.append(b.table.c.deleted_at.is_(None))
        return clauses, dict(f.params), (id(f.clause), soft)

    def _key_clause(self, b: Binding, id: Any, filt: Mapping | None, action: str,
                    include_deleted: bool = False) -> tuple[list, dict, str]:
        if id is not None:
            key = b.codec.key(id) if b.codec else id
            clauses, params = self._where(b, None, include_deleted=include_deleted)
            return [b.pk == key, *clauses], params, f"{b.pk.name}={id!r}"
        if filt:
            clauses, params = self._where(b, filt, include_deleted=include_deleted)
            return clauses, params, f"filter {_shape(filt)}"
        raise ValidationError(f"{b.name} {action} needs an 'id' or a non-empty 'filter'/'conditions'",
                              model=b.name)

    def _select_one(self, conn: sa.Connection, b: Binding, pk_value: Any) -> dict:
        return dict(conn.execute(sa.select(b.table).where(b.pk == pk_value)).mappings().one())

    def _missing(self, b: Binding, action: str, what: str) -> NotFoundError:
        return NotFoundError(f"{b.name} {action}: no record matches {what}", model=b.name)

    def _projection(self, b: Binding, fields: Sequence[str] | None) -> list[sa.Column]:
        if not fields:
            return list(b.table.columns)
        unknown = [f for f in fields if f not in b.table.c]
        if unknown:
            raise ValidationError(f"{b.name} has no field(s) {unknown} in fields; fields are: "
                                  f"{', '.join(b.columns)}", model=b.name, field=unknown[0])
        return [b.table.c[f] for f in fields]

    def _limit(self, b: Binding, value: Any, name: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(f"{b.name}: {name} must be a non-negative integer, got {value!r}", model=b.name)
        return value

    # ---------------------------------------------------------------- single records
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
            key, version = self._one_key(conn, b, clauses, params, "update", what)
            if key is None:
                if raise_on_not_found:
                    raise self._missing(b, "update", what)
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
            key, _ = self._one_key(conn, b, clauses, params, "delete", what)
            if key is None:
                if raise_on_not_found:
                    raise self._missing(b, "delete", what)
                return None
            if b.spec.soft_delete:
                conn.execute(sa.update(b.table).where(b.pk == key).values(deleted_at=datetime.now(UTC)))
            else:
                conn.execute(sa.delete(b.table).where(b.pk == key))
            return key

    def _one_key(self, conn, b: Binding, clauses, params, action: str, what: str) -> tuple[Any, Any]:
        cols = [b.pk] + ([b.table.c.version] if b.spec.versioned else [])
        stmt = sa.select(*cols).where(*clauses).order_by(b.pk).limit(2)
        if self.db.backend != "sqlite":
            stmt = stmt.with_for_update()
        rows = conn.execute(stmt, params).all()
        if len(rows) > 1:
            raise ValidationError(f"{b.name} {action}: {what} matches more than one record; narrow the filter "
                                  f"or use {b.name}Bulk{action.capitalize()}Node", model=b.name)
        if not rows:
            return None, None
        return rows[0][0], (rows[0][1] if len(rows[0]) > 1 else None)

    def _conflict(self, b: Binding, key: Any, expected: Any, actual: Any) -> ConflictError:
        now = f" (it is now at version {actual})" if actual is not None else ""
        return ConflictError(f"{b.name} {b.pk.name}={key!r} was changed by someone else: update sent version "
                             f"{expected}{now}; read it again and retry", model=b.name)

    # ---------------------------------------------------------------- many records
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
                order = compile_sort(b.table, sort) if sort else []
                stmt = sa.select(*self._projection(b, fields)).where(*clauses).order_by(*order, b.pk)
                if fetch is not None:
                    stmt = stmt.limit(sa.bindparam("df_limit", type_=sa.Integer()))
                return stmt.offset(sa.bindparam("df_offset", type_=sa.Integer())) if offset else stmt

            if sort:
                compile_sort(b.table, sort)  # check it every time: the key holds only its text
            p = self._prepared(b, key, build)
            records = self._run(b, "list", p, {**params, "df_limit": fetch, "df_offset": offset})
        has_more = limit is not None and len(records) > limit
        if has_more:
            records.pop()
        return records, has_more

    def select_statement(self, b: Binding, filter: Mapping | None = None, sort: Any = None,
                         limit: int | None = None, offset: int = 0, fields: Sequence[str] | None = None, *,
                         include_deleted: bool = False) -> tuple[sa.Select, dict]:
        """The SELECT a List runs (sorted, then by primary key, for a stable order), and its parameters."""
        limit = self._limit(b, limit, "limit")
        offset = self._limit(b, offset, "offset") or 0
        clauses, params = self._where(b, filter, include_deleted=include_deleted)
        order = compile_sort(b.table, sort) if sort else []
        stmt = sa.select(*self._projection(b, fields)).where(*clauses).order_by(*order, b.pk)
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        return stmt, params

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
        base = compile_filter(b.table, None)
        if clauses:
            base = type(base)(clause=sa.and_(*clauses), params=params)
        compiled = compile_pipeline(b.table, list(pipeline), base=base)
        with self.transaction(b, "aggregate") as conn:
            rows = conn.execute(compiled.statement, compiled.params).mappings().all()
        return compiled.shape(rows)

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
        rows = []
        for i, item in enumerate(data):
            try:
                rows.append(b.codec.for_create(item, now))
            except ValidationError as exc:
                raise ValidationError(f"data[{i}]: {exc.message}", model=b.name, field=exc.field) from None
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
        rows = []
        for i, item in enumerate(data):
            try:
                rows.append(b.codec.for_create(item, now))
            except ValidationError as exc:
                raise ValidationError(f"data[{i}]: {exc.message}", model=b.name, field=exc.field) from None
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
    def _relations(self, b: Binding, include: str | Sequence[str]) -> list[Relation]:
        """The relations ``include`` names (one name or a list), checked before any SQL runs."""
        rels = []
        for name in [include] if isinstance(include, str) else include:
            rel = b.relations.get(name)
            if rel is None:
                known = ", ".join(b.relations) or "none (declare foreign_keys on a model)"
                raise ValidationError(f"{b.name} has no relation {name!r} to include; relations: {known}",
                                      model=b.name, field=name)
            rels.append(rel)
        return rels

    def _attach(self, conn, b: Binding, records: list[dict], rels: Sequence[Relation],
                hidden: Sequence[str] = ()) -> None:
        """Nest related records: one query per relation, never one per row; then drop ``hidden`` columns."""
        for rel in rels:
            name = rel.name
            target = self.db.binding(rel.target)
            keys = {r.get(rel.local) for r in records} - {None}
            found: list[dict] = []
            if keys:
                clauses, params = self._where(target, None)
                stmt = sa.select(target.table).where(target.table.c[rel.remote].in_(list(keys)), *clauses)
                found = [dict(r) for r in conn.execute(stmt.order_by(target.pk), params).mappings()]
            if rel.many:
                groups: dict[Any, list] = {}
                for row in found:
                    groups.setdefault(row[rel.remote], []).append(row)
                for r in records:
                    r[name] = groups.get(r.get(rel.local), [])
            else:
                by_key = {row[rel.remote]: row for row in found}
                for r in records:
                    r[name] = by_key.get(r.get(rel.local))
        for r in records:
            for column in hidden:
                del r[column]


def _shape(value: Any) -> str:
    """A filter's fields and operators with every value shown as ``?``: errors get logged, values may be personal."""
    def walk(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v] if any(isinstance(x, Mapping) for x in v) else "?"
        return "?"
    return json.dumps(walk(value))


def _is_unique(table: sa.Table, names: Sequence[str]) -> bool:
    """True when ``names`` are exactly the columns of the primary key, a unique constraint or a unique index."""
    wanted = set(names)
    groups = [c.columns for c in table.constraints if isinstance(c, (sa.PrimaryKeyConstraint, sa.UniqueConstraint))]
    groups += [i.columns for i in table.indexes if i.unique]
    return any({c.name for c in cols} == wanted for cols in groups)


def _version_of(b: Binding) -> str | None:
    """The column an upsert increments on the records it changes: ``version`` on a versioned model."""
    return "version" if b.spec.versioned else None


def _join_fields(fields: Sequence[str] | None, rels: Sequence[Relation]) -> tuple[list[str] | None, list[str]]:
    """``fields`` plus the columns the relations join on, and those added (left out of the results)."""
    if not fields:
        return fields, []
    hidden = list(dict.fromkeys(r.local for r in rels if r.local not in fields))
    return [*fields, *hidden], hidden


def _group_by_keys(rows: list[dict]) -> list[tuple[tuple[str, ...], list[dict]]]:
    """Rows grouped by the set of columns they carry (one INSERT shape per group), in order."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return list(groups.items())


def _chunks(rows: list, size: int) -> Iterable[list]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


