"""Generate the Kailash nodes of a model and register them by name in the SDK's registry.

Each node class is bound to the ``DataFlow`` instance that declared the model, takes its
parameters (kailash-dataflow's names, a compatible superset), calls the operations layer and
returns JSON-safe outputs.
"""

from __future__ import annotations

import base64
import logging
import warnings
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Mapping
from uuid import UUID

from kailash.nodes.base import Node, NodeMetadata, NodeParameter, NodeRegistry

from .errors import ValidationError
from .models import ModelSpec
from .operations import DEFAULT_BATCH, DEFAULT_LIMIT
from .values import json_safe

if TYPE_CHECKING:
    from .core.dataflow import DataFlow

log = logging.getLogger("dataflow.nodes")

#: Config keys the SDK reads as node metadata; models may use them as field names (User.name).
_METADATA_KEYS = ("name", "description", "version", "author", "tags", "metadata")
#: Keys the runtime may add to a node's inputs.
_RUNTIME_KEYS = frozenset({"context", "config"})


def _param(name: str, description: str = "") -> NodeParameter:
    # Type checking is ours (values.py): the SDK's would coerce "abc" -> int errors into its own words.
    return NodeParameter(name=name, type=Any, required=False, description=description)


class DataFlowNode(Node):
    """Base of generated nodes: parameter checking and JSON-safe output are ours."""

    _db: "DataFlow"
    _model: str
    _operation: str
    _params: tuple[str, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        held = {k: kwargs.pop(k) for k in _METADATA_KEYS if k in kwargs}
        kwargs["metadata"] = NodeMetadata(id=str(kwargs.get("_node_id", type(self).__name__)),
                                          name=type(self).__name__,
                                          description=f"{self._operation} {self._model} records (DataFlow)")
        super().__init__(**kwargs)
        self.config.update(held)

    def get_parameters(self) -> dict[str, NodeParameter]:
        return self._parameter_defs  # built once per class: the SDK asks on every instantiation

    def validate_inputs(self, **kwargs: Any) -> dict[str, Any]:
        unknown = [k for k in kwargs if k not in self._allowed and k not in _RUNTIME_KEYS
                   and not k.startswith("_")]
        if unknown:
            raise ValidationError(
                f"{type(self).__name__}: unknown parameter(s) {sorted(unknown)}; "
                f"{self._model} fields and parameters are: {', '.join(self._params)}", model=self._model,
                field=unknown[0])
        return {k: v for k, v in kwargs.items() if k in self._allowed}

    def validate_outputs(self, outputs: dict[str, Any]) -> dict[str, Any]:
        return outputs  # already JSON-safe (values.json_safe)

    def run(self, **kwargs: Any) -> dict[str, Any]:
        return self._run(self._db, kwargs)

    _run: Callable[["DataFlow", dict], dict]
    _allowed: frozenset[str] = frozenset()
    _parameter_defs: dict[str, NodeParameter] = {}


#: JSON-safe forms of the field types JSON cannot carry as they are.
_TO_JSON: dict[type, Callable[[Any], Any]] = {
    datetime: datetime.isoformat, date: date.isoformat, Decimal: lambda d: format(d, "f"), UUID: str,
    bytes: lambda b: base64.b64encode(b).decode("ascii"),
}
#: Field types whose stored values are JSON-safe already (JSON columns hold only JSON).
_JSON_NATIVE = frozenset({int, str, bool, float, dict, list})


def record_encoder(spec: ModelSpec) -> Callable[[Mapping[str, Any]], dict]:
    """A function making one record of ``spec`` JSON-safe, converting only the columns that need it."""
    convert = {n: _TO_JSON[f.pytype] for n, f in spec.fields.items() if f.pytype in _TO_JSON}
    plain = frozenset(n for n, f in spec.fields.items() if f.pytype in _JSON_NATIVE)

    def encode(record: Mapping[str, Any]) -> dict:
        out = {}
        for k, v in record.items():
            if v is None or k in plain:
                out[k] = v
            else:
                conv = convert.get(k)
                out[k] = conv(v) if conv is not None else json_safe(v)  # e.g. included relations
        return out
    return encode


# ---------------------------------------------------------------- one function per operation
def _pick(kw: dict, *names: str, default: Any = None) -> Any:
    for n in names:
        if n in kw and kw[n] is not None:
            return kw[n]
    return default


def _changes(kw: dict, fields: tuple[str, ...]) -> dict:
    given = _pick(kw, "fields", "updates", "update")
    flat = {k: v for k, v in kw.items() if k in fields and k != "id"}
    if given is not None and not isinstance(given, dict):
        raise ValidationError("changes ('fields'/'updates') must be a dict of field values")
    return {**flat, **(given or {})}


def _create(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        return encode(db.operations.create(model, {k: v for k, v in kw.items() if k in fields}))
    return run


def _read(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        rec = db.operations.read(model, kw.get("id"), _pick(kw, "filter", "conditions"),
                                 raise_on_not_found=kw.get("raise_on_not_found", True),
                                 include=kw.get("include"), include_deleted=kw.get("include_deleted", False),
                                 fields=kw.get("fields"))
        return {"found": False} if rec is None else {**encode(rec), "found": True}
    return run


def _update(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        filt = _pick(kw, "filter", "conditions")
        rec = db.operations.update(model, kw.get("id"), filt, _changes(kw, fields),
                                   raise_on_not_found=kw.get("raise_on_not_found", True))
        return {"updated": False} if rec is None else {**encode(rec), "updated": True}
    return run


def _delete(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        key = db.operations.delete(model, kw.get("id"), _pick(kw, "filter", "conditions"),
                                   raise_on_not_found=kw.get("raise_on_not_found", True))
        return {"id": json_safe(key), "deleted": key is not None}
    return run


def _list(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        limit = kw["limit"] if "limit" in kw else DEFAULT_LIMIT
        offset = _pick(kw, "offset", "skip", default=0)
        records, more = db.operations.list(model, _pick(kw, "filter", "conditions"),
                                           _pick(kw, "sort", "order_by"), limit, offset, kw.get("fields"),
                                           include=kw.get("include"),
                                           include_deleted=kw.get("include_deleted", False))
        return {"records": [encode(r) for r in records], "count": len(records), "limit": limit,
                "offset": offset, "has_more": more}
    return run


def _count(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        return {"count": db.operations.count(model, _pick(kw, "filter", "conditions"),
                                             include_deleted=kw.get("include_deleted", False))}
    return run


def _upsert(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        created, rec = db.operations.upsert(model, _pick(kw, "where", "filter", "conditions"), kw.get("update"),
                                            kw.get("create"), kw.get("conflict_on"))
        return {"created": created, "action": "created" if created else "updated", "record": encode(rec)}
    return run


def _bulk_create(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        out = db.operations.bulk_create(model, _pick(kw, "data", "records", default=[]),
                                        batch_size=kw.get("batch_size") or DEFAULT_BATCH,
                                        on_conflict=kw.get("on_conflict") or "error",
                                        return_ids=bool(kw.get("return_ids")), conflict_on=kw.get("conflict_on"))
        return json_safe(out)
    return run


def _bulk_update(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        changes = _pick(kw, "data", "fields", "update", "updates")
        n = db.operations.bulk_update(model, _pick(kw, "filter", "conditions"), changes,
                                      confirm_all=bool(kw.get("confirm_all")))
        return {"processed": n, "updated": n, "success": True}
    return run


def _bulk_delete(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        n = db.operations.bulk_delete(model, _pick(kw, "filter", "conditions"),
                                      confirm_all=bool(kw.get("confirm_all")))
        return {"processed": n, "deleted": n, "success": True}
    return run


def _bulk_upsert(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        return db.operations.bulk_upsert(model, _pick(kw, "data", "records", default=[]),
                                         conflict_on=kw.get("conflict_on"),
                                         batch_size=kw.get("batch_size") or DEFAULT_BATCH)
    return run


def _numbers(value: Any) -> Any:
    """Aggregates are JSON numbers from nodes (CONVENTIONS.md): a Decimal sum becomes a float."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return json_safe(value)


def _aggregate(model: str, fields: tuple[str, ...], encode: Callable[[Mapping], dict]):
    def run(db, kw):
        result = db.operations.aggregate(model, kw.get("pipeline") or [], _pick(kw, "filter", "conditions"))
        return {"result": _numbers(result)} if not isinstance(result, list) else {
            "results": _numbers(result), "count": len(result)}
    return run


_FILTER = ("filter", "conditions")
_FLAGS = ("raise_on_not_found",)

#: Operation -> (runner factory, its parameters besides the model's fields, whether fields are params).
OPERATIONS: dict[str, tuple[Callable, tuple[str, ...], bool]] = {
    "Create": (_create, (), True),
    "Read": (_read, ("id", *_FILTER, *_FLAGS, "include", "include_deleted", "fields"), False),
    "Update": (_update, ("id", *_FILTER, "fields", "updates", "update", *_FLAGS), True),
    "Delete": (_delete, ("id", *_FILTER, *_FLAGS), False),
    "List": (_list, (*_FILTER, "sort", "order_by", "limit", "offset", "skip", "fields", "include",
                     "include_deleted"), False),
    "Count": (_count, (*_FILTER, "include_deleted"), False),
    "Upsert": (_upsert, ("where", *_FILTER, "update", "create", "conflict_on"), False),
    "BulkCreate": (_bulk_create, ("data", "records", "batch_size", "on_conflict", "return_ids", "conflict_on"), False),
    "BulkUpdate": (_bulk_update, (*_FILTER, "data", "fields", "update", "updates", "confirm_all"), False),
    "BulkDelete": (_bulk_delete, (*_FILTER, "confirm_all"), False),
    "BulkUpsert": (_bulk_upsert, ("data", "records", "conflict_on", "batch_size"), False),
    "Aggregate": (_aggregate, ("pipeline", *_FILTER), False),
}


def register_nodes(db: "DataFlow", spec: ModelSpec) -> dict[str, type]:
    """Create and register ``<Model><Operation>Node`` classes bound to ``db``."""
    fields = tuple(spec.fields)
    encode = record_encoder(spec)
    classes: dict[str, type] = {}
    rebound: list[str] = []
    for op, (factory, extra, takes_fields) in OPERATIONS.items():
        name = f"{spec.name}{op}Node"
        params = tuple(dict.fromkeys((*fields, *extra) if takes_fields else extra))
        cls = type(name, (DataFlowNode,), {
            "__module__": __name__,
            "__doc__": f"{op} {spec.name} records in {spec.table} (generated by DataFlow).",
            "_db": db, "_model": spec.name, "_operation": op, "_params": params,
            "_allowed": frozenset(params), "_run": staticmethod(factory(spec.name, fields, encode)),
            "_parameter_defs": {p: _param(p) for p in params},
        })
        current = NodeRegistry._nodes.get(name)
        if current is not None and getattr(current, "_db", db) is not db:
            rebound.append(name)
        NodeRegistry.register(cls, allow_override=True)
        classes[name] = cls
    if rebound:  # one warning per model, not one per node
        warnings.warn(f"{', '.join(rebound)} were bound to another DataFlow instance; they now run against "
                      f"{db.safe_url}", RuntimeWarning, stacklevel=3)
    return classes


def unregister_nodes(classes: dict[str, type]) -> None:
    """Remove these classes' names from the registry, where they are still the registered ones."""
    for name, cls in classes.items():
        if NodeRegistry._nodes.get(name) is cls:
            del NodeRegistry._nodes[name]
            NodeRegistry._dynamic_names.discard(name)
