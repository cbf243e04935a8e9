"""The HTTP application: ``create_app(settings)``.

The only module that turns errors into HTTP responses. Every non-2xx body,
the framework's own included, is the seed's envelope
``{trackingId, error: {code, message, fix?}}``; every response carries
``X-Tracking-Id``, the same id as the body and the request's log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyhouse import __version__, errors
from keyhouse.accounts.endpoints import account_router
from keyhouse.accounts.endpoints import admin_router as accounts_admin_router
from keyhouse.audit.endpoints import router as events_router
from keyhouse.config import Settings, load_settings
from keyhouse.environments.endpoints import router as environments_router
from keyhouse.ids import ID_RE, new_ulid
from keyhouse.keys.endpoints import admin_router as keys_admin_router
from keyhouse.keys.endpoints import router as keys_router
from keyhouse.keys.fastpath import try_fast_list
from keyhouse.keys.format import KeyFormat, Kind
from keyhouse.logs import configure_logging, get_logger
from keyhouse.openapi import install_openapi
from keyhouse.responses import JSONResponse
from keyhouse.runtime import Runtime
from keyhouse.schemas import ErrorResponse
from keyhouse.verify.endpoints import router as verify_router
from keyhouse.verify.fastpath import try_fast_verify

__all__ = ["app_from_env", "create_app"]

log = get_logger("keyhouse")
access_log = get_logger("keyhouse.access")

# A key in a URL ends up in proxy logs, browser history and Referer headers.
KEY_QUERY_NAMES = frozenset({"key", "api_key", "apikey", "token", "access_token"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Header limits, checked before anything reads a header. uvicorn with httptools
# sets none of its own (an 8 MiB header line reaches the app), so these are
# the limits clients meet, answered with the envelope. A line is name + value.
MAX_HEADER_LINE = 8 * 1024
MAX_HEADERS_TOTAL = 32 * 1024
# The shortest key an operator can import (keys/schemas.py, ImportKeyRequest).
_IMPORTED_KEY_MIN_LENGTH = 20


# -- the envelope ---------------------------------------------------------------


def error_body(tracking_id: str, exc: errors.KeyhouseError) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": str(exc.code), "message": exc.message}
    if exc.fix:
        detail["fix"] = exc.fix
    if exc.provider:
        detail["provider"] = exc.provider
    if exc.provider_code:
        detail["providerCode"] = exc.provider_code
    return {"trackingId": tracking_id, "error": detail}


def error_response(tracking_id: str, exc: errors.KeyhouseError) -> JSONResponse:
    return JSONResponse(
        error_body(tracking_id, exc), status_code=exc.status_code, headers=exc.headers
    )


def _tracking_id(request: Request) -> str:
    tracking_id: str = request.scope.get("state", {}).get("tracking_id") or "req_unknown"
    return tracking_id


def _validation_error(exc: RequestValidationError) -> errors.BadRequest:
    """400 naming the offending member, from pydantic's first error."""
    problems = list(exc.errors())
    # A member that may not be sent at all says more than a missing one: report it first.
    problems.sort(key=lambda p: p.get("type") != "extra_forbidden")
    first = problems[0] if problems else {}
    kind = first.get("type", "")
    loc = [str(part) for part in first.get("loc", ())]
    where, field = (loc[0], ".".join(loc[1:])) if loc else ("body", "")
    if kind == "json_invalid":
        return errors.BadRequest(
            "The request body is not valid JSON.",
            fix="Send a JSON object with 'Content-Type: application/json'.",
        )
    if kind == "missing" and where == "body" and not field:
        return errors.BadRequest(
            "The request body is missing.", fix="Send a JSON object; see /docs for its members."
        )
    if kind == "extra_forbidden":
        return errors.BadRequest(
            f"Unknown member {field!r} in the request body; it cannot be set here.",
            fix="Remove it; see /docs for the members this request accepts.",
        )
    label = f"{where} parameter {field!r}" if where in {"query", "path", "header"} else repr(field)
    message = str(first.get("msg", "is not valid"))
    more = f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return errors.BadRequest(
        f"Invalid {label}: {message}.{more}",
        fix="Correct the value; see /docs for the accepted values.",
    )


def _http_error(exc: StarletteHTTPException) -> errors.KeyhouseError:
    headers = dict(exc.headers or {})
    mapped: errors.KeyhouseError
    if exc.status_code == 404:
        mapped = errors.NotFound("No such route.", fix="See /docs for the routes keyhouse serves.")
    elif exc.status_code == 405:
        mapped = errors.MethodNotAllowed()
    elif exc.status_code == 413:
        mapped = errors.PayloadTooLarge()
    elif exc.status_code == 415:
        mapped = errors.UnsupportedMediaType()
    elif 400 <= exc.status_code < 500:
        mapped = errors.BadRequest(str(exc.detail))
        mapped.status_code = exc.status_code
    else:
        mapped = errors.KeyhouseError()
    mapped.headers.update(headers)
    return mapped


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path accepts (for the Allow header)."""
    path = request.url.path
    methods: set[str] = set()
    pending: list[Any] = list(request.app.router.routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            pending.extend(included.routes)
            continue
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


RETRY_AFTER_SECONDS = 2


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached (or is busy), not a bug."""
    if isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.TimeoutError
        | sa_exc.DisconnectionError
        | OSError,
    ):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


