"""Multi-tenant isolation (``DataFlow(multi_tenant=True)``): every call on a tenant-scoped model sees,
changes and creates the current tenant's records only.

The current tenant is ``context.current().tenant``, set by ``with db.tenant("acme"):`` or by the web
layer from the ``tenant_header`` of a request. For each call on a model with a tenant column:

- no tenant set (and no bypass): ``TenantError``, whatever the action (fail closed);
- every call that selects existing records (reads, counts, aggregates, includes, updates, deletes,
  upserts, the bulk forms) gets ``<tenant_field> = :df_tenant``: one more WHERE part, so it is in the
  prepared-statement key and its value is bound per call;
- every write stamps the tenant on the records it creates;
- a record or an upsert naming another tenant in the tenant field is refused (``TenantError``), never
  stored for that tenant nor silently re-stamped; changing the tenant field is refused (a record never
  moves to another tenant); a bulk load that names the primary key of another tenant's record is
  refused before its INSERT (MySQL's ``ON DUPLICATE KEY`` would otherwise change that record);
- a record never refers to another tenant's record: before a write's statement, the keys its data
  gives for foreign keys to tenant-scoped models must be records of the current tenant (read with a
  share lock, so they stay until the write commits), else ``ForeignKeyError``, the same error as a
  reference to a record that does not exist (a tenant cannot tell the other's records from none).
  Without it, the database's foreign key (which knows no tenant) would accept the link, and the other
  tenant's deletes would then cascade into, or be blocked by, this tenant's records;
- ``with db.tenant(None, bypass=True):`` (admin jobs, migrations) adds no condition; creates must then
  name the tenant of each record, and a bulk load that would update a stored record (by its primary key)
  must name that record's tenant. Entering it is logged at WARNING with the actor. Records still never
  refer to another tenant's record: a foreign key a create or a bulk load (or an upsert creating) writes
  must name a record of the tenant in that record's own tenant field; one an update (bulk update, upsert
  updating) writes, a record of the tenant of every stored row it changes (compared in the database,
  one query per foreign key, whatever the number of rows). Same ``ForeignKeyError`` as above.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import sqlalchemy as sa

from ...errors import ForeignKeyError, TenantError, ValidationError
from ..call import Call, Condition
from ...schema.tables import delete_actions
from ..chunks import chunks
from ..context import Context, current, scope
from ..policy import Policy
from .row_security import RowLevelSecurity

log = logging.getLogger("dataflow.tenancy")

#: Writes whose records may carry a primary key that an ON CONFLICT / ON DUPLICATE KEY clause matches.
_KEYED_LOADS = frozenset({"bulk_create", "bulk_upsert"})
#: Writes that change existing records (their data must not move them to another tenant).
_CHANGES = frozenset({"update", "bulk_update", "upsert"})
#: Writes whose data may give foreign keys (each must name a record of the current tenant).
_REFERS = frozenset({"create", "update", "upsert", "bulk_create", "bulk_update", "bulk_upsert"})


class Tenancy(Policy):
    """Scope, stamp and guard every call on a tenant-scoped model (``spec.tenant`` set)."""

    name = "tenancy"

    def __init__(self, field: str = "tenant_id", header: str = "X-Tenant-ID", *, db: Any = None) -> None:
        self.field = field
        self.header = header      # the web layer reads the tenant from this request header
        self._builders: dict[str, Any] = {}
        self.db = db              # resolves foreign keys' target models
        #: PostgreSQL row-level security (the second wall), when the instance runs on PostgreSQL.
        self.rls = RowLevelSecurity(db) if db is not None and db.backend == "postgresql" and \
            db.config.tenant_rls else None

    # ------------------------------------------------------------------ plan
    def plan(self, call: Call) -> None:
        spec = call.binding.spec
        if spec is None:
            return
        if spec.tenant is None:  # a shared model: every tenant reads and writes it
            if call.action in ("delete", "bulk_delete") and call.ctx.tenant is not None and self._dependents(call.binding):
                call.state["shared_cascade"] = True
                call.in_transaction = True  # checked in the delete's transaction, before its statement
                call.key_first = True       # ... on the record the delete will remove
            return
        field, ctx = spec.tenant, call.ctx
        tenant = ctx.tenant
        if self.rls is not None:
            self.rls.ensure(call.binding.table.name)
            call.in_transaction = True   # the tenant is set inside the statement's transaction
            call.state["rls"] = True     # bulk loads: COPY FROM is refused on such tables
        if tenant is None:
            if not ctx.tenant_bypass:
                raise TenantError(f"{call.model} {_label(call)} refused: no tenant is set and {call.model} is "
                                  f"tenant-scoped; run it inside 'with db.tenant(<tenant id>):' (or send the "
                                  f"{self.header} header), or 'with db.tenant(None, bypass=True):' for admin jobs",
                                  model=call.model)
            self._plan_bypass(call, field)
            if call.action in _REFERS and _gives(call, [r[0] for r in self._references(call.binding)]):
                call.state["bypass_refs"] = True
                call.in_transaction = True  # checked in the write's transaction, before its statement
                call.key_first = True       # an update: against the tenant of the stored record it changes
            return
        if call.scoped:
            call.add(Condition(("tenant", field), self._build(field), {"df_tenant": tenant}))
        if not call.writes:
            return
        if call.action in _REFERS and _gives(call, [r[0] for r in self._references(call.binding)]):
            call.state["tenant_refs"] = True
            call.in_transaction = True  # checked in the write's transaction, before its statement
        if call.action in _CHANGES and isinstance(call.data, Mapping) and field in call.data:
            if call.data[field] != tenant:
                raise _moved(call, field)
        if call.action == "create":
            _check_record(call, field, tenant, call.data)
            call.stamp(field, tenant)
        elif call.action == "upsert":
            _check_record(call, field, tenant, call.options.get("new") or {})
            had = field in call.data
            call.stamp(field, tenant)           # for the INSERT branch (state["stamp"])
            if not had:
                call.data.pop(field, None)       # the UPDATE branch changes only what the caller asked
        elif call.action in _KEYED_LOADS:
            for i, row in enumerate(call.data or ()):
                if isinstance(row, Mapping):
                    _check_record(call, field, tenant, row, index=i)
            call.stamp(field, tenant)
            call.state["tenant_guard"] = True

    def _plan_bypass(self, call: Call, field: str) -> None:
        """Admin jobs: no condition; records must say their tenant; records never move."""
        if call.action in _CHANGES and isinstance(call.data, Mapping) and field in call.data:
            raise _moved(call, field)
        rows: list[Mapping] = []
        if call.action == "create":
            rows = [call.data]
        elif call.action == "upsert":
            rows = [call.options.get("new") or {}]
        elif call.action in _KEYED_LOADS:
            rows = [r for r in call.data or () if isinstance(r, Mapping)]
        for i, row in enumerate(rows):
            if row.get(field) is None:
                where = f"data[{i}]: " if call.action in _KEYED_LOADS else ""
                raise ValidationError(f"{where}{call.model} {_label(call)} under tenant bypass: no tenant is set, "
                                      f"so each record must name its tenant in {field}", model=call.model,
                                      field=field)
        if call.action in _KEYED_LOADS:
            call.state["bypass_guard"] = True  # a load naming a stored key must not move that record
            call.in_transaction = True

    def _build(self, field: str):
        build = self._builders.get(field)
        if build is None:
            def build(table: sa.Table, field: str = field) -> Any:
                col = table.c[field]
                return col == sa.bindparam("df_tenant", type_=col.type)
            self._builders[field] = build
        return build

    def _references(self, b: Any) -> list[tuple[str, str, Any]]:
        """(field, target as declared, target binding) of each foreign key of ``b`` to a tenant-scoped model."""
        spec = b.spec
        if self.db is None or spec is None:
            return []
        out = []
        for f in spec.fields.values():
            if f.references:
                target = self.db.binding(f.references, modelled=True)
                if target.spec is not None and target.spec.tenant:
                    out.append((f.name, f.references, target))
        return out

    def _dependents(self, b: Any) -> list[tuple[Any, Any]]:
        """(tenant-scoped binding, foreign key) of each ON DELETE CASCADE / SET NULL reference to ``b``'s table."""
        if self.db is None:
            return []
        by_table = {bd.table.name: bd for bd in self.db._bindings.values()}
        return [(by_table[other.name], fk) for other, fk, _ in delete_actions(b.table)
                if other.name in by_table and by_table[other.name].spec is not None
                and by_table[other.name].spec.tenant is not None]

    def _check_shared_cascade(self, call: Call, conn: Any) -> None:
        """A tenant deleting a shared record: refused when the database would then delete or change
        another tenant's records through ON DELETE CASCADE / SET NULL (one query per referring field)."""
        b = call.binding
        if "key" in call.state:
            where, params = [b.pk == call.state["key"]], {}
        else:
            clauses, params = call.state["where"]
            where = list(clauses)
        for other, fk in self._dependents(b):
            col = other.table.c[str(other.spec.tenant)]
            stmt = sa.select(sa.literal(1)).select_from(other.table).where(
                fk.parent.in_(sa.select(fk.column).where(*where)), col != call.ctx.tenant).limit(1)
            if conn.execute(stmt, dict(params)).first() is not None:
                raise TenantError(f"{call.model} {_label(call)} refused: records of other tenants refer to it, and the "
                                  f"database would delete or change them ({other.name}.{fk.parent.name}: ON DELETE "
                                  f"{fk.ondelete.upper()}); run it inside 'with db.tenant(None, bypass=True):'",
                                  model=call.model)

    # ------------------------------------------------------------------ in the transaction
    def before_statement(self, call: Call, conn: Any) -> None:
        if call.state.get("shared_cascade") and not call.state.get("soft_delete"):
            self._check_shared_cascade(call, conn)
        if call.state.get("tenant_refs"):
            self._check_references(call, conn)
        if call.state.get("bypass_refs"):
            self._check_bypass_references(call, conn)
        # The key guards look at all of the call's records: once per attempt (a chunked load calls this per
        # chunk), and again on each retry, whose transaction is a new one (the first one's checks rolled back).
        if call.state.get("tenant_guarded") is not conn:
            if call.state.get("tenant_guard"):
                self._guard_keys(call, conn)
            if call.state.get("bypass_guard"):
                self._guard_bypass_keys(call, conn)
            call.state["tenant_guarded"] = conn

    def _check_references(self, call: Call, conn: Any) -> None:
        """Every foreign key the written data gives names a record of the current tenant."""
        rows = _written(call)
        tenant = call.ctx.tenant
        for field, name, target in self._references(call.binding):
            codec = target.model_codec
            keys = set()
            for row in rows:
                value = row.get(field)
                if value is not None:
                    try:
                        keys.add(codec.key(value))
                    except ValidationError:
                        pass  # the row's own check reports it
            batch: set = set()
            if target.table is call.binding.table:  # records of one call may refer to each other
                pk = target.pk.name
                for row in rows:
                    if row.get(pk) is not None:
                        try:
                            batch.add(codec.key(row[pk]))
                        except ValidationError:
                            pass
                batch &= keys
                keys -= batch
            col = target.table.c[str(target.spec.tenant)]
            refused = _no_record(call, field, name)
            found = 0
            for chunk in chunks(sorted(keys, key=repr), 1000):
                stmt = sa.select(target.pk).where(target.pk.in_(chunk), col == tenant) \
                    .with_for_update(read=True, key_share=True)
                found += len(conn.execute(stmt).all())
            if found < len(keys):
                raise refused
            # Keys the call writes itself: new records, or this tenant's (a skipped one stays the other's).
            for chunk in chunks(sorted(batch, key=repr), 1000):
                stmt = sa.select(sa.func.count()).select_from(target.table).where(target.pk.in_(chunk), col != tenant)
                if conn.execute(stmt).scalar_one():
                    raise refused

    def _check_bypass_references(self, call: Call, conn: Any) -> None:
        """Under bypass: every foreign key the write gives names a record of the holding record's tenant."""
        b = call.binding
        changed: tuple[list, Mapping] | None = None   # the stored rows an update changes: WHERE and values
        if call.action == "bulk_update":
            changed = call.state["where"]
        elif call.action == "update" or (call.action == "upsert" and "key" in call.state):
            changed = ([b.pk == call.state["key"]], {})
        for field, name, target in self._references(b):
            if changed is not None:
                self._check_changed(call, conn, changed, field, name, target)
            else:
                self._check_records(call, conn, field, name, target)

    def _check_changed(self, call: Call, conn: Any, changed: tuple[list, Mapping], field: str, name: str,
                       target: Any) -> None:
        """An update: the record it points at exists, and has the tenant of every row it changes."""
        value = call.data.get(field) if isinstance(call.data, Mapping) else None
        if value is None or isinstance(value, sa.sql.ClauseElement):
            return
        try:
            key = target.model_codec.key(value)
        except ValidationError:
            return  # the value's own check reports it
        refused = _no_record(call, field, name)
        locked = sa.select(target.pk).where(target.pk == key).with_for_update(read=True, key_share=True)
        if conn.execute(locked).first() is None:
            raise refused
        # One query however many rows change: those whose tenant is not the target's (aliased: a model
        # may refer to itself).
        t, ref = call.binding.table, target.table.alias("df_ref")
        same = sa.exists().where(ref.c[target.pk.name] == key,
                                 ref.c[str(target.spec.tenant)] == t.c[str(call.binding.model_spec.tenant)])
        clauses, params = changed
        if conn.execute(sa.select(sa.func.count()).select_from(t).where(*clauses, ~same), params).scalar_one():
            raise refused

    def _check_records(self, call: Call, conn: Any, field: str, name: str, target: Any) -> None:
        """Records written whole (creates, bulk loads, an upsert creating): (key, own tenant) pairs exist."""
        rows = [call.options.get("new") or {}] if call.action == "upsert" else _written(call)
        tenant_field = str(call.binding.model_spec.tenant)
        codec, own = target.model_codec, call.binding.model_codec
        pairs: set = set()
        for row in rows:
            value, tenant = row.get(field), row.get(tenant_field)
            if value is not None and tenant is not None:
                try:
                    pairs.add((codec.key(value), own.value(tenant_field, tenant)))
                except ValidationError:
                    pass  # the row's own check reports it
        if not pairs:
            return
        refused = _no_record(call, field, name)
        batch: set = set()
        if target.table is call.binding.table:  # records of one call may refer to each other
            pk = target.pk.name
            tenants: dict[Any, set] = {}
            for row in rows:
                if row.get(pk) is not None and row.get(tenant_field) is not None:
                    try:
                        tenants.setdefault(codec.key(row[pk]), set()).add(own.value(tenant_field, row[tenant_field]))
                    except ValidationError:
                        pass
            batch = {p for p in pairs if p[0] in tenants}
            if any(tenants[k] != {t} for k, t in batch):
                raise refused
            pairs -= batch
        both = sa.tuple_(target.pk, target.table.c[str(target.spec.tenant)])
        for chunk in chunks(sorted(pairs, key=repr), 500):
            stmt = sa.select(target.pk).where(both.in_(chunk)).with_for_update(read=True, key_share=True)
            if len(conn.execute(stmt).all()) < len(chunk):
                raise refused
        # Keys the call writes itself: new records, or stored ones of the same tenant (a skipped one stays).
        for chunk in chunks(sorted(batch, key=repr), 500):
            stmt = sa.select(sa.func.count()).select_from(target.table).where(
                target.pk.in_([k for k, _ in chunk]), ~both.in_(chunk))
            if conn.execute(stmt).scalar_one():
                raise refused

    def _guard_keys(self, call: Call, conn: Any) -> None:
        """A bulk load naming primary keys: none of them may belong to another tenant's record."""
        b = call.binding
        if call.action == "bulk_create" and call.options.get("on_conflict") in ("error", "skip"):
            return  # a taken key fails the INSERT or is skipped: nothing changes
        pk = b.pk.name
        keys = set()
        for row in call.data or ():
            value = row.get(pk) if isinstance(row, Mapping) else None
            if value is not None:
                try:
                    keys.add(b.model_codec.key(value))
                except ValidationError:
                    pass  # the row's own check reports it
        if not keys:
            return
        col = b.table.c[str(b.model_spec.tenant)]
        for chunk in chunks(sorted(keys, key=repr), 1000):
            stmt = sa.select(sa.func.count()).select_from(b.table).where(b.pk.in_(chunk), col != call.ctx.tenant)
            if conn.execute(stmt).scalar_one():
                raise _not_its_key(call, pk)

    def _guard_bypass_keys(self, call: Call, conn: Any) -> None:
        """Under bypass: a bulk load naming a stored record's key names that record's tenant (an update on
        conflict would otherwise move the record, and every reference to it, to another tenant)."""
        b = call.binding
        if call.action == "bulk_create" and call.options.get("on_conflict") in ("error", "skip"):
            return  # a taken key fails the INSERT or is skipped: nothing changes
        pk, field = b.pk.name, str(b.model_spec.tenant)
        tenants: dict[Any, set] = {}
        for row in call.data or ():
            if isinstance(row, Mapping) and row.get(pk) is not None and row.get(field) is not None:
                try:
                    tenants.setdefault(b.model_codec.key(row[pk]), set()).add(b.model_codec.value(field, row[field]))
                except ValidationError:
                    pass  # the row's own check reports it
        if any(len(t) > 1 for t in tenants.values()):
            raise _not_its_key(call, pk)
        both = sa.tuple_(b.pk, b.table.c[field])
        pairs = sorted(((k, t.pop()) for k, t in tenants.items()), key=repr)
        for chunk in chunks(pairs, 500):
            stmt = sa.select(sa.func.count()).select_from(b.table).where(b.pk.in_([k for k, _ in chunk]),
                                                                         ~both.in_(chunk))
            if conn.execute(stmt).scalar_one():
                raise _not_its_key(call, pk)


