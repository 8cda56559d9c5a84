"""Plumbing shared by every operation: transactions, error translation, WHERE clauses, prepared statements."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import timezone
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from ..binding import Binding, Relation
from ..driver_errors import translate
from ..errors import ConflictError, DatabaseError, DataFlowError, ForeignKeyError, NotFoundError, ValidationError
from ..prepared import Prepared, prepare
from ..prepared import run as run_prepared
from ..query import compile_filter, compile_sort
from ..query.sorting import parse_sort

if TYPE_CHECKING:
    from ..core.dataflow import DataFlow

UTC = timezone.utc
DEFAULT_LIMIT = 100
DEFAULT_BATCH = 5000
ON_CONFLICT = ("error", "skip", "update")
#: Actions that only read: on SQLite their transactions stay deferred, so readers never queue behind writers.
READ_ACTIONS = frozenset({"read", "list", "count", "aggregate"})


class OperationsBase:
    """What every operation shares: the instance, transactions, errors, WHERE clauses, prepared statements."""

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
    def _one_key(self, conn, b: Binding, clauses, params, action: str, what: str,
                 raise_on_not_found: bool) -> tuple[Any, Any]:
        """The key (and version) of the one record the clauses match, locked for the change; None when none."""
        cols = [b.pk] + ([b.table.c.version] if b.spec.versioned else [])
        stmt = sa.select(*cols).where(*clauses).order_by(b.pk).limit(2)
        if self.db.backend != "sqlite":
            stmt = stmt.with_for_update()
        rows = conn.execute(stmt, params).all()
        if len(rows) > 1:
            raise ValidationError(f"{b.name} {action}: {what} matches more than one record; narrow the filter "
                                  f"or use {b.name}Bulk{action.capitalize()}Node", model=b.name)
        if not rows:
            if raise_on_not_found:
                raise self._missing(b, action, what)
            return None, None
        return rows[0][0], (rows[0][1] if len(rows[0]) > 1 else None)

    def _conflict(self, b: Binding, key: Any, expected: Any, actual: Any) -> ConflictError:
        now = f" (it is now at version {actual})" if actual is not None else ""
        return ConflictError(f"{b.name} {b.pk.name}={key!r} was changed by someone else: update sent version "
                             f"{expected}{now}; read it again and retry", model=b.name)

    # ---------------------------------------------------------------- many records
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
        """The SELECT a List runs (sorted, then by primary key, for a stable order), and its parameters."""
        limit = self._limit(b, limit, "limit")
        offset = self._limit(b, offset, "offset") or 0
        clauses, params = self._where(b, filter, include_deleted=include_deleted)
        stmt = self._ordered_select(b, clauses, sort, fields)
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        return stmt, params


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
