"""The errors the client raises: one tree.

    KeyhouseError                 keyhouse answered with an error (its envelope), or with
     |                            something that is not keyhouse's answer
     +-- KeyhouseUnavailable      keyhouse could not be reached (status None: a refused
                                  connection, a timeout, a reset) or answered 503

Every member comes from the seed's envelope
``{trackingId, error: {code, message, fix?, provider?, providerCode?}}``; a body
that is not that envelope gives ``code`` ``unexpected_response``. A key is
never part of an error's text: keyhouse never repeats one, and the client
writes none.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KeyhouseError", "KeyhouseUnavailable"]

# Transport failures have no HTTP status; these are their codes.
CONNECT_ERROR = "connect_error"
TIMEOUT = "timeout"
TRANSPORT_ERROR = "transport_error"
UNEXPECTED_RESPONSE = "unexpected_response"


class KeyhouseError(Exception):
    """keyhouse answered with an error.

    Attributes: ``status`` (the HTTP status, ``None`` for a transport failure),
    ``code`` (keyhouse's stable code: ``invalid_api_key``, ``not_found``, …;
    ``unexpected_response`` for a body that is not keyhouse's envelope),
    ``message``, ``fix`` (a hint, or ``None``), ``tracking_id`` (the
    envelope's ``trackingId``, else the ``X-Tracking-Id`` header, else
    ``None``), ``provider`` and ``provider_code`` (a 502 ``provider_error``'s),
    ``retry_after`` (seconds from ``Retry-After``, or ``None``).
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        *,
        fix: str | None = None,
        tracking_id: str | None = None,
        provider: str | None = None,
        provider_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.fix = fix
        self.tracking_id = tracking_id
        self.provider = provider
        self.provider_code = provider_code
        self.retry_after = retry_after
        super().__init__(message)

    def __str__(self) -> str:
        status = "no response" if self.status is None else str(self.status)
        text = f"{status} {self.code}: {self.message}"
        if self.fix:
            text += f" (fix: {self.fix})"
        if self.tracking_id:
            text += f" [trackingId {self.tracking_id}]"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r})"

    def to_envelope(self) -> dict[str, Any]:
        """The error as keyhouse's envelope (what a middleware answers with)."""
        detail: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fix is not None:
            detail["fix"] = self.fix
        if self.provider is not None:
            detail["provider"] = self.provider
        if self.provider_code is not None:
            detail["providerCode"] = self.provider_code
        return {"trackingId": self.tracking_id, "error": detail}


class KeyhouseUnavailable(KeyhouseError):
    """keyhouse cannot answer: unreachable (``status`` None; ``code``
    ``connect_error``, ``timeout`` or ``transport_error``) or 503
    ``service_unavailable`` (its database is away). Raised after the retries."""
