"""The ASGI middleware that puts the current request into the operations context.

For the length of each HTTP request, ``dataflow.operations.context.current()`` carries the
Starlette request and a request id (the client's ``X-Request-ID`` when it is a plain token, else a
new one), in every thread the request's work runs in (Starlette's thread pool copies the context).
The id is sent back in the ``X-Request-ID`` response header. With ``multi_tenant`` on, the tenant of
the request comes from the ``tenant_header`` header (``X-Tenant-ID`` by default); a request without
it runs with no tenant, so every operation on tenant-scoped data is refused (403).
"""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request

from ..operations.context import scope
from .errors import error_response

_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestScope:
    def __init__(self, app, tenant_header: str | None = None) -> None:
        self.app = app
        self.tenant_header = tenant_header

    async def __call__(self, scope_, receive, send) -> None:
        if scope_["type"] != "http":
            await self.app(scope_, receive, send)
            return
        request = Request(scope_, receive)
        given = request.headers.get("x-request-id", "")
        rid = given if _TOKEN.fullmatch(given) else uuid.uuid4().hex
        header = (b"x-request-id", rid.encode("ascii"))

        started = False

        async def send_with_id(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        tenant = {}
        if self.tenant_header:  # multi-tenant: the header names the tenant; without it, tenant data is refused
            value = request.headers.get(self.tenant_header, "").strip()
            tenant = {"tenant": value or None}
        with scope(request=request, request_id=rid, **tenant):
            try:
                await self.app(scope_, receive, send_with_id)
            except Exception as exc:  # anything unexpected: logged, a bare 500, and the connection stays usable
                if started:
                    raise
                await error_response(exc)(scope_, receive, send_with_id)
