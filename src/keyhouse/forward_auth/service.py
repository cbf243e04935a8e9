"""Forward auth's own rules: the proxy's token, the answer's shape, and the status headers.

Authenticating and metering the client's key are the pipeline's steps
(``http/pipeline.py``: ``get_forward_caller``, ``metered_call``), run by the
endpoint exactly as for an account-API call; this module holds only what
forward auth adds to them.
"""

from __future__ import annotations

import json
from typing import Any

from keyhouse import errors
from keyhouse.forward_auth.schemas import ERROR_HEADER, FORWARD_TOKEN_HEADER, STATUS_HEADER
from keyhouse.http.identity import identity_headers
from keyhouse.http.pipeline import may_verify
from keyhouse.keys.verify import Caller
from keyhouse.runtime import Runtime

__all__ = ["answer_headers", "check_forward_token", "identity"]

# An error body longer than this is not copied into a header: keyhouse's
# envelopes are a few hundred bytes, and nginx reads a response's headers into
# one buffer (proxy_buffer_size, 4 KiB or 8 KiB by default), failing the whole
# answer (502) when they do not fit.
_ERROR_HEADER_MAX = 2048


def check_forward_token(runtime: Runtime, values: list[str]) -> None:
    """The proxy's ``X-Keyhouse-Forward-Token`` must be a verify or an admin token.

    Checked before the client's key is looked at: a request without the
    proxy's token learns nothing about a key (``/forward-auth`` is not a free
    key oracle), and it is not a failed authentication of the key or of the
    client's address (the fault is the proxy's configuration; with every
    client behind one proxy address, counting it would turn one misconfigured
    proxy into 429s for all of them). The tokens are >= 24 random characters
    (``admin_tokens.MIN_TOKEN_LENGTH``), compared in constant time.
    """
    if not values:
        raise errors.ForwardTokenRequired()
    if len(values) > 1:
        raise errors.BadRequest(
            f"The request has more than one {FORWARD_TOKEN_HEADER} header.",
            fix=f"Send one {FORWARD_TOKEN_HEADER} header.",
        )
    if not may_verify(runtime, values[0].strip()):
        raise errors.InvalidForwardToken()


def identity(caller: Caller) -> tuple[dict[str, Any], dict[str, str]]:
    """The 200's body and its ``X-Keyhouse-*`` identity headers for the key that passed."""
    body: dict[str, Any] = {
        "accountId": caller.account_id,
        "keyId": caller.key_id,
        "keyType": caller.key_type,
    }
    if caller.environment_id is not None:
        body["environmentId"] = caller.environment_id
    return body, identity_headers(caller)


def answer_headers(status: int, body: bytes) -> list[tuple[bytes, bytes]]:
    """The headers every answer of ``/forward-auth`` gets: ``X-Keyhouse-Status``, and on
    an error its envelope, compact and ASCII-only (``\\u`` escapes), in ``X-Keyhouse-Error``.

    nginx's ``auth_request`` passes on 401 and 403 only (any other status
    becomes 500) and drops the body: from these two headers its error page
    answers with the true status and the envelope (``deploy/nginx/``).
    """
    headers = [(STATUS_HEADER.lower().encode("ascii"), str(status).encode("ascii"))]
    if status < 400 or not body or len(body) > _ERROR_HEADER_MAX:
        return headers
    try:
        envelope = json.loads(body)
    except ValueError:
        return headers
    compact = json.dumps(envelope, separators=(",", ":"), ensure_ascii=True)
    headers.append((ERROR_HEADER.lower().encode("ascii"), compact.encode("ascii")))
    return headers
