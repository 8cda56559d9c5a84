"""The ASGI middleware that puts the current request into the operations context.

For the length of each HTTP request, ``dataflow.operations.context.current()`` carries the
Starlette request and a request id (the client's ``X-Request-ID`` when it is a plain token, else a
new one), in every thread the request's work runs in (Starlette's thread pool copies the context).
The id is sent back in the ``X-Request-ID`` response header.
"""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request

from ..operations.context import scope

_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestScope:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope_, receive, send) -> None:
        if scope_["type"] != "http":
            await self.app(scope_, receive, send)
            return
        request = Request(scope_, receive)
        given = request.headers.get("x-request-id", "")
        rid = given if _TOKEN.fullmatch(given) else uuid.uuid4().hex
        header = (b"x-request-id", rid.encode("ascii"))

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], header]
            await send(message)

        with scope(request=request, request_id=rid):
            await self.app(scope_, receive, send_with_id)
