"""The control plane's FastAPI application.

``create_app()`` builds the app on the process's settings (``lambdas.settings``); tests
and the local runtime pass their own ``Container`` (moto clients) instead. The same app
runs on Lambda behind Mangum (``lambdas.handlers.api``) and under uvicorn
(``seg_local``).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware

from lambdas.api import (
    errors,
    routes_audit,
    routes_clusters,
    routes_console,
    routes_devices,
    routes_gateway,
    routes_health,
    routes_mdm,
    routes_signing,
    routes_ui,
)
from lambdas.api.deps import Container
from lambdas.settings import Settings, load_settings

TITLE = "Secure Email Gateway control plane"
API_VERSION = "1.0.0"
DESCRIPTION = (
    "Device Services (MDM) events, gateway policy and access events, and the console "
    "(dashboard, clusters, credential substitution). Three kinds of callers, each with "
    "its own bearer credential and only its own routes. Errors are "
    '`{"detail": "<reason>"}`.'
)


def create_app(
    settings: Settings | None = None,
    *,
    container: Container | None = None,
) -> FastAPI:
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, which the
    # console's Content-Security-Policy must not allow on this origin. The document
    # itself stays public at /openapi.json (and in lambdas/api/openapi.json).
    app = FastAPI(
        title=TITLE,
        version=API_VERSION,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    if container is None:
        container = Container(settings or load_settings())
    app.state.container = container
    errors.install(app)
    # Snapshots of large tenants compress ~10x; Lambda's response limit is 6 MB.
    app.add_middleware(GZipMiddleware, minimum_size=4096)
    app.include_router(routes_health.router)
    app.include_router(routes_mdm.router)
    app.include_router(routes_gateway.router)
    app.include_router(routes_console.router)
    app.include_router(routes_devices.router)
    app.include_router(routes_audit.router)
    app.include_router(routes_clusters.router)
    app.include_router(routes_signing.console)
    app.include_router(routes_signing.gateway)
    app.include_router(routes_ui.router)
    return app
