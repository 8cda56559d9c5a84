"""Our exception tree -> HTTP, in this one place.

Each error class carries its ``status`` and ``code`` (dataflow.errors); this module turns an error
into a response. Bodies name the model, field or filter path (the messages of our errors carry no
values); a 5xx carries no detail at all.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .. import errors as e
from ..operations.context import current

log = logging.getLogger("dataflow.web")


def status_of(exc: BaseException, action: str | None = None) -> tuple[int, str]:
    """The HTTP status and error code for ``exc``: the class's ``status`` and ``code`` (500 for anything else).

    A foreign key refused on create is the client's input (422); elsewhere it is a conflict (409).
    """
    if not isinstance(exc, e.DataFlowError):
        return 500, "internal_error"
    return e.http_status(exc, creating=action in ("create", "bulk_create")), exc.code


def body(status: int, code: str, message: str, **extra: Any) -> dict:
    out: dict[str, Any] = {"error": code, "message": message}
    out.update({k: v for k, v in extra.items() if v is not None})
    rid = current().request_id
    if rid:
        out["request_id"] = rid
    return out


def error_response(exc: BaseException, action: str | None = None) -> JSONResponse:
    status, code = status_of(exc, action)
    if status >= 500:
        if status == 503:
            log.warning("request failed: database unavailable (%s)", type(exc).__name__)
            message = "the database is unavailable; retry later"
        else:
            log.error("request failed with an unexpected error", exc_info=exc)
            message = "internal server error"
        return JSONResponse(body(status, code, message), status_code=status,
                            headers={"Retry-After": "5"} if status == 503 else None)
    return JSONResponse(body(status, code, getattr(exc, "message", str(exc)), model=getattr(exc, "model", None),
                             field=getattr(exc, "field", None), path=getattr(exc, "path", None)),
                        status_code=status)


async def dataflow_error_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation (body shape, query and path parameters), without echoing input."""
    details = [{"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", ""), "type": err.get("type", "")}
               for err in getattr(exc, "errors", lambda: [])()]
    where = ", ".join(".".join(d["loc"]) for d in details[:5])
    return JSONResponse(body(422, "validation_error", f"invalid request: {where}" if where else "invalid request",
                             detail=details), status_code=422)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """``HTTPException`` (raised by hooks and endpoints, or by routing: 404, 405) in the same shape."""
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", None)
    message = detail if isinstance(detail, str) else "error"
    extra = {"detail": detail} if detail is not None and not isinstance(detail, str) else {}
    headers = dict(getattr(exc, "headers", None) or {})
    if status == 405:  # every method the path has, not only those of the first route that matched it
        headers["Allow"] = ", ".join(sorted(_methods_of(request)))
    return JSONResponse(body(status, _HTTP_CODES.get(status, "http_error"), message, **extra),
                        status_code=status, headers=headers or None)


def _methods_of(request: Request) -> set[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods or {"GET"}


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 422: "validation_error", 429: "too_many_requests"}


def install(app: Any) -> None:
    """Register the handlers on a FastAPI app (unexpected errors: see ``request_scope``)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    app.add_exception_handler(e.DataFlowError, dataflow_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
