"""Governance: the audit trail's switch, and GDPR/CCPA requests (export, anonymise, request handlers).

Personal data is declared, never guessed: ``__dataflow__ = {"pii": ["name", "email"]}`` or
``Annotated[str, Field(pii=True)]``. The data subject is the model declared with
``__dataflow__ = {"subject": True}``, else the model named ``User``. A record belongs to a subject
when it is the subject's row, or references (through a declared foreign key) a record that
belongs to the subject, transitively; the walk never enters the subject model again, so another
person's row (a manager, a referrer) never counts as this subject's.

- ``export_user_data(id)``: every such record, grouped by model, JSON-safe, with the export time.
- ``anonymize_user_data(id)``: in one transaction, every declared personal field of those records is
  replaced by a value of its type that identifies nobody (``anon-<key>`` text, so unique columns stay
  unique; NULL where the field may be null; zero, epoch, empty otherwise); keys, foreign keys and
  every undeclared field are kept. The records' entries in the audit trail lose the same fields'
  values (replaced by ``"***"``), through the trail's one controlled write path (on PostgreSQL the
  transaction sets ``dataflow.audit_scrub``, which the append-only trigger checks). Idempotent.
- ``@db.compliance("gdpr")`` / ``("ccpa")``: wraps a request handler; each call is recorded in the
  trail: who (the actor), when, which subject (the handler's first argument), which kind (its
  ``request_type`` argument when it is a short word), and whether it completed. No personal value.

Limit: the trail is scrubbed by (table, record id) of the records that belong to the subject when
``anonymize_user_data`` runs; records about a row that was deleted earlier (say an order deleted
last year) are not found through foreign keys any more and keep their values.
"""

from __future__ import annotations

import functools
import inspect
import re
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable

import sqlalchemy as sa

from .errors import ModelError, ValidationError
from .operations.context import current, scope
from .operations.policies.audit import MASK, SCRUB_SETTING, Audit, AuditTrail, audit_table
from .values import json_safe

if TYPE_CHECKING:
    from .binding import Binding
    from .core.dataflow import DataFlow

