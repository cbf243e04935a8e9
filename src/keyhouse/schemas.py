"""Shared schema pieces: the seed's error envelope and field helpers."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["ErrorDetail", "ErrorResponse", "Name", "NotNull", "Schema", "omittable"]


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_null(schema: dict[str, Any]) -> None:
    """Show an optional member as its plain type: omitted when absent, never null."""
    any_of = schema.pop("anyOf", None)
    if any_of:
        kept = [s for s in any_of if s.get("type") != "null"]
        if len(kept) == 1:
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    schema.pop("default", None)


def omittable(description: str, **kwargs: Any) -> Any:
    """An optional member that is left out of the JSON when it has no value."""
    return Field(default=None, description=description, json_schema_extra=_no_null, **kwargs)


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("leave the member out instead of sending null")
    return value


# On an omittable request member: it may be left out, but not sent as null, since
# the OpenAPI shows it as its plain type. (A default is not validated: left out passes.)
NotNull = AfterValidator(_not_null)


# Control characters and line breaks (log and terminal injection), surrogates,
# and the bidirectional overrides of the "Trojan Source" attack
# (https://trojansource.codes), which make a name display as something else.
# Other Unicode, non-breaking spaces and emoji sequences included, is fine.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _printable(value: str) -> str:
    for char in value:
        if unicodedata.category(char) in _REFUSED_CATEGORIES or char in _BIDI_CONTROLS:
            raise ValueError("must not contain control characters or line breaks")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100),
    AfterValidator(_printable),
    Field(description="1-100 printable characters.", examples=["Production backend"]),
]


class ErrorDetail(BaseModel):
    """Structured error details for API error responses."""

    model_config = ConfigDict(title="ErrorDetail")

    code: str = Field(description="Machine-readable error code.")
    message: str = Field(description="Human-readable error message.")
    fix: str | None = omittable("Actionable hint for fixing the error.")
    provider: str | None = omittable("Provider that caused the error (e.g. telnyx, ses).")
    providerCode: str | None = omittable("Provider-specific error code.")


class ErrorResponse(BaseModel):
    """Standard error response for API errors."""

    model_config = ConfigDict(title="ErrorResponse")

    trackingId: str = Field(description="Unique tracking ID for the request.")
    error: ErrorDetail = Field(description="Structured error details for API error responses.")