# -- middleware -----------------------------------------------------------------


class RequestMiddleware:
    """Tracking id, access log, request guards and the last-resort 500.

    Pure ASGI (no BaseHTTPMiddleware) so it adds nothing per request beyond
    what it does. It sits outside FastAPI's exception handling, so it also
    catches what escapes it and answers 500 ``internal_error`` with no
    internals, instead of Starlette's plain-text page.
    """

    def __init__(self, app: ASGIApp, *, max_body: int, key_format: KeyFormat) -> None:
        self.app = app
        self.max_body = max_body
        self.key_format = key_format
        self._key_prefix = re.compile("|".join(map(re.escape, key_format.prefixes.values())))
        # A bound logger made once (create_app configured logging first): the
        # module's lazy proxy builds one on every call.
        self._access_log = access_log.bind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ulid, _ = new_ulid()
        tracking_id = f"req_{ulid}"
        scope.setdefault("state", {})["tracking_id"] = tracking_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                # Responses may hold keys: no cache anywhere keeps them.
                ours = [
                    (b"x-tracking-id", tracking_id.encode("ascii")),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-store"),
                ]
                for name, value in scope["state"].get("ratelimit_headers", {}).items():
                    ours.append((name.lower().encode("latin-1"), value.encode("latin-1")))
                # Ours replace any the app set, as MutableHeaders' item
                # assignment would, in one pass instead of one scan a header
                # (send_wrapper: 0.25 s -> 0.14 s in cProfile of 20,000 /verify).
                names = {name for name, _ in ours}
                message["headers"] = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() not in names
                ] + ours
            await send(message)

        async def reject(exc: errors.KeyhouseError) -> None:
            await error_response(tracking_id, exc)(scope, receive, send_wrapper)

        # bind/reset rather than the bound_contextvars() context manager: the
        # same, without a generator per request.
        tokens = structlog.contextvars.bind_contextvars(tracking_id=tracking_id)
        try:
            guard = self._check_headers(scope) or self._check_query(scope)
            if guard is not None:
                await reject(guard)
                return
            replay, guard, body = await self._read_body(scope, receive)
            if guard is not None:
                await reject(guard)
                return
            if (
                scope["path"] == "/verify"
                and scope["method"] == "POST"
                and await try_fast_verify(scope["app"].state.runtime, scope, body, send_wrapper)
            ):
                return
            if (
                scope["path"] == "/keys"
                and scope["method"] == "GET"
                and await try_fast_list(scope["app"].state.runtime, scope, replay, send_wrapper)
            ):
                return
            await self.app(scope, replay, send_wrapper)
        except Exception as exc:
            if database_unavailable(exc):
                # An outage, not a bug: 503 with Retry-After, and no stack.
                log.warning("database_unavailable", error_type=type(exc).__name__)
                if not response_started:
                    await reject(
                        errors.ServiceUnavailable(
                            "The database is not reachable right now.",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                        )
                    )
                return
            # Type and stack only: an exception's text can carry request data.
            stack = traceback.format_list(traceback.extract_tb(exc.__traceback__))
            log.error("unhandled_exception", error_type=type(exc).__name__, stack="".join(stack))
            if not response_started:
                await reject(errors.KeyhouseError())
        finally:
            self._access_log.info(
                "request",
                method=scope["method"],
                path=self._safe_path(scope["path"]),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                client=(scope.get("client") or ("", 0))[0],
            )
            structlog.contextvars.reset_contextvars(**tokens)

    @staticmethod
    def _check_headers(scope: Scope) -> errors.KeyhouseError | None:
        total = 0
        for name, value in scope["headers"]:
            line = len(name) + len(value)
            if line > MAX_HEADER_LINE:
                return errors.BadRequest(
                    f"A request header is longer than {MAX_HEADER_LINE} bytes.",
                    fix=f"Send each header (name and value) in at most {MAX_HEADER_LINE} bytes.",
                )
            total += line
        if total > MAX_HEADERS_TOTAL:
            return errors.BadRequest(
                f"The request headers total more than {MAX_HEADERS_TOTAL} bytes.",
                fix=f"Send at most {MAX_HEADERS_TOTAL} bytes of headers (names and values).",
            )
        return None

    def _check_query(self, scope: Scope) -> errors.KeyhouseError | None:
        raw = scope.get("query_string", b"")
        if not raw:
            return None
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        for name, value in pairs:
            if name.lower() in KEY_QUERY_NAMES or self._looks_like_key(value):
                return errors.KeyInQuery()
        return None

    def _looks_like_key(self, value: str) -> bool:
        return self.key_format.parse(value).kind is not Kind.FOREIGN

    def _safe_path(self, path: str) -> str:
        """The path with anything key-like masked: a key pasted into a URL stays out of logs.

        Imported keys have no shape of ours (any 20 to 200 URL-safe characters),
        so every segment of 20 characters or more that is not an id is masked:
        keyhouse's own segments are ids or words shorter than that.
        """
        if len(path) < _IMPORTED_KEY_MIN_LENGTH and self._key_prefix.search(path) is None:
            return path
        parts = []
        for part in path.split("/"):
            if self._looks_like_key(part) or (
                len(part) >= _IMPORTED_KEY_MIN_LENGTH and ID_RE.fullmatch(part) is None
            ):
                part = "[redacted]"
            parts.append(part)
        return "/".join(parts)

    async def _read_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[Receive, errors.KeyhouseError | None, bytes]:
        """Read the whole body (at most ``max_body`` bytes), then replay it to the app."""
        if scope["method"] not in _BODY_METHODS:
            return receive, None, b""
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        too_large = errors.PayloadTooLarge(
            fix=f"Send at most {self.max_body} bytes; keyhouse's requests are small JSON objects."
        )
        if declared is not None:
            try:
                if int(declared) > self.max_body:
                    return receive, too_large, b""
            except ValueError:
                bad = errors.BadRequest("The Content-Length header is not a number.")
                return receive, bad, b""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return receive, too_large, b""
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            media = content_type.split(";", 1)[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                return receive, errors.UnsupportedMediaType(), b""
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, None, body


# -- the application --------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    """The keyhouse ASGI application for ``settings``."""
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.build(settings)
        app.state.runtime = runtime
        flushers = [
            asyncio.create_task(
                runtime.last_used.run(runtime.db, settings.last_used_flush_seconds)
            ),
            asyncio.create_task(runtime.limiter.run(settings.usage_flush_seconds)),
        ]
        if not runtime.db.is_sqlite:
            flushers.append(asyncio.create_task(runtime.change_listener.run()))
        try:
            yield
        finally:
            # Graceful shutdown (SIGTERM/SIGINT in uvicorn): stop the loops,
            # then close() writes what is pending, so no use or count is lost.
            for task in flushers:
                task.cancel()
            for task in flushers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await runtime.close()

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
        # FastAPI's native OpenTelemetry looks up the global tracer, meter and
        # logger providers on every request (~12 us of a 72 us POST /verify,
        # cProfile), and keyhouse configures none of them.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    key_format = KeyFormat(settings.key_prefix_secret, settings.key_prefix_public)
    app.add_middleware(
        RequestMiddleware,
        max_body=settings.max_body_bytes,
        key_format=key_format,
    )

    @app.exception_handler(errors.KeyhouseError)
    async def _keyhouse_error(request: Request, exc: errors.KeyhouseError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("server_error", code=str(exc.code))
        return error_response(_tracking_id(request), exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_tracking_id(request), _validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        mapped = _http_error(exc)
        if exc.status_code == 405:
            # Starlette's Allow names the first route of the path only.
            mapped.headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(_tracking_id(request), mapped)

    @app.exception_handler(errors.ConfigurationError)
    async def _configuration(request: Request, exc: errors.ConfigurationError) -> JSONResponse:
        log.error("configuration_error", detail=str(exc))
        return error_response(_tracking_id(request), errors.KeyhouseError())

    # Hot routes first: routing tries them in this order.
    app.include_router(verify_router)
    app.include_router(keys_router)
    app.include_router(environments_router)
    app.include_router(account_router)
    app.include_router(events_router)
    app.include_router(accounts_admin_router)
    app.include_router(keys_admin_router)

    @app.get("/healthz", tags=["meta"], summary="Liveness")
    async def healthz() -> dict[str, str | int]:
        """200 while the process serves requests; `pid` says which worker answered."""
        return {"status": "ok", "pid": os.getpid()}

    @app.get(
        "/readyz",
        tags=["meta"],
        summary="Readiness",
        responses={503: {"model": ErrorResponse, "description": "Service Unavailable"}},
    )
    async def readyz(request: Request) -> dict[str, str]:
        """200 when the database answers; 503 `service_unavailable` otherwise.

        The details say how limits are counted and, with Redis configured,
        whether it answers (without it keyhouse keeps serving, with in-process
        limits)."""
        runtime: Runtime = request.app.state.runtime
        try:
            async with runtime.db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            log.warning("readyz_database_unreachable")
            raise errors.ServiceUnavailable(
                "The database is not reachable.", headers={"Retry-After": "2"}
            ) from None
        return {"status": "ready", "database": "ok", **(await runtime.limiter.health())}

    install_openapi(app)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and for ``serve --workers N``."""
    return create_app(load_settings())