UTC = timezone.utc
KINDS = ("gdpr", "ccpa")
#: Keys per ``IN (...)`` when following foreign keys.
KEYS_PER_QUERY = 1000
_WORD = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Governance:
    """One per ``DataFlow``: the audit trail (when wanted), the audit policy (when enabled), handlers."""

    def __init__(self, db: "DataFlow") -> None:
        self.db = db
        self.trail: AuditTrail | None = None
        self.policy: Audit | None = None
        self.handlers: dict[str, list[Callable]] = {}

    # ------------------------------------------------------------------ the trail
    def want_trail(self) -> AuditTrail:
        """The audit table becomes part of the schema (the next operation migrates it in)."""
        if self.trail is None:
            self.trail = AuditTrail(self.db)
            audit_table(self.db.metadata)
            self.db._ready = False
        return self.trail

    def add_tables(self, metadata: sa.MetaData) -> None:
        """Called whenever the instance rebuilds its metadata (a model was declared)."""
        if self.trail is not None:
            audit_table(metadata)

    def enable_audit(self) -> AuditTrail:
        trail = self.want_trail()
        if self.policy is None:
            self.policy = self.db.executor.add(Audit(trail))
        return trail

    def audit_log(self, **query: Any) -> list[dict]:
        if self.trail is None:
            raise ValidationError("The audit log is not enabled: call db.enable_audit_log() or pass audit_log=True")
        ctx = current()
        if ctx.tenant is not None and not ctx.tenant_bypass:
            query.setdefault("tenant", ctx.tenant)  # a tenant reads its own trail
        return self.trail.read(**query)

    def _note(self, action: str, b: "Binding", subject: Any, values: dict | None) -> None:
        """A trail record that is not a row change (export, anonymise, a compliance request)."""
        if self.trail is None:
            return
        self.trail.ensure()
        ctx = current()
        conn = ctx.transaction
        if conn is not None:
            self.trail.record(conn, actor=ctx.actor_or_system, action=action, table=b.table.name,
                              record_id=json_safe(subject), tenant=ctx.tenant, request_id=ctx.request_id,
                              values=values)
            return
        with self.db.engine.begin() as conn:
            self.trail.record(conn, actor=ctx.actor_or_system, action=action, table=b.table.name,
                              record_id=json_safe(subject), tenant=ctx.tenant, request_id=ctx.request_id,
                              values=values)

    # ------------------------------------------------------------------ the subject and its records
    def subject(self) -> "Binding":
        specs = self.db.specs
        marked = [s.name for s in specs.values() if s.options.get("subject")]
        if len(marked) > 1:
            raise ModelError(f"Only one model may be the data subject; subject=True is on {', '.join(marked)}")
        name = marked[0] if marked else ("User" if "User" in specs else None)
        if name is None:
            raise ModelError("No data subject model: declare __dataflow__ = {'subject': True} on the model of the "
                             "people the data is about (or name it User)")
        return self.db.binding(name, modelled=True)

    def owned(self, subject_id: Any) -> tuple["Binding", dict[str, dict[Any, dict]]]:
        """The subject's binding and every record that belongs to it, by model and primary key."""
        ops = self.db.operations
        subj = self.subject()
        record = ops.read(subj.name, subject_id, None, include_deleted=True)
        owned: dict[str, dict[Any, dict]] = {subj.name: {record[subj.pk.name]: record}}
        asked: dict[tuple[str, str], set] = {}
        grew = True
        while grew:
            grew = False
            for spec in self.db.specs.values():
                if spec.name == subj.name:
                    continue  # another person's row is never this subject's
                pk = spec.primary_key
                for f in spec.fields.values():
                    targets = owned.get(f.references or "")
                    if not targets:
                        continue
                    done = asked.setdefault((spec.name, f.name), set())
                    keys = [k for k in targets if k not in done]
                    done.update(keys)
                    for i in range(0, len(keys), KEYS_PER_QUERY):
                        rows, _ = ops.list(spec.name, {f.name: {"$in": keys[i:i + KEYS_PER_QUERY]}}, None, None,
                                           0, None, include_deleted=True)
                        mine = owned.setdefault(spec.name, {})
                        for r in rows:
                            if r[pk] not in mine:
                                mine[r[pk]] = r
                                grew = True
        return subj, {m: rows for m, rows in owned.items() if rows}

    # ------------------------------------------------------------------ export
    def export(self, subject_id: Any) -> dict:
        subj, owned = self.owned(subject_id)
        data = {model: [json_safe(r) for _, r in sorted(rows.items(), key=lambda kv: str(kv[0]))]
                for model, rows in owned.items()}
        out = {"subject": {"model": subj.name, "id": json_safe(subject_id)},
               "exported_at": datetime.now(UTC).isoformat(), "data": data,
               "counts": {m: len(r) for m, r in data.items()}}
        self._note("export_user_data", subj, subject_id, {"models": sorted(data)})
        return out

    # ------------------------------------------------------------------ anonymise
    def anonymize(self, subject_id: Any) -> dict:
        db = self.db
        if self.trail is not None:
            self.trail.ensure()
        db.ensure_ready()
        with db.engine.connect() as conn:
            if db.facts.begin_immediate:
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin(), scope(transaction=conn):
                subj, owned = self.owned(subject_id)
                changed: dict[str, dict] = {}
                for model, rows in owned.items():
                    b = db.binding(model, modelled=True)
                    fields = [f for f in b.spec.fields.values() if f.pii and not f.primary_key and not f.references]
                    if not fields:
                        continue
                    keys = list(rows)
                    for i in range(0, len(keys), KEYS_PER_QUERY):
                        part = keys[i:i + KEYS_PER_QUERY]
                        per_row = [f for f in fields if f.pytype is uuid.UUID and f.unique and not f.nullable]
                        values = {f.name: _anonymous(b, f) for f in fields if f not in per_row}
                        if values:
                            conn.execute(sa.update(b.table).where(b.pk.in_(part)).values(values))
                        for key in part if per_row else ():
                            conn.execute(sa.update(b.table).where(b.pk == key).values(
                                {f.name: uuid.uuid5(uuid.NAMESPACE_URL, f"dataflow:{b.table.name}:{key}")
                                 for f in per_row}))
                    changed[model] = {"records": len(keys), "fields": [f.name for f in fields]}
                scrubbed = self._scrub(conn, owned)
                self._note("anonymize_user_data", subj, subject_id, {"models": changed})
        return {"subject": {"model": subj.name, "id": json_safe(subject_id)}, "anonymized": changed,
                "audit_records_scrubbed": scrubbed}

    def _scrub(self, conn: sa.Connection, owned: dict[str, dict[Any, dict]]) -> int:
        """Remove the personal fields' values from the trail's records about these rows (the one write path)."""
        if self.trail is None:
            return 0
        t = self.trail.table
        updates = []
        for model, rows in owned.items():
            b = self.db.binding(model, modelled=True)
            pii = {f.name for f in b.spec.fields.values() if f.pii}
            if not pii:
                continue
            keys = [str(json_safe(k)) for k in rows]
            for i in range(0, len(keys), KEYS_PER_QUERY):
                stmt = sa.select(t.c.id, t.c.old_values, t.c.new_values).where(
                    *self.trail.about(b.table.name, keys[i:i + KEYS_PER_QUERY]))
                for rid, old, new in conn.execute(stmt):
                    old2, new2 = _masked(old, pii), _masked(new, pii)
                    if old2 != old or new2 != new:
                        updates.append({"df_id": rid, "old_values": old2, "new_values": new2})
        if updates:
            if self.db.backend == "postgresql":
                conn.exec_driver_sql(f"SELECT set_config('{SCRUB_SETTING}', 'on', true)")
            conn.execute(t.update().where(t.c.id == sa.bindparam("df_id")), updates)
            if self.db.backend == "postgresql":
                conn.exec_driver_sql(f"SELECT set_config('{SCRUB_SETTING}', '', true)")
        return len(updates)

    # ------------------------------------------------------------------ request handlers
    def compliance(self, kind: str) -> Callable[[Callable], Callable]:
        if not isinstance(kind, str) or kind.lower() not in KINDS:
            raise ValidationError(f"compliance kind must be one of {', '.join(KINDS)}")
        kind = kind.lower()
        self.want_trail()

        def register(fn: Callable) -> Callable:
            if not callable(fn):
                raise ValidationError("@db.compliance(...) decorates a function")
            try:
                signature = inspect.signature(fn)
            except (TypeError, ValueError):
                signature = None

            @functools.wraps(fn)
            def handler(*args: Any, **kwargs: Any) -> Any:
                subject, request_type = _request_of(signature, args, kwargs)
                values = {"request_type": request_type if isinstance(request_type, str)
                          and _WORD.fullmatch(request_type) else None,
                          "handler": getattr(fn, "__qualname__", "handler")}
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:
                    self._note(f"{kind}_request", self.subject(), subject,
                               {**values, "outcome": "failed", "error": type(exc).__name__})
                    raise
                self._note(f"{kind}_request", self.subject(), subject, {**values, "outcome": "completed"})
                return result

            handler.compliance_kind = kind  # type: ignore[attr-defined]
            self.handlers.setdefault(kind, []).append(handler)
            return handler
        return register


