"""API gateway (the seed's "Examples Repository"): a proxy in front of a REST API, with API keys
and per-client rate limiting. Clients and their keys (stored hashed) live in a DataFlow model.

Run: ``UPSTREAM_URL=http://127.0.0.1:8000 python examples/api_gateway/app.py`` (SQLite by default,
``DATAFLOW_DATABASE_URL`` for PostgreSQL; address from DATAFLOW_HOST/DATAFLOW_PORT).
Clients: ``python examples/api_gateway/app.py add-client NAME RATE_PER_MINUTE`` prints a new key once.
Requests carry ``X-API-Key``; the upstream sees ``X-Client`` instead. 401 without a valid key, 429 (with
``Retry-After``) past the client's rate. /health and /ready are the gateway's own.
"""

import hashlib
import os
import secrets
import sys
import threading
import time
from typing import Annotated

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dataflow import DataFlow
from dataflow.models import Field

app = DataFlow()
UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8000").rstrip("/")
OPEN_PATHS = ("/health", "/ready")
HOP_HEADERS = {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "x-api-key", "content-length"}


@app.model
class Client:
    name: Annotated[str, Field(unique=True, max_length=100)]
    key_hash: Annotated[str, Field(unique=True, max_length=64)]
    rate_per_minute: int = 60
    active: bool = True


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def add_client(name: str, rate_per_minute: int) -> str:
    """Store a client; return its key (only its hash is kept)."""
    key = secrets.token_urlsafe(24)
    app.create("Client", {"name": name, "key_hash": digest(key), "rate_per_minute": rate_per_minute})
    return key


class Buckets:
    """A token bucket per client: ``rate`` requests a minute, bursts up to ``rate``."""

    def __init__(self) -> None:
        self.state: dict[int, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def take(self, client: int, rate: int) -> float:
        """0 when allowed, else the seconds until a request would be."""
        now = time.monotonic()
        per_second = rate / 60
        with self.lock:
            tokens, last = self.state.get(client, (float(rate), now))
            tokens = min(float(rate), tokens + (now - last) * per_second)
            if tokens >= 1:
                self.state[client] = (tokens - 1, now)
                return 0.0
            self.state[client] = (tokens, now)
            return (1 - tokens) / per_second if per_second else 60.0


buckets = Buckets()


class Gateway:
    """ASGI middleware: API key, rate limit, then the proxy (or the gateway's own open paths)."""

    def __init__(self, asgi) -> None:
        self.asgi = asgi
        self.http = httpx.AsyncClient(base_url=UPSTREAM, timeout=30)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.asgi(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        key = request.headers.get("x-api-key")
        if not key:
            return JSONResponse({"error": "unauthorized", "message": "send your key in X-API-Key"}, 401)
        from starlette.concurrency import run_in_threadpool

        client = await run_in_threadpool(app.read, "Client", {"key_hash": digest(key), "active": True},
                                         raise_on_not_found=False)
        if client is None:
            return JSONResponse({"error": "unauthorized", "message": "unknown or revoked API key"}, 401)
        wait = buckets.take(client["id"], client["rate_per_minute"])
        if wait:
            return JSONResponse({"error": "too_many_requests",
                                 "message": f"rate limit of {client['rate_per_minute']} requests a minute"},
                                429, headers={"Retry-After": str(max(1, round(wait)))})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        headers["x-client"] = client["name"]
        try:
            upstream = await self.http.request(request.method, request.url.path, params=request.query_params,
                                               headers=headers, content=await request.body())
        except httpx.HTTPError:
            return JSONResponse({"error": "bad_gateway", "message": "the upstream API did not answer"}, 502)
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS | {"content-encoding"}}
        return Response(upstream.content, upstream.status_code, headers=out)


app.add_middleware(Gateway)

if __name__ == "__main__":
    if sys.argv[1:2] == ["add-client"]:
        print(add_client(sys.argv[2], int(sys.argv[3])))
    else:
        app.start()
