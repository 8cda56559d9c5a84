"""Generate the Kailash nodes of a model from the operations table and register them by name.

Each node class is bound (weakly) to the ``DataFlow`` instance that declared the model, takes the
parameters ``catalog.py`` lists for its operation (aliases folded in one place), calls the
operations layer and returns JSON-safe outputs. Node names are process-wide in Kailash: a second
live instance declaring the same model is refused unless it names its nodes apart
(``DataFlow(url, node_prefix="Shop")`` -> ``ShopUserCreateNode``).
"""

from __future__ import annotations

import gc
import logging
import weakref
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Mapping

from kailash.nodes.base import Node, NodeMetadata, NodeParameter, NodeRegistry

from .catalog import BY_NODE, OPERATIONS, RUNTIME_KEYS, Operation
from .errors import DataFlowError, ModelError, ValidationError
from .models import ModelSpec
from .operations import DEFAULT_BATCH, DEFAULT_LIMIT
from .operations.context import current
from .encoding import record_encoder
from .values import json_safe

if TYPE_CHECKING:
    from .core.dataflow import DataFlow

log = logging.getLogger("dataflow.nodes")

#: Config keys the SDK reads as node metadata; models may use them as field names (User.name).
_METADATA_KEYS = ("name", "description", "version", "author", "tags", "metadata")


def _param(name: str, description: str = "") -> NodeParameter:
    # Type checking is ours (values.py): the SDK's would coerce "abc" -> int errors into its own words.
    return NodeParameter(name=name, type=Any, required=False, description=description)


class _Instance:
    """A class attribute holding the declaring ``DataFlow`` weakly: ``cls._db`` is it, or None once it is gone."""

    def __init__(self, db: "DataFlow") -> None:
        self._ref = weakref.ref(db)

    def __get__(self, obj: Any, owner: Any = None) -> "DataFlow | None":
        return self._ref()


