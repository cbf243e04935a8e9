"""The upstream: its URL, the provider's name, and its failures as 502 ``provider_error``.

A failure of the upstream (it cannot be reached, does not answer in time,
closes the connection, or answers with something that is not HTTP) is the
seed's ``provider_error``: ``provider`` is the name the operator gave
(``--provider``), ``providerCode`` says what happened:

    connect_error     the connection was refused, the name did not resolve, TLS failed
    timeout           no connection, no answer, or no progress within the timeout
    reset             the upstream closed or reset the connection before its answer
    protocol_error    the upstream's answer is not valid HTTP/1.1

An answer of the upstream itself (a 404, a 500) is never one of these: it
passes through unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from keyhouse import errors

__all__ = ["PROVIDER_CODES", "Upstream", "check_provider", "provider_error"]

# ASCII letters, digits, '.', '_', '-': a name that goes into JSON and logs as is.
_PROVIDER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

PROVIDER_CODES = ("connect_error", "timeout", "reset", "protocol_error")

# httpcore's words when the upstream closed the connection before any answer
# (h11's EOF where a status line was due): a closed connection, not bad HTTP.
_DISCONNECTED = "Server disconnected"


def check_provider(name: str) -> str:
    """``name`` if it is a fit provider name, else ValueError saying what one is."""
    if not _PROVIDER_RE.fullmatch(name):
        raise ValueError(
            "the provider name is 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit (e.g. acme-api)"
        )
    return name


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where requests go: ``scheme://host[:port]`` and a path prefix (``b""``: none)."""

    base: httpx.URL
    prefix: bytes

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """An ``http(s)://host[:port][/prefix]`` URL, or ValueError in one line.

        No credentials (a URL is printed in logs), no query and no fragment
        (each request brings its own).
        """
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL as exc:
            raise ValueError(f"the upstream URL is not valid ({exc})") from None
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError("the upstream URL is http://host[:port][/path] (or https://)")
        if url.userinfo:
            raise ValueError("the upstream URL may not hold a user name or password")
        if url.query or url.fragment:
            raise ValueError("the upstream URL may not hold a query or a fragment")
        prefix = url.raw_path.split(b"?", 1)[0].rstrip(b"/")
        return cls(url.copy_with(raw_path=b"/"), prefix)

    def target(self, raw_path: bytes, query: bytes) -> httpx.URL:
        """The upstream URL of a request's path (as sent, percent-encoding kept) and query."""
        path = self.prefix + raw_path
        return self.base.copy_with(raw_path=path + b"?" + query if query else path)

    def __str__(self) -> str:
        return str(self.base.copy_with(raw_path=self.prefix or b"/"))


def provider_error(
    exc: httpx.TransportError, provider: str, connect_timeout: float, read_timeout: float
) -> errors.ProviderError:
    """The 502 for a failure of the upstream (never with the request's URL: it may hold
    anything the client sent)."""
    fix = "Retry in a moment; if it keeps failing, report the trackingId to the API's operator."
    if isinstance(exc, httpx.ConnectTimeout):
        code = "timeout"
        message = f"{provider} did not accept a connection within {connect_timeout:g} s."
    elif isinstance(exc, httpx.TimeoutException):
        code = "timeout"
        message = f"{provider} made no progress within {read_timeout:g} s."
    elif isinstance(exc, httpx.ConnectError):
        code = "connect_error"
        message = f"keyhouse could not connect to {provider}."
    elif isinstance(exc, httpx.RemoteProtocolError) and not str(exc).startswith(_DISCONNECTED):
        code = "protocol_error"
        message = f"{provider} answered with something that is not valid HTTP."
    else:
        # ReadError/WriteError (ECONNRESET, EPIPE), or the connection closed early.
        code = "reset"
        message = f"{provider} closed the connection before it answered."
    return errors.ProviderError(message, fix=fix, provider=provider, provider_code=code)
