"""``GET /keys`` without the framework, for the seed's call: no query, a good key.

The seed documents ``GET /keys`` with a Bearer key and nothing else.
Through FastAPI a listing of 200 keys spent ~30% of its time in routing and
dependency solving (pyinstrument of the ASGI app, in-process), which kept
it under issue 4's goal of twice the peer's req/s. This answers that one
shape with the same steps as the route (``Verifier.authenticate``,
``meter``, ``KeyService.list_objects``, the same ``JSONResponse``), and
hands anything else to the route: a query string, a missing or bad key, a
public key, a refused call. A refused call consumed nothing, so the route
refuses it again with the usual error; the two differ in speed only
(``tests/keys/test_fastpath.py`` asks every case both ways).
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from keyhouse import errors
from keyhouse.audit.service import Actor
from keyhouse.keys.service import KeyService, invalidate_after_commit
from keyhouse.keys.verify import Verifier, bearer_of
from keyhouse.limits.service import meter
from keyhouse.responses import JSONResponse
from keyhouse.runtime import Runtime

__all__ = ["try_fast_list"]


async def try_fast_list(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> bool:
    """Answer ``GET /keys`` here if the request is the plain, admitted shape."""
    if scope.get("query_string"):
        return False
    header = user_agent = None
    # The first of each, as Starlette's ``request.headers.get``.
    for name, value in scope["headers"]:
        if name == b"authorization" and header is None:
            header = value.decode("latin-1")
        elif name == b"user-agent" and user_agent is None:
            user_agent = value.decode("latin-1")
    try:
        token = bearer_of(header)
    except errors.Unauthorized:
        return False
    client = scope.get("client")
    actor = Actor(
        "key", None, client[0] if client else None, user_agent[:512] if user_agent else None
    )
    try:
        caller = await Verifier(runtime).authenticate(token, actor=actor)
    except errors.Unauthorized:
        return False
    if not caller.is_secret:
        return False
    metered = await meter(runtime, caller)
    if metered.refusal is not None:
        return False
    if metered.headers:
        scope.setdefault("state", {})["ratelimit_headers"] = metered.headers
    async with runtime.db.session(write=False) as session:
        objects = await KeyService(session, runtime).list_objects(
            caller.account_id, scope_environment_id=caller.environment_id
        )
    invalidate_after_commit(session, runtime)
    await JSONResponse({"keys": objects})(scope, receive, send)
    return True