class DataFlowNode(Node):
    """Base of generated nodes: parameter checking and JSON-safe output are ours."""

    _db: Any
    _model: str
    _operation: str
    _op: Operation
    _params: tuple[str, ...] = ()
    _fields: tuple[str, ...] = ()
    _encode: Callable[[Mapping[str, Any]], dict]

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
        unknown = [k for k in kwargs if k not in self._allowed and k not in RUNTIME_KEYS
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
        db = self._db
        if db is None:
            raise DataFlowError(f"{type(self).__name__}: the DataFlow instance that declared {self._model} is gone; "
                                f"declare the model on a live instance", model=self._model)
        try:
            return RUNNERS[self._op.node](db, self, self._op.resolve(kwargs), kwargs)
        except Exception:
            if current().transaction is not None:  # LocalRuntime may record the failure and go on:
                from .transactions import doom     # the open db.transaction() must not commit
                doom(db)
            raise

    _allowed: frozenset[str] = frozenset()
    _parameter_defs: dict[str, NodeParameter] = {}


def _numbers(value: Any) -> Any:
    """Aggregates are JSON numbers from nodes (CONVENTIONS.md): a Decimal sum becomes a float."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return json_safe(value)


# ---------------------------------------------------------------- one runner per operation
# Each takes the instance, the node, the canonical parameters (catalog.resolve) and the raw inputs
# (for the flat fields of Create and Update).

def _create(db, node, p, raw):
    return node._encode(db.operations.create(node._model, {k: v for k, v in raw.items() if k in node._fields}))


def _read(db, node, p, raw):
    rec = db.operations.read(node._model, p["id"], p["filter"], raise_on_not_found=p["raise_on_not_found"],
                             include=p["include"], include_deleted=p["include_deleted"], fields=p["fields"])
    return {"found": False} if rec is None else {**node._encode(rec), "found": True}


def _update(db, node, p, raw):
    given = p["changes"]
    if given is not None and not isinstance(given, dict):
        raise ValidationError("changes ('fields'/'updates') must be a dict of field values", model=node._model)
    flat = {k: v for k, v in raw.items() if k in node._fields and k != "id"}
    rec = db.operations.update(node._model, p["id"], p["filter"], {**flat, **(given or {})},
                               raise_on_not_found=p["raise_on_not_found"])
    return {"updated": False} if rec is None else {**node._encode(rec), "updated": True}


def _delete(db, node, p, raw):
    key = db.operations.delete(node._model, p["id"], p["filter"], raise_on_not_found=p["raise_on_not_found"])
    return {"id": json_safe(key), "deleted": key is not None}


def _list(db, node, p, raw):
    cap = db.config.max_limit
    limit = raw["limit"] if "limit" in raw else DEFAULT_LIMIT
    capped = limit is None
    if capped:
        limit = cap
    elif isinstance(limit, int) and not isinstance(limit, bool) and limit > cap:
        raise ValidationError(f"{type(node).__name__}: limit is above the max_limit setting ({cap}); page with "
                              f"offset, or raise max_limit", model=node._model)
    records, more = db.operations.list(node._model, p["filter"], p["sort"], limit, p["offset"], p["fields"],
                                       include=p["include"], include_deleted=p["include_deleted"], json=True)
    if capped and more:
        log.warning("%s returned max_limit=%d records and more match; page with offset or raise max_limit",
                    type(node).__name__, cap)
    return {"records": records, "count": len(records), "limit": limit,
            "offset": p["offset"], "has_more": more}


def _count(db, node, p, raw):
    return {"count": db.operations.count(node._model, p["filter"], include_deleted=p["include_deleted"])}


def _upsert(db, node, p, raw):
    created, rec = db.operations.upsert(node._model, p["where"], p["update"], p["create"], p["conflict_on"])
    return {"created": created, "action": "created" if created else "updated", "record": node._encode(rec)}


def _bulk_create(db, node, p, raw):
    return json_safe(db.operations.bulk_create(
        node._model, p["data"], batch_size=p["batch_size"] or DEFAULT_BATCH, on_conflict=p["on_conflict"],
        return_ids=bool(p["return_ids"]), conflict_on=p["conflict_on"]))


def _bulk_update(db, node, p, raw):
    n = db.operations.bulk_update(node._model, p["filter"], p["changes"], confirm_all=bool(p["confirm_all"]))
    return {"processed": n, "updated": n, "success": True}


def _bulk_delete(db, node, p, raw):
    n = db.operations.bulk_delete(node._model, p["filter"], confirm_all=bool(p["confirm_all"]))
    return {"processed": n, "deleted": n, "success": True}


def _bulk_upsert(db, node, p, raw):
    return db.operations.bulk_upsert(node._model, p["data"], conflict_on=p["conflict_on"],
                                     batch_size=p["batch_size"] or DEFAULT_BATCH)


def _aggregate(db, node, p, raw):
    result = db.operations.aggregate(node._model, list(p["pipeline"]) if isinstance(p["pipeline"], (list, tuple))
                                     else p["pipeline"], p["filter"])
    return {"result": _numbers(result)} if not isinstance(result, list) else {
        "results": _numbers(result), "count": len(result)}


RUNNERS: dict[str, Callable[..., dict]] = {
    "Create": _create, "Read": _read, "Update": _update, "Delete": _delete, "List": _list, "Count": _count,
    "Upsert": _upsert, "BulkCreate": _bulk_create, "BulkUpdate": _bulk_update, "BulkDelete": _bulk_delete,
    "BulkUpsert": _bulk_upsert, "Aggregate": _aggregate,
}
assert set(RUNNERS) == set(BY_NODE), "every operation in catalog.py needs a runner"


# ---------------------------------------------------------------- registration
def register_nodes(db: "DataFlow", spec: ModelSpec) -> dict[str, type]:
    """Create and register ``<prefix><Model><Operation>Node`` classes bound to ``db``.

    A name registered by another live, open ``DataFlow`` is refused with a ``ModelError``: a workflow
    meant for one database must never run against another by accident.
    """
    fields = tuple(spec.fields)
    encode = record_encoder(spec)
    prefix = db.config.node_prefix
    names = {op.node: f"{prefix}{spec.name}{op.node}Node" for op in OPERATIONS}
    _refuse_taken(db, spec, names.values())
    classes: dict[str, type] = {}
    for op in OPERATIONS:
        name = names[op.node]
        params = tuple(dict.fromkeys(
            (*fields, *(n for p in op.params for n in p.names if n != "changes")) if op.takes_fields
            else (n for p in op.params for n in p.names)))
        if op.node == "Update":  # its changes arrive flat or under one of the aliases
            params = tuple(dict.fromkeys((*params, "fields", "updates", "update")))
        cls = type(name, (DataFlowNode,), {
            "__module__": __name__,
            "__doc__": f"{op.node} {spec.name} records in {spec.table} (generated by DataFlow).",
            "_db": _Instance(db), "_model": spec.name, "_operation": op.node, "_op": op, "_params": params,
            "_fields": fields, "_encode": staticmethod(encode),
            "_allowed": frozenset(params), "_parameter_defs": {p: _param(p) for p in params},
        })
        NodeRegistry.register(cls, allow_override=True)
        classes[name] = cls
    return classes


def _refuse_taken(db: "DataFlow", spec: ModelSpec, names: Any) -> None:
    def holder(name: str) -> Any:
        current = NodeRegistry._nodes.get(name)
        other = getattr(current, "_db", None) if current is not None else None
        return other if other is not None and other is not db and not getattr(other, "_closed", False) else None

    taken = [n for n in names if holder(n) is not None]
    if taken:
        gc.collect()  # an instance nobody can reach any more cannot run a workflow: let it go first
        taken = [n for n in taken if holder(n) is not None]
    if taken:
        other = holder(taken[0])
        raise ModelError(
            f"{spec.name}: node names such as {taken[0]} are bound to another open DataFlow instance "
            f"({other.safe_url}); a workflow would not know which database to use. Close the other instance "
            f"(db.close()), or give this one its own names with DataFlow(..., node_prefix='Other')",
            model=spec.name)


def unregister_nodes(classes: dict[str, type]) -> None:
    """Remove these classes' names from the registry, where they are still the registered ones."""
    for name, cls in classes.items():
        if NodeRegistry._nodes.get(name) is cls:
            del NodeRegistry._nodes[name]
            NodeRegistry._dynamic_names.discard(name)
