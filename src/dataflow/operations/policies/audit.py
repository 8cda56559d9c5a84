"""Audit log (``db.enable_audit_log()`` or ``audit_log=True``): every write leaves records in ``dataflow_audit``.

The records are written inside the operation's transaction, by the policy hooks, so a write that
is refused or fails leaves neither its change nor its record, and no record exists without its
change. One record per affected record: time, actor (``with db.actor(...)``, else ``"system"``),
action, table, record id, tenant, request id, and the changed fields' values before and after.

The values are computed by the database: each hook runs one ``INSERT INTO dataflow_audit ...
SELECT ... FROM <table> WHERE <the rows the write touches>``, whatever the number of rows:

- update / bulk update: before the UPDATE, ``before`` = the changed columns as stored, ``after`` =
  the UPDATE's own SET expressions evaluated on the same rows (``version + 1`` included; when no
  value depends on the row, the ``after`` document is built once per statement). A bulk update must
  record exactly the rows it changes, as they were: the record count must equal the UPDATE's row
  count, else the operation is rolled back, and nobody may change a row between its record and its
  change. On PostgreSQL, in a transaction of its own, the operation runs REPEATABLE READ
  (``Call.snapshot``): both statements read one snapshot, and a row another transaction changed after
  it makes the UPDATE fail with a serialization failure, so the operation starts over (the executor's
  retry) and records the newer values; that retry and any after it run at the default isolation with
  the rows locked as they are read (the executor clears ``Call.snapshot``), as on a table written that
  often every snapshot attempt would fail again. The snapshot costs no per-row work; locking the rows as they are read
  (``FOR NO KEY UPDATE``, which writes every row's lock) cost about a quarter of the UPDATE on 10,000
  rows. Inside a caller's transaction (its isolation is the caller's) the rows are locked that way.
  (MySQL at its default REPEATABLE READ: INSERT ... SELECT takes shared locks on the rows it reads;
  SQLite has one writer at a time.)
  (Two statements rather than one ``WITH locked AS (SELECT ... FOR UPDATE), changed AS (UPDATE ...
  FROM locked ... RETURNING ...) INSERT ... SELECT FROM changed``: before PostgreSQL 18 an UPDATE
  cannot return the old values, so that shape needs a join of the UPDATE with the locked rows and
  materialises both, and measured 10-30% slower on PostgreSQL 15 at 10,000 rows. Most of the cost
  is the INSERT itself: the heap row and its index entries, about twice the UPDATE's work.)
- delete / bulk delete: before the DELETE, ``before`` = every audited field (bulk: the same snapshot
  or ``FOR UPDATE`` lock, count checked the same way);
- what a delete makes the database change by itself (ON DELETE CASCADE / SET NULL of referring
  tables, transitively, a self-referencing tree generation by generation, each row once): before
  the DELETE, the keys of the rows reached are collected round by round, then recorded by INSERT ...
  SELECT per 1,000 keys, ``cascade_delete`` (every audited field before) or ``cascade_set_null`` (the
  reference before and after), with each row's own tenant (``AuditTrail.cascades``);
- create / upsert's insert: after the INSERT, ``after`` = every audited field of the new row;
- bulk create: the affected keys come back from the INSERT (``RETURNING``); one INSERT ... SELECT
  per 1,000 keys;
- bulk upsert: per chunk, the stored rows' values before (one SELECT) and after (one SELECT), then
  one multi-row INSERT into the trail.

The timestamps DataFlow keeps (``created_at``, ``updated_at``) are left out of the values: the
record's ``at`` is the time of the change, and the previous record about the row says when that one
was (as Laravel Auditing and sequelize-paper-trail do by default). ``__dataflow__ =
{"audit_timestamps": True}`` records them like any other field. ``deleted_at`` (soft delete) is kept.

Values the trail must not hold: ``__dataflow__ = {"audit_exclude": [...]}`` leaves fields out of
the trail, ``"audit_mask": [...]`` records that they changed with the value ``"***"``. Values are
normalised to JSON-safe form (per the model's field types) when read with ``db.audit_log()``.

Indexes: the primary key, ``(table_name, record_id)`` (``db.audit_log(table=..., record_id=...)``,
the GDPR scrub) and ``at`` (``since=``). On PostgreSQL ``at`` is a BRIN index: the records of one
statement share one ``at``, and a B-tree's leaf page filling up with equal keys is deduplicated again
and again (measured: that index cost as much as the other two together on a bulk update of 10,000
rows), while a BRIN index on an append-ordered column costs next to nothing. Records are read newest
first by ``id`` (the order they were written in). A trail made with a B-tree on ``at`` is moved to
BRIN by ``AuditTrail.ensure`` (Alembic does not compare index methods), unless ``existing_schema_mode``
or a role that does not own the trail: then the B-tree stays, logged, and writes go on.

The trail is append-only: DataFlow never updates or deletes it, except the GDPR scrub
(``compliance.py``), and on PostgreSQL a trigger refuses UPDATE and DELETE unless the transaction
set ``dataflow.audit_scrub`` to ``on`` (``set_config('dataflow.audit_scrub', 'on', true)``).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import sqlalchemy as sa

from ...errors import ConflictError, ModelError, ValidationError
from ...models import TIMESTAMP_FIELDS
from ...schema.tables import TABLE_KWARGS, delete_actions
from ...schema.types import UTCDateTime
from ...values import converter_for, json_safe
from ..call import Call
from ..chunks import chunks
from ..policy import Policy

if TYPE_CHECKING:
    from ...binding import Binding
    from ...core.dataflow import DataFlow

log = logging.getLogger("dataflow.audit")

UTC = timezone.utc
AUDIT_TABLE = "dataflow_audit"
MASK = "***"
#: Keys per ``INSERT ... SELECT ... WHERE pk IN (...)`` for bulk creates.
KEYS_PER_STATEMENT = 1000
#: The PostgreSQL setting the append-only trigger checks; only the GDPR scrub sets it (per transaction).
SCRUB_SETTING = "dataflow.audit_scrub"

AT_INDEX = "ix_dataflow_audit_at"

ACTIONS = ("create", "update", "delete", "upsert", "bulk_create", "bulk_update", "bulk_delete", "bulk_upsert")


def audit_table(metadata: sa.MetaData) -> sa.Table:
    """The ``dataflow_audit`` table in ``metadata`` (made once per metadata), so migrations create it."""
    existing = metadata.tables.get(AUDIT_TABLE)
    if existing is not None:
        return existing
    return sa.Table(  # type: ignore[call-overload]  # SQLAlchemy's overloads miss the Index/kw mix
        AUDIT_TABLE, metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("table_name", sa.String(255), nullable=False),
        sa.Column("record_id", sa.String(255), nullable=True),
        sa.Column("tenant", sa.String(255), nullable=True),
        sa.Column("request_id", sa.String(255), nullable=True),
        # JSON, not JSONB, on PostgreSQL too: built ~1/3 faster by INSERT ... SELECT, and keys keep their order.
        sa.Column("old_values", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("new_values", sa.JSON(none_as_null=True), nullable=True),
        sa.Index("ix_dataflow_audit_table_name_record_id", "table_name", "record_id"),
        sa.Index(AT_INDEX, "at", postgresql_using="brin"),
        **TABLE_KWARGS,
    )


# PostgreSQL: refuse UPDATE/DELETE on the trail unless the GDPR scrub set the transaction-local switch.
PG_AT_INDEX_DDL = [
    f"DROP INDEX IF EXISTS {AT_INDEX}",
    f"CREATE INDEX {AT_INDEX} ON {AUDIT_TABLE} USING brin (at)",
]
PG_TRIGGER = [
    f"""CREATE OR REPLACE FUNCTION dataflow_audit_append_only() RETURNS trigger AS $$
