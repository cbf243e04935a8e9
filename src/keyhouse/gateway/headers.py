"""Which headers cross the gateway, each way.

Hop-by-hop fields describe one connection, not the message: a proxy does not
forward them (RFC 9110 section 7.6.1), neither the fixed list nor any field a
``Connection`` header names. Toward the upstream the gateway also drops what
it replaces or what is the client's to keep:

* ``Authorization``: the key stays with keyhouse;
* every ``X-Keyhouse-*`` field: the identity headers are keyhouse's to set
  (``http/identity.py``); a client's own would otherwise claim an account;
* every ``X-Forwarded-*`` field, ``Forwarded`` and ``X-Real-Ip``: the first
  three of ``X-Forwarded-For``/``-Proto``/``-Host`` are set again from what
  the gateway saw (the client's address as uvicorn resolved it, through
  ``KEYHOUSE_TRUSTED_PROXIES`` only), so a client cannot name another address;
* ``Host``: the upstream's (httpx sets it from the URL), the client's goes in
  ``X-Forwarded-Host``;
* ``Expect``: ``100-continue`` was the gateway's to answer (uvicorn did).

A name is compared with ``_`` read as ``-``: CGI-style servers (WSGI's
wsgiref, PHP, ...) map both to the same ``HTTP_*`` variable, so a client's
``X_Keyhouse_Account_Id`` reached a wsgiref upstream as the account's id
``HTTP_X_KEYHOUSE_ACCOUNT_ID`` (reproduced by reviewer r14).

From the upstream, ``Date`` is dropped as nginx drops it (``proxy_pass_header``):
the server adds its own, and two would be one too many.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["HOP_BY_HOP", "request_headers", "response_headers"]

Raw = list[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1, plus the Proxy-* fields of RFC 9110 section 11.7 and
# the widespread Proxy-Connection (lowercase: ASGI header names are).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
_TO_UPSTREAM_DROPPED = frozenset({b"host", b"authorization", b"forwarded", b"x-real-ip", b"expect"})
# Whole families dropped toward the upstream: keyhouse's identity, and the
# proxies' account of the client (X-Forwarded-Port, -Prefix, -Ssl, ... too).
_TO_UPSTREAM_DROPPED_PREFIXES = (b"x-keyhouse-", b"x-forwarded-")
_FROM_UPSTREAM_DROPPED = frozenset({b"date"})


def _as_read(name: bytes) -> bytes:
    """A header name as a CGI-style server reads it: lowercase, ``_`` as ``-``."""
    return name.lower().replace(b"_", b"-")


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """The field names the message's ``Connection`` headers list (hop-by-hop too)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return named


def _hop_by_hop(name: bytes, named: set[bytes]) -> bool:
    return name in HOP_BY_HOP or name.startswith(b"proxy-") or name in named


def request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    identity: Mapping[str, str],
    *,
    client: str | None,
    scheme: str,
    credential_header: str | None = None,
) -> Raw:
    """The headers sent upstream: the client's, less the dropped ones, plus the identity
    and ``X-Forwarded-For``/``-Proto``/``-Host``. Order and repeats are kept.

    ``credential_header``: ``KEYHOUSE_FORWARD_AUTH_HEADER`` (``X-Api-Key``, say),
    dropped like ``Authorization``: the key stays with keyhouse either way."""
    given = list(headers)
    credential = _as_read(credential_header.encode("latin-1")) if credential_header else None
    named = {_as_read(name) for name in _connection_named(given)}
    out: Raw = []
    host: bytes | None = None
    for raw_name, value in given:
        name = raw_name.lower()
        if name == b"host" and host is None:
            host = value
        read_as = _as_read(name)
        if (
            _hop_by_hop(read_as, named)
            or read_as in _TO_UPSTREAM_DROPPED
            or read_as == credential
            or read_as.startswith(_TO_UPSTREAM_DROPPED_PREFIXES)
        ):
            continue
        out.append((name, value))
    for field, field_value in identity.items():
        out.append((field.lower().encode("ascii"), field_value.encode("ascii")))
    if client:
        out.append((b"x-forwarded-for", client.encode("latin-1")))
    out.append((b"x-forwarded-proto", scheme.encode("ascii")))
    if host is not None:
        out.append((b"x-forwarded-host", host))
    return out


def response_headers(headers: Iterable[tuple[bytes, bytes]]) -> Raw:
    """The upstream's response headers as the client gets them: all but hop-by-hop and Date."""
    given = list(headers)
    named = _connection_named(given)
    out: Raw = []
    for raw_name, value in given:
        name = raw_name.lower()
        if _hop_by_hop(name, named) or name in _FROM_UPSTREAM_DROPPED:
            continue
        out.append((name, value))
    return out
