"""``@app.resource("users")``: a REST API over a model (or, read-only, over a table ``db.query`` reflects).

Routes: ``GET /users`` (plain query parameters converted by field type, ``?filter=`` a MongoDB-style
JSON filter, ``sort=-created_at,name``, ``limit`` (default 100, at most ``LIMIT_CAP``), ``offset``),
``GET/PATCH/PUT/DELETE /users/{id}``, ``POST /users`` and ``POST /users/bulk``. Hooks on the class:
``before_create(data)`` and ``before_update(data)`` return the data to write; ``before_list(filter)``
returns the filter to list and count with (it may narrow it; ``None``: no filter); ``before_read(id)``,
``after_create(record)``, ``after_update(record)`` and ``before_delete(id)`` are told. A hook refuses
by raising ``dataflow.ForbiddenError`` (403) or any ``fastapi.HTTPException``. Handlers are plain
functions, so FastAPI runs them in its thread pool.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable

import anyio.from_thread
from fastapi import Body, Path, Query, Request
from starlette.responses import Response

from ..binding import Binding
from ..errors import DataFlowError, FilterError, NotFoundError, ValidationError
from ..operations import DEFAULT_LIMIT
from . import schemas
from .endpoints import JSONSafeResponse
from .errors import error_response

LIMIT_CAP = 1000  # the most records one list or bulk request handles
HOOKS = ("before_list", "before_read", "before_create", "after_create", "before_update", "after_update",
         "before_delete")


class Resource:
    """One model's REST routes and the hooks of the class that declared them."""

    def __init__(self, db: Any, name: str, cls: type | None, prefix: str | None = None) -> None:
        self.db = db
        self.name = name
        self.handler = cls() if isinstance(cls, type) else cls
        self.prefix = prefix or f"/{name}"
        self.routes: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- building
    def build(self) -> list[dict[str, Any]]:
        """Keyword arguments for ``add_api_route``, one dict per route (the model must be declared by now)."""
        b = self.db.binding(self.name)
        self.model = b.name
        self.binding = b
        record = schemas.record_schema(b)
        errors = {code: {"model": schemas.ErrorBody} for code in (400, 404, 409, 422)}
        pk_type = (b.spec.fields[b.spec.primary_key].pytype if b.spec else schemas.column_type(b.pk)) or str
        self.pk_type = pk_type
        r = [
            self._route("GET", "", self._list_handler(b), f"list_{self.name}", f"List {b.name} records",
                        {200: {"model": schemas.page_schema(b, record)}, 400: errors[400], 422: errors[422]}),
            self._route("GET", "/{id}", self._id_handler(self.read, pk_type), f"read_{self.name}",
                        f"Read one {b.name}", {200: {"model": record}, 404: errors[404], 422: errors[422]}),
        ]
        if b.spec is not None:
            create = schemas.create_schema(b)
            patch = schemas.create_schema(b, partial=True, suffix="Patch")
            bulk = schemas.bulk_schema(b, record)
            r += [
                self._route("POST", "", self._body_handler(self.create, create), f"create_{self.name}",
                            f"Create a {b.name}", {201: {"model": record}, 400: errors[400], 409: errors[409],
                                                            422: errors[422]}, status_code=201),
                self._route("POST", "/bulk", self._body_handler(self.bulk_create, list[create], bulk=True),
                            f"bulk_create_{self.name}", f"Create many {b.name} records (all or nothing)",
                            {201: {"model": bulk}, 400: errors[400], 409: errors[409], 422: errors[422]},
                            status_code=201),
                self._route("PATCH", "/{id}", self._id_handler(self.patch, pk_type, patch), f"patch_{self.name}",
                            f"Change some fields of a {b.name}", {200: {"model": record}, **errors}),
                self._route("PUT", "/{id}", self._id_handler(self.replace, pk_type, create), f"replace_{self.name}",
                            f"Replace a whole {b.name} (fields left out take their defaults)",
                            {200: {"model": record}, **errors}),
                self._route("DELETE", "/{id}", self._id_handler(self.remove, pk_type), f"delete_{self.name}",
                            f"Delete a {b.name}", {204: {"description": "Deleted"}, **errors}, status_code=204),
            ]
        self.create_schema = create if b.spec is not None else None
        return r

    def _route(self, method: str, sub: str, endpoint: Callable, op: str, summary: str, responses: dict,
               status_code: int = 200) -> dict[str, Any]:
        if sub == "/{id}" and self.pk_type is int:
            sub = "/{id:int}"  # so /users/bulk is never taken for an id
        return dict(path=self.prefix + sub, endpoint=endpoint, methods=[method], operation_id=op, summary=summary,
                    responses=responses, status_code=status_code, tags=[self.name], response_model=None,
                    name=op)

    # ---------------------------------------------------------------- signatures
    def _list_handler(self, b: Binding) -> Callable:
        params = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
        plain: list[str] = []
        taken = {"request", "filter", "sort", "limit", "offset"}
        columns = ([(f.name, f.pytype) for f in b.spec.fields.values()] if b.spec
                   else [(c.name, schemas.column_type(c)) for c in b.table.columns])
        for i, (name, pytype) in enumerate(columns):
            t = schemas.QUERY_TYPES.get(pytype)
            if t is None or name in taken or not name.isidentifier():
                continue
            plain.append(name)
            params.append(inspect.Parameter(f"q{i}", inspect.Parameter.KEYWORD_ONLY, annotation=t | None,
                                            default=Query(None, alias=name, description=f"{name} equals")))
        params += [
            inspect.Parameter("filter", inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=Query(
                None, description='A MongoDB-style filter as JSON, e.g. {"age": {"$gte": 18}}')),
            inspect.Parameter("sort", inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=Query(
                None, description="Fields to sort by, comma-separated; '-' for descending: -created_at,name")),
            inspect.Parameter("limit", inspect.Parameter.KEYWORD_ONLY, annotation=int, default=Query(
                DEFAULT_LIMIT, ge=0, le=LIMIT_CAP, description=f"At most this many records (≤ {LIMIT_CAP})")),
            inspect.Parameter("offset", inspect.Parameter.KEYWORD_ONLY, annotation=int, default=Query(
                0, ge=0, le=schemas.INT64[1], description="Skip this many records")),
        ]
        names = {f"q{i}": name for i, (name, _) in enumerate(columns)}

        def handler(**kw: Any) -> Response:
            values = {names[k]: v for k, v in kw.items() if k in names and v is not None}
            return self.list(kw["request"], values, kw["filter"], kw["sort"], kw["limit"], kw["offset"])

        handler.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return handler

    def _id_handler(self, fn: Callable, pk_type: Any, body: Any = None) -> Callable:
        bounds = {"ge": schemas.INT64[0], "le": schemas.INT64[1]} if pk_type is int else {}
        params = [inspect.Parameter("id", inspect.Parameter.KEYWORD_ONLY, annotation=pk_type,
                                    default=Path(..., description="The record's primary key", **bounds))]
        if body is not None:
            params.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body))

        def handler(**kw: Any) -> Response:
            return fn(**kw)

        handler.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return handler

    def _body_handler(self, fn: Callable, body: Any, bulk: bool = False) -> Callable:
        default = Body(..., max_length=LIMIT_CAP) if bulk else inspect.Parameter.empty
        params = [inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body, default=default)]

        def handler(**kw: Any) -> Response:
            return fn(**kw)

        handler.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return handler

    # ---------------------------------------------------------------- hooks
    def _hook(self, name: str, value: Any) -> Any:
        fn = getattr(self.handler, name, None)
        if fn is None:
            return value
        if inspect.iscoroutinefunction(fn):
            return anyio.from_thread.run(fn, value)
        return fn(value)

    def _data_hook(self, name: str, data: dict) -> dict:
        out = self._hook(name, data)
        if out is None and getattr(self.handler, name, None) is not None:
            raise TypeError(f"{type(self.handler).__name__}.{name} must return the data to write")
        return out if out is not None else data

    # ---------------------------------------------------------------- the operations
    def list(self, request: Request, values: dict, raw_filter: str | None, sort: str | None,
             limit: int, offset: int) -> Response:
        try:
            filt = _combine(values, _parse_filter(raw_filter))
            if getattr(self.handler, "before_list", None) is not None:
                filt = self._hook("before_list", filt)
            order = [s for s in sort.split(",") if s.strip()] if sort else None
            if order is not None and not order:
                raise FilterError("sort names no field", path="sort")
            records = self.db.list(self.name, filt, sort=order, limit=limit, offset=offset)
            if len(records) < limit and (records or offset == 0):
                total = offset + len(records)  # the page is not full: no need to count
            else:
                total = self.db.count(self.name, filt)
        except DataFlowError as exc:
            return error_response(exc, "list")
        more = offset + len(records) < total
        url = request.url
        return JSONSafeResponse({
            "records": records, "total": total, "count": len(records), "limit": limit, "offset": offset,
            "has_more": more,
            "next": str(url.include_query_params(offset=offset + limit)) if more and limit else None,
            "prev": str(url.include_query_params(offset=max(0, offset - limit))) if offset else None,
        })

    def read(self, id: Any) -> Response:
        self._hook("before_read", id)
        try:
            return JSONSafeResponse(self.db.read(self.name, id))
        except DataFlowError as exc:
            return self._failed(exc, "read")

    def create(self, body: Any) -> Response:
        data = self._data_hook("before_create", schemas.dump(body))
        try:
            record = self.db.create(self.name, data)
        except DataFlowError as exc:
            return error_response(exc, "create")
        self._hook("after_create", record)
        return JSONSafeResponse(record, status_code=201,
                                headers={"Location": f"{self.prefix}/{record[self.binding.pk.name]}"})

    def bulk_create(self, body: list) -> Response:
        rows = [self._data_hook("before_create", schemas.dump(item)) for item in body]
        try:
            ids = self.db.bulk_create(self.name, rows, return_ids=True)["ids"] if rows else []
            records = self.db.list(self.name, {self.binding.pk.name: {"$in": ids}}, limit=None) if ids else []
        except DataFlowError as exc:
            return error_response(exc, "bulk_create")
        for record in records:
            self._hook("after_create", record)
        return JSONSafeResponse({"created": len(ids), "records": records}, status_code=201)

    def patch(self, id: Any, body: Any) -> Response:
        return self._update(id, schemas.dump(body), "update")

    def replace(self, id: Any, body: Any) -> Response:
        given = schemas.dump(body)
        whole = {}
        for f in schemas.input_fields(self.binding):
            if f.primary_key:
                continue
            if f.name in given:
                whole[f.name] = given[f.name]
            elif f.has_default or f.nullable:
                whole[f.name] = f.make_default()
        if self.binding.spec.primary_key in given and given[self.binding.spec.primary_key] != id:
            return error_response(ValidationError(
                f"{self.model}.{self.binding.spec.primary_key} in the body differs from the one in the path",
                model=self.model, field=self.binding.spec.primary_key), "replace")
        return self._update(id, whole, "replace")

    def _update(self, id: Any, data: dict, action: str) -> Response:
        data = self._data_hook("before_update", data)
        try:
            # An empty PATCH changes nothing: it answers with the record as it is.
            record = self.db.update(self.name, id, data) if data else self.db.read(self.name, id)
        except DataFlowError as exc:
            return self._failed(exc, action)
        self._hook("after_update", record)
        return JSONSafeResponse(record)

    def remove(self, id: Any) -> Response:
        self._hook("before_delete", id)
        try:
            self.db.delete(self.name, id)
        except DataFlowError as exc:
            return self._failed(exc, "delete")
        return Response(status_code=204)

    def _failed(self, exc: DataFlowError, action: str) -> Response:
        if isinstance(exc, NotFoundError):  # our message would quote the id; the client knows it
            exc = NotFoundError(f"{self.model} has no record with that {self.binding.pk.name}", model=self.model)
        return error_response(exc, action)


def _parse_filter(raw: str | None) -> dict | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise FilterError("is not valid JSON", path="filter") from None
    if not isinstance(value, dict):
        raise FilterError(f"must be a JSON object, got {type(value).__name__}", path="filter")
    return value


def _combine(plain: dict, given: dict | None) -> dict | None:
    if not given:
        return plain or None
    if not plain:
        return given
    return {"$and": [plain, given]}
