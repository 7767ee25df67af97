"""API docs that work offline: /docs is Swagger UI from the fastapi-offline package's
files (FastAPI's own page loads it from a CDN), and /openapi.json also holds the
request models the routes' `request_body` refers to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from digitlab.web.models import REQUEST_SCHEMAS


def add_docs(app: FastAPI) -> None:
    """/docs, its assets under /docs-assets, and the request models in /openapi.json."""
    _add_request_schemas(app)
    assets = _assets()
    if assets is None:  # still useful: the spec itself, readable in any browser

        @app.get("/docs", include_in_schema=False)
        async def bare_docs() -> HTMLResponse:
            return HTMLResponse(
                "<!doctype html><title>digitlab API</title><p>Interactive docs need the "
                'fastapi-offline package. The API description: <a href="openapi.json">'
                "openapi.json</a>.</p>"
            )

        return
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title="digitlab API",
            swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs-assets/favicon.png",
            # validatorUrl None: Swagger UI would otherwise call validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )


def _assets() -> Path | None:
    """Swagger UI's files as shipped by the fastapi-offline package, if installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _add_request_schemas(app: FastAPI) -> None:
    """Extend FastAPI's OpenAPI document (built once, on first use) with `REQUEST_SCHEMAS`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            spec.setdefault("components", {}).setdefault("schemas", {}).update(REQUEST_SCHEMAS)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  (FastAPI's documented way)
