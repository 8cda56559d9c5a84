"""``@app.middleware(name)``: functions ``f(query, request)`` that narrow every operation of a request.

They all run inside ONE policy of the operations executor, so they see every door: REST routes,
``app.query(...)`` and the direct API inside an endpoint, nodes run while serving a request. For an
operation that reads or changes existing rows (read, list, count, aggregate, update, delete and the
bulk forms), ``query.where(filter)`` ANDs the filter into it. For one that makes rows (create, bulk
create, upsert), the filter's equality conditions are stamped into the new rows, and a row that
says otherwise is refused; a non-equality condition cannot be stamped, so such a create is refused.

A filter naming a field the model lacks fails closed: the operation raises ``FilterError`` (422)
naming the middleware, the model and the field, instead of running without the filter.
Outside a request (``current().request`` is None) the functions do not run.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..errors import DataFlowError, FilterError, ValidationError

NEW_ROWS = frozenset({"create", "bulk_create", "upsert", "bulk_upsert"})


class RequestFilters:
    """The policy: runs the registered functions for each operation made while serving a request."""

    def __init__(self) -> None:
        self.functions: list[tuple[str, Callable]] = []

    def add(self, name: str, fn: Callable) -> None:
        self.functions = [(n, f) for n, f in self.functions if n != name] + [(name, fn)]

    def plan(self, call: Any) -> None:
        ctx = getattr(call, "ctx", None)
        request = getattr(ctx, "request", None)
        if request is None:
            return
        for name, fn in self.functions:
            fn(Scoped(call, name), request)


class Scoped:
    """What a middleware function gets as ``query``: ``.where(filter)`` narrows the operation."""

    def __init__(self, call: Any, middleware: str) -> None:
        self.call = call
        self.middleware = middleware

    @property
    def action(self) -> str:
        return self.call.action

    @property
    def model(self) -> str:
        return self.call.binding.name

    def where(self, filter: Mapping[str, Any]) -> "Scoped":
        if not isinstance(filter, Mapping):
            raise FilterError(f"middleware {self.middleware!r}: where() takes a dict, got {type(filter).__name__}",
                              path="where")
        self._check_fields(filter)
        if self.call.action in NEW_ROWS:
            self._stamp(filter)
        else:
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

    def _stamp(self, filter: Mapping[str, Any]) -> None:
        b = self.call.binding
        data = getattr(self.call, "data", None)
        rows = [data] if isinstance(data, dict) else list(data or []) if isinstance(data, (list, tuple)) else []
        for key, value in filter.items():
            if isinstance(value, Mapping):
                if set(value) == {"$eq"}:
                    value = value["$eq"]
                else:
                    raise ValidationError(f"{b.name} {self.call.action}: middleware {self.middleware!r} narrows "
                                          f"{key!r} by a condition a new record cannot be given; refused",
                                          model=b.name, field=key)
            if key.startswith("$") or "." in key:
                raise ValidationError(f"{b.name} {self.call.action}: middleware {self.middleware!r} narrows by "
                                      f"{key!r}, which a new record cannot be given; refused",
                                      model=b.name, field=key)
            for row in rows:
                if isinstance(row, dict):
                    if key not in row or row[key] is None and value is not None:
                        row[key] = value
                    elif row[key] != value:
                        raise ValidationError(f"{b.name}.{key}: the record is outside the request's scope "
                                              f"(middleware {self.middleware!r})", model=b.name, field=key)


def install(db: Any, policy: RequestFilters) -> None:
    """Put the policy on the operations executor of ``db``."""
    executor = getattr(db.operations, "executor", None)
    if executor is None:
        raise DataFlowError("@app.middleware needs the operations executor, which this build of DataFlow lacks; "
                            "refusing to serve requests without the middleware")
    executor.add(policy)
