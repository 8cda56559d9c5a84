"""``@app.middleware(name)``: functions ``f(query, request)`` that narrow every operation of a request.

They all run inside ONE policy of the operations executor, so they see every door: REST routes,
``app.query(...)`` and the direct API inside an endpoint, nodes run while serving a request,
relation includes. For an operation that selects existing rows (read, list, count, aggregate,
update, delete, upsert and the bulk forms), ``query.where(filter)`` ANDs the filter into it. For
one that writes rows (create, upsert, the bulk writes, update), the filter's equality conditions are
stamped into the new rows (and into an update that sets them to null, e.g. a PUT leaving them out),
and data that names another value for such a field is refused (422), so a request can neither
create a row outside its scope nor move one out of it. A condition other
than equality cannot be stamped, so a create under it is refused.

A filter naming a field the model lacks fails closed: the operation raises ``FilterError`` (422)
naming the middleware, the model and the field, instead of running without the filter.
Outside a request (``current().request`` is None) the functions do not run.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..errors import DataFlowError, FilterError, ValidationError
from ..operations.call import Call
from ..operations.policy import Policy

#: Actions that write rows whose fields a middleware's equality conditions must hold for.
WRITES_ROWS = frozenset({"create", "upsert", "bulk_create", "bulk_upsert", "update", "bulk_update"})
#: Of those, the ones that make new rows (where a missing field is stamped).
NEW_ROWS = frozenset({"create", "upsert", "bulk_create", "bulk_upsert"})


class RequestFilters(Policy):
    """The policy: runs the registered functions for each operation made while serving a request."""

    name = "request_middleware"

    def __init__(self) -> None:
        self.functions: list[tuple[str, Callable]] = []

    def add(self, name: str, fn: Callable) -> None:
        self.functions = [(n, f) for n, f in self.functions if n != name] + [(name, fn)]

    def plan(self, call: Call) -> None:
        request = call.ctx.request
        if request is None:
            return
        for name, fn in self.functions:
            fn(Scoped(call, name), request)


class Scoped:
    """What a middleware function gets as ``query``: ``.where(filter)`` narrows the operation."""

    def __init__(self, call: Call, middleware: str) -> None:
        self.call = call
        self.middleware = middleware

    @property
    def action(self) -> str:
        return self.call.action

    @property
    def model(self) -> str:
        return self.call.model

    def where(self, filter: Mapping[str, Any]) -> "Scoped":
        if not isinstance(filter, Mapping):
            raise FilterError(f"middleware {self.middleware!r}: where() takes a dict, got {type(filter).__name__}",
                              path="where", model=self.model)
        self._check_fields(filter)
        if self.call.action in WRITES_ROWS:
            self._hold(filter)
        if self.call.scoped:
            self.call.where(dict(filter))
        return self

    def _check_fields(self, filter: Mapping[str, Any]) -> None:
        b = self.call.binding
        columns = set(b.columns)
        for key, value in filter.items():
            if key in ("$and", "$or", "$nor") and isinstance(value, (list, tuple)):
                for part in value:
                    if isinstance(part, Mapping):
                        self._check_fields(part)
                continue
            if key.startswith("$"):
                continue
            if key.split(".")[0] not in columns:
                raise FilterError(f"middleware {self.middleware!r} filters {b.name} on {key!r}, a field {b.name} "
                                  f"does not have; refusing the operation rather than running it unfiltered",
                                  path=key, model=b.name, field=key)

    def _hold(self, filter: Mapping[str, Any]) -> None:
        """Written rows must satisfy the filter's equality conditions; new rows get them stamped."""
        call = self.call
        data = call.data
        rows = [data] if isinstance(data, Mapping) else [r for r in data if isinstance(r, Mapping)] \
            if isinstance(data, (list, tuple)) else []
        creating = call.action in NEW_ROWS
        for key, value in filter.items():
            if isinstance(value, Mapping) and set(value) == {"$eq"}:
                value = value["$eq"]
            if key.startswith("$") or "." in key or isinstance(value, Mapping):
                if creating:
                    raise ValidationError(f"{call.model} {call.action}: middleware {self.middleware!r} narrows by "
                                          f"a condition on {key!r} that a new record cannot be given; refused",
                                          model=call.model, field=None if key.startswith("$") else key)
                continue
            for row in rows:
                if key not in row or row[key] == value:
                    continue
                if row[key] is not None:
                    raise ValidationError(f"{call.model}.{key}: the record would be outside the request's scope "
                                          f"(middleware {self.middleware!r}); refused", model=call.model, field=key)
                if not creating and isinstance(row, dict):  # an update clearing the field keeps it in scope
                    row[key] = call.binding.codec.value(key, value) if call.binding.codec else value
            if creating:
                call.stamp(key, value)


def install(db: Any, policy: RequestFilters) -> None:
    """Put the policy on the operations executor of ``db``."""
    executor = getattr(db.operations, "executor", None)
    if executor is None:
        raise DataFlowError("@app.middleware needs the operations executor, which this build of DataFlow lacks; "
                            "refusing to serve requests without the middleware")
    executor.add(policy)