# ---------------------------------------------------------------------- the context
@contextmanager
def tenant_scope(tenant: str | None, *, bypass: bool = False) -> Iterator[Context]:
    """``with db.tenant("acme"):`` / ``with db.tenant(None, bypass=True):`` (logged at WARNING)."""
    if bypass:
        if tenant is not None:
            raise ValidationError("db.tenant(..., bypass=True) runs for every tenant: pass None as the tenant")
        log.warning("tenant isolation bypassed by actor %s", current().actor_or_system,
                    extra={"actor": current().actor_or_system, "event": "tenant_bypass"})
        with scope(tenant=None, tenant_bypass=True) as ctx:
            yield ctx
        return
    if tenant is not None and (not isinstance(tenant, str) or not tenant.strip()):
        raise ValidationError(f"a tenant must be a non-empty string, got {type(tenant).__name__}")
    with scope(tenant=tenant, tenant_bypass=False) as ctx:
        yield ctx


# ---------------------------------------------------------------------- helpers
def _check_record(call: Call, field: str, tenant: str, row: Mapping, index: int | None = None) -> None:
    value = row.get(field)
    if value is not None and value != tenant:
        where = f"data[{index}]: " if index is not None else ""
        raise TenantError(f"{where}{call.model} {_label(call)} refused: the record names another tenant in "
                          f"{field}; records are stored for the current tenant only (leave {field} out)",
                          model=call.model)