def _request_of(signature: inspect.Signature | None, args: tuple, kwargs: dict) -> tuple[Any, Any]:
    """(subject id, request type) of a handler call: its first argument, and ``request_type`` or its second."""
    if signature is not None:
        try:
            bound = signature.bind_partial(*args, **kwargs)
            names = list(signature.parameters)
            subject = bound.arguments.get(names[0]) if names else None
            kind = bound.arguments.get("request_type", bound.arguments.get(names[1]) if len(names) > 1 else None)
            return subject, kind
        except TypeError:
            pass
    return (args[0] if args else kwargs.get("user_id")), (args[1] if len(args) > 1 else kwargs.get("request_type"))


def _anonymous(b: "Binding", f: Any) -> Any:
    """A value of the field's type that identifies nobody; unique text stays unique (built from the key)."""
    if f.nullable:
        return None
    t = f.pytype
    if t is str:
        key = sa.cast(b.pk, sa.String(64))
        if f.max_length is not None and f.max_length < 30:
            return key
        return sa.literal("anon-", sa.String(5)) + key
    if t is int:
        return -b.pk if f.unique and b.pk.type.python_type is int else 0
    if t is float:
        return 0.0
    if t is Decimal:
        return Decimal(0)
    if t is bool:
        return False
    if t is datetime:
        return datetime(1970, 1, 1, tzinfo=UTC)
    if t is date:
        return date(1970, 1, 1)
    if t is uuid.UUID:
        return uuid.UUID(int=0)
    if t is bytes:
        return b""
    if t is dict:
        return {}
    if t is list:
        return []
    return None


def _masked(values: Any, pii: set[str]) -> Any:
    import json

    if isinstance(values, (str, bytes)):
        try:
            values = json.loads(values)
        except ValueError:
            return values
    if not isinstance(values, dict):
        return values
    return {k: (MASK if k in pii and v is not None else v) for k, v in values.items()}


__all__ = ["Governance", "KINDS"]
