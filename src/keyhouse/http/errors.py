"""The error envelope: every non-2xx body keyhouse sends, rendered here.

``{trackingId, error: {code, message, fix?, provider?, providerCode?}}``
(the seed's ``Error`` object; optional members are left out, never null),
with the same tracking id as the ``X-Tracking-Id`` header and the request's
log line. Services raise ``keyhouse.errors``; this module is the only place
they become HTTP responses, and the framework's own errors (a bad
parameter, an unknown route, a wrong method) are mapped onto the same tree
first, so a client parses one shape whatever failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from keyhouse import errors
from keyhouse.db.integrity import is_conflict
from keyhouse.keys.format import IMPORTED_KEY_MIN_LENGTH
from keyhouse.logs import get_logger
from keyhouse.responses import JSONResponse

__all__ = [
    "RETRY_AFTER_SECONDS",
    "database_unavailable",
    "error_body",
    "error_response",
    "install_error_handlers",
    "tracking_id_of",
    "validation_error",
]

log = get_logger("keyhouse")

# Retry-After of a 503 for a database outage: long enough not to hammer a
# recovering server, short enough that clients come back within seconds.
RETRY_AFTER_SECONDS = 2


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
    """The envelope for ``exc``; a 5xx is logged (its code only: no request data).

    A 503 is an expected refusal (the database or a dependency is away, and
    keyhouse says so; ``/readyz`` during an outage): a warning, not an error;
    so is a 502 ``provider_error`` (the gateway's upstream failed).
    """
    if exc.status_code == 503:
        log.warning("service_unavailable", code=str(exc.code))
    elif isinstance(exc, errors.ProviderError):
        # The gateway's upstream failed (gateway/), not keyhouse: said, not an error.
        log.warning("provider_error", provider=exc.provider, provider_code=exc.provider_code)
    elif exc.status_code >= 500:
        log.error("server_error", code=str(exc.code))
    return JSONResponse(
        error_body(tracking_id, exc), status_code=exc.status_code, headers=exc.headers
    )


def tracking_id_of(request: Request) -> str:
    """The id ``RequestMiddleware`` gave this request."""
    tracking_id: str = request.scope.get("state", {}).get("tracking_id") or "req_unknown"
    return tracking_id


def validation_error(problems: Iterable[Mapping[str, Any]]) -> errors.BadRequest:
    """400 ``validation_error`` naming the offending member, from pydantic's errors.

    ``problems`` is pydantic's ``ValidationError.errors()`` with each ``loc``
    starting at where the value came from (``body``, ``query``, ``path``,
    ``header``), as FastAPI reports them: one mapping for every request.
    """
    ordered = list(problems)
    # A member that may not be sent at all says more than a missing one: report it first.
    ordered.sort(key=lambda p: p.get("type") != "extra_forbidden")
    first = ordered[0] if ordered else {}
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
        # A member's name is the client's text: a key pasted as a name must
        # not come back in the body. keyhouse's members are shorter than the
        # shortest key (20 characters).
        if len(field) >= IMPORTED_KEY_MIN_LENGTH:
            field = f"{field[:3]}… ({len(field)} characters)"
        return errors.BadRequest(
            f"Unknown member {field!r} in the request body; it cannot be set here.",
            fix="Remove it; see /docs for the members this request accepts.",
        )
    label = f"{where} parameter {field!r}" if where in {"query", "path", "header"} else repr(field)
    message = str(first.get("msg", "is not valid"))
    more = f" ({len(ordered) - 1} more problem(s))" if len(ordered) > 1 else ""
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


def _routes_of(request: Request, path: str) -> list[Any]:
    """The routes whose path pattern matches ``path``."""
    found: list[Any] = []
    pending: list[Any] = list(request.app.router.routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            pending.extend(included.routes)
            continue
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            found.append(route)
    return found


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path accepts (for the Allow header).

    HEAD wherever GET is: ``RequestMiddleware`` answers it as GET without a body.
    """
    methods: set[str] = set()
    for route in _routes_of(request, request.url.path):
        methods.update(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _not_found(request: Request) -> errors.NotFound:
    """404 for a path no route serves; one that only adds a trailing slash says so.

    The fix names the route's own path (``/keys/{id}``), never the client's
    text: a path can hold a key pasted by mistake.
    """
    path = request.url.path
    if len(path) > 1 and path.endswith("/"):
        routes = _routes_of(request, path.rstrip("/"))
        if routes:
            route_path = min(getattr(route, "path", "") for route in routes)
            return errors.NotFound(
                "No such route: keyhouse's paths do not end with '/'.",
                fix=f"Use {route_path} without the trailing slash.",
            )
    return errors.NotFound("No such route.", fix="See /docs for the routes keyhouse serves.")


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


def install_error_handlers(app: FastAPI) -> None:
    """Render ``KeyhouseError`` and the framework's own errors as the envelope."""

    @app.exception_handler(errors.KeyhouseError)
    async def _keyhouse_error(request: Request, exc: errors.KeyhouseError) -> JSONResponse:
        return error_response(tracking_id_of(request), exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(tracking_id_of(request), validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The router's 404 carries no headers.
        mapped = _not_found(request) if exc.status_code == 404 else _http_error(exc)
        if exc.status_code == 405:
            # Starlette's Allow names the first route of the path only.
            mapped.headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(tracking_id_of(request), mapped)

    @app.exception_handler(sa_exc.IntegrityError)
    async def _constraint(request: Request, exc: sa_exc.IntegrityError) -> JSONResponse:
        # The services turn the constraints they know into their own 409s; a
        # unique or foreign key one they did not map is still a conflict with
        # what another request stored at the same time, not a fault to answer
        # 500. A NOT NULL or CHECK violation is a bug: the last-resort 500.
        if not is_conflict(exc):
            raise exc
        # The statement and its values stay out of the log: a hash, a name.
        log.warning("constraint_violation", error_type=type(exc.orig).__name__)
        conflict = errors.Conflict(
            "The request conflicts with something stored meanwhile.",
            fix="Read the current state (GET), then repeat the request if it still applies.",
        )
        return error_response(tracking_id_of(request), conflict)

    @app.exception_handler(errors.ConfigurationError)
    async def _configuration(request: Request, exc: errors.ConfigurationError) -> JSONResponse:
        log.error("configuration_error", detail=str(exc))
        return error_response(tracking_id_of(request), errors.KeyhouseError())
