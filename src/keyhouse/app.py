"""The HTTP application: ``create_app(settings)``.

Assembles the parts, each in its own module: ``http/middleware.py`` (what
every request passes through), ``http/errors.py`` (the envelope, the only
place errors become responses), ``http/pipeline.py`` (the steps of a
request), the domains' routers, ``openapi.py``, and the runtime's lifetime
(``Runtime.start``/``close``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from keyhouse import __version__
from keyhouse.accounts.endpoints import account_router
from keyhouse.accounts.endpoints import admin_router as accounts_admin_router
from keyhouse.apidocs.endpoints import router as apidocs_router
from keyhouse.audit.endpoints import admin_router as events_admin_router
from keyhouse.audit.endpoints import router as events_router
from keyhouse.config import Settings, load_settings
from keyhouse.environments.endpoints import router as environments_router
from keyhouse.forward_auth.endpoints import ForwardAuthAnswers
from keyhouse.forward_auth.endpoints import router as forward_auth_router
from keyhouse.http.errors import install_error_handlers
from keyhouse.http.middleware import RequestMiddleware
from keyhouse.http.pipeline import direct_routes
from keyhouse.http.query_names import check_query_names
from keyhouse.keys.admin_endpoints import router as keys_operator_router
from keyhouse.keys.endpoints import admin_router as keys_admin_router
from keyhouse.keys.endpoints import router as keys_router
from keyhouse.keys.endpoints import verify_router
from keyhouse.keys.format import KeyFormat
from keyhouse.logs import configure_logging
from keyhouse.meta.endpoints import router as meta_router
from keyhouse.openapi import install_openapi, operation_id
from keyhouse.responses import JSONResponse
from keyhouse.runtime import Runtime
from keyhouse.scopes.endpoints import admin_router as scopes_admin_router

__all__ = ["app_from_env", "create_app"]


def create_app(settings: Settings) -> FastAPI:
    """The keyhouse ASGI application for ``settings``."""
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Runtime.serving(settings) as runtime:
            app.state.runtime = runtime
            yield

    app = FastAPI(
        title="keyhouse",
        version=__version__,
        description=(
            "A self-hosted API key service. Authenticate with "
            "`Authorization: Bearer <secret key>`. Every error is "
            "`{trackingId, error: {code, message, fix?}}`."
        ),
        lifespan=lifespan,
        default_response_class=JSONResponse,
        # keyhouse serves its own, with no CDN (apidocs/).
        docs_url=None,
        redoc_url=None,
        # FastAPI's native OpenTelemetry looks up the global tracer, meter and
        # logger providers on every request (~12 us of a 72 us POST /verify,
        # cProfile), and keyhouse configures none of them.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Starlette answers /keys/ with a 307 to a URL built from the
        # client's Host header (an open redirect through a proxy that passes
        # Host on) and no body. One URL per resource instead: /keys/ is 404
        # not_found, with a fix naming /keys (http/errors.py).
        redirect_slashes=False,
        # listKeys, createKey, ...: what generated clients name their calls.
        generate_unique_id_function=operation_id,
        # Every route refuses query parameters it does not take (400, naming
        # them); direct routes check in DirectRoute, with the same function.
        dependencies=[Depends(check_query_names)],
    )
    install_error_handlers(app)
    # Hot routes first: routing tries them in this order.
    app.include_router(verify_router)
    app.include_router(keys_router)
    app.include_router(forward_auth_router)
    app.include_router(environments_router)
    app.include_router(account_router)
    app.include_router(events_router)
    app.include_router(accounts_admin_router)
    app.include_router(keys_admin_router)
    app.include_router(keys_operator_router)
    app.include_router(events_admin_router)
    app.include_router(scopes_admin_router)
    app.include_router(meta_router)
    app.include_router(apidocs_router)
    app.add_middleware(
        RequestMiddleware,
        max_body=settings.max_body_bytes,
        key_format=KeyFormat(settings.key_prefix_secret, settings.key_prefix_public),
        direct=direct_routes(app.routes),
    )
    # Outermost: it sees the answers RequestMiddleware's guards give too.
    app.add_middleware(ForwardAuthAnswers)
    install_openapi(app)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and for ``serve --workers N``."""
    return create_app(load_settings())
