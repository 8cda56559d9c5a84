"""``DataFlow``: owns the configuration, the engine and the models; the facade users touch."""

from __future__ import annotations

import builtins
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
from ..progress import ProgressArg
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
        self.url = parse_url(self.config.database_url or "")
        self.backend = backend_of(self.url)
        self.facts = backend_facts(self.backend)
        self.safe_url = safe_url(self.url)
        self.engine: sa.Engine = create_engine(self.config)
        self.driver_errors: tuple[type[BaseException], ...] = (self.engine.dialect.loaded_dbapi.Error,)
        #: What a database call may raise before translation: SQLAlchemy's errors and the driver's.
        self.catchable: tuple[type[BaseException], ...] = (sa_exc.SQLAlchemyError, *self.driver_errors)
        self.metadata = sa.MetaData()
        self.operations = Operations(self)
        self._attach_operations_concerns()
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

        tenancy = self.config.multi_tenant
        spec = spec_from_class(cls, tenant_field=self.config.tenant_field if tenancy else None,
                               tenant_default=self.config.tenant_default)
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
        declared: Any = cls  # the user's class gains two attributes
        declared.query_builder = classmethod(lambda c, _n=spec.name: _live(ref, _n).query_builder(_n))
        declared.__dataflow_spec__ = spec
        return cls

    def _rebuild(self) -> None:
        """Build every model's Table, binding and relations (foreign keys may point either way)."""
        self.metadata = sa.MetaData()
        bindings: dict[str, Binding] = {}
        for spec in self._specs.values():
            table = build_table(spec, self.metadata, resolve=self._resolve_reference(spec))
            if self.config.existing_schema_mode:  # someone else's table: its string comparison is not known
                table.info["dataflow_foreign_collation"] = True
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
        if not isinstance(name, str) or not name:
            raise ModelError(f"a model or table name must be a non-empty string, got {type(name).__name__}")
        model = self._names.get(name)
        if model is not None:
            if self.config.existing_schema_mode and not self._ready:
                # The live tables decide the automatic timestamps (schema/lifecycle.py): check them
                # before an operation builds anything from this binding.
                self.ensure_ready()
                model = self._names.get(name, model)
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
            except self.catchable as exc:
                raise translate(exc, model=name, action="reflect", where=self.safe_url) from None
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

    def migrate(self, *, allow_destructive: bool = False, dry_run: bool = False, progress: ProgressArg = None):
        """Compare the models with the database and apply the difference; return the ``MigrationPlan``.

        Destructive changes (dropped columns or tables, narrowed types) are only reported unless
        ``allow_destructive=True``; ``dry_run=True`` changes nothing. ``progress=True`` (a bar on a
        terminal) or ``f(done, total)`` reports each SQL statement applied; nothing to apply is ``(0, 0)``.
        """
        from ..progress import reporter
        from ..schema import lifecycle

        report = reporter(progress, "migrate", unit="statements")
        with self._lock, report:
            self._check_references()
            plan = lifecycle.migrate(self, allow_destructive=allow_destructive, dry_run=dry_run, progress=report)
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
            self.cache.close()

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
        spec = b.model_spec
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
        if data is not None and not isinstance(data, Mapping):
            raise ValidationError(f"{model}: a record must be a dict, got {type(data).__name__}", model=str(model))
        return self.operations.create(model, {**(data or {}), **fields})

    def read(self, model: str, id: Any = None, *, filter: Mapping | None = None,
             raise_on_not_found: bool = True, cache: bool | float | None = None, **kw: Any) -> dict | None:
        """One record by id or filter (``cache=True`` or seconds: served from the query cache)."""
        if isinstance(id, Mapping):
            id, filter = None, id
        if cache is not None:
            with self.cache.asking(cache):
                return self.operations.read(model, id, filter, raise_on_not_found=raise_on_not_found, **kw)
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
             offset: int = 0, fields: Sequence[str] | None = None, cache: bool | float | None = None,
             **kw: Any) -> list[dict]:
        """Records matching ``filter`` (at most ``limit``, 100 by default); ``cache=True``: cached."""
        if cache is not None:
            with self.cache.asking(cache):
                return self.operations.list(model, filter, sort, limit, offset, fields, **kw)[0]
        return self.operations.list(model, filter, sort, limit, offset, fields, **kw)[0]

    def count(self, model: str, filter: Mapping | None = None, *, cache: bool | float | None = None,
              **kw: Any) -> int:
        """How many records match ``filter``; ``cache=True``: cached."""
        if cache is not None:
            with self.cache.asking(cache):
                return self.operations.count(model, filter, **kw)
        return self.operations.count(model, filter, **kw)

    def upsert(self, model: str, where: Mapping[str, Any], update: Mapping[str, Any] | None = None,
               create: Mapping[str, Any] | None = None, conflict_on: Sequence[str] | None = None) -> dict:
        """Update the record matching ``where`` or create it; ``{"created", "action", "record"}``."""
        created, record = self.operations.upsert(model, where, update, create, conflict_on)
        return {"created": created, "action": "created" if created else "updated", "record": record}

    def bulk_create(self, model: str, data: Sequence[Mapping[str, Any]], *, batch_size: int = DEFAULT_BATCH,
                    on_conflict: str = "error", return_ids: bool = False,
                    conflict_on: Sequence[str] | None = None, progress: ProgressArg = None) -> dict:
        """Insert many records, all or nothing; ``progress=True`` or ``f(done, total)`` reports each batch."""
        return self.operations.bulk_create(model, data, batch_size=batch_size, on_conflict=on_conflict,
                                           return_ids=return_ids, conflict_on=conflict_on, progress=progress)

    def bulk_update(self, model: str, filter: Mapping | None, changes: Mapping[str, Any], *,
                    confirm_all: bool = False, progress: ProgressArg = None) -> int:
        """Apply changes to every matching record; return the count (``progress``: ``(0, None)``, then ``(n, n)``)."""
        return self.operations.bulk_update(model, filter, changes, confirm_all=confirm_all, progress=progress)

    def bulk_delete(self, model: str, filter: Mapping | None, *, confirm_all: bool = False,
                    progress: ProgressArg = None) -> int:
        """Delete every matching record; return the count (``progress``: ``(0, None)``, then ``(n, n)``)."""
        return self.operations.bulk_delete(model, filter, confirm_all=confirm_all, progress=progress)

    def bulk_upsert(self, model: str, data: Sequence[Mapping[str, Any]], *,
                    conflict_on: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH,
                    progress: ProgressArg = None) -> dict:
        """Insert or update many records, all or nothing; ``progress=True`` or ``f(done, total)`` reports each batch."""
        return self.operations.bulk_upsert(model, data, conflict_on=conflict_on, batch_size=batch_size,
                                           progress=progress)

    def aggregate(self, model: str, pipeline: Sequence[Mapping], filter: Mapping | None = None, *,
                  cache: bool | float | None = None) -> Any:
        """Run an aggregation pipeline; ``cache=True``: cached."""
        if cache is not None:
            with self.cache.asking(cache):
                return self.operations.aggregate(model, pipeline, filter)
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

    # ------------------------------------------------------------------ web (dataflow.web, imported on first use)
    @property
    def web(self):
        """The web side of this instance: routes, resources, request middleware, the server."""
        web = self.__dict__.get("_web")
        if web is None:
            from ..web import Web

            web = self.__dict__["_web"] = Web(self)
        return web

    def endpoint(self, path: str, **options: Any):
        """``@app.endpoint("/metrics/sales")``: serve a function's result as JSON."""
        return self.web.endpoint(path, **options)

    def resource(self, name: str, **options: Any):
        """``@app.resource("users") class UserResource``: REST routes over a model, with hooks."""
        return self.web.resource(name, **options)

    def middleware(self, name: str):
        """``@app.middleware("tenant_isolation") def f(query, request)``: narrow every query of a request."""
        return self.web.middleware(name)

    def add_middleware(self, cls: Any, **options: Any) -> None:
        """Add plain ASGI/Starlette middleware to the web app."""
        self.web.add_middleware(cls, **options)

    def start(self, host: str | None = None, port: int | None = None, **options: Any) -> None:
        """Serve the web app with uvicorn until SIGTERM/SIGINT (DATAFLOW_HOST/DATAFLOW_PORT, else 0.0.0.0:8000)."""
        self.web.start(host, port, **options)

    @property
    def asgi(self):
        """The ASGI application serving this instance's endpoints and resources."""
        return self.web.asgi

    # ------------------------------------------------------------------ multi-tenancy (operations/policies/tenancy.py)
    def tenant(self, tenant: str | None, *, bypass: bool = False):
        """Run a block for one tenant: ``with db.tenant("acme"): ...``; ``db.tenant(None, bypass=True)``
        runs admin jobs across tenants (logged at WARNING)."""
        from ..operations.policies.tenancy import tenant_scope

        return tenant_scope(tenant, bypass=bypass)

    @property
    def tenant_header(self) -> str:
        """The request header the web layer reads the tenant from (setting ``tenant_header``)."""
        return self.config.tenant_header


    # ------------------------------------------------------------------ metrics, cache, transactions, pool
    def _attach_operations_concerns(self) -> None:
        """Metrics and the query cache as policies on every operation; failed operations doom a transaction."""
        from ..cache import Cache
        from ..metrics import Metrics
        from ..operations.policies.cache import CachePolicy
        from ..operations.policies.metrics import MetricsPolicy
        from ..transactions import TransactionPolicy

        self.metrics = Metrics(prometheus=self.config.enable_metrics)
        self.cache = Cache(self)
        self.executor.add(CachePolicy(self.cache))
        self.executor.add(TransactionPolicy())
        self.executor.add(MetricsPolicy(self.metrics, self.config.slow_query_ms, self.safe_url))

    def benchmark(self, name: str):
        """Time a block under ``name``: ``with app.benchmark("complex_query"): ...``; see ``app.metrics``."""
        return self.metrics.benchmark(name)

    def cached(self, ttl: float = 60, *, tables: Sequence[str] | None = None):
        """Cache a function's result per arguments (and tenant): ``@app.cached(ttl=60)``; exact invalidation."""
        return self.cache.cached(ttl, tables=tables)

    def transaction(self):
        """One database transaction for every operation in the block (nested blocks: savepoints)."""
        from ..transactions import transaction

        return transaction(self)

    def pool_stats(self) -> dict[str, Any]:
        """The connection pool now: size, checked out/in, overflow, limits."""
        from ..pool import pool_stats

        return pool_stats(self)

    def metrics_endpoint(self):
        """An ASGI app serving the Prometheus exposition (mount at ``/metrics``; needs ``enable_metrics``)."""
        from ..errors import SettingError
        from ..metrics import asgi_app

        if not self.config.enable_metrics:
            raise SettingError("the /metrics endpoint needs enable_metrics=True (or DATAFLOW_ENABLE_METRICS=true)")
        return asgi_app(self)
    # ------------------------------------------------------------------ governance: audit log, GDPR/CCPA (issue 10)
    def enable_audit_log(self) -> None:
        """Record every write (create, update, delete, upsert, bulk) in ``dataflow_audit``, in its transaction."""
        self._governance.enable_audit()

    def audit_log(self, table: str | None = None, record_id: Any = None, actor: str | None = None,
                  action: str | None = None, since: Any = None, limit: int | None = 100) -> "builtins.list[dict]":
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
