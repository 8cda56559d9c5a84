"""The web layer: endpoints, generated REST resources, request middleware, the server.

Imported on first use of ``app.endpoint``/``app.resource``/``app.middleware``/``app.start``/``app.asgi``,
so ``import dataflow`` does not import FastAPI. Needs the ``web`` extra (FastAPI, uvicorn, the
offline Swagger UI assets).
"""

from .app import Web

__all__ = ["Web"]
