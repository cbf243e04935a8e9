"""The verified identity as headers: what forward auth and the gateway hand on.

One definition for both ways in (``GET /forward-auth`` answers with them; the
gateway adds them to the request it passes upstream), so an upstream reads the
same names whichever way its traffic arrives. The names follow the
``X-Auth-Request-*``/``X-Forwarded-User`` convention of oauth2-proxy and
Traefik's ForwardAuth (``authResponseHeaders``), under keyhouse's own prefix.
"""

from __future__ import annotations

from keyhouse.keys.verify import Caller

__all__ = ["IDENTITY_HEADERS", "identity_headers"]

IDENTITY_HEADERS = (
    "X-Keyhouse-Account-Id",
    "X-Keyhouse-Key-Id",
    "X-Keyhouse-Key-Type",
    "X-Keyhouse-Environment-Id",
)


def identity_headers(caller: Caller) -> dict[str, str]:
    """``{header: value}`` for the caller; the environment only when the key is scoped to one."""
    headers = {
        "X-Keyhouse-Account-Id": caller.account_id,
        "X-Keyhouse-Key-Id": caller.key_id,
        "X-Keyhouse-Key-Type": caller.key_type,
    }
    if caller.environment_id is not None:
        headers["X-Keyhouse-Environment-Id"] = caller.environment_id
    return headers
