"""``Web``: the web side of one ``DataFlow`` (what ``app.endpoint``, ``app.resource``, ``app.middleware``,
``app.add_middleware``, ``app.start()`` and ``app.asgi`` delegate to).

One FastAPI application per ``DataFlow``. Routes are added as they are declared; resources are
built when the application is first served (``asgi``), so their models may be declared after them.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, Callable, Sequence

from fastapi import FastAPI

from . import docs, endpoints, errors, health, middleware, server
from .request_scope import RequestScope
from ..errors import ModelError
from .resources import Resource

RESERVED = {"/docs", "/redoc", "/openapi.json", "/health", "/ready"}


class Web:
    def __init__(self, db: Any, title: str = "DataFlow API") -> None:
        self.db = db
        self.title = title
        self.resources: list[Resource] = []
        self.filters: middleware.RequestFilters | None = None
        self._built = False
        self._user_paths: set[tuple[str, str]] = set()

        @asynccontextmanager
        async def lifespan(_app: FastAPI):
            yield
            db.engine.dispose()  # graceful shutdown: the requests are done; close the pool

        self.app = FastAPI(title=title, docs_url=None, redoc_url=None, lifespan=lifespan)
        errors.install(self.app)
        docs.install(self.app, title)
        # With multi_tenant on, the tenant of each request is its tenant header (none: operations fail closed).
        self.app.add_middleware(RequestScope, tenant_header=db.config.tenant_header if db.config.multi_tenant else None)

    # ---------------------------------------------------------------- declaring
    def endpoint(self, path: str, *, methods: Sequence[str] | None = None, **options: Any) -> Callable:
        """``@app.endpoint("/orders/{order_id}")``: serve a function's result as JSON (GET unless ``methods``)."""
        def register(fn: Callable) -> Callable:
            kwargs = endpoints.route(fn, path, methods, **options)
            self._user_paths.update((m, path) for m in kwargs["methods"])
            self._add(kwargs)
            return fn
        return register

    def resource(self, name: str, *, path: str | None = None) -> Callable:
        """``@app.resource("users") class UserResource: ...``: REST routes for a model, with the class's hooks."""
        def register(cls: type) -> type:
            prefix = path or f"/{name}"
            if prefix.rstrip("/") in RESERVED:
                raise ModelError(f"@app.resource({name!r}): the path {prefix} is taken by the app "
                                 f"({', '.join(sorted(RESERVED))}); pass path='/api/{name}'", model=name)
            self.resources.append(Resource(self.db, name, cls, path))
            if self._built:
                self._build_resource(self.resources[-1])
            return cls
        return register

    def middleware(self, name: str) -> Callable:
        """``@app.middleware("tenant_isolation") def f(query, request)``: narrow every query of a request."""
        def register(fn: Callable) -> Callable:
            if self.filters is None:
                filters = middleware.RequestFilters()
                middleware.install(self.db, filters)
                self.filters = filters
            self.filters.add(name, fn)
            return fn
        return register

    def add_middleware(self, cls: Any, **options: Any) -> None:
        """Plain ASGI/Starlette middleware, e.g. ``app.add_middleware(GZipMiddleware, minimum_size=500)``."""
        self.app.add_middleware(cls, **options)

    # ---------------------------------------------------------------- serving
    @property
    def asgi(self) -> FastAPI:
        """The ASGI application (for uvicorn, gunicorn's uvicorn worker, hypercorn, or a test client)."""
        if not self._built:
            self._built = True
            for r in self.resources:
                self._build_resource(r)
            for route in health.routes(self.db):
                if ("GET", route["path"]) not in self._user_paths:
                    self._add(route)
        return self.app

    def start(self, host: str | None = None, port: int | str | None = None, **options: Any) -> None:
        """Serve until SIGTERM/SIGINT (host/port: arguments, else DATAFLOW_HOST/DATAFLOW_PORT, else 0.0.0.0:8000)."""
        server.serve(self.asgi, host, port, **options)

    def _build_resource(self, r: Resource) -> None:
        for kwargs in r.build():
            self._add(kwargs)

    def _add(self, kwargs: dict[str, Any]) -> None:
        self.app.add_api_route(**kwargs)
        self.app.openapi_schema = None  # rebuilt on the next request for it
