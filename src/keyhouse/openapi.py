"""OpenAPI: every error response documented with the seed's envelope.

FastAPI documents a 422 on every route with parameters; keyhouse answers
400 ``validation_error`` instead, so the 422 and its schemas are removed.

An optional body (``POST /keys/{id}/roll``) is documented as the model with
``required: false``, not as FastAPI's ``anyOf: [model, null]``: from that,
openapi-python-client made a client whose call without a body sent its
``UNSET`` marker as JSON and failed (``TypeError``) before any request
(``tests/clients/test_generated_client.py``).

Operation ids are the endpoint's name in camelCase (``list_keys`` ->
``listKeys``), or the route's explicit ``operation_id``: generated clients
name their calls after them (FastAPI's default, ``list_keys_keys_get``, made
``openapi-python-client`` write ``list_keys_keys_get.sync(...)``).

Authentication is declared per operation: ``accountKey`` (an account's
secret key) on the account API, ``adminToken`` on the operator API,
``verifyToken`` or ``adminToken`` on ``POST /verify``, ``forwardToken``
and ``forwardedKey`` together on ``/forward-auth``, none on the meta
routes. It is read off each route's dependencies, so a route cannot
authenticate one way and be documented another.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from keyhouse.schemas import ErrorResponse

__all__ = ["error_responses", "install_openapi", "operation_id"]

# The seed's descriptions where it has one.
_DESCRIPTIONS = {
    400: "Bad Request - validation errors, invalid input",
    401: "Unauthorized",
    402: "Payment Required - usage limits exceeded",
    403: "Forbidden - the key may not do this (a public key on a management endpoint)",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large - the body is over the limit (64 KiB)",
    415: "Unsupported Media Type - the body must be JSON",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway - provider error",
    503: "Service Unavailable",
}

# Every route may answer these whatever it does.
_ALWAYS = (500, 502, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the given statuses plus the ones any route can give."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]}
        for status in sorted({*statuses, *_ALWAYS})
    }


SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "accountKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An account's secret key: `Authorization: Bearer sk_...`.",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An operator's admin token (`keyhouse admin-token` prints it).",
    },
    "forwardToken": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Keyhouse-Forward-Token",
        "description": "The proxy's token on `/forward-auth`: a verify token "
        "(`KEYHOUSE_VERIFY_TOKENS`) or an admin token.",
    },
    "forwardedKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "The client's key (secret or public) that a proxy forwards: "
        "`Authorization: Bearer ...`.",
    },
    "verifyToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A verify-only token (`KEYHOUSE_VERIFY_TOKENS`): `POST /verify` only.",
    },
}


def operation_id(route: APIRoute) -> str:
    """The route's OpenAPI operation id: its endpoint's name in camelCase.

    FastAPI's ``generate_unique_id_function``; a route with an explicit
    ``operation_id`` keeps it. Uniqueness is checked by the tests, not here:
    two endpoints of one name would be a mistake to fix, not to number.
    """
    head, *rest = route.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _calls(dependant: Dependant) -> set[str]:
    """The qualified names of every dependency ``dependant`` needs, transitively."""
    names: set[str] = set()
    pending = list(dependant.dependencies)
    while pending:
        dep = pending.pop()
        if dep.call is not None:
            names.add(getattr(dep.call, "__qualname__", ""))
        pending.extend(dep.dependencies)
    return names


def _security(route: APIRoute) -> list[dict[str, list[str]]] | None:
    calls = _calls(route.dependant)
    if "get_forward_auth_caller" in calls:
        # Both at once: the proxy's token and the client's key.
        return [{"forwardToken": [], "forwardedKey": []}]
    if "get_verify_actor" in calls:
        return [{"verifyToken": []}, {"adminToken": []}]
    if "get_admin_actor" in calls:
        return [{"adminToken": []}]
    if "get_caller" in calls:
        return [{"accountKey": []}]
    return None


def _api_routes(app: FastAPI) -> list[APIRoute]:
    """Every APIRoute of the app, those of included routers too."""
    found: list[APIRoute] = []
    pending: list[Any] = list(app.router.routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            pending.extend(included.routes)
        elif isinstance(route, APIRoute):
            found.append(route)
    return found


def _optional_body(operation: dict[str, Any]) -> None:
    """An optional body as the model itself, not ``anyOf: [model, null]`` (see above)."""
    body = operation.get("requestBody")
    if body is None or body.get("required"):
        return
    for media in body.get("content", {}).values():
        choices = media.get("schema", {}).get("anyOf")
        if not choices:
            continue
        refs = [choice for choice in choices if choice != {"type": "null"}]
        if len(refs) == 1 and len(choices) == 2:
            media["schema"] = refs[0]
    body["required"] = False


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict):
                    operation.get("responses", {}).pop("422", None)
                    _optional_body(operation)
        for route in _api_routes(app):
            security = _security(route)
            if security is None:
                continue
            path_item = schema["paths"].get(route.path_format, {})
            for method in route.methods or ():
                if method.lower() in path_item:
                    path_item[method.lower()]["security"] = security
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
