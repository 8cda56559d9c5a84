"""The interactive API docs, served offline: ``/docs`` (Swagger UI) and ``/redoc``.

Their scripts and styles come from the ``fastapi-offline`` package's static files, served by the app
under ``/docs/assets``, so the pages work on hosts with no internet access (no CDN).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def assets_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def install(app: Any, title: str) -> None:
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")
    oauth = "/docs/oauth2-redirect"

    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} - API docs", oauth2_redirect_url=f"{root}{oauth}",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png")

    async def redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{title} - API reference",
                              redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{ASSETS}/favicon.png", with_google_fonts=False)

    app.add_api_route("/docs", swagger, include_in_schema=False)
    app.add_api_route(oauth, redirect, include_in_schema=False)
    app.add_api_route("/redoc", redoc, include_in_schema=False)
