"""OpenAPI: every error response documented with the seed's envelope.

FastAPI documents a 422 on every route with parameters; keyhouse answers
400 ``validation_error`` instead, so the 422 and its schemas are removed.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from keyhouse.schemas import ErrorResponse

__all__ = ["error_responses", "install_openapi"]

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
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