BEGIN
  IF coalesce(current_setting('{SCRUB_SETTING}', true), '') = 'on' AND TG_OP = 'UPDATE' THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'dataflow_audit is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$ LANGUAGE plpgsql""",
    f"DROP TRIGGER IF EXISTS dataflow_audit_append_only ON {AUDIT_TABLE}",
    f"CREATE TRIGGER dataflow_audit_append_only BEFORE UPDATE OR DELETE ON {AUDIT_TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION dataflow_audit_append_only()",
    f"DROP TRIGGER IF EXISTS dataflow_audit_no_truncate ON {AUDIT_TABLE}",
    f"CREATE TRIGGER dataflow_audit_no_truncate BEFORE TRUNCATE ON {AUDIT_TABLE} "
    "FOR EACH STATEMENT EXECUTE FUNCTION dataflow_audit_append_only()",
]


class AuditTrail:
    """The trail of one ``DataFlow`` instance: its table, the append-only guard, writing and reading."""

    def __init__(self, db: "DataFlow") -> None:
        self.db = db
        self._guarded = False
        self._lock = threading.Lock()
        self._fields: dict[str, tuple[sa.Table, list[str], set[str]]] = {}

    @property
    def table(self) -> sa.Table:
        return audit_table(self.db.metadata)

    # ------------------------------------------------------------------ schema
    def ensure(self) -> None:
        """The table exists (migrations made it) and, on PostgreSQL, the append-only trigger is in place
        and the ``at`` index is a BRIN one."""
        self.db.ensure_ready()
        if self._guarded:
            return
        with self._lock:
            if self._guarded:
                return
            if self.db.backend == "postgresql":
                with self.db.engine.begin() as conn:
                    # One creator at a time: CREATE OR REPLACE FUNCTION races with itself.
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7415926535)")
                    trigger, at_method = conn.exec_driver_sql(
                        f"SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = 'dataflow_audit_append_only' "
                        f"AND tgrelid = to_regclass('{AUDIT_TABLE}')), (SELECT am.amname FROM pg_class c "
                        f"JOIN pg_am am ON am.oid = c.relam WHERE c.oid = to_regclass('{AT_INDEX}'))").one()
                    for stmt in [] if trigger else PG_TRIGGER:
                        conn.exec_driver_sql(stmt, execution_options={"no_parameters": True})
                    if at_method != "brin":
                        self._brin(conn)
            self._guarded = True

    def _brin(self, conn: sa.Connection) -> None:
        """Move the ``at`` index to BRIN, where DataFlow may change the schema and its role owns the trail.

        Only a cost: a role that may write the trail but not own it (``existing_schema_mode``'s separate
        schema role, typically) keeps the B-tree, and its writes go on."""
        if self.db.config.existing_schema_mode:
            log.info("existing_schema_mode: %s.%s is not a BRIN index; DataFlow leaves it as it is "
                     "(CREATE INDEX ... USING brin (at) makes audited bulk writes cheaper)", AUDIT_TABLE, AT_INDEX)
            return
        try:
            with conn.begin_nested():
                for stmt in PG_AT_INDEX_DDL:
                    conn.exec_driver_sql(stmt, execution_options={"no_parameters": True})
        except self.db.catchable as exc:
            log.warning("could not make %s a BRIN index (%s); the B-tree stays", AT_INDEX,
                        type(getattr(exc, "orig", None) or exc).__name__)

    # ------------------------------------------------------------------ fields
    def audited(self, b: "Binding") -> tuple[list[str], set[str]]:
        """(fields recorded, fields masked) of a model, from ``audit_exclude`` / ``audit_mask``."""
        got = self._fields.get(b.name)
        if got is not None and got[0] is b.table:  # a model declared again gets a new Table
            return got[1], got[2]
        spec = b.spec
        exclude = set(_names(spec, "audit_exclude")) if spec else set()
        mask = set(_names(spec, "audit_mask")) if spec else set()
        if spec is not None:
            keep_times = spec.options.get("audit_timestamps", False)
            if not isinstance(keep_times, bool):
                raise ModelError(f"{spec.name}: __dataflow__['audit_timestamps'] must be True or False", model=spec.name)
            if not keep_times and spec.timestamps:
                # The record's own time says when; the previous record, when it was before. With
                # timestamps=False DataFlow sets no created_at/updated_at: fields so named are the model's data.
                exclude |= {n for n, f in spec.fields.items() if f.auto in TIMESTAMP_FIELDS}
        fields = [c.name for c in b.table.columns if c.name not in exclude]
        self._fields[b.name] = (b.table, fields, mask)
        return fields, mask

    # ------------------------------------------------------------------ SQL pieces
    def _typed(self, value: Any, type_: sa.types.TypeEngine, name: str) -> Any:
        """A bound value; cast on PostgreSQL, where a parameter inside a SELECT list has no type otherwise."""
        bp = sa.bindparam(name, value, type_=type_)
        return sa.cast(bp, type_) if self.db.backend == "postgresql" else bp

    def _json(self, pairs: Sequence[tuple[str, Any]]) -> Any:
        """A JSON object built by the database from (name, SQL expression) pairs; NULL when empty."""
        if not pairs:
            return sa.null()
        fn = {"postgresql": sa.func.json_build_object, "mysql": sa.func.JSON_OBJECT,
              "mariadb": sa.func.JSON_OBJECT}.get(self.db.backend, sa.func.json_object)
        args: list = []
        for name, expr in pairs:
            args += [sa.literal_column(f"'{name}'"), expr]  # names are checked identifiers
        return fn(*args)

    def _columns(self, b: "Binding", names: Iterable[str]) -> list[tuple[str, Any]]:
        fields, mask = self.audited(b)
        keep = set(fields)
        return [(n, sa.literal_column(f"'{MASK}'") if n in mask else b.table.c[n]) for n in names if n in keep]

    def _changes(self, b: "Binding", data: Mapping[str, Any]) -> Any:
        """The SET of an UPDATE as SQL expressions evaluated on the row before it (the values after).

        When no value depends on the row (bound values only, no ``version + 1``), the JSON document
        is the same for every row: it is built once per statement, as a scalar subquery (an InitPlan
        on PostgreSQL, a constant subquery on SQLite and MySQL), not once per row.
        """
        fields, mask = self.audited(b)
        keep = set(fields)
        out: list = []
        per_row = False
        for i, (name, value) in enumerate(data.items()):
            if name not in keep:
                continue
            if name in mask:
                out.append((name, sa.literal_column(f"'{MASK}'")))
            elif isinstance(value, sa.sql.ClauseElement):
                out.append((name, value))
                per_row = True
            else:
                out.append((name, self._typed(value, b.table.c[name].type, f"df_audit_v{i}")))
        if not out or per_row:
            return out
        return _Once(self._json(out))

    def _head(self, call: Call, action: str | None = None, binding: "Binding | None" = None) -> dict[str, Any]:
        ctx = call.ctx
        return {"at": datetime.now(UTC), "actor": ctx.actor_or_system, "action": action or call.action,
                "table_name": (binding or call.binding).table.name, "tenant": ctx.tenant, "request_id": ctx.request_id}

    def insert_select(self, conn: sa.Connection, call: Call, where: Sequence[Any], params: Mapping[str, Any], *,
                      before: Sequence[tuple[str, Any]] | None, after: "Sequence[tuple[str, Any]] | _Once | None",
                      lock: bool = False, key_share: bool = False, binding: "Binding | None" = None,
                      action: str | None = None, row_tenant: bool = False) -> int:
        """``INSERT INTO dataflow_audit SELECT ... FROM <table> WHERE ...``: one record per row; the count.

        ``lock`` (PostgreSQL): the rows are locked as they are read, ``FOR UPDATE``, or ``FOR NO KEY
        UPDATE`` with ``key_share`` (the lock an UPDATE takes itself: a concurrent INSERT of a row that
        references one of them through a foreign key is not held up). ``binding`` / ``action``: records
        about another table's rows than the call's (what an ON DELETE action changes); ``row_tenant``:
        the records of a tenant-scoped model's rows carry each row's own tenant, not the caller's (a
        delete of a shared record cascades into every tenant's rows, and a tenant reads its own trail)."""
        b, t = binding or call.binding, self.table
        head = self._head(call, action, b)
        tenant_field = b.spec.tenant if row_tenant and b.spec is not None else None
        tenant = sa.cast(b.table.c[tenant_field], sa.String(255)) if tenant_field else \
            self._typed(head["tenant"], t.c.tenant.type, "df_audit_tenant")
        sel = sa.select(
            self._typed(head["at"], t.c.at.type, "df_audit_at"),
            self._typed(head["actor"], t.c.actor.type, "df_audit_actor"),
            self._typed(head["action"], t.c.action.type, "df_audit_action"),
            self._typed(head["table_name"], t.c.table_name.type, "df_audit_table"),
            sa.cast(b.pk, sa.String(255)),
            tenant,
            self._typed(head["request_id"], t.c.request_id.type, "df_audit_request"),
            self._json(before or []),
            after.doc.scalar_subquery() if isinstance(after, _Once) else self._json(after or []),
        ).select_from(b.table).where(*where)
        if lock and self.db.backend == "postgresql":
            sel = sel.with_for_update(of=b.table, key_share=key_share)
        stmt = t.insert().from_select(
            ["at", "actor", "action", "table_name", "record_id", "tenant", "request_id", "old_values",
             "new_values"], sel)
        # SQLAlchemy keeps an INSERT's row count only when asked.
        return conn.execute(stmt, dict(params), execution_options={"preserve_rowcount": True}).rowcount

    def cascades(self, conn: sa.Connection, call: Call, where: Sequence[Any], params: Mapping[str, Any]) -> None:
        """Before a delete of the rows ``where`` selects: records of the rows the database then changes by
        itself through ON DELETE actions, following them from table to table. ``cascade_delete``: every
        audited field before; ``cascade_set_null``: the reference before and after. Each record carries
        its row's own tenant (a shared record's cascade reaches every tenant's rows).

        The walk collects keys, round by round: the rows that refer to the rows the previous round
        reached (one SELECT of their keys per 1,000 referenced keys, locked ``FOR UPDATE`` on PostgreSQL
        unless the call has its snapshot, so no row can be added under them before the DELETE), less
        those an earlier round reached (a row reached by two paths, a row that refers to itself, a cycle
        of references); then one INSERT ... SELECT per 1,000 new keys. So its cost grows with the rows
        reached, never with the depth of a tree, and no statement nests a subquery."""
        by_table = {bd.table.name: bd for bd in self.db._bindings.values()}
        root = call.binding.table
        if not any(rule in ("CASCADE", "SET NULL") for _, _, rule in delete_actions(root)):
            return
        lock = self.db.backend == "postgresql" and not call.snapshot
        root_keys = list(conn.execute(sa.select(call.binding.pk).where(*where), dict(params)).scalars())
        reached: dict[sa.Table, set] = {root: set(root_keys)}
        frontier: dict[sa.Table, list] = {root: root_keys}
        while frontier:
            found: dict[sa.Table, list] = {}
            for parent, keys in frontier.items():
                pk = by_table[parent.name].pk
                for child, fk, rule in delete_actions(parent):
                    cb = by_table.get(child.name)
                    if cb is None or rule not in ("CASCADE", "SET NULL"):
                        continue
                    values = keys if fk.column is pk else [v for part in chunks(keys, KEYS_PER_STATEMENT)
                                                           for v in conn.execute(sa.select(fk.column).where(
                                                               pk.in_(part))).scalars()]
                    self._follow(conn, call, child, cb, fk, rule, values, lock, reached, found)
            for child, new in found.items():
                cb = by_table[child.name]
                before = self._columns(cb, self.audited(cb)[0])
                for part in chunks(new, KEYS_PER_STATEMENT):
                    self.insert_select(conn, call, [cb.pk.in_(part)], {}, before=before, after=None,
                                       binding=cb, action="cascade_delete", row_tenant=True)
            frontier = found

    def _follow(self, conn: sa.Connection, call: Call, child: sa.Table, cb: "Binding", fk: Any, rule: str,
                values: list[Any], lock: bool, reached: dict, found: dict) -> None:
        """One ON DELETE action over the referenced ``values``: SET NULL is recorded now; CASCADE adds the
        keys of the rows it will delete, that no earlier round reached, to ``found``."""
        for part in chunks(values, KEYS_PER_STATEMENT):
            if rule == "SET NULL":
                before = self._columns(cb, [fk.parent.name])
                after = [(n, sa.null() if v is fk.parent else v) for n, v in before]
                self.insert_select(conn, call, [fk.parent.in_(part)], {}, before=before, after=after, lock=lock,
                                   key_share=True, binding=cb, action="cascade_set_null", row_tenant=True)
                continue
            stmt = sa.select(cb.pk).where(fk.parent.in_(part))
            seen = reached.setdefault(child, set())
            for key in conn.execute(stmt.with_for_update(of=child) if lock else stmt).scalars():
                if key not in seen:
                    seen.add(key)
                    found.setdefault(child, []).append(key)

    def insert_rows(self, conn: sa.Connection, call: Call, rows: Sequence[dict]) -> None:
        """Records made in Python (bulk upsert, compliance requests): one multi-row INSERT."""
        if rows:
            head = self._head(call)
            conn.execute(self.table.insert(), [{**head, **r} for r in rows])

    def record(self, conn: sa.Connection, *, actor: str, action: str, table: str, record_id: Any,
               tenant: str | None, request_id: str | None, values: dict | None = None) -> None:
        """One record that is not about a row change (a compliance request, an export)."""
        conn.execute(self.table.insert(), {
            "at": datetime.now(UTC), "actor": actor, "action": action, "table_name": table,
            "record_id": None if record_id is None else str(record_id), "tenant": tenant,
            "request_id": request_id, "old_values": None, "new_values": values})

    # ------------------------------------------------------------------ reading
    def about(self, table_name: str, record_ids: Sequence[str]) -> list[Any]:
        """WHERE clauses matching the records about these rows of one table, through the record index."""
        t, ids = self.table, list(record_ids)
        return [t.c.table_name == table_name, t.c.record_id == ids[0] if len(ids) == 1 else t.c.record_id.in_(ids)]

    def read(self, *, table: str | None = None, record_id: Any = None, actor: str | None = None,
             action: str | None = None, since: datetime | str | None = None, limit: int | None = 100,
             tenant: str | None = None) -> list[dict]:
        """Records of the trail, newest first, with values JSON-safe per the model's field types."""
        self.ensure()
        t = self.table
        conds = []
        binding = None
        table_name = None
        if table is not None:
            try:
                binding = self.db.binding(table, modelled=True)
                table_name = binding.table.name
            except ModelError:
                table_name = str(table)
        if table_name is not None and record_id is not None:
            conds += self.about(table_name, [str(record_id)])
        elif table_name is not None:
            conds.append(t.c.table_name == table_name)
        elif record_id is not None:
            conds.append(t.c.record_id == str(record_id))
        if actor is not None:
            conds.append(t.c.actor == actor)
        if action is not None:
            conds.append(t.c.action == action)
        if since is not None:
            try:
                since = converter_for_datetime(since)
            except ValueError:
                raise ValidationError("audit_log: since must be a datetime or an ISO 8601 string") from None
            conds.append(t.c.at >= since)
        if tenant is not None:
            conds.append(t.c.tenant == tenant)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValidationError("audit_log: limit must be a non-negative integer")
        stmt = sa.select(t).where(*conds).order_by(t.c.id.desc())  # newest first: the order they were written in
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.db.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        by_table = {bd.table.name: bd for bd in self.db._bindings.values()}
        out = []
        for r in rows:
            bd = binding if binding is not None else by_table.get(r["table_name"])
            out.append({
                "id": r["id"], "time": r["at"].isoformat(), "actor": r["actor"], "user": r["actor"],
                "action": r["action"], "table": r["table_name"], "model": bd.name if bd else None,
                "record_id": r["record_id"], "tenant": r["tenant"], "request_id": r["request_id"],
                "before": normalise(bd, _loads(r["old_values"])), "after": normalise(bd, _loads(r["new_values"])),
            })
        return out


