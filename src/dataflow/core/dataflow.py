"""``DataFlow``: owns the configuration, the engine and the models; the facade users touch."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Mapping, Sequence

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from ..binding import Binding, Relation
from ..driver_errors import translate
from ..errors import DataFlowError, ModelError, ValidationError
from ..models import ModelSpec, spec_from_class, table_name_for
from ..operations import DEFAULT_BATCH, DEFAULT_LIMIT, Operations
from ..schema.tables import build_table
from .backends import backend as backend_facts
from .config import DataFlowConfig
from .engine import backend_of, create_engine, parse_url, safe_url

log = logging.getLogger("dataflow")


class DataFlow:
    """A database, its models, and the workflow nodes generated for them.

    ``DataFlow("postgresql://user:pass@host/db")``, ``DataFlow(config=DataFlowConfig(...))``,
    ``DataFlow({"database_url": ..., "multi_tenant": True})`` or ``DataFlow()`` (then
    ``DATAFLOW_DATABASE_URL``, else ``sqlite:///dataflow.db``). Nothing connects until the first
    operation or an explicit ``migrate()``.
    """

    def __init__(self, database_url: str | Mapping[str, Any] | DataFlowConfig | None = None, *,
                 config: DataFlowConfig | Mapping[str, Any] | None = None, **settings: Any) -> None:
        if isinstance(database_url, (Mapping, DataFlowConfig)):
            config, database_url = database_url, None
        self.config = DataFlowConfig.build(config, database_url=database_url, **settings)
        if self.config.log_level:
            logging.getLogger("dataflow").setLevel(self.config.log_level.upper())
        self.url = parse_url(self.config.database_url)
        self.backend = backend_of(self.url)
        self.facts = backend_facts(self.backend)
        self.safe_url = safe_url(self.url)
        self.engine: sa.Engine = create_engine(self.config)
        self.driver_errors: tuple[type[BaseException], ...] = (self.engine.dialect.loaded_dbapi.Error,)
        self.metadata = sa.MetaData()
        self.operations = Operations(self)
        self._specs: dict[str, ModelSpec] = {}
        self._bindings: dict[str, Binding] = {}
        self._names: dict[str, str] = {}          # model or table name -> model name
        self._reflected: dict[str, Binding] = {}
        self._nodes: dict[str, dict[str, type]] = {}
        self._ready = False
        self._closed = False
        self._lock = threading.RLock()
        from ..compliance import Governance

        self._governance = Governance(self)
        if self.config.audit_log:
            self._governance.enable_audit()

    # ------------------------------------------------------------------ models
    def model(self, cls: type) -> type:
        """Declare a model: ``@db.model class User: name: str``. Generates its nodes."""
        from ..nodes import register_nodes

        spec = spec_from_class(cls)
        with self._lock:
            taken = self._names.get(spec.table)
            if taken and taken != spec.name:
                raise ModelError(f"{spec.name}: table {spec.table!r} is already used by model {taken}",
                                 model=spec.name)
            previous = self._specs.get(spec.name)
            self._specs[spec.name] = spec
            try:
                self._rebuild()
                nodes = register_nodes(self, spec)
            except Exception:  # a model that cannot be built leaves the instance as it was
                if previous is None:
                    del self._specs[spec.name]
                else:
                    self._specs[spec.name] = previous
                self._rebuild()
                raise
            self._nodes[spec.name] = nodes
            self._ready = False
        ref = weakref.ref(self)  # the class must not keep the instance alive (nodes.py holds it weakly too)
        cls.query_builder = classmethod(lambda c, _n=spec.name: _live(ref, _n).query_builder(_n))
        cls.__dataflow_spec__ = spec
        return cls

    def _rebuild(self) -> None:
        """Build every model's Table, binding and relations (foreign keys may point either way)."""
        self.metadata = sa.MetaData()
        bindings: dict[str, Binding] = {}
        for spec in self._specs.values():
            table = build_table(spec, self.metadata, resolve=self._resolve_reference(spec))
            bindings[spec.name] = Binding.for_model(spec, table)
        self._governance.add_tables(self.metadata)
        for spec in self._specs.values():
            for f in spec.fields.values():
                if not f.references or f.references not in bindings:
                    continue
                target = self._specs[f.references]
                forward = f.name[:-3] if f.name.endswith("_id") else f"{f.name}_ref"
                bindings[spec.name].relations.setdefault(
                    forward, Relation(forward, target.name, f.name, target.primary_key, many=False))
                # The reverse side is named after the referring table (User.posts); a second
                # key from the same table to the same model adds the field (User.posts_editor).
                reverse = spec.table if spec.table not in bindings[target.name].relations else f"{spec.table}_{forward}"
                bindings[target.name].relations.setdefault(
                    reverse, Relation(reverse, spec.name, target.primary_key, f.name, many=True))
        self._bindings = bindings
        self._names = {}
        for spec in self._specs.values():
            self._names[spec.name] = spec.name
            self._names[spec.table] = spec.name

    def _resolve_reference(self, spec: ModelSpec):
        def resolve(name: str) -> ModelSpec:
            target = self._specs.get(name)
            if target is not None:
                return target
            # Declared later: the table name it will most likely have; checked again at migration.
            return ModelSpec(name=name, table=table_name_for(name), fields={}, primary_key="id")
        return resolve

    def binding(self, name: str, *, modelled: bool = False) -> Binding:
        """The model (by class or table name) or, unless ``modelled``, a reflected table."""
        model = self._names.get(name)
        if model is not None:
            return self._bindings[model]
        if modelled:
            raise ModelError(f"No model named {name!r}; declared models: {', '.join(self._specs) or 'none'}",
                             model=name)
        return self._reflect(name)

    def _reflect(self, name: str) -> Binding:
        with self._lock:
            if name in self._reflected:
                return self._reflected[name]
            self.ensure_ready()
            try:
                table = sa.Table(name, sa.MetaData(), autoload_with=self.engine)
            except sa_exc.NoSuchTableError:
                raise ModelError(f"No model or table named {name!r}; declared models: "
                                 f"{', '.join(self._specs) or 'none'}", model=name) from None
            except (sa_exc.SQLAlchemyError, *self.driver_errors) as exc:
                raise translate(exc, model=name, action="reflect", where=self.safe_url) from exc
            b = Binding(name=name, table=table)
            self._reflected[name] = b
            return b

    # ------------------------------------------------------------------ lifecycle
    def ensure_ready(self) -> None:
        """Connect and bring the schema up to date, once (and again after new models)."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if self._closed:
                raise DataFlowError("This DataFlow instance is closed; create a new one")
            from ..schema import lifecycle

            self._check_references()
            lifecycle.start(self)
            self._ready = True

    def _check_references(self) -> None:
        missing = [f"{s.name}.{f.name} -> {f.references}" for s in self._specs.values()
                   for f in s.fields.values() if f.references and f.references not in self._specs]
        if missing:
            raise ModelError(f"Foreign keys reference undeclared models: {', '.join(missing)}; declare them "
                             f"with @db.model")

    @property
    def specs(self) -> dict[str, ModelSpec]:
        """The declared models' specs, by model name."""
        return dict(self._specs)

    def migrate(self, *, allow_destructive: bool = False, dry_run: bool = False):
        """Compare the models with the database and apply the difference; return the ``MigrationPlan``.

        Destructive changes (dropped columns or tables, narrowed types) are only reported unless
        ``allow_destructive=True``; ``dry_run=True`` changes nothing.
        """
        from ..schema import lifecycle

        with self._lock:
            self._check_references()
            plan = lifecycle.migrate(self, allow_destructive=allow_destructive, dry_run=dry_run)
            if not dry_run:
                self._ready = True
            return plan

    def schema_diff(self):
        """What a migration would do, as a ``MigrationPlan`` with its SQL, without doing it."""
        return self.migrate(dry_run=True)

    def history(self) -> list[dict[str, Any]]:
        """Applied migrations, oldest first (the ``dataflow_migrations`` table)."""
        from ..schema.history import history

        return history(self.engine)

    def close(self) -> None:
        """Release the connection pool and this instance's node names."""
        from ..nodes import unregister_nodes

        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ready = False  # so the next operation says the instance is closed (not reconnect silently)
            for classes in self._nodes.values():
                unregister_nodes(classes)
            self.engine.dispose()

    def __enter__(self) -> "DataFlow":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DataFlow({self.safe_url!r}, models={list(self._specs)})"

    # ------------------------------------------------------------------ context
    @property
    def executor(self):
        """The chain every operation runs through: ``db.executor.add(policy)``."""
        return self.operations.executor

    def actor(self, name: str | None):
        """Run a block as ``name`` (audit trails, policies): ``with db.actor("admin"): ...``."""
        from ..operations.context import scope

        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValidationError("actor must be a non-empty string (or None for the system)")
        return scope(actor=name)

    def stream(self, model: str, filter: Mapping | None = None, *, sort: Any = None, limit: int | None = None,
               offset: int = 0, fields: Sequence[str] | None = None, batch: int = 1000):
        """Matching records one at a time, fetched in batches: memory stays flat on any table size."""
        return self.operations.stream(model, filter, sort, limit, offset, fields, batch=batch)

    # ------------------------------------------------------------------ introspection
    def list_models(self) -> list[str]:
        """Names of the declared models, in declaration order."""
        return list(self._specs)

    def get_model_info(self, name: str) -> dict[str, Any]:
        """Fields, types, table, nodes and relations of a model."""
        b = self.binding(name, modelled=True)
        spec = b.spec
        return {
            "name": spec.name,
            "table": spec.table,
            "primary_key": spec.primary_key,
            "fields": {f.name: {"type": f.pytype.__name__, "nullable": f.nullable, "required": f.required,
                                "primary_key": f.primary_key, "unique": f.unique,
                                "default": None if not f.has_default or f.default_factory else f.default,
                                "references": f.references,
                                **({"max_length": f.max_length} if f.pytype is str else {})}
                       for f in spec.fields.values()},
            "relations": {r.name: {"model": r.target, "local": r.local, "remote": r.remote,
                                   "kind": "many" if r.many else "one"} for r in b.relations.values()},
            "nodes": self.get_generated_nodes(spec.name),
            "options": dict(spec.options),
        }

    def get_generated_nodes(self, name: str) -> list[str]:
        """Names of the workflow nodes generated for a model."""
        model = self.binding(name, modelled=True).name
        return list(self._nodes.get(model, {}))

    # ------------------------------------------------------------------ direct API
    def create(self, model: str, data: Mapping[str, Any] | None = None, **fields: Any) -> dict:
        """Insert one record and return it."""
        return self.operations.create(model, {**(data or {}), **fields})

    def read(self, model: str, id: Any = None, *, filter: Mapping | None = None,
             raise_on_not_found: bool = True, **kw: Any) -> dict | None:
        """One record by id or filter."""
        if isinstance(id, Mapping):
            id, filter = None, id
        return self.operations.read(model, id, filter, raise_on_not_found=raise_on_not_found, **kw)

    def update(self, model: str, id_or_filter: Any = None, changes: Mapping[str, Any] | None = None, *,
               raise_on_not_found: bool = True, **fields: Any) -> dict | None:
        """Change one record (``db.update("users", {"id": 1}, {"status": "x"})``)."""
        id, filt = (None, id_or_filter) if isinstance(id_or_filter, Mapping) else (id_or_filter, None)
        return self.operations.update(model, id, filt, {**(changes or {}), **fields},
                                      raise_on_not_found=raise_on_not_found)

    def delete(self, model: str, id_or_filter: Any = None, *, raise_on_not_found: bool = True) -> Any:
        """Delete one record; return its key."""
        id, filt = (None, id_or_filter) if isinstance(id_or_filter, Mapping) else (id_or_filter, None)
        return self.operations.delete(model, id, filt, raise_on_not_found=raise_on_not_found)

    def list(self, model: str, filter: Mapping | None = None, *, sort: Any = None, limit: int | None = DEFAULT_LIMIT,
             offset: int = 0, fields: Sequence[str] | None = None, **kw: Any) -> list[dict]:
        """Records matching ``filter`` (at most ``limit``, 100 by default)."""
        return self.operations.list(model, filter, sort, limit, offset, fields, **kw)[0]

    def count(self, model: str, filter: Mapping | None = None, **kw: Any) -> int:
        """How many records match ``filter``."""
        return self.operations.count(model, filter, **kw)

    def upsert(self, model: str, where: Mapping[str, Any], update: Mapping[str, Any] | None = None,
               create: Mapping[str, Any] | None = None, conflict_on: Sequence[str] | None = None) -> dict:
        """Update the record matching ``where`` or create it; ``{"created", "action", "record"}``."""
        created, record = self.operations.upsert(model, where, update, create, conflict_on)
        return {"created": created, "action": "created" if created else "updated", "record": record}

    def bulk_create(self, model: str, data: Sequence[Mapping[str, Any]], *, batch_size: int = DEFAULT_BATCH,
                    on_conflict: str = "error", return_ids: bool = False,
                    conflict_on: Sequence[str] | None = None) -> dict:
        """Insert many records, all or nothing."""
        return self.operations.bulk_create(model, data, batch_size=batch_size, on_conflict=on_conflict,
                                           return_ids=return_ids, conflict_on=conflict_on)

    def bulk_update(self, model: str, filter: Mapping | None, changes: Mapping[str, Any], *,
                    confirm_all: bool = False) -> int:
        """Apply changes to every matching record; return the count."""
        return self.operations.bulk_update(model, filter, changes, confirm_all=confirm_all)

    def bulk_delete(self, model: str, filter: Mapping | None, *, confirm_all: bool = False) -> int:
        """Delete every matching record; return the count."""
        return self.operations.bulk_delete(model, filter, confirm_all=confirm_all)

    def bulk_upsert(self, model: str, data: Sequence[Mapping[str, Any]], *,
                    conflict_on: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH) -> dict:
        """Insert or update many records, all or nothing."""
        return self.operations.bulk_upsert(model, data, conflict_on=conflict_on, batch_size=batch_size)

    def aggregate(self, model: str, pipeline: Sequence[Mapping], filter: Mapping | None = None) -> Any:
        """Run an aggregation pipeline."""
        return self.operations.aggregate(model, pipeline, filter)

    # ------------------------------------------------------------------ queries
    def query(self, name: str):
        """A lazy fluent query on a model or table: ``db.query("users").where({...}).all()``."""
        from ..query.query import Query

        return Query(self, name)

    def query_builder(self, name: str):
        """A ``QueryBuilder`` for a model; ``User.query_builder()`` is the same."""
        from ..query.builder import QueryBuilder

        return QueryBuilder(self, name)

    # ------------------------------------------------------------------ governance: audit log, GDPR/CCPA (issue 10)
    def enable_audit_log(self) -> None:
        """Record every write (create, update, delete, upsert, bulk) in ``dataflow_audit``, in its transaction."""
        self._governance.enable_audit()

    def audit_log(self, table: str | None = None, record_id: Any = None, actor: str | None = None,
                  action: str | None = None, since: Any = None, limit: int | None = 100) -> list[dict]:
        """The audit trail, newest first: ``db.audit_log(table="users", record_id=123)``."""
        return self._governance.audit_log(table=table, record_id=record_id, actor=actor, action=action,
                                          since=since, limit=limit)

    def compliance(self, kind: str):
        """Register a GDPR/CCPA request handler: ``@db.compliance("gdpr")``; each call is audited."""
        return self._governance.compliance(kind)

    def export_user_data(self, user_id: Any) -> dict:
        """Every record about the data subject ``user_id``, grouped by model, JSON-safe."""
        return self._governance.export(user_id)

    def anonymize_user_data(self, user_id: Any) -> dict:
        """Replace the subject's declared personal fields everywhere (rows and audit trail), irreversibly."""
        return self._governance.anonymize(user_id)


def _live(ref: "weakref.ref[DataFlow]", model: str) -> DataFlow:
    db = ref()
    if db is None:
        raise DataFlowError(f"{model}: the DataFlow instance that declared this model is gone", model=model)
    return db
