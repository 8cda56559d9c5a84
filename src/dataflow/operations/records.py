"""One record at a time, and the reads: create, read, update, delete, list, count, aggregate, upsert.

Each public method checks its input, builds a ``Call`` and hands it to the executor with a body
that builds the statement from the planned call (so every policy's conditions are in it).
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any, Iterator, Mapping, Sequence

import sqlalchemy as sa

from ..binding import Binding, Relation
from ..errors import DuplicateKeyError, ValidationError
from ..query import Filter, compile_pipeline
from .base import DEFAULT_LIMIT, UTC, _join_fields
from .call import MISSING, Call
from .relations import RelationOperations

#: Rows fetched per round trip when a query is iterated (memory stays flat whatever the table size).
STREAM_BATCH = 1000


def _id(value: Any) -> Any:
    return MISSING if value is None else value


class RecordOperations(RelationOperations):
    # ---------------------------------------------------------------- create
    def create(self, model: str, data: Mapping[str, Any]) -> dict:
        """Insert one record; return it as stored, primary key included."""
        b = self.db.binding(model, modelled=True)
        call = self._call("create", b, data=b.model_codec.for_create(data))
        return self.executor.run(call, self._create)

    def _create(self, call: Call) -> dict:
        b, row = call.binding, call.data
        keys = tuple(row)
        returning = self.db.engine.dialect.insert_returning
        if returning and not (self.db.facts.returning_needs_sequence_fix and b.pk.name in row):
            p = self.executor.prepared(b, ("create", keys), lambda: b.table.insert().values(
                {k: sa.bindparam(k, type_=b.table.c[k].type) for k in keys}).returning(*b.table.c))
            return self.executor.execute(call, p, row)[0]
        with self.executor.transaction(call) as conn:
            self.executor.before_statement(call, conn)
            if returning:
                record = dict(conn.execute(b.table.insert().returning(*b.table.c), row).mappings().one())
            else:
                result = conn.execute(b.table.insert(), row)
                record = self._select_one(conn, b, _first_key(result))
            self._advance_sequence(conn, b, row)
            self.executor.after_statement(call, conn, records=[record], rowcount=1)
            return record

    # ---------------------------------------------------------------- read
    def read(self, model: str, id: Any = None, filter: Mapping | None = None, *,
             raise_on_not_found: bool = True, include: Sequence[str] | None = None,
             include_deleted: bool = False, fields: Sequence[str] | None = None) -> dict | None:
        """One record by id and/or filter (both must match; the first by primary key when several do)."""
        b = self.db.binding(model)
        shape = self._fields(b, fields) if fields else ()
        rels = self._relations(b, include) if include else None
        call = self._call("read", b, id=_id(id), filter=filter, options={"include_deleted": include_deleted})
        self._needs_target(call)
        return self.executor.run(call, lambda c: self._read(c, fields, shape, rels, raise_on_not_found))

    def _read(self, call: Call, fields, shape: tuple, rels: list[Relation] | None, raise_on_not_found: bool):
        b = call.binding
        where = self._where(call)
        if not rels:
            p = self.executor.prepared(b, ("read", where.key, shape), lambda: sa.select(
                *self._projection(b, fields)).where(*where.clauses()).order_by(b.pk).limit(1))
            rows = self.executor.execute(call, p, where.params)
        else:
            selected, hidden = _join_fields(fields, rels)
            stmt = sa.select(*self._projection(b, selected)).where(*where.clauses()).order_by(b.pk).limit(1)
            with self.executor.transaction(call) as conn:
                self.executor.before_statement(call, conn)
                rows = [dict(r) for r in conn.execute(stmt, where.params).mappings()]
                if rows:
                    self._attach(conn, call, rows, rels, hidden)
                self.executor.after_statement(call, conn, records=rows, rowcount=len(rows))
        if not rows and raise_on_not_found:
            raise self._missing(call)
        return rows[0] if rows else None

    # ---------------------------------------------------------------- update / delete
    def update(self, model: str, id: Any = None, filter: Mapping | None = None,
               changes: Mapping[str, Any] | None = None, *, raise_on_not_found: bool = True) -> dict | None:
        """Change one record (by id and/or a filter matching exactly one); return it after the change."""
        b = self.db.binding(model, modelled=True)
        if not changes:
            raise ValidationError(f"{b.name} update needs changes: pass 'fields' (or 'updates') with at least "
                                  f"one field", model=b.name)
        call = self._call("update", b, id=_id(id), filter=filter, data=b.model_codec.for_update(changes))
        self._needs_target(call)
        return self.executor.run(call, lambda c: self._update(c, raise_on_not_found))

    def _one_statement(self, call: Call, returning: bool) -> bool:
        """A change by primary key whose policies need not know the record's key before the statement
        (``Call.key_first``): one ``UPDATE``/``DELETE ... WHERE id = :id AND <scope> RETURNING`` finds,
        changes and returns the record, instead of lock, change and read back. It matches one record at
        most (the key), so it is atomic on its own and takes the executor's fast path like a create; a
        call whose policies need the transaction (``in_transaction``: row-level security) runs it in one,
        between their hooks."""
        return returning and call.id is not MISSING and not call.key_first

    def _returning(self, call: Call, key: tuple, build, values: Mapping[str, Any], raise_on_not_found: bool):
        """Run the one-statement change ``build()`` (prepared per shape ``key``); its record, or None."""
        b = call.binding
        where = self._where(call)
        p = self.executor.prepared(b, (*key, where.key), lambda: build(where))
        rows = self.executor.execute(call, p, {**where.params, **values})
        if not rows:
            if raise_on_not_found:
                raise self._missing(call)
            return None
        call.state["key"] = rows[0][b.pk.name]
        return rows[0]

    def _update(self, call: Call, raise_on_not_found: bool) -> dict | None:
        b = call.binding
        if self._one_statement(call, self.db.engine.dialect.update_returning) and not any(
                isinstance(v, sa.sql.ClauseElement) for v in call.data.values()):
            names = tuple(sorted(call.data))
            return self._returning(call, ("update-returning", names), lambda where: sa.update(b.table).where(
                *where.clauses()).values({n: sa.bindparam(f"df_set_{n}", type_=b.table.c[n].type) for n in names})
                .returning(*b.table.columns), {f"df_set_{n}": call.data[n] for n in names}, raise_on_not_found)
        where = self._where(call)
        with self.executor.transaction(call) as conn:
            key = self._one_key(conn, call, where, raise_on_not_found)
            if key is MISSING:
                return None
            self.executor.before_statement(call, conn)
            result = conn.execute(sa.update(b.table).where(b.pk == key, *call.state.get("guard", ()))
                                  .values(call.data))
            self.executor.after_statement(call, conn, keys=[key], rowcount=result.rowcount)
            return self._select_one(conn, b, key)

    def delete(self, model: str, id: Any = None, filter: Mapping | None = None, *,
               raise_on_not_found: bool = True) -> Any:
        """Delete one record (soft delete sets ``deleted_at``); return its key, or None when missing."""
        b = self.db.binding(model, modelled=True)
        call = self._call("delete", b, id=_id(id), filter=filter)
        self._needs_target(call)
        return self.executor.run(call, lambda c: self._delete(c, raise_on_not_found))

    def _delete(self, call: Call, raise_on_not_found: bool) -> Any:
        b = call.binding
        soft = bool(call.state.get("soft_delete"))
        if self._one_statement(call, self.db.engine.dialect.update_returning if soft
                               else self.db.engine.dialect.delete_returning):
            def build(where) -> Any:
                stmt = sa.update(b.table).values(deleted_at=sa.bindparam("df_now", type_=b.table.c.deleted_at.type)) \
                    if soft else sa.delete(b.table)
                return stmt.where(*where.clauses()).returning(b.pk)
            row = self._returning(call, ("delete-returning", soft), build,
                                  {"df_now": datetime.now(UTC)} if soft else {}, raise_on_not_found)
            return None if row is None else row[b.pk.name]
        where = self._where(call)
        with self.executor.transaction(call) as conn:
            key = self._one_key(conn, call, where, raise_on_not_found)
            if key is MISSING:
                return None
            self.executor.before_statement(call, conn)
            stmt: Any
            if call.state.get("soft_delete"):
                stmt = sa.update(b.table).where(b.pk == key).values(deleted_at=datetime.now(UTC))
            else:
                stmt = sa.delete(b.table).where(b.pk == key)
            result = conn.execute(stmt)
            self.executor.after_statement(call, conn, keys=[key], rowcount=result.rowcount)
            return key

    # ---------------------------------------------------------------- many records
    def list(self, model: str, filter: Mapping | None = None, sort: Any = None, limit: int | None = DEFAULT_LIMIT,
             offset: int = 0, fields: Sequence[str] | None = None, *, include: Sequence[str] | None = None,
             include_deleted: bool = False, json: bool = False) -> tuple[list[dict], bool]:
        """Records matching ``filter``, sorted (primary key by default); and whether more follow.

        ``json=True``: the records in their JSON-safe form (a node's output), built from the rows directly.
        """
        b = self.db.binding(model)
        limit = self._limit(b, limit, "limit")
        offset = self._limit(b, offset, "offset") or 0
        shape = self._fields(b, fields)
        rels = self._relations(b, include) if include else None
        call = self._call("list", b, filter=filter, options={"include_deleted": include_deleted, "json": json})
        return self.executor.run(call, lambda c: self._list(c, sort, limit, offset, fields, shape, rels))

    def _list(self, call: Call, sort: Any, limit: int | None, offset: int, fields, shape: tuple,
              rels: "Sequence[Relation] | None") -> "tuple[builtins.list[dict], bool]":
        b = call.binding
        where = self._where(call)
        fetch = None if limit is None else limit + 1
        if rels:
            selected, hidden = _join_fields(fields, rels)
            stmt = self._paged_select(b, where, sort, selected, fetch, offset)
            with self.executor.transaction(call) as conn:
                self.executor.before_statement(call, conn)
                result = conn.execute(stmt, where.params)
                keys = tuple(result.keys())
                records = [dict(zip(keys, row)) for row in result.all()]
                if records:
                    self._attach(conn, call, records[:limit] if limit is not None else records, rels, hidden)
                self.executor.after_statement(call, conn, records=records, rowcount=len(records))
            if call.options["json"]:
                records = self.executor.encoded(call, records)
        else:
            key = ("list", where.key, repr(sort), shape, fetch is None, bool(offset))

            def build() -> sa.Select:
                stmt = self._ordered_select(b, where.clauses(), sort, fields)
                if fetch is not None:
                    stmt = stmt.limit(sa.bindparam("df_limit", type_=sa.Integer()))
                return stmt.offset(sa.bindparam("df_offset", type_=sa.Integer())) if offset else stmt

            p = self.executor.prepared(b, key, build)
            records = self.executor.execute(call, p, {**where.params, "df_limit": fetch, "df_offset": offset})
        has_more = limit is not None and len(records) > limit
        if has_more:
            records.pop()
        return records, has_more

    def stream(self, model: str, filter: Mapping | None = None, sort: Any = None, limit: int | None = None,
               offset: int = 0, fields: Sequence[str] | None = None, *, batch: int = STREAM_BATCH,
               include_deleted: bool = False) -> Iterator[dict]:
        """Matching records one by one, fetched ``batch`` rows at a time (a server-side cursor where the
        driver has one): memory stays flat however many rows match."""
        b = self.db.binding(model)
        limit = self._limit(b, limit, "limit")
        offset = self._limit(b, offset, "offset") or 0
        self._fields(b, fields)
        call = self._call("list", b, filter=filter, options={"include_deleted": include_deleted, "stream": True})
        return self.executor.stream(call, lambda c: self._stream(c, sort, limit, offset, fields, batch))

    def _stream(self, call: Call, sort: Any, limit: int | None, offset: int, fields, batch: int) -> Iterator[dict]:
        b = call.binding
        where = self._where(call)
        stmt = self._paged_select(b, where, sort, fields, limit, offset)
        with self.executor.transaction(call) as conn:
            self.executor.before_statement(call, conn)
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt, where.params)
            keys = tuple(result.keys())
            n = 0
            for partition in result.partitions():
                for row in partition:
                    n += 1
                    yield dict(zip(keys, row))
            self.executor.after_statement(call, conn, rowcount=n)

    def count(self, model: str, filter: Mapping | None = None, *, include_deleted: bool = False) -> int:
        """How many records match ``filter``."""
        b = self.db.binding(model)
        call = self._call("count", b, filter=filter, options={"include_deleted": include_deleted})
        return self.executor.run(call, self._count)

    def _count(self, call: Call) -> int:
        b = call.binding
        where = self._where(call)
        p = self.executor.prepared(b, ("count", where.key), lambda: sa.select(
            sa.func.count().label("count")).select_from(b.table).where(*where.clauses()))
        return int(self.executor.execute(call, p, where.params)[0]["count"])

    def aggregate(self, model: str, pipeline: Sequence[Mapping], filter: Mapping | None = None) -> Any:
        """Run an aggregation pipeline as one SELECT; MongoDB-shaped results."""
        b = self.db.binding(model)
        if not isinstance(pipeline, (list, tuple)):
            raise ValidationError(f"{b.name}: pipeline must be a list of stages", model=b.name)
        call = self._call("aggregate", b, filter=filter, data=list(pipeline))
        return self.executor.run(call, self._aggregate)

    def _aggregate(self, call: Call) -> Any:
        b = call.binding
        where = self._where(call)
        clauses = where.clauses()
        base = Filter(sa.and_(*clauses), where.params) if clauses else None
        compiled = compile_pipeline(b.table, call.data, base=base)
        if compiled.key is None:  # a shape the pipeline cache does not keep: through SQLAlchemy each time
            with self.executor.transaction(call) as conn:
                self.executor.before_statement(call, conn)
                rows = conn.execute(compiled.statement, compiled.params).mappings().all()
                self.executor.after_statement(call, conn, rowcount=len(rows))
                return compiled.shape(rows)
        p = self.executor.prepared(b, ("aggregate", where.key, compiled.key), lambda: compiled.statement)
        return compiled.shape(self.executor.execute(call, p, compiled.params))

    # ---------------------------------------------------------------- upsert
    def upsert(self, model: str, where: Mapping[str, Any], update: Mapping[str, Any] | None = None,
               create: Mapping[str, Any] | None = None, conflict_on: Sequence[str] | None = None) -> tuple[bool, dict]:
        """Update the record matching ``where``, or create it from ``where`` + ``create``; (created, record)."""
        b = self.db.binding(model, modelled=True)
        if not where or not isinstance(where, Mapping):
            raise ValidationError(f"{b.name} upsert needs 'where': the fields that identify the record", model=b.name)
        if conflict_on:
            unknown = [c for c in conflict_on if c not in b.model_spec.fields]
            if unknown:
                raise b.model_codec.unknown(unknown, "conflict_on")
            where = {k: v for k, v in {**(create or {}), **(update or {}), **where}.items() if k in conflict_on}
        values = b.model_codec.for_update(update) if update else {}
        new = {**(create or {}), **(update or {}), **where}
        if not isinstance(new, dict):
            raise ValidationError(f"{b.name} upsert: 'create' and 'update' must be dicts", model=b.name)
        call = self._call("upsert", b, filter=where, data=values, options={"new": new})
        return self.executor.run(call, self._upsert)

    def _upsert(self, call: Call) -> tuple[bool, dict]:
        b = call.binding
        where = self._where(call, path="where")
        for attempt in (1, 2):
            try:
                with self.executor.transaction(call) as conn:
                    cols = [b.pk] + ([b.table.c.version] if "versioned" in call.state else [])
                    stmt = sa.select(*cols).where(*where.clauses()).order_by(b.pk).limit(2)
                    if self.db.facts.row_locks:
                        stmt = stmt.with_for_update()
                    found = conn.execute(stmt, where.params).all()
                    if len(found) > 1:
                        raise ValidationError(f"{b.name} upsert: 'where' matches more than one record", model=b.name)
                    if found:
                        key = call.state["key"] = found[0][0]
                        if len(found[0]) > 1:
                            call.state["version"] = found[0][1]
                        self.executor.before_statement(call, conn)
                        rowcount = 0
                        if call.data:
                            rowcount = conn.execute(sa.update(b.table).where(
                                b.pk == key, *call.state.get("guard", ())).values(call.data)).rowcount
                        self.executor.after_statement(call, conn, keys=[key], rowcount=rowcount, created=False)
                        return False, self._select_one(conn, b, key)
                    call.state.pop("key", None)
                    row = b.model_codec.for_create({**call.options["new"], **call.state.get("stamp", {})})
                    self.executor.before_statement(call, conn)
                    if self.db.engine.dialect.insert_returning:
                        rec = dict(conn.execute(b.table.insert().returning(*b.table.c), row).mappings().one())
                    else:
                        pk = _first_key(conn.execute(b.table.insert(), row))
                        rec = self._select_one(conn, b, pk)
                    self._advance_sequence(conn, b, row)
                    self.executor.after_statement(call, conn, keys=[rec[b.pk.name]], rowcount=1, created=True)
                    return True, rec
            except DuplicateKeyError:
                # Another writer inserted the same key between our SELECT and INSERT: update it instead.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- helpers
    def _fields(self, b: Binding, fields: Sequence[str] | None) -> tuple:
        """``fields`` checked (names of columns), as a hashable shape."""
        if not fields:
            return ()
        self._projection(b, fields)
        return tuple(fields)


def _first_key(result: Any) -> Any:
    """The primary key an INSERT without RETURNING assigned (MySQL's last insert id)."""
    key = result.inserted_primary_key
    return key[0] if key else None
