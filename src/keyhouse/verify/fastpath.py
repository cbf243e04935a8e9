"""``POST /verify`` without the framework, for the well-formed request.

Every request to the operator's platform is one verification, so this is
the path that decides keyhouse's throughput. FastAPI's routing and
dependency solving cost ~200 us per request here (cProfile of the ASGI app,
in-process: 255 us per /verify, most of it in ``_match`` and
``solve_dependencies``), forty times the verification itself (~4 us). The
fast path answers the one request shape that matters, a JSON ``{"key": ...}``
with a valid admin token, using the same ``verify_key`` as the route;
anything else (a bad token, bad JSON, a missing member) goes on to the
FastAPI route, which answers with the usual errors. So the two can differ
in speed only, never in what they answer.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Scope, Send

from keyhouse import errors
from keyhouse.audit.service import Actor
from keyhouse.keys.verify import bearer_of
from keyhouse.responses import render_json
from keyhouse.runtime import Runtime
from keyhouse.verify.service import verify_key

__all__ = ["try_fast_verify"]

_MAX_KEY = 1024
_JSON_TYPES = (b"application/json", b"application/json; charset=utf-8")


async def try_fast_verify(runtime: Runtime, scope: Scope, body: bytes, send: Send) -> bool:
    """Answer ``POST /verify`` here if the request is the plain, valid shape."""
    token = content_type = user_agent = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            token = value
        elif name == b"content-type":
            content_type = value
        elif name == b"user-agent":
            user_agent = value
    if token is None or content_type is None or content_type.lower() not in _JSON_TYPES:
        return False
    try:
        secret = bearer_of(token.decode("latin-1"))
    except errors.Unauthorized:
        return False
    if not runtime.admin_tokens.matches(secret):
        return False
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return False
    if not isinstance(payload, dict) or len(payload) != 1:
        return False
    key = payload.get("key")
    if not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY or not _is_unicode(key):
        return False
    client = scope.get("client")
    actor = Actor(
        "admin",
        None,
        client[0] if client else None,
        user_agent.decode("latin-1")[:512] if user_agent else None,
    )
    verdict = await verify_key(runtime, key, actor)
    # As the route's JSONResponse renders it.
    out = render_json(verdict)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(out)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": out})
    return True


def _is_unicode(key: str) -> bool:
    """False for a string with a lone surrogate (JSON's ``"\\ud800"``): the route refuses it."""
    if key.isascii():
        return True
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