def _gives(call: Call, fields: list[str]) -> bool:
    """True when the write's data gives a value to one of ``fields``."""
    return bool(fields) and any(row.get(f) is not None for row in _written(call) for f in fields)


def _written(call: Call) -> list[Mapping]:
    """The records (or changes) a write gives values for: what its foreign keys are read from."""
    data: Any = call.data
    if call.action == "bulk_upsert":
        data = call.state.get("chunk", data)  # checked per chunk, before the chunk's statement
    if call.action == "upsert":
        data = [data, call.options.get("new") or {}]
    if isinstance(data, Mapping):
        return [data]
    return [r for r in data or () if isinstance(r, Mapping)]


def _no_record(call: Call, field: str, name: str) -> ForeignKeyError:
    """The words of a reference to no record at all (Operations.explain): nothing tells the two apart."""
    return ForeignKeyError(f"{call.model} {_label(call)} refused: {call.model}.{field} must be the id of an "
                           f"existing {name} (no {name} has that id)", model=call.model, field=field)


def _not_its_key(call: Call, pk: str) -> TenantError:
    return TenantError(f"{call.model} {_label(call)} refused: a record names the {pk} of a record that belongs "
                       f"to another tenant", model=call.model, field=pk)


def _moved(call: Call, field: str) -> TenantError:
    return TenantError(f"{call.model} {_label(call)} refused: {field} cannot be changed (a record never moves "
                       f"to another tenant)", model=call.model)


def _label(call: Call) -> str:
    return call.action.replace("_", " ")

