"""``app.start()``: serve the ASGI app with uvicorn until SIGTERM/SIGINT.

Host and port: the arguments, else ``DATAFLOW_HOST`` / ``DATAFLOW_PORT``, else 0.0.0.0:8000. On a
signal uvicorn stops accepting connections, lets in-flight requests finish (at most
``graceful_timeout`` seconds), then runs the app's shutdown, which closes the connection pool.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ValidationError

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8000


def address(host: str | None = None, port: int | str | None = None) -> tuple[str, int]:
    host = host or os.environ.get("DATAFLOW_HOST") or DEFAULT_HOST
    raw = port if port is not None else os.environ.get("DATAFLOW_PORT") or DEFAULT_PORT
    try:
        number = int(raw)
    except (TypeError, ValueError):
        raise ValidationError("DATAFLOW_PORT (or port=) must be an integer from 0 to 65535") from None
    if not 0 <= number <= 65535:
        raise ValidationError("DATAFLOW_PORT (or port=) must be an integer from 0 to 65535")
    return host, number


def serve(asgi: Any, host: str | None = None, port: int | str | None = None, *,
          graceful_timeout: float = 25.0, **options: Any) -> None:
    import uvicorn

    host, number = address(host, port)
    level = os.environ.get("DATAFLOW_LOG_LEVEL", "info").lower()
    options.setdefault("log_level", level if level in ("critical", "error", "warning", "info", "debug") else "info")
    config = uvicorn.Config(asgi, host=host, port=number, timeout_graceful_shutdown=graceful_timeout,
                            lifespan="on", **options)
    uvicorn.Server(config).run()
