"""``@app.endpoint(path)``: a plain function served as a JSON route.

Path and query parameters reach the function by name, converted by its annotations (FastAPI does
that from the signature). A ``def`` function runs in the server's thread pool, an ``async def`` one
on the event loop. The result goes out through our JSON-safe encoding (Decimal and UUID as strings,
datetimes as ISO 8601); a ``Response`` the function returns goes out as it is.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Sequence

from starlette.responses import JSONResponse, Response

from ..values import json_safe


class JSONSafeResponse(JSONResponse):
    """JSON with our encoding of Decimal, datetime, UUID and bytes."""

    def render(self, content: Any) -> bytes:
        return super().render(json_safe(content))


def respond(result: Any, status_code: int = 200) -> Response:
    if isinstance(result, Response):
        return result
    if result is None and status_code == 204:
        return Response(status_code=204)
    return JSONSafeResponse(result, status_code=status_code)


def handler_for(fn: Callable, status_code: int = 200) -> Callable:
    """``fn`` with the same signature, answering with ``respond``."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def handler(*args: Any, **kwargs: Any) -> Response:
            return respond(await fn(*args, **kwargs), status_code)
    else:
        @functools.wraps(fn)
        def handler(*args: Any, **kwargs: Any) -> Response:
            return respond(fn(*args, **kwargs), status_code)
    return handler


def route(fn: Callable, path: str, methods: Sequence[str] | None, **options: Any) -> dict[str, Any]:
    """Keyword arguments for ``FastAPI.add_api_route``."""
    if not path.startswith("/"):
        raise ValueError(f"endpoint path must start with '/', got {path!r}")
    from .schemas import ErrorBody

    options.setdefault("responses", {400: {"model": ErrorBody}, 422: {"model": ErrorBody}})
    return dict(path=path, endpoint=handler_for(fn, options.get("status_code") or 200), methods=[m.upper() for m in (methods or ["GET"])],
                response_model=None, name=options.pop("name", fn.__name__), **options)
