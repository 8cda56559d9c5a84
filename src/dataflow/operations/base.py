"""What every operation shares: the executor, WHERE clauses, projections, paging and row locks."""

from __future__ import annotations

import json
from datetime import timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import sqlalchemy as sa

from ..binding import Binding, Relation
from ..errors import DataFlowError, ForeignKeyError, NotFoundError, ValidationError
from ..query import compile_sort
from ..query.sorting import parse_sort
from .call import MISSING, Call
from .executor import Executor, Where
from .policies import SoftDelete, Tenancy, Versioning

if TYPE_CHECKING:
    from ..core.dataflow import DataFlow

UTC = timezone.utc
DEFAULT_LIMIT = 100
DEFAULT_BATCH = 5000
ON_CONFLICT = ("error", "skip", "update")


class OperationsBase:
    """The instance, its executor (with the built-in policies) and the helpers operations share."""

    def __init__(self, db: "DataFlow") -> None:
        self.db = db
        self.executor = Executor(db)
        if db.config.multi_tenant:  # first: a call with no tenant is refused before any other policy acts
            self.executor.add(Tenancy(db.config.tenant_field, db.config.tenant_header, db=db))
        self.executor.add(SoftDelete())
        self.executor.add(Versioning())

    def _call(self, action: str, b: Binding, **kw: Any) -> Call:
        return self.executor.call(action, b, **kw)

    # ---------------------------------------------------------------- errors
    def explain(self, call: Call, error: DataFlowError) -> DataFlowError:
        """Name the field and the model a foreign key must point at (SQLite's message names neither)."""
        if not isinstance(error, ForeignKeyError):
            return error
        b, action = call.binding, call.action.replace("_", " ")
        refs = {f.name: f.references for f in b.model_spec.fields.values() if f.references} if b.spec else {}
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

    # ---------------------------------------------------------------- WHERE
    def _where(self, call: Call, path: str = "filter") -> Where:
        return self.executor.where(call, path=path)

    def _needs_target(self, call: Call) -> None:
        if call.id is MISSING and not call.filter:
            raise ValidationError(f"{call.model} {call.action} needs an 'id' or a non-empty 'filter'/'conditions'",
                                  model=call.model)

    def _what(self, call: Call) -> str:
        """How an error names the record asked for: by key or by the filter's shape, never by value."""
        parts = []
        if call.id is not MISSING:
            parts.append(f"the given {call.binding.pk.name}")
        if call.filter:
            parts.append(f"filter {_shape(call.filter)}")
        return " and ".join(parts) or "the filter"

    def _missing(self, call: Call) -> NotFoundError:
        return NotFoundError(f"{call.model} {call.action}: no record matches {self._what(call)}", model=call.model)

    # ---------------------------------------------------------------- columns and paging
    def _projection(self, b: Binding, fields: Sequence[str] | None) -> list[sa.Column]:
        if not fields:
            return list(b.table.columns)
        if isinstance(fields, str) or not isinstance(fields, (list, tuple)):
            raise ValidationError(f"{b.name}: fields must be a list of field names, got {type(fields).__name__}",
                                  model=b.name)
        bad = [f for f in fields if not isinstance(f, str)]
        if bad:
            raise ValidationError(f"{b.name}: fields must be field names (strings), got {type(bad[0]).__name__}",
                                  model=b.name)
        unknown = [f for f in fields if f not in b.table.c]
        if unknown:
            raise ValidationError(f"{b.name} has no field(s) {unknown} in fields; fields are: "
                                  f"{', '.join(b.columns)}", model=b.name, field=unknown[0])
        return [b.table.c[f] for f in fields]

    def _limit(self, b: Binding, value: Any, name: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**62:
            raise ValidationError(f"{b.name}: {name} must be a non-negative integer (at most 2**62), got "
                                  f"{type(value).__name__}", model=b.name)
        return value

    def _ordered_select(self, b: Binding, clauses: list, sort: Any, fields: Sequence[str] | None) -> sa.Select:
        """SELECT ... WHERE ... ORDER BY the sort, then the primary key for a stable order.

        The key runs in the direction of the last sort key, so an index on (that key) serves the whole
        ORDER BY (secondary indexes end with the primary key on SQLite and MySQL).
        """
        order = compile_sort(b.table, sort) if sort else []
        keys = parse_sort(sort) if sort else []
        tiebreak = b.pk.desc() if keys and keys[-1][1] else b.pk
        return sa.select(*self._projection(b, fields)).where(*clauses).order_by(*order, tiebreak)

    def select_statement(self, b: Binding, filter: Mapping | None = None, sort: Any = None,
                         limit: int | None = None, offset: int = 0, fields: Sequence[str] | None = None, *,
                         include_deleted: bool = False) -> tuple[sa.Select, dict]:
        """The SELECT a List runs, as the policies narrow it (tenant, soft delete, ...), and its parameters."""
        limit = self._limit(b, limit, "limit")
        offset = self._limit(b, offset, "offset") or 0
        call = self.executor.plan(self._call("list", b, filter=filter, options={"include_deleted": include_deleted}))
        where = self._where(call)
        return self._paged_select(b, where, sort, fields, limit, offset), where.params

    def _paged_select(self, b: Binding, where: Where, sort: Any, fields: Sequence[str] | None,
                      limit: int | None, offset: int) -> sa.Select:
        """``_ordered_select`` with a literal LIMIT/OFFSET (statements that are not cached per shape)."""
        stmt = self._ordered_select(b, where.clauses(), sort, fields)
        if limit is not None:
            stmt = stmt.limit(limit)
        return stmt.offset(offset) if offset else stmt

    # ---------------------------------------------------------------- single records
    def _one_key(self, conn: sa.Connection, call: Call, where: Where, raise_on_not_found: bool) -> Any:
        """The key (and version) of the one record the call matches, locked for the change; MISSING when none."""
        b = call.binding
        cols = [b.pk] + ([b.table.c.version] if "versioned" in call.state else [])
        stmt = sa.select(*cols).where(*where.clauses()).order_by(b.pk).limit(2)
        if self.db.facts.row_locks:
            stmt = stmt.with_for_update()
        rows = conn.execute(stmt, where.params).all()
        if len(rows) > 1:
            op = call.action.capitalize()
            raise ValidationError(f"{b.name} {call.action}: {self._what(call)} matches more than one record; narrow "
                                  f"the filter or use {b.name}Bulk{op}Node", model=b.name)
        if not rows:
            if raise_on_not_found:
                raise self._missing(call)
            return MISSING
        call.state["key"] = rows[0][0]
        if len(rows[0]) > 1:
            call.state["version"] = rows[0][1]
        return rows[0][0]

    def _select_one(self, conn: sa.Connection, b: Binding, pk_value: Any) -> dict:
        return dict(conn.execute(sa.select(b.table).where(b.pk == pk_value)).mappings().one())

    def _advance_sequence(self, conn: sa.Connection, b: Binding, keys: Iterable[str]) -> None:
        """PostgreSQL: keys given explicitly do not move a serial's sequence; move it past the largest.

        Without this, the next automatic key collides with a stored one (``create(id=1)`` then
        ``create()`` raised a DuplicateKeyError). SQLite and MySQL continue after the largest key already.
        """
        if not self.db.facts.sequences or not b.model_codec.auto_pk or b.pk.name not in keys:
            return
        q = conn.dialect.identifier_preparer
        table, pk = q.format_table(b.table), q.quote(b.pk.name)
        seq = conn.exec_driver_sql("SELECT pg_get_serial_sequence(%s, %s)", (table, b.pk.name)).scalar()
        if seq:  # a quoted name from the server itself
            conn.exec_driver_sql(
                f"SELECT setval(%s::regclass, m) FROM (SELECT MAX({pk}) AS m FROM {table}) AS s "
                f"WHERE m > (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {seq})", (seq,))


def _shape(value: Any) -> str:
    """A filter's fields and operators with every value shown as ``?``: errors get logged, values may be personal."""
    def walk(v: Any, depth: int = 0) -> Any:
        if depth > 20:
            return "..."
        if isinstance(v, Mapping):
            return {str(k): walk(x, depth + 1) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x, depth + 1) for x in v] if any(isinstance(x, Mapping) for x in v) else "?"
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
    return "version" if b.model_spec.versioned else None


def _join_fields(fields: Sequence[str] | None, rels: Sequence[Relation]) -> tuple[list[str] | None, list[str]]:
    """``fields`` plus the columns the relations join on, and those added (left out of the results)."""
    if not fields:
        return None, []
    hidden = list(dict.fromkeys(r.local for r in rels if r.local not in fields))
    return [*fields, *hidden], hidden


def _group_by_keys(rows: list[dict]) -> list[tuple[tuple[str, ...], list[dict]]]:
    """Rows grouped by the set of columns they carry (one INSERT shape per group), in order."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return list(groups.items())