class _Once:
    """A JSON document that is the same for every row of a statement: ``SELECT <doc>``, evaluated once."""

    __slots__ = ("doc",)

    def __init__(self, doc: Any) -> None:
        self.doc = sa.select(doc)


def converter_for_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        raise ValueError("not a datetime")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _loads(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def normalise(b: "Binding | None", values: Any) -> Any:
    """Values as each database's JSON functions wrote them (1/0 booleans, SQL datetime text, JSON as text)
    made JSON-safe the same way on every backend, using the model's field types."""
    if not isinstance(values, dict) or b is None or b.spec is None:
        return values
    out = {}
    order = {n: i for i, n in enumerate(b.spec.fields)}
    for name, value in sorted(values.items(), key=lambda kv: order.get(kv[0], len(order))):
        f = b.spec.fields.get(name)
        if f is None or value is None or value == MASK:
            out[name] = value
            continue
        try:
            if f.pytype in (dict, list) and isinstance(value, str):
                value = json.loads(value)
            elif f.pytype is bool and isinstance(value, (int, str)) and not isinstance(value, bool):
                value = str(value).lower() in ("1", "true", "t")
            elif f.pytype is float and isinstance(value, str):
                value = float(value)
            value = converter_for(f)(str(value) if f.pytype is Decimal else value)
            if f.pytype is Decimal:
                value = value.quantize(Decimal(1).scaleb(-f.scale))
            value = json_safe(value)
        except Exception:  # keep what the database wrote
            value = json_safe(value)
        out[name] = value
    return out


def _names(spec: Any, option: str) -> list[str]:
    names = spec.options.get(option) or []
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ModelError(f"{spec.name}: __dataflow__[{option!r}] must be a list of field names", model=spec.name)
    unknown = [n for n in names if n not in spec.fields]
    if unknown:
        raise ModelError(f"{spec.name}: __dataflow__[{option!r}] names unknown field(s) {unknown}", model=spec.name,
                         field=unknown[0])
    return list(names)


class Audit(Policy):
    """Writes the trail inside each write's transaction (see the module docstring)."""

    name = "audit"

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    def plan(self, call: Call) -> None:
        if call.action not in ACTIONS or call.binding.spec is None:
            return
        if call.binding.table.name == AUDIT_TABLE:
            raise ValidationError("dataflow_audit is append-only: DataFlow does not write it through operations")
        self.trail.audited(call.binding)  # bad audit_exclude/audit_mask fails before anything runs
        self.trail.ensure()
        call.state["audit"] = True
        call.in_transaction = True
        call.key_first = True  # an update's or delete's record is written to the trail before the change
        if call.action in ("bulk_update", "bulk_delete") and call.ctx.transaction is None:
            # Its record and its change read the same snapshot; a row changed by another transaction in
            # between fails the change (serialization failure: the operation starts over), so no row lock.
            call.snapshot = self.trail.db.facts.snapshot_writes
        if call.action == "bulk_create":
            self._plan_bulk_create(call)

    def _plan_bulk_create(self, call: Call) -> None:
        """How a bulk create finds the rows it inserted, without giving up the COPY fast path when it can.

        - the records carry their keys: those keys;
        - an auto-increment key on SQLite (one writer at a time) or PostgreSQL in a transaction of its
          own: keys above the largest stored before the INSERT, and on PostgreSQL only rows this
          transaction wrote (``xmin``), so a concurrent writer's rows are never taken for ours; the
          count must equal the rows inserted, else the operation is rolled back;
        - otherwise (MySQL/MariaDB, or a caller's transaction on PostgreSQL): the INSERT returns the keys.
        """
        b, data = call.binding, call.data
        pk = b.pk.name
        if call.options.get("return_ids"):
            call.state["audit_keys"] = "returned"
        elif call.options.get("on_conflict") == "update":
            # Rows it updated are below the previous maximum key: have the INSERT return every key.
            call.options["return_ids"] = True
            call.state["audit_keys"] = "returned"
            call.state["audit_hide_ids"] = True
        elif isinstance(data, (list, tuple)) and data and all(isinstance(r, Mapping) and pk in r for r in data):
            call.state["audit_keys"] = "given"
        elif b.codec is not None and b.codec.auto_pk and (
                self.trail.db.backend == "sqlite"
                or (self.trail.db.backend == "postgresql" and call.ctx.transaction is None)):
            call.state["audit_keys"] = "range"
        else:
            # The keys of the new rows come back from the INSERT; the caller did not ask for them.
            call.options["return_ids"] = True
            call.state["audit_keys"] = "returned"
            call.state["audit_hide_ids"] = True

    def before_statement(self, call: Call, conn: Any) -> None:
        if "audit" not in call.state:
            return
        b, action = call.binding, call.action
        if action in ("update", "upsert") and "key" in call.state:
            if call.data:
                before = self.trail._columns(b, call.data)
                n = self.trail.insert_select(conn, call, [b.pk == call.state["key"]], {}, before=before,
                                             after=self.trail._changes(b, call.data))
                call.state["audit_count"] = n
        elif action == "delete" and "key" in call.state:
            fields, _ = self.trail.audited(b)
            self.trail.insert_select(conn, call, [b.pk == call.state["key"]], {},
                                     before=self.trail._columns(b, fields), after=None)
            if not call.state.get("soft_delete"):
                self.trail.cascades(conn, call, [b.pk == call.state["key"]], {})
        elif action in ("bulk_update", "bulk_delete"):
            clauses, params = call.state["where"]
            if action == "bulk_update":
                before, after = self.trail._columns(b, call.data), self.trail._changes(b, call.data)
            else:
                before, after = self.trail._columns(b, self.trail.audited(b)[0]), None
            call.state["audit_count"] = self.trail.insert_select(conn, call, clauses, params, before=before,
                                                                 after=after, lock=not call.snapshot,
                                                                 key_share=action == "bulk_update")
            if action == "bulk_delete" and not call.state.get("soft_delete"):
                self.trail.cascades(conn, call, clauses, params)
        elif action == "bulk_upsert":
            call.state["audit_before"] = self._snapshot(conn, call)
        elif action == "bulk_create" and call.state.get("audit_keys") == "range":
            call.state["audit_floor"] = conn.execute(sa.select(sa.func.max(b.pk))).scalar() or 0
        elif action == "bulk_create" and call.options.get("on_conflict") == "skip":
            # Skipped records change nothing: leave out the keys stored before the INSERT.
            if call.state.get("audit_keys") == "given":
                keys = list({b.model_codec.key(r[b.pk.name]) for r in call.data})
                stored: set = set()
                for i in range(0, len(keys), KEYS_PER_STATEMENT):
                    part = keys[i:i + KEYS_PER_STATEMENT]
                    stored.update(conn.execute(sa.select(b.pk).where(b.pk.in_(part))).scalars())
                call.state["audit_stored"] = stored
            elif b.codec is not None and b.codec.auto_pk:
                call.state["audit_floor"] = conn.execute(sa.select(sa.func.max(b.pk))).scalar() or 0

    def after_statement(self, call: Call, conn: Any, info: dict) -> None:
        if "audit" not in call.state:
            return
        b, action = call.binding, call.action
        fields, _ = self.trail.audited(b)
        if action in ("bulk_update", "bulk_delete") and "audit_count" in call.state:
            if info.get("rowcount") is not None and info["rowcount"] != call.state["audit_count"]:
                raise ConflictError(f"{call.model} {action.replace('_', ' ')}: the matching records changed while "
                                    f"it ran; nothing was changed, retry", model=call.model)
        if action == "create" or (action == "upsert" and info.get("created")):
            keys = info.get("keys") or [r[b.pk.name] for r in info.get("records") or ()]
            self.trail.insert_select(conn, call, [b.pk.in_(keys)], {}, before=None,
                                     after=self.trail._columns(b, fields))
        elif action == "bulk_create" and call.state.get("audit_keys") == "range":
            where = [b.pk > call.state["audit_floor"]]
            if self.trail.db.backend == "postgresql":
                where.append(sa.text("xmin = pg_current_xact_id()::xid"))
            n = self.trail.insert_select(conn, call, where, {}, before=None, after=self.trail._columns(b, fields))
            if n != info.get("rowcount"):
                raise ConflictError(f"{call.model} bulk create: the new records could not be told apart from "
                                    f"others written meanwhile; nothing was changed, retry", model=call.model)
        elif action == "bulk_create":
            if call.state.get("audit_keys") == "given":
                keys = sorted({b.model_codec.key(r[b.pk.name]) for r in call.data}, key=str)
            else:
                keys = list(info.get("keys") or ())
            if "audit_stored" in call.state:
                keys = [k for k in keys if k not in call.state["audit_stored"]]
            elif "audit_floor" in call.state:
                keys = [k for k in keys if k > call.state["audit_floor"]]
            for i in range(0, len(keys), KEYS_PER_STATEMENT):
                part = keys[i:i + KEYS_PER_STATEMENT]
                self.trail.insert_select(conn, call, [b.pk.in_(part)], {}, before=None,
                                         after=self.trail._columns(b, fields))
        elif action == "bulk_upsert":
            before = call.state.pop("audit_before", {})
            after = self._snapshot(conn, call)
            rows = []
            for key, (record_id, values) in after.items():
                old = before.get(key)
                if old is None:
                    rows.append({"record_id": record_id, "old_values": None, "new_values": values})
                else:
                    changed = [n for n in values if values[n] != old[1].get(n)]
                    rows.append({"record_id": record_id, "old_values": {n: old[1].get(n) for n in changed},
                                 "new_values": {n: values[n] for n in changed}})
            self.trail.insert_rows(conn, call, rows)

    def after_commit(self, call: Call, result: Any, elapsed: float) -> None:
        if call.state.get("audit_hide_ids") and isinstance(result, dict):
            result.pop("ids", None)

    def _snapshot(self, conn: Any, call: Call) -> dict:
        """Bulk upsert: the stored rows of the chunk's conflict keys, as the database renders them in JSON."""
        b = call.binding
        chunk, target = call.state["chunk"], call.state["target"]
        cols = [b.table.c[n] for n in target]
        keys = {tuple(r[n] for n in target) for r in chunk}
        cond = cols[0].in_([k[0] for k in keys]) if len(cols) == 1 else sa.tuple_(*cols).in_(list(keys))
        fields, _ = self.trail.audited(b)
        doc = self.trail._json(self.trail._columns(b, fields))
        out = {}
        for row in conn.execute(sa.select(*cols, sa.cast(b.pk, sa.String(255)), doc).where(cond)):
            out[tuple(row[:len(cols)])] = (row[len(cols)], _loads(row[len(cols) + 1]) or {})
        return out


__all__ = ["Audit", "AuditTrail", "AUDIT_TABLE", "audit_table", "SCRUB_SETTING", "MASK"]
